//! Gateways. A gateway node serves the servers of every Gateway whose `selector` labels are all
//! among its own (in any namespace: Gateways have no `exportTo`, and Istio applies a selector
//! across namespaces). Each plain-HTTP server (protocol HTTP, HTTP2 or GRPC) becomes a listener
//! `<ip>_<port>` reading the route configuration `http.<port>` (Istio's names); servers sharing
//! an address and port share both. Its virtual hosts are the hosts of the VirtualServices bound
//! to the Gateway that the server's `hosts` admit, routed exactly as in the mesh.
//!
//! TLS termination is out of scope: HTTPS, TLS and TCP servers are skipped with a debug log, and
//! so is an HTTP server's `tls.httpsRedirect`. Nothing here may route a host no server admits.

use super::listeners::{hcm, tcp_listener, uses_fault};
use super::routes::vs_routes;
use super::{exported_to, host_matches, Context, Translation};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use graymesh_model::istio::{Gateway, Server, VirtualService};
use graymesh_model::Resource;
use std::collections::{BTreeMap, BTreeSet};

/// Where a gateway's listeners bind unless its node says otherwise (`GATEWAY_ADDR`).
pub const DEFAULT_GATEWAY_IP: &str = "127.0.0.1";

/// The server protocols served as plain HTTP (Istio's names, any case).
const HTTP_PROTOCOLS: [&str; 3] = ["HTTP", "HTTP2", "GRPC"];

/// One listener's worth of routing: the VirtualServices (by index in the config set) that serve
/// each host on it.
#[derive(Default)]
struct PortHosts {
    hosts: BTreeMap<String, BTreeSet<usize>>,
}

pub fn gateway(ctx: &Context<'_>, out: &mut Translation) {
    let default_ip = ctx
        .class
        .gateway_addr
        .clone()
        .unwrap_or_else(|| DEFAULT_GATEWAY_IP.to_string());
    let mut ports: BTreeMap<(String, u32), PortHosts> = BTreeMap::new();
    for gw in ctx.config.gateways.iter() {
        if !ctx.node_has_labels(&gw.spec.selector) {
            continue;
        }
        for server in gw.spec.servers.iter().filter(|s| serves_http(gw, s)) {
            let ip = server.bind.clone().unwrap_or_else(|| default_ip.clone());
            let entry = ports.entry((ip, server.port.number)).or_default();
            add_bound_hosts(ctx, gw, server, entry);
        }
    }
    for ((ip, port), hosts) in ports {
        let name = route_name(&ip, port, &default_ip);
        out.routes.push(RouteConfiguration {
            name: name.clone(),
            virtual_hosts: virtual_hosts(ctx, port, hosts),
            ..Default::default()
        });
        let hcm = hcm(&name, uses_fault(&out.routes, &name));
        out.listeners.push(tcp_listener(&ip, port, &hcm));
    }
}

/// `http.<port>`, or `http.<port>.<ip>` for a server bound elsewhere (Istio's `bind` naming).
fn route_name(ip: &str, port: u32, default_ip: &str) -> String {
    if ip == default_ip {
        format!("http.{port}")
    } else {
        format!("http.{port}.{ip}")
    }
}

fn serves_http(gw: &Resource<Gateway>, server: &Server) -> bool {
    let protocol = &server.port.protocol;
    let port = server.port.number;
    let (ns, name) = (&gw.meta.namespace, &gw.meta.name);
    if !HTTP_PROTOCOLS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
    {
        tracing::debug!(gateway = %format!("{ns}/{name}"), port, %protocol, "gateway server skipped: only plain HTTP, HTTP2 and GRPC servers are served (no TLS termination, no TCP)");
        return false;
    }
    if server.tls.as_ref().is_some_and(|t| t.https_redirect) {
        tracing::debug!(gateway = %format!("{ns}/{name}"), port, "tls.httpsRedirect is not supported; the server is served as plain HTTP");
    }
    true
}

/// Record, for each host of each VirtualService bound to `gw` that `server` admits, that the
/// VirtualService serves it.
fn add_bound_hosts(
    ctx: &Context<'_>,
    gw: &Resource<Gateway>,
    server: &Server,
    into: &mut PortHosts,
) {
    for (i, vs) in ctx.config.virtual_services.iter().enumerate() {
        let visible = exported_to(&vs.spec.export_to, &vs.meta.namespace, &ctx.class.namespace);
        if !visible || !bound_to(vs, gw) {
            continue;
        }
        for written in &vs.spec.hosts {
            let host = ctx.config.resolve_host(written, &vs.meta.namespace);
            for admitted in admitted_hosts(server, &gw.meta.namespace, &vs.meta.namespace, &host) {
                into.hosts.entry(admitted).or_default().insert(i);
            }
        }
    }
}

