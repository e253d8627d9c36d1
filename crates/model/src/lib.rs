//! graymesh's configuration model: Istio's traffic DSL (VirtualService, DestinationRule,
//! ServiceEntry, Gateway) and the OAM Application that describes a gray release, as typed data,
//! parsed from YAML or JSON and validated once.
//!
//! This crate is pure: no I/O, no async, no gRPC or Envoy types. Callers hand it text and a file
//! name; it hands back either a validated [`ConfigSet`] or every error it found, each naming the
//! file, the object and the field.

pub mod baggage;
pub mod duration;
pub mod error;
pub mod host;
pub mod istio;
pub mod oam;
pub mod object;
pub mod parse;
pub mod rollout;
pub mod validate;

pub use duration::Duration;
pub use error::ModelError;
pub use oam::Application;
pub use object::{ConfigSet, Kind, Object, ObjectMeta, Origin, Resource, Spec};
pub use parse::{parse_documents, parse_str, Parsed};
pub use rollout::{RolloutPhase, RolloutStatus};
pub use validate::{build_config_set, validate_applications};
