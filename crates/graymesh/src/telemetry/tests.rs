//! The parser (against the proxy's own encoder and hand-written text), the counter arithmetic
//! (restarts, quantiles), the embedded windows over scripted scrapes, and the Prometheus
//! answer parsing.

use super::counters::{quantile, Counters, SeriesKey};
use super::embedded::EmbeddedTelemetry;
use super::prometheus::{encode, parse_answer};
use super::text::{parse, Scrape};
use graymesh_xds::node::NodeKind;
use graymesh_xds::status::AdminTarget;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

const FQDN: &str = "reviews.default.svc.cluster.local";

fn key(version: &str) -> SeriesKey {
    SeriesKey {
        service: FQDN.into(),
        version: version.into(),
    }
}

// === parser ===

/// What a real proxy writes: the proxy's registry and encoder, requests counted the way the
/// HTTP/1 path counts them, from two callers (their series are summed: the analysis keys on the
/// destination only).
#[test]
fn parses_what_the_proxy_encodes() {
    use graymesh_proxy::http::Direction;
    use graymesh_proxy::metrics::{ProxyMetrics, RequestLabels, Source};
    let metrics = ProxyMetrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let cluster = format!("outbound|9080|v2|{FQDN}");
    let productpage = std::sync::Arc::new(Source {
        service: "productpage".into(),
        version: "v1".into(),
    });
    for (i, code) in [200, 200, 200, 503, 500].into_iter().enumerate() {
        let mut labels = RequestLabels::new(Direction::Outbound);
        labels.set_destination(&graymesh_proxy::metrics::Destination::of_cluster(&cluster));
        labels.set_source((i % 2 == 0).then(|| productpage.clone()));
        metrics.count(labels, code, "", Instant::now());
    }
    // The destination's sidecar counts the same requests inbound: not counted again.
    let mut inbound = RequestLabels::new(Direction::Inbound);
    inbound.set_destination(&graymesh_proxy::metrics::Destination::new("reviews", "v2"));
    metrics.count(inbound, 200, "", Instant::now());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

    let scrape = parse(&text).unwrap();
    let start = scrape.start_time.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now && start > now - 60.0,
        "start time {start}, now {now}"
    );
    let series = scrape.series;
    assert_eq!(series.len(), 1, "{series:?}");
    let c = &series[&key("v2")];
    assert_eq!((c.requests, c.server_errors), (5, 2));
    assert_eq!((c.grpc_requests, c.grpc_errors), (0, 0));
    let (last_le, total) = *c.buckets.last().unwrap();
    assert!(last_le.is_infinite() && total == 5, "{:?}", c.buckets);
    assert_eq!(c.buckets.len(), 19, "18 finite bounds and +Inf");
}

#[test]
fn parses_grpc_statuses_escapes_and_sums_flags() {
    let text = r#"# HELP graymesh_proxy_requests Requests.
# TYPE graymesh_proxy_requests counter
graymesh_proxy_requests_total{direction="outbound",destination_service="a.b",destination_version="v\"1",response_code="200",grpc_status="0",flags=""} 7
graymesh_proxy_requests_total{direction="outbound",destination_service="a.b",destination_version="v\"1",response_code="200",grpc_status="14",flags=""} 3
graymesh_proxy_requests_total{direction="outbound",destination_service="a.b",destination_version="v\"1",response_code="503",grpc_status="",flags="UH"} 2
graymesh_proxy_requests_total{direction="inbound",destination_service="a",destination_version="v\"1",response_code="200",grpc_status="0",flags=""} 99
graymesh_proxy_request_duration_seconds_bucket{le="0.1",direction="outbound",destination_service="a.b",destination_version="v\"1"} 4
graymesh_proxy_request_duration_seconds_bucket{le="+Inf",direction="outbound",destination_service="a.b",destination_version="v\"1"} 12
graymesh_proxy_retries_total 5
# EOF
"#;
    let series = parse(text).unwrap().series;
    let c = &series[&SeriesKey {
        service: "a.b".into(),
        version: "v\"1".into(),
    }];
    assert_eq!(c.requests, 12);
    assert_eq!(c.server_errors, 2);
    assert_eq!((c.grpc_requests, c.grpc_errors), (10, 3));
    assert_eq!(c.buckets, vec![(0.1, 4), (f64::INFINITY, 12)]);
}

