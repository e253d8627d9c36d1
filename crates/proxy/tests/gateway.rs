//! The proxy as an ingress gateway, end to end: the real pilot (in process) serves a Gateway and a
//! VirtualService bound to it; the real proxy, in the gateway role and labelled
//! `istio=ingressgateway`, serves the Gateway's port and routes by that VirtualService to testkit
//! apps. Every load is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use graymesh_testkit::{run_load, Http1Client, LoadCall, LoadPlan, LoadReport};
use mesh::{app, free_addr, mesh_yaml, Pilot, Proxy};
use std::net::SocketAddr;
use std::time::Duration;

const PUBLIC_HOST: &str = "bookinfo.example.com";

/// The mesh's own VirtualService sends everything to v1, so v2 answers prove the gateway routes
/// by the VirtualService bound to it, not by the mesh's.
const MESH_ALL_V1: &str = "  - route: [{destination: {host: reviews, subset: v1}}]\n";

/// An ingress Gateway on `port` for any host, and the entry service's canary: `/api` with
/// `x-canary: true` to v2, the rest 90/10.
fn gateway_yaml(port: u16) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: ingress}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bookinfo}}\nspec:\n  hosts: [{PUBLIC_HOST}]\n  gateways: [ingress]\n  http:\n  - name: canary-header\n    match: [{{uri: {{prefix: /api}}, headers: {{x-canary: {{exact: \"true\"}}}}}}]\n    route: [{{destination: {{host: reviews, subset: v2}}}}]\n  - name: split\n    route:\n    - {{destination: {{host: reviews, subset: v1}}, weight: 90}}\n    - {{destination: {{host: reviews, subset: v2}}, weight: 10}}\n"
    )
}

fn plan(n: u64) -> LoadPlan {
    LoadPlan {
        max_requests: n,
        max_duration: Duration::from_secs(30),
        concurrency: 8,
    }
}

/// `GET http://<host><path>` sent to the gateway's port, so `Host` is `host`.
fn call(gateway: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> LoadCall {
    LoadCall::Http1 {
        client: Http1Client::via(gateway),
        url: format!("http://{host}{path}"),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn share(report: &LoadReport, version: &str) -> f64 {
    *report.by_version.get(version).unwrap_or(&0) as f64 / report.ok.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_the_entry_service_canary_by_its_virtual_service() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let server = free_addr();
    let yaml = mesh_yaml(&[&v1, &v2], "", MESH_ALL_V1) + &gateway_yaml(server.port());
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let gateway = Proxy::start_gateway(vec![pilot.addr], server).await;

    // The canary header on /api: all v2, whether Host carries the port or not.
    let canary = [("x-canary", "true")];
    let with_port = format!("{PUBLIC_HOST}:{}", server.port());
    for host in [PUBLIC_HOST, with_port.as_str()] {
        let report = run_load(call(server, host, "/api/reviews", &canary), plan(200)).await;
        assert_eq!(report.failed, 0, "Host {host}: {:?}", report.failures);
        assert_eq!(report.ok, 200, "Host {host}");
        assert_eq!(
            share(&report, "v2"),
            1.0,
            "Host {host}: {:?}",
            report.by_version
        );
    }

    // The header off /api, or no header: the 90/10 split, within ±5 points over 1,000 requests.
    let rest = [
        ("header, not /api", call(server, PUBLIC_HOST, "/", &canary)),
        (
            "/api, no header",
            call(server, PUBLIC_HOST, "/api/reviews", &[]),
        ),
    ];
    for (name, load) in rest {
        let report = run_load(load, plan(1000)).await;
        assert_eq!(report.failed, 0, "{name}: {:?}", report.failures);
        assert_eq!(report.ok, 1000, "{name}");
        let v2_share = share(&report, "v2");
        assert!(
            (0.05..=0.15).contains(&v2_share),
            "{name}: v2 got {:.1}%, want 10 ± 5",
            v2_share * 100.0
        );
    }

    // A host the Gateway's VirtualServices do not serve: 404 from the gateway, not a backend.
    let other = Http1Client::via(server)
        .get("http://shop.example.com/api/reviews", &canary)
        .await
        .unwrap();
    assert_eq!(other.status, 404, "{}", other.text());
    assert!(other.version.is_none(), "no app answered: {other:?}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_only_the_hosts_its_server_admits() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let server = free_addr();
    // The same canary, but the server admits only another host: the VirtualService's host is not
    // served, though the VirtualService is bound to the Gateway.
    let yaml = mesh_yaml(&[&v1, &v2], "", MESH_ALL_V1)
        + &gateway_yaml(server.port()).replace("hosts: [\"*\"]", "hosts: [shop.example.com]");
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let gateway = Proxy::start_gateway(vec![pilot.addr], server).await;
    for host in [PUBLIC_HOST, "shop.example.com"] {
        let reply = Http1Client::via(server)
            .get(
                &format!("http://{host}/api/reviews"),
                &[("x-canary", "true")],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 404, "Host {host}: {}", reply.text());
    }
    gateway.stop().await;
}

/// A gateway given a service identity says so to the services it calls (`x-graymesh-source`, which
/// their sidecars read for the source labels) and labels its own requests with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_a_service_is_the_source_of_its_requests() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let server = free_addr();
    let yaml = mesh_yaml(&[&v1, &v2], "", MESH_ALL_V1) + &gateway_yaml(server.port());
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let opts = graymesh_proxy::run::ProxyOptions {
        service: Some("ingress".into()),
        service_version: Some("v7".into()),
        ..mesh::gateway_options(&[pilot.addr], server)
    };
    let gateway = Proxy::spawn(opts, server).await;
    let reply = Http1Client::via(server)
        .get(
            &format!("http://{PUBLIC_HOST}/api/reviews"),
            &[("x-canary", "true")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json().unwrap();
    assert_eq!(echo["headers"]["x-graymesh-source"], "ingress;v7", "{echo}");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("source_service=\"ingress\",source_version=\"v7\""),
        "{metrics}"
    );
    gateway.stop().await;
}
