//! Listeners. Proxyless gRPC clients get API listeners named exactly as they ask (`host:port`,
//! plus the short names a client in the node's namespace may dial); sidecars get real listeners
//! on the local ports they declared (`--upstream`) and the catch-all outbound port that routes by
//! Host. Gateways' listeners are built in `gateway.rs` with the same connection manager.

use super::routes::{virtual_host, FAULT_FILTER};
use super::{pb, Context, Translation};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, ApiListener, Filter, FilterChain, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter::ConfigType,
    HttpConnectionManager, HttpFilter, Rds,
};

/// The sidecar's catch-all outbound listener and its route configuration.
pub const OUTBOUND_CATCH_ALL_ADDR: (&str, u32) = ("127.0.0.1", 15001);
pub const OUTBOUND_ROUTE: &str = "outbound";

pub fn proxyless(ctx: &Context<'_>, out: &mut Translation) {
    let mut listeners = Vec::new();
    for service in ctx.visible_services() {
        for port in &service.ports {
            let route_name = format!("{}:{}", service.host, port.number);
            let hcm = hcm(&route_name, uses_fault(&out.routes, &route_name));
            for name in listener_names(ctx, &service.host, &service.namespace, port.number) {
                listeners.push(Listener {
                    name,
                    api_listener: Some(ApiListener {
                        api_listener: Some(pb::any(&hcm)),
                    }),
                    ..Default::default()
                });
            }
        }
    }
    out.listeners = listeners;
}

pub fn sidecar(ctx: &Context<'_>, out: &mut Translation) {
    for up in &ctx.class.upstreams {
        let Some(service) = ctx.service(&up.host, &ctx.class.namespace) else {
            tracing::debug!(host = %up.host, "declared upstream is not a known service; no listener");
            continue;
        };
        if service.port(up.port).is_none() {
            // Its route configuration does not exist: the listener would wait for it forever.
            tracing::debug!(host = %service.host, port = up.port, "declared upstream port is not a port of the service; no listener");
            continue;
        }
        if service
            .port(up.port)
            .is_some_and(|p| super::tcp::is_tcp(&p.protocol))
        {
            out.listeners.push(super::tcp::listener(
                ctx,
                service,
                up.port,
                &up.bind_ip,
                up.bind_port,
            ));
            continue;
        }
        let route_name = format!("{}:{}", service.host, up.port);
        let hcm = hcm(&route_name, uses_fault(&out.routes, &route_name));
        out.listeners
            .push(tcp_listener(&up.bind_ip, up.bind_port, &hcm));
    }
    let mut virtual_hosts: Vec<VirtualHost> = ctx
        .visible_services()
        .flat_map(|s| s.ports.iter().map(move |p| virtual_host(ctx, s, p.number)))
        .collect();
    keep_first_domains(&mut virtual_hosts);
    let catch_all = RouteConfiguration {
        name: OUTBOUND_ROUTE.to_string(),
        virtual_hosts,
        ..Default::default()
    };
    let fault = catch_all
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.routes)
        .any(|r| r.typed_per_filter_config.contains_key(FAULT_FILTER));
    out.routes.push(catch_all);
    let (ip, port) = match &ctx.class.outbound_addr {
        Some((ip, port)) => (ip.as_str(), *port),
        None => OUTBOUND_CATCH_ALL_ADDR,
    };
    out.listeners
        .push(tcp_listener(ip, port, &hcm(OUTBOUND_ROUTE, fault)));
}

/// Envoy rejects a route configuration in which two virtual hosts share a domain. A port-less
/// name (`reviews`) is offered by every port of a service and a short name may be shared by two
/// services: the first virtual host (services by host, ports ascending) keeps it.
fn keep_first_domains(virtual_hosts: &mut [VirtualHost]) {
    let mut seen = std::collections::HashSet::new();
    for vhost in virtual_hosts {
        vhost.domains.retain(|d| seen.insert(d.clone()));
    }
}

/// `host:port` and, for in-mesh services, the shorter names clients in the node's namespace dial.
fn listener_names(ctx: &Context<'_>, host: &str, namespace: &str, port: u32) -> Vec<String> {
    let mut names = vec![format!("{host}:{port}")];
    let suffix = format!(".{namespace}.{}", graymesh_model::host::CLUSTER_DOMAIN);
    if let Some(short) = host.strip_suffix(&suffix) {
        names.push(format!("{short}.{namespace}:{port}"));
        names.push(format!("{short}.{namespace}.svc:{port}"));
        if namespace == ctx.class.namespace {
            names.push(format!("{short}:{port}"));
        }
    }
    names
}

pub(super) fn uses_fault(routes: &[RouteConfiguration], name: &str) -> bool {
    routes
        .iter()
        .filter(|r| r.name == name)
        .flat_map(|r| &r.virtual_hosts)
        .flat_map(|v| &v.routes)
        .any(|r| r.typed_per_filter_config.contains_key(FAULT_FILTER))
}

pub(super) fn hcm(route_name: &str, with_fault: bool) -> HttpConnectionManager {
    let mut http_filters = Vec::new();
    if with_fault {
        http_filters.push(HttpFilter {
            name: FAULT_FILTER.into(),
            config_type: Some(ConfigType::TypedConfig(pb::any(&HttpFault::default()))),
            ..Default::default()
        });
    }
    // The router must be last: it is what sends the request on.
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(ConfigType::TypedConfig(pb::any(&Router::default()))),
        ..Default::default()
    });
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: route_name.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(pb::ads()),
            route_config_name: route_name.to_string(),
        })),
        http_filters,
        ..Default::default()
    }
}

pub(super) fn tcp_listener(ip: &str, port: u32, hcm: &HttpConnectionManager) -> Listener {
    Listener {
        name: format!("{ip}_{port}"),
        address: Some(pb::socket_address(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pb::any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
