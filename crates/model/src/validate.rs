//! Parsed objects to a validated [`ConfigSet`], or every error found.
//!
//! Checks come in two layers: each object on its own (ranges, one-of fields, regexes; one module
//! per kind) and then the set as a whole (duplicate names, subset references, DestinationRules
//! competing for a host; `references`). Validation never stops at the first error, never fixes a
//! value up silently, and never reads anything but the objects it is given.

mod application;
mod destination_rule;
mod fields;
mod gateway;
mod references;
mod service_entry;
mod virtual_service;

use crate::error::ModelError;
use crate::object::{ConfigSet, Kind, Object, ObjectMeta, Origin, Resource, Spec};
use std::collections::BTreeMap;

pub use application::validate_applications;

/// Validate `objects` (typically from several files) and build the set translation reads.
///
/// Objects of each kind come out sorted by (namespace, name). Errors are in input order for
/// single-object checks, then set-wide ones.
pub fn build_config_set(objects: Vec<Object>) -> Result<ConfigSet, Vec<ModelError>> {
    let mut errors = Vec::new();
    for object in &objects {
        check_object(object, &mut errors);
    }
    let unique = drop_duplicates(objects, &mut errors);
    let set = assemble(unique);
    references::check(&set, &mut errors);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// The errors found in one object, each naming its file and `Kind ns/name`.
struct Findings<'a> {
    file: &'a str,
    object: String,
    errors: &'a mut Vec<ModelError>,
}

impl<'a> Findings<'a> {
    fn new(file: &'a str, object: String, errors: &'a mut Vec<ModelError>) -> Self {
        Self {
            file,
            object,
            errors,
        }
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let error = ModelError::in_object(self.file, self.object.as_str(), field, message);
        self.errors.push(error);
    }
}

fn check_object(object: &Object, errors: &mut Vec<ModelError>) {
    let mut findings = Findings::new(&object.origin.file, object.display_name(), errors);
    match &object.spec {
        Spec::VirtualService(vs) => virtual_service::check(&mut findings, vs),
        Spec::DestinationRule(dr) => destination_rule::check(&mut findings, &object.meta, dr),
        Spec::ServiceEntry(se) => service_entry::check(&mut findings, se),
        Spec::Gateway(gw) => gateway::check(&mut findings, gw),
        Spec::Application(spec) => {
            let app = crate::oam::Application {
                meta: object.meta.clone(),
                spec: spec.clone(),
                origin: object.origin.clone(),
            };
            application::check(&mut findings, &app)
        }
        // Written by the release controller; its shape was checked when it was parsed, and
        // what it refers to is the controller's to reconcile.
        Spec::Rollout(_) => {}
    }
}

/// Keep the first object of each (kind, namespace, name); report the later ones.
fn drop_duplicates(objects: Vec<Object>, errors: &mut Vec<ModelError>) -> Vec<Object> {
    let mut first: BTreeMap<(Kind, String, String), String> = BTreeMap::new();
    let mut unique = Vec::with_capacity(objects.len());
    for object in objects {
        let key = (
            object.kind(),
            object.meta.namespace.clone(),
            object.meta.name.clone(),
        );
        if let Some(place) = first.get(&key) {
            let message = format!(
                "{:?} is already defined in {place}; a {} name must be unique in its namespace",
                object.meta.name,
                object.kind()
            );
            let name = object.display_name();
            errors.push(ModelError::in_object(
                &object.origin.file,
                name,
                "metadata.name",
                message,
            ));
            continue;
        }
        first.insert(key, describe_origin(&object.origin));
        unique.push(object);
    }
    unique
}

/// `file (document n)`, 1-based like the document labels of parse errors.
fn describe_origin(origin: &Origin) -> String {
    format!("{} (document {})", origin.file, origin.document + 1)
}

fn assemble(objects: Vec<Object>) -> ConfigSet {
    let mut set = ConfigSet::default();
    for Object {
        meta, spec, origin, ..
    } in objects
    {
        match spec {
            Spec::VirtualService(spec) => {
                set.virtual_services.push(Resource { meta, origin, spec })
            }
            Spec::DestinationRule(spec) => {
                set.destination_rules.push(Resource { meta, origin, spec })
            }
            Spec::ServiceEntry(spec) => set.service_entries.push(Resource { meta, origin, spec }),
            Spec::Gateway(spec) => set.gateways.push(Resource { meta, origin, spec }),
            Spec::Application(spec) => set.applications.push(Resource { meta, origin, spec }),
            Spec::Rollout(spec) => set.rollouts.push(Resource { meta, origin, spec }),
        }
    }
    sort_by_name(&mut set.virtual_services);
    sort_by_name(&mut set.destination_rules);
    sort_by_name(&mut set.service_entries);
    sort_by_name(&mut set.gateways);
    sort_by_name(&mut set.applications);
    sort_by_name(&mut set.rollouts);
    set
}

fn sort_by_name<T>(resources: &mut [Resource<T>]) {
    resources.sort_by(|a, b| name_key(&a.meta).cmp(&name_key(&b.meta)));
}

fn name_key(meta: &ObjectMeta) -> (&str, &str) {
    (&meta.namespace, &meta.name)
}
