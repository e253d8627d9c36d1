//! The graymesh proxy: a sidecar and gateway data plane driven by any xDS v3 control plane.
//!
//! It consumes Envoy resources (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment)
//! over one ADS stream, compiles them into an immutable [`table::RouteTable`] swapped atomically,
//! and serves explicit local ports with it. It never depends on graymesh's Istio model.

pub mod admin;
pub mod config;
pub mod h1;
pub mod h2;
pub mod http;
pub mod idle;
pub mod listeners;
pub mod local;
pub mod metrics;
pub mod registration;
pub mod run;
pub mod table;
pub mod tcp;
pub mod upstream;
pub mod xds;
