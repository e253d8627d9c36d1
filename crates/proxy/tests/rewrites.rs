//! Path rewrites and redirects end to end, over HTTP/1.1 (the fast path), HTTP/1.0 (hyper's
//! path) and HTTP/2: Istio's `uriRegexRewrite` through the real pilot, and the Envoy fields pilot
//! never sends (a redirect's `prefix_rewrite`, `regex_rewrite`, `strip_query`) from a control
//! plane that serves Envoy resources as written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use envoy_types::pb::envoy::config::route::v3::{
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode},
    route::Action,
    route_action::ClusterSpecifier,
    route_match::PathSpecifier,
    RedirectAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use graymesh_proxy::run::ProxyOptions;
use graymesh_testkit::{Http1Client, Http2Client, Reply};
use mesh::envoy_plane::{http_listener, static_cluster, EnvoyPlane};
use mesh::{app, free_addr, mesh_yaml, options, Pilot, Proxy};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The path and query the app received, from its echo.
fn seen(reply: &Reply) -> (String, Option<String>) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json().unwrap();
    let query = json["query"].as_str().map(str::to_string);
    (json["path"].as_str().unwrap().to_string(), query)
}

/// An HTTP/1.0 GET (the proxy hands HTTP/1.0 to hyper and its general path): the whole answer.
async fn http10_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_string(&mut answer),
    )
    .await
    .expect("no answer within 10 s")
    .unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istios_uri_regex_rewrite_rewrites_the_path_and_keeps_the_query() {
    let v1 = app("v1").await;
    let vs = r#"  - match: [{uri: {prefix: /api/}}]
    rewrite: {uriRegexRewrite: {match: 'v1/(\d+)', rewrite: 'v2/n\1'}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    // Every match in the path is replaced; the query string, which matches too, is not touched.
    let url = proxy.url("/api/v1/7/v1/8?q=v1/9&x=1");
    let expected = (
        "/api/v2/n7/v2/n8".to_string(),
        Some("q=v1/9&x=1".to_string()),
    );
    let h1 = Http1Client::new().get(&url, &[]).await.unwrap();
    assert_eq!(seen(&h1), expected, "HTTP/1.1");
    let h2 = Http2Client::new().get(&url, &[]).await.unwrap();
    assert_eq!(seen(&h2), expected, "HTTP/2");
    let h10 = http10_get(proxy.upstream, "/api/v1/7/v1/8?q=v1/9&x=1").await;
    assert!(h10.starts_with("HTTP/1.0 200"), "{h10}");
    assert!(
        h10.contains(r#""path":"/api/v2/n7/v2/n8","query":"q=v1/9&x=1""#),
        "HTTP/1.0: {h10}"
    );
    // The route without a rewrite forwards the path as received.
    let plain = Http1Client::new()
        .get(&proxy.url("/other/v1/7?q=1"), &[])
        .await
        .unwrap();
    assert_eq!(
        seen(&plain),
        ("/other/v1/7".to_string(), Some("q=1".to_string()))
    );
    proxy.stop().await;
}

// === From a control plane that is not pilot ===

fn regex(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern.into(),
            ..Default::default()
        }),
        substitution: substitution.into(),
    }
}

fn route(prefix: &str, action: Action) -> Route {
    Route {
        name: prefix.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    }
}

fn redirect(path: PathRewriteSpecifier, strip_query: bool, code: RedirectResponseCode) -> Action {
    Action::Redirect(RedirectAction {
        path_rewrite_specifier: Some(path),
        strip_query,
        response_code: code as i32,
        ..Default::default()
    })
}

fn routes(name: &str, routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Redirects that rewrite the path, and a forward that collapses repeated slashes.
fn web_routes() -> RouteConfiguration {
    use PathRewriteSpecifier as P;
    use RedirectResponseCode as C;
    let collapse = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster("app".into())),
        regex_rewrite: Some(regex("//+", "/")),
        ..Default::default()
    };
    routes(
        "web",
        vec![
            route(
                "/old/",
                redirect(P::PrefixRewrite("/new/".into()), false, C::MovedPermanently),
            ),
            route(
                "/strip/",
                redirect(P::PrefixRewrite("/kept/".into()), true, C::Found),
            ),
            route(
                "/items/",
                redirect(
                    P::RegexRewrite(regex(r"^/items/(\d+)/(\w+)$", r"/catalog/\2/\1")),
                    false,
                    C::PermanentRedirect,
                ),
            ),
            route(
                "/search-old",
                redirect(
                    P::PathRedirect("/search?from=old".into()),
                    false,
                    C::SeeOther,
                ),
            ),
            route("/", Action::Route(collapse)),
        ],
    )
}

fn plain_options(plane: &EnvoyPlane, node: &str) -> ProxyOptions {
    ProxyOptions {
        node_id: node.into(),
        ..options(&[plane.addr])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_rewrite_the_path_as_envoy_does_over_http1_and_http2() {
    let v1 = app("v1").await;
    let web = free_addr();
    let plane = EnvoyPlane::start(
        &[http_listener("web", web, "web")],
        &[web_routes()],
        &[static_cluster("app", v1.addr())],
    )
    .await;
    let proxy = Proxy::spawn(plain_options(&plane, "redirects"), web).await;
    let base = format!("http://{web}");
    let cases = [
        // prefix_rewrite: the matched prefix replaced, the query kept
        ("/old/a/b?x=1", 301, format!("{base}/new/a/b?x=1")),
        // strip_query
        ("/strip/a?x=1&y=2", 302, format!("{base}/kept/a")),
        // regex_rewrite with groups, on the path only
        (
            "/items/42/red?ref=home",
            308,
            format!("{base}/catalog/red/42?ref=home"),
        ),
        // a path_redirect with a query of its own replaces the request's
        ("/search-old?q=1", 303, format!("{base}/search?from=old")),
    ];
    let h1 = Http1Client::new();
    let h2 = Http2Client::new();
    for (path, status, location) in &cases {
        let url = format!("{base}{path}");
        for (protocol, reply) in [
            ("HTTP/1.1", h1.get(&url, &[]).await.unwrap()),
            ("HTTP/2", h2.get(&url, &[]).await.unwrap()),
        ] {
            assert_eq!(reply.status, *status, "{protocol} {path}");
            assert_eq!(
                reply.headers["location"].to_str().unwrap(),
                location,
                "{protocol} {path}"
            );
        }
    }
    // A forward's regex_rewrite from this control plane too.
    let url = format!("{base}/a//b///c?x=//y");
    let expected = ("/a/b/c".to_string(), Some("x=//y".to_string()));
    assert_eq!(
        seen(&h1.get(&url, &[]).await.unwrap()),
        expected,
        "HTTP/1.1"
    );
    assert_eq!(seen(&h2.get(&url, &[]).await.unwrap()), expected, "HTTP/2");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rewrite_pattern_is_nacked_with_the_reason() {
    let web = free_addr();
    let bad = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster("app".into())),
        regex_rewrite: Some(regex("/(v1", "/v2")),
        ..Default::default()
    };
    let plane = EnvoyPlane::start(
        &[http_listener("web", web, "web")],
        &[routes("web", vec![route("/", Action::Route(bad))])],
        &[static_cluster("app", free_addr())],
    )
    .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(graymesh_proxy::run::run(
        plain_options(&plane, "nacked"),
        async move {
            let _ = stopped.await;
        },
    ));
    let nack = plane.nack().await;
    assert!(
        nack.contains("RouteConfiguration web: virtual host web: route \"/\": invalid regex_rewrite pattern \"/(v1\""),
        "{nack}"
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), proxy).await;
}