#[test]
fn a_malformed_line_is_an_error_naming_it() {
    let cases = [
        (
            "graymesh_proxy_requests_total{direction=\"outbound\" 3\n",
            "line 1: label direction: expected ',' or '}' after the value",
        ),
        (
            "x 1\ngraymesh_proxy_requests_total{direction=\"outbound\"} many\n",
            "line 2: value \"many\" is not a number",
        ),
        (
            "graymesh_proxy_requests_total{direction=\"outbound\"} 1.5\n",
            "line 1: value 1.5 is not a count",
        ),
        (
            "graymesh_proxy_request_duration_seconds_bucket{direction=\"outbound\"} 1\n",
            "line 1: bucket without an le label",
        ),
        (
            "graymesh_proxy_requests_total{direction=\"outbound} 1\n",
            "line 1: label direction: unterminated value",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with(want),
            "{text:?}: got {err:?}, want {want:?}"
        );
    }
}

// === counters ===

fn counters(requests: u64, errors: u64, buckets: &[(f64, u64)]) -> Counters {
    Counters {
        requests,
        server_errors: errors,
        buckets: buckets.to_vec(),
        ..Counters::default()
    }
}

#[test]
fn an_increase_is_the_difference_and_a_restart_counts_from_zero() {
    let before = counters(10, 1, &[(0.1, 8), (f64::INFINITY, 10)]);
    let after = counters(15, 3, &[(0.1, 9), (f64::INFINITY, 15)]);
    let inc = after.increase_since(Some(&before)).unwrap();
    assert_eq!((inc.requests, inc.server_errors), (5, 2));
    assert_eq!(inc.buckets, vec![(0.1, 1), (f64::INFINITY, 4)]);

    assert_eq!(before.increase_since(Some(&before)), None, "nothing new");

    let restarted = counters(4, 0, &[(0.1, 4), (f64::INFINITY, 4)]);
    let inc = restarted.increase_since(Some(&after)).unwrap();
    assert_eq!((inc.requests, inc.server_errors), (4, 0));
    assert_eq!(inc.buckets, vec![(0.1, 4)]);
}

#[test]
fn quantiles_interpolate_like_histogram_quantile() {
    let inf = f64::INFINITY;
    // 100 observations: 50 in (0, 0.1], 49 in (0.1, 0.2], 1 above 0.4.
    let b = [(0.1, 50), (0.2, 99), (0.4, 99), (inf, 100)];
    assert_eq!(quantile(0.5, &b), Some(0.1));
    let p90 = quantile(0.9, &b).unwrap();
    assert!((p90 - (0.1 + 0.1 * 40.0 / 49.0)).abs() < 1e-12, "{p90}");
    assert_eq!(quantile(0.99, &b), Some(0.2));
    assert_eq!(
        quantile(0.999, &b),
        Some(0.4),
        "the +Inf bucket answers the last bound"
    );
    assert_eq!(quantile(0.99, &[(0.1, 0), (inf, 0)]), None);
    assert_eq!(quantile(0.99, &[]), None);
    // The first bucket starts at 0.
    assert_eq!(quantile(0.5, &[(0.2, 10), (inf, 10)]), Some(0.1));
}

// === embedded windows ===

fn target(node: &str, port: u16) -> AdminTarget {
    AdminTarget {
        node_id: node.into(),
        kind: NodeKind::Sidecar,
        namespace: "default".into(),
        admin_addr: ([127, 0, 0, 1], port).into(),
    }
}

fn scrape(version: &str, requests: u64, errors: u64) -> Scrape {
    scrape_of(Some(1.0), version, requests, errors)
}

fn scrape_of(start_time: Option<f64>, version: &str, requests: u64, errors: u64) -> Scrape {
    let mut series = HashMap::new();
    let buckets = [(0.01, requests), (f64::INFINITY, requests)];
    series.insert(key(version), counters(requests, errors, &buckets));
    Scrape { start_time, series }
}

