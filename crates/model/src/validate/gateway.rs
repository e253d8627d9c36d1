//! Checks of one Gateway on its own: servers, their ports, protocols and hosts.

use super::{fields, Findings};
use crate::istio::{Gateway, Server};

/// The server protocols graymesh's gateway can serve (Istio's names; matched case-insensitively).
pub(super) const GATEWAY_PROTOCOLS: [&str; 6] = ["HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS"];

pub(super) fn check(f: &mut Findings, gateway: &Gateway) {
    if gateway.servers.is_empty() {
        f.error("spec.servers", "at least one server is required");
    }
    for (i, server) in gateway.servers.iter().enumerate() {
        self::server(f, &format!("spec.servers[{i}]"), server);
    }
}

fn server(f: &mut Findings, path: &str, server: &Server) {
    fields::port(f, format!("{path}.port.number"), server.port.number);
    fields::optional_port(
        f,
        format!("{path}.port.targetPort"),
        server.port.target_port,
    );
    let protocol = &server.port.protocol;
    if !GATEWAY_PROTOCOLS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
    {
        f.error(
            format!("{path}.port.protocol"),
            format!(
                "unsupported protocol {protocol:?}, expected one of {}",
                GATEWAY_PROTOCOLS.join(", ")
            ),
        );
    }
    fields::hosts(f, &format!("{path}.hosts"), &server.hosts, "hosts: [\"*\"]");
}
