//! The four resource types graymesh serves, in the order they must be pushed so a client never
//! sees a reference before its target (clusters before endpoints, listeners before routes, and
//! clusters/endpoints before the listeners and routes that point at them).

use std::fmt;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TypeUrl {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl TypeUrl {
    /// Push order.
    pub const ALL: [TypeUrl; 4] = [
        TypeUrl::Cluster,
        TypeUrl::Endpoint,
        TypeUrl::Listener,
        TypeUrl::Route,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TypeUrl::Listener => LISTENER,
            TypeUrl::Route => ROUTE,
            TypeUrl::Cluster => CLUSTER,
            TypeUrl::Endpoint => ENDPOINT,
        }
    }

    pub fn parse(url: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == url)
    }

    /// Short name as operators know it (LDS, RDS, CDS, EDS).
    pub fn short(&self) -> &'static str {
        match self {
            TypeUrl::Listener => "LDS",
            TypeUrl::Route => "RDS",
            TypeUrl::Cluster => "CDS",
            TypeUrl::Endpoint => "EDS",
        }
    }

    /// For these types an empty first subscription means "everything" (legacy wildcard).
    pub fn wildcard_capable(&self) -> bool {
        matches!(self, TypeUrl::Listener | TypeUrl::Cluster)
    }
}

impl fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
