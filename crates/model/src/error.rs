//! The one error type of the model: where (file, object, field) and what, with a hint.

use std::fmt;

/// One problem found in the user's configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelError {
    /// The file (or other source name) the object came from.
    pub file: String,
    /// `Kind namespace/name`, when the problem is inside one object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// A path into the object, e.g. `spec.http[0].route[1].weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl ModelError {
    pub fn in_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            object: None,
            field: None,
            message: message.into(),
        }
    }

    /// An error about one field of one object (`object` is `Kind namespace/name`).
    pub fn in_object(
        file: impl Into<String>,
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            object: Some(object.into()),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ModelError {}
