//! Labels, the source header and the upstream metrics, read back from the text a scrape gets.

use super::source::{self, OwnSource, Source};
use super::*;
use prometheus_client::registry::Registry;

fn scrape(metrics: &ProxyMetrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[test]
fn cluster_names_split_into_service_and_version() {
    let cases = [
        (
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            ("reviews.default.svc.cluster.local", "v2"),
        ),
        (
            "outbound|9080||reviews.default.svc.cluster.local",
            ("reviews.default.svc.cluster.local", ""),
        ),
        ("inbound|8080||", ("inbound|8080||", "")),
        ("plain", ("plain", "")),
    ];
    for (cluster, want) in cases {
        assert_eq!(split_cluster(cluster), want, "{cluster}");
    }
}

#[test]
fn source_header_values_parse_strictly() {
    let source = |s: &str, v: &str| {
        Some(Source {
            service: s.into(),
            version: v.into(),
        })
    };
    let cases: [(&[u8], Option<Source>); 8] = [
        (b"productpage;v1", source("productpage", "v1")),
        (b"productpage;", source("productpage", "")),
        (b"a.b-c_d;1.2.3", source("a.b-c_d", "1.2.3")),
        (b"productpage", None),
        (b";v1", None),
        (b"product page;v1", None),
        (b"a;b;c", None),
        (b"caf\xc3\xa9;v1", None),
    ];
    for (value, want) in cases {
        assert_eq!(
            Source::parse(value),
            want,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    assert_eq!(
        Source::parse(&[b'a'; 254].iter().chain(b";v").copied().collect::<Vec<_>>()),
        None
    );
}

#[test]
fn the_own_source_is_made_once_and_only_with_a_service() {
    assert!(OwnSource::new("", "v1").is_none());
    let own = OwnSource::new("productpage", "v1").unwrap();
    assert_eq!(own.header.unwrap(), "productpage;v1");
    assert_eq!(own.source.service, "productpage");
    let unwritable = OwnSource::new("product page", "v1").unwrap();
    assert!(unwritable.header.is_none(), "labels kept, header not sent");
    assert_eq!(unwritable.source.version, "v1");
}

#[test]
fn received_sources_are_shared_per_thread() {
    let a = source::received(b"ratings;v2").unwrap();
    let b = source::received(b"ratings;v2").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(source::received(b"bad value").is_none());
}

#[test]
fn replace_keeps_only_this_proxys_source() {
    let mut headers = http::HeaderMap::new();
    headers.append(source::SOURCE_HEADER, "forged;v1".parse().unwrap());
    headers.append(source::SOURCE_HEADER, "forged;v2".parse().unwrap());
    let own = http::HeaderValue::from_static("productpage;v1");
    source::replace(&mut headers, Some(&own));
    let all: Vec<_> = headers.get_all(source::SOURCE_HEADER).iter().collect();
    assert_eq!(all, [&own]);
    source::replace(&mut headers, None);
    assert!(!headers.contains_key(source::SOURCE_HEADER));
}

#[tokio::test]
async fn requests_are_counted_by_source_and_destination() {
    let metrics = ProxyMetrics::default();
    let own = OwnSource::new("productpage", "v1").unwrap();
    for source in [Some(own.source.clone()), None, Some(own.source)] {
        let mut labels = RequestLabels::new(Direction::Outbound);
        labels.set_source(source);
        labels.set_destination(&Destination::of_cluster(
            "outbound|9080|v2|reviews.default.svc.cluster.local",
        ));
        metrics.count(labels, 200, "", Instant::now());
    }
    let text = scrape(&metrics);
    let series = |source: &str| {
        format!(
            "graymesh_proxy_requests_total{{direction=\"outbound\",{source}destination_service=\"reviews.default.svc.cluster.local\",destination_version=\"v2\",response_code=\"200\",grpc_status=\"\",flags=\"\"}}"
        )
    };
    let with = series("source_service=\"productpage\",source_version=\"v1\",");
    let without = series("source_service=\"\",source_version=\"\",");
    assert!(text.contains(&format!("{with} 2\n")), "{text}");
    assert!(text.contains(&format!("{without} 1\n")), "{text}");
    assert!(
        text.contains("graymesh_proxy_request_duration_seconds_count{direction=\"outbound\",source_service=\"productpage\",source_version=\"v1\",destination_service=\"reviews.default.svc.cluster.local\",destination_version=\"v2\"} 2\n"),
        "{text}"
    );
}

#[test]
fn upstream_connections_are_counted_while_they_live() {
    let metrics = ProxyMetrics::default();
    let first = metrics.upstream.http1.opened();
    let second = metrics.upstream.http1.opened();
    let tcp = metrics.upstream.tcp.opened();
    metrics.upstream.http2.failed();
    drop(first);
    let text = scrape(&metrics);
    for line in [
        "graymesh_proxy_upstream_connections{protocol=\"http1\"} 1\n",
        "graymesh_proxy_upstream_connections{protocol=\"http2\"} 0\n",
        "graymesh_proxy_upstream_connections{protocol=\"tcp\"} 1\n",
        "graymesh_proxy_upstream_connections_opened_total{protocol=\"http1\"} 2\n",
        "graymesh_proxy_upstream_connect_failures_total{protocol=\"http2\"} 1\n",
    ] {
        assert!(text.contains(line), "{line}in\n{text}");
    }
    drop((second, tcp));
    assert!(scrape(&metrics).contains("graymesh_proxy_upstream_connections{protocol=\"tcp\"} 0\n"));
}

#[test]
fn ejections_are_counted_by_cluster() {
    let metrics = ProxyMetrics::default();
    metrics
        .upstream
        .ejected("outbound|9080|v1|reviews.default.svc.cluster.local");
    metrics
        .upstream
        .ejected("outbound|9080|v1|reviews.default.svc.cluster.local");
    let text = scrape(&metrics);
    assert!(
        text.contains("graymesh_proxy_outlier_ejections_total{destination_service=\"reviews.default.svc.cluster.local\",destination_version=\"v1\"} 2\n"),
        "{text}"
    );
}