#[test]
fn windows_add_up_increases_across_proxies_restarts_and_disconnects() {
    let t = EmbeddedTelemetry::new(Duration::from_secs(1), Duration::from_secs(60));
    let (a, b) = (target("a", 1000), target("b", 2000));
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    // First scrapes are baselines: what was counted before is in no window.
    t.record(&a, at(0), Ok(scrape("v2", 100, 10)));
    t.record(&b, at(0), Ok(scrape("v2", 7, 0)));
    t.record(&a, at(1), Ok(scrape("v2", 110, 15)));
    t.record(&b, at(1), Ok(scrape("v2", 10, 1)));
    // a restarts (same admin address): its counters start again from zero.
    t.record(&a, at(2), Ok(scrape("v2", 4, 4)));
    // b fails once, then is gone (disconnected): what it counted stays.
    t.record(&b, at(2), Err("connection refused".into()));
    let now = at(2);
    let w = t
        .window_at(&key("v2"), Duration::from_secs(10), now)
        .unwrap();
    assert_eq!((w.requests, w.server_errors), (10 + 3 + 4, 5 + 1 + 4));
    // All 17 in the first bucket (0, 10ms]: the 99th is 99% of the way into it.
    let p99 = w.p99.unwrap().as_secs_f64();
    assert!((p99 - 0.0099).abs() < 1e-6, "{p99}");
    // The last second holds only a's restart.
    let w = t
        .window_at(&key("v2"), Duration::from_secs(1), now)
        .unwrap();
    assert_eq!((w.requests, w.server_errors), (4, 4));
    // No traffic to v1: zeros, no p99.
    let w = t
        .window_at(&key("v1"), Duration::from_secs(10), now)
        .unwrap();
    assert_eq!((w.requests, w.p99), (0, None));

    let proxies = t.proxies();
    assert_eq!(proxies[1].node_id, "b");
    assert_eq!(proxies[1].failures, 1);
    assert_eq!(proxies[1].last_error.as_deref(), Some("connection refused"));

    // Past the history, increases are dropped and the window is refused.
    t.prune(at(70));
    let err = t
        .window_at(&key("v2"), Duration::from_secs(61), at(70))
        .unwrap_err();
    assert!(err.contains("longer than the 60s of history"), "{err}");
    let err = t
        .window_at(&key("v2"), Duration::from_secs(60), at(70))
        .unwrap_err();
    assert!(err.contains("no proxy was scraped successfully"), "{err}");
}

#[test]
fn a_new_start_time_is_a_new_process_even_past_its_old_counts() {
    let t = EmbeddedTelemetry::new(Duration::from_secs(1), Duration::from_secs(60));
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    t.record(
        &target("a", 1000),
        at(0),
        Ok(scrape_of(Some(10.0), "v1", 5, 0)),
    );
    t.record(
        &target("a", 1000),
        at(1),
        Ok(scrape_of(Some(10.0), "v1", 8, 0)),
    );
    // Restarted at 11.5 and counted 9 already: more than the 8 before, still all new.
    t.record(
        &target("a", 1000),
        at(2),
        Ok(scrape_of(Some(11.5), "v1", 9, 0)),
    );
    t.record(
        &target("a", 1000),
        at(3),
        Ok(scrape_of(Some(11.5), "v1", 10, 0)),
    );
    let w = t
        .window_at(&key("v1"), Duration::from_secs(10), at(3))
        .unwrap();
    assert_eq!(w.requests, 3 + 9 + 1);
}

#[test]
fn a_new_admin_address_is_a_new_process() {
    let t = EmbeddedTelemetry::new(Duration::from_secs(1), Duration::from_secs(60));
    let t0 = Instant::now();
    t.record(&target("a", 1000), t0, Ok(scrape("v1", 50, 0)));
    // Restarted on another port, and already past its old count.
    let later = t0 + Duration::from_secs(1);
    t.record(&target("a", 1001), later, Ok(scrape("v1", 60, 0)));
    let w = t
        .window_at(&key("v1"), Duration::from_secs(5), later)
        .unwrap();
    assert_eq!(w.requests, 60);
}

// === Prometheus answers ===

#[test]
fn prometheus_answers() {
    let ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"41.99"]}]}}"#;
    assert_eq!(parse_answer(ok), Ok(Some(41.99)));
    let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert_eq!(parse_answer(empty), Ok(None));
    let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"NaN"]}]}}"#;
    assert_eq!(parse_answer(nan), Ok(None));
    let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
    assert_eq!(
        parse_answer(bad),
        Err(r#"status "error": "bad_data" "parse error at char 5""#.to_string())
    );
    let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert_eq!(
        parse_answer(matrix),
        Err(r#"expected a vector, got resultType "matrix""#.to_string())
    );
    assert!(parse_answer(b"<html>")
        .unwrap_err()
        .starts_with("answer is not JSON"));
}

#[test]
fn query_parameters_are_percent_encoded() {
    assert_eq!(
        encode(r#"sum(x{a="b c"}[5s])"#),
        "sum%28x%7Ba%3D%22b%20c%22%7D%5B5s%5D%29"
    );
}
