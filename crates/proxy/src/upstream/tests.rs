//! Endpoint picking and outlier ejection, on the paused clock.

use super::outlier::{now_ms, room_to_eject, Outcome};
use super::*;
use crate::table::{ClusterSpec, Endpoint, LbPolicy, OutlierSpec, Thresholds};
use std::collections::HashMap as Map;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn spec(lb: LbPolicy, n: u8) -> ClusterSpec {
    ClusterSpec {
        name: "c".into(),
        lb,
        upstream: Default::default(),
        endpoints: (1..=n)
            .map(|i| Endpoint {
                addr: SocketAddr::from(([10, 0, 0, i], 80)),
                weight: 1,
            })
            .collect(),
        connect_timeout: Duration::from_secs(1),
        thresholds: Thresholds::default(),
        outlier: Some(OutlierSpec {
            consecutive_5xx: Some(3),
            consecutive_gateway_failure: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }),
    }
}

fn state_for(spec: &ClusterSpec) -> ClusterState {
    ClusterState {
        endpoints: spec
            .endpoints
            .iter()
            .map(|e| (e.addr, Arc::default()))
            .collect(),
        counters: Arc::default(),
    }
}

#[test]
fn round_robin_visits_every_endpoint_evenly() {
    let s = spec(LbPolicy::RoundRobin, 3);
    let st = state_for(&s);
    let mut counts: Map<SocketAddr, u32> = Map::new();
    for _ in 0..300 {
        *counts
            .entry(pick(&s, &st, None, 0, &[]).unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );
}

#[test]
fn ring_hash_keeps_a_key_on_its_endpoint_when_others_leave() {
    let s = spec(LbPolicy::RingHash, 5);
    let st = state_for(&s);
    let keys: Vec<u64> = (0..200)
        .map(|i| balance::hash_of(format!("user-{i}").as_bytes()))
        .collect();
    let before: Vec<SocketAddr> = keys
        .iter()
        .map(|k| pick(&s, &st, Some(*k), 0, &[]).unwrap())
        .collect();
    assert!(
        before
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 4,
        "keys spread over endpoints"
    );
    let mut smaller = s.clone();
    let removed = smaller.endpoints.remove(2).addr;
    for (k, was) in keys.iter().zip(&before) {
        let now = pick(&smaller, &st, Some(*k), 0, &[]).unwrap();
        if *was != removed {
            assert_eq!(now, *was, "a key whose endpoint stayed must not move");
        }
    }
}

#[test]
fn ring_hash_puts_a_key_on_the_same_endpoint_in_every_build() {
    // The endpoint a key gets is mesh-wide behaviour (stable hashes, no `DefaultHasher`): every
    // proxy with these endpoints must agree, whatever its build.
    let s = spec(LbPolicy::RingHash, 5);
    let st = state_for(&s);
    let chosen = |user: &str| pick(&s, &st, Some(balance::hash_of(user.as_bytes())), 0, &[]);
    assert_eq!(
        chosen("user-1"),
        Some(SocketAddr::from(([10, 0, 0, 5], 80)))
    );
    assert_eq!(
        chosen("user-2"),
        Some(SocketAddr::from(([10, 0, 0, 2], 80)))
    );
    assert_eq!(chosen("alice"), Some(SocketAddr::from(([10, 0, 0, 3], 80))));
}

#[test]
fn retries_avoid_endpoints_already_tried_while_others_remain() {
    let s = spec(LbPolicy::RoundRobin, 2);
    let st = state_for(&s);
    let (a, b) = (s.endpoints[0].addr, s.endpoints[1].addr);
    assert!((0..10).all(|_| pick(&s, &st, None, 0, &[a]) == Some(b)));
    assert!(
        pick(&s, &st, None, 0, &[a, b]).is_some(),
        "all tried: any will do"
    );
}

#[test]
fn least_request_prefers_the_less_loaded_endpoint() {
    let s = spec(LbPolicy::LeastRequest, 2);
    let st = state_for(&s);
    st.endpoints[&s.endpoints[0].addr]
        .in_flight
        .store(50, Ordering::Relaxed);
    let picks = (0..200)
        .filter(|_| pick(&s, &st, None, 0, &[]) == Some(s.endpoints[1].addr))
        .count();
    // Two random choices: the idle endpoint wins unless both draws land on the busy one (~1/4).
    assert!(picks > 120, "{picks}");
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_eject_until_the_ejection_time_passes() {
    let s = spec(LbPolicy::RoundRobin, 2);
    let st = state_for(&s);
    let bad = &st.endpoints[&s.endpoints[0].addr];
    let outlier = s.outlier.as_ref().unwrap();
    let room = || room_to_eject(0, 2, outlier.max_ejection_percent);
    assert!(!bad
        .health
        .record(Outcome::ServerError { gateway: false }, outlier, room));
    assert!(!bad
        .health
        .record(Outcome::ServerError { gateway: false }, outlier, room));
    assert!(
        bad.health
            .record(Outcome::ServerError { gateway: false }, outlier, room),
        "third 5xx ejects"
    );
    assert!(
        (0..20).all(|_| pick(&s, &st, None, now_ms(), &[]) == Some(s.endpoints[1].addr)),
        "ejected endpoint skipped"
    );

    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(
        !bad.health.is_ejected(now_ms()),
        "back after base_ejection_time"
    );
    assert_eq!(bad.health.times_ejected(), 1);
}

#[test]
fn success_resets_the_count_and_limits_hold() {
    let s = spec(LbPolicy::RoundRobin, 2);
    let st = state_for(&s);
    let ep = &st.endpoints[&s.endpoints[0].addr];
    let outlier = s.outlier.as_ref().unwrap();
    for _ in 0..2 {
        ep.health
            .record(Outcome::ServerError { gateway: true }, outlier, || true);
    }
    ep.health.record(Outcome::Success, outlier, || true);
    assert!(
        !ep.health
            .record(Outcome::ServerError { gateway: true }, outlier, || true),
        "count restarted"
    );
    assert!(
        room_to_eject(0, 10, 10),
        "at least one may always be ejected"
    );
    assert!(!room_to_eject(1, 10, 10), "10% of 10 is one");
    assert!(room_to_eject(1, 4, 50));
    assert!(!room_to_eject(2, 4, 50));
}

#[test]
fn every_endpoint_ejected_means_panic_mode_uses_them_all() {
    let s = spec(LbPolicy::RoundRobin, 2);
    let st = state_for(&s);
    let outlier = s.outlier.as_ref().unwrap();
    for e in st.endpoints.values() {
        for _ in 0..3 {
            e.health.record(Outcome::LocalFailure, outlier, || true);
        }
    }
    assert!(pick(&s, &st, None, now_ms(), &[]).is_some());
}

#[test]
fn guards_count_a_request_until_it_ends_however_it_ends() {
    let s = spec(LbPolicy::LeastRequest, 1);
    let state = state_for(&s);
    let endpoint = state.endpoint(&s.endpoints[0].addr).unwrap().clone();
    {
        let _one = InFlight::new(endpoint.clone());
        let _two = InFlight::new(endpoint.clone());
        let _retrying = Counted::retrying(&state.counters);
        assert_eq!(endpoint.in_flight.load(Ordering::Relaxed), 2);
        assert_eq!(state.counters.retries_in_flight.load(Ordering::Relaxed), 1);
    } // dropped as a cancelled request's future would drop them
    assert_eq!(endpoint.in_flight.load(Ordering::Relaxed), 0);
    assert_eq!(state.counters.retries_in_flight.load(Ordering::Relaxed), 0);
}

#[test]
fn a_retry_budget_scales_with_the_requests_in_flight() {
    use crate::table::RetryBudget;
    let fixed = Thresholds::default();
    assert_eq!(fixed.retry_limit(1000), 3, "Envoy's max_retries default");
    let budget = Thresholds {
        retry_budget: Some(RetryBudget {
            per_mille: 200,
            min_concurrency: 3,
        }),
        ..Thresholds::default()
    };
    assert_eq!(budget.retry_limit(0), 3, "never below the minimum");
    assert_eq!(budget.retry_limit(10), 3);
    assert_eq!(budget.retry_limit(100), 20, "20 % of 100 in flight");
}

#[tokio::test(start_paused = true)]
async fn ejected_endpoints_are_counted_at_scrape_time_until_readmitted() {
    use crate::metrics::upstream::EjectedEndpoints;
    let s = ClusterSpec {
        name: "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
        ..spec(LbPolicy::RoundRobin, 2)
    };
    let quiet = ClusterSpec {
        name: "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
        ..spec(LbPolicy::RoundRobin, 2)
    };
    let upstreams = Arc::new(Upstreams::default());
    let clusters: ClusterStates = [&s, &quiet]
        .into_iter()
        .map(|c| (c.name.clone(), Arc::new(state_for(c))))
        .collect();
    upstreams.clusters.store(Arc::new(clusters));
    let state = upstreams.cluster(&s.name).unwrap();
    let outlier = s.outlier.as_ref().unwrap();
    for _ in 0..3 {
        state.endpoints[&s.endpoints[0].addr]
            .health
            .record(Outcome::LocalFailure, outlier, || true);
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(EjectedEndpoints(upstreams.clone())));
    let scrape = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    let series = "graymesh_proxy_outlier_ejected_endpoints{destination_service=\"reviews.default.svc.cluster.local\",destination_version=\"v1\"}";
    let text = scrape();
    assert!(text.contains(&format!("{series} 1\n")), "{text}");
    assert!(
        !text.contains("destination_version=\"v2\""),
        "never ejected: no series"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    let text = scrape();
    assert!(text.contains(&format!("{series} 0\n")), "{text}");
}

/// Ejections in a row last longer each time (base × count, capped by max_ejection_time); each
/// interval an endpoint then stays in takes one off the count.
#[tokio::test(start_paused = true)]
async fn ejection_time_grows_with_repeats_is_capped_and_decays_with_health() {
    let mut s = spec(LbPolicy::RoundRobin, 2);
    if let Some(o) = s.outlier.as_mut() {
        o.interval = Duration::from_secs(10);
        o.max_ejection_time = Duration::from_secs(70);
    }
    let st = state_for(&s);
    let health = &st.endpoints[&s.endpoints[0].addr].health;
    let outlier = s.outlier.as_ref().unwrap();
    let trip =
        || (0..3).any(|_| health.record(Outcome::ServerError { gateway: false }, outlier, || true));
    // Ejected for `secs`: in just before, out just after.
    let lasts = |secs: u64| async move {
        tokio::time::advance(Duration::from_secs(secs) - Duration::from_millis(500)).await;
        let inside = health.is_ejected(now_ms());
        tokio::time::advance(Duration::from_secs(1)).await;
        inside && !health.is_ejected(now_ms())
    };
    assert!(trip());
    assert!(lasts(30).await, "first ejection: base 30 s");
    assert!(trip());
    assert!(lasts(60).await, "second in a row: 2 × 30 s");
    assert!(trip());
    assert!(
        lasts(70).await,
        "third: 90 s capped at max_ejection_time 70 s"
    );
    assert_eq!(health.times_ejected(), 3);
    // Two intervals in, healthy: the count comes down to 1, so the next ejection is 2 × 30 s.
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(trip());
    assert_eq!(health.times_ejected(), 2);
    assert!(lasts(60).await);
}
