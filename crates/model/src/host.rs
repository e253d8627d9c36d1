//! Host names the way Istio reads them.

/// The DNS suffix of in-mesh service names.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Turn a host as written into the fully qualified name used everywhere downstream.
///
/// `declared_as_written` is true when a ServiceEntry declares exactly this host: ServiceEntry
/// hosts are names users chose (possibly short), so they are never expanded.
pub fn resolve(host: &str, namespace: &str, declared_as_written: bool) -> String {
    if declared_as_written || host.contains('.') || host == "*" {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{CLUSTER_DOMAIN}")
    }
}

/// The fully qualified name of a service registered by name in a namespace.
pub fn service_fqdn(service: &str, namespace: &str) -> String {
    resolve(service, namespace, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_in_their_namespace() {
        assert_eq!(
            resolve("reviews", "default", false),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve("reviews", "shop", false),
            "reviews.shop.svc.cluster.local"
        );
    }

    #[test]
    fn dotted_and_declared_names_stay() {
        assert_eq!(
            resolve("api.example.com", "default", false),
            "api.example.com"
        );
        assert_eq!(resolve("legacy", "default", true), "legacy");
        assert_eq!(resolve("*", "default", false), "*");
    }
}