/// A VirtualService names a Gateway as `<name>` (in the VirtualService's namespace) or
/// `<namespace>/<name>`.
fn bound_to(vs: &Resource<VirtualService>, gw: &Resource<Gateway>) -> bool {
    vs.spec.gateways.iter().any(|g| match g.split_once('/') {
        Some((ns, name)) => ns == gw.meta.namespace && name == gw.meta.name,
        None => vs.meta.namespace == gw.meta.namespace && *g == gw.meta.name,
    })
}

/// The hosts a server serves of a VirtualService's (resolved) host. A server host is
/// `[namespace/]host`: the namespace (`*` any, `.` the Gateway's, `~` none) is the
/// VirtualService's; the host is `*`, `*.suffix` or exact. Where one side's wildcard covers the
/// other, the narrower name is served (`*` at the VS with `a.example.com` at the server serves
/// `a.example.com` only), as Istio intersects them.
fn admitted_hosts(server: &Server, gw_ns: &str, vs_ns: &str, vs_host: &str) -> Vec<String> {
    let mut out = Vec::new();
    for written in &server.hosts {
        let (ns, pattern) = written.split_once('/').unwrap_or(("*", written));
        let ns_ok = match ns {
            "*" => true,
            "." => vs_ns == gw_ns,
            "~" => false,
            other => vs_ns == other,
        };
        if !ns_ok {
            continue;
        }
        let admitted = if host_matches(pattern, vs_host) {
            vs_host
        } else if host_matches(vs_host, pattern) {
            pattern
        } else {
            continue;
        };
        if !out.iter().any(|h| h == admitted) {
            out.push(admitted.to_string());
        }
    }
    out
}

/// One virtual host per host, its routes those of the VirtualServices serving it, in the
/// config's order. A host none of whose routes applies on this port gets no virtual host.
fn virtual_hosts(ctx: &Context<'_>, port: u32, hosts: PortHosts) -> Vec<VirtualHost> {
    let mut out = Vec::new();
    for (host, services) in hosts.hosts {
        let routes: Vec<_> = services
            .iter()
            .flat_map(|i| vs_routes(ctx, &ctx.config.virtual_services[*i], None, port))
            .collect();
        if routes.is_empty() {
            continue;
        }
        let domains = if host == "*" {
            vec![host.clone()]
        } else {
            vec![host.clone(), format!("{host}:{port}")]
        };
        out.push(VirtualHost {
            name: format!("{host}:{port}"),
            domains,
            routes,
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use graymesh_model::istio::GatewayPort;

    fn server(hosts: &[&str]) -> Server {
        Server {
            port: GatewayPort {
                number: 8080,
                protocol: "HTTP".into(),
                ..Default::default()
            },
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }
    }

    fn admitted(hosts: &[&str], vs_ns: &str, vs_host: &str) -> Vec<String> {
        admitted_hosts(&server(hosts), "istio-system", vs_ns, vs_host)
    }

    #[test]
    fn any_host_admits_everything() {
        assert_eq!(
            admitted(&["*"], "default", "a.example.com"),
            ["a.example.com"]
        );
        assert_eq!(admitted(&["*/*"], "shop", "*"), ["*"]);
    }

    #[test]
    fn the_narrower_side_of_a_wildcard_is_served() {
        assert_eq!(
            admitted(&["*.example.com"], "default", "a.example.com"),
            ["a.example.com"]
        );
        assert_eq!(
            admitted(&["a.example.com", "b.example.com"], "default", "*"),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(
            admitted(&["a.example.com"], "default", "*.example.com"),
            ["a.example.com"]
        );
        assert!(admitted(&["*.example.com"], "default", "example.com").is_empty());
        assert!(admitted(&["a.example.com"], "default", "b.example.com").is_empty());
    }

    #[test]
    fn the_namespace_part_is_the_virtual_service_namespace() {
        assert_eq!(
            admitted(&["shop/*"], "shop", "a.example.com"),
            ["a.example.com"]
        );
        assert!(admitted(&["shop/*"], "default", "a.example.com").is_empty());
        assert!(admitted(&["./*"], "default", "a.example.com").is_empty());
        assert_eq!(
            admitted(&["./*"], "istio-system", "a.example.com"),
            ["a.example.com"]
        );
        assert!(admitted(&["~/*"], "default", "a.example.com").is_empty());
    }

    #[test]
    fn tls_and_tcp_servers_are_not_served() {
        let gw = Resource {
            meta: Default::default(),
            origin: Default::default(),
            spec: Gateway::default(),
        };
        for (protocol, served) in [
            ("http", true),
            ("HTTP2", true),
            ("grpc", true),
            ("HTTPS", false),
            ("TLS", false),
            ("TCP", false),
        ] {
            let mut s = server(&["*"]);
            s.port.protocol = protocol.into();
            assert_eq!(serves_http(&gw, &s), served, "{protocol}");
        }
    }
}
