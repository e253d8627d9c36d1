//! `judge` as a table: each row a step's thresholds, the old and the new version's stats, and
//! the exact verdict.

use super::*;
use graymesh_model::oam::{
    AnalysisStep, ErrorRateThreshold, LatencyThreshold, SuccessRateThreshold,
};
use graymesh_model::Duration as ModelDuration;
use std::time::Duration;

fn step() -> AnalysisStep {
    AnalysisStep {
        interval: ModelDuration::from_millis(60_000),
        checks: 1,
        min_requests: 100,
        max_failures: 1,
        success_rate: None,
        latency_p99: None,
        grpc_error_rate: None,
    }
}

fn min_success(min: f64) -> AnalysisStep {
    AnalysisStep {
        success_rate: Some(SuccessRateThreshold {
            min: Some(min),
            max_drop_from_baseline: None,
        }),
        ..step()
    }
}

fn max_drop(drop: f64) -> AnalysisStep {
    AnalysisStep {
        success_rate: Some(SuccessRateThreshold {
            min: None,
            max_drop_from_baseline: Some(drop),
        }),
        ..step()
    }
}

fn max_p99(ms: u64) -> AnalysisStep {
    AnalysisStep {
        latency_p99: Some(LatencyThreshold {
            max: Some(ModelDuration::from_millis(ms)),
            max_ratio_to_baseline: None,
        }),
        ..step()
    }
}

fn max_ratio(ratio: f64) -> AnalysisStep {
    AnalysisStep {
        latency_p99: Some(LatencyThreshold {
            max: None,
            max_ratio_to_baseline: Some(ratio),
        }),
        ..step()
    }
}

fn grpc(max: Option<f64>, max_rise: Option<f64>) -> AnalysisStep {
    AnalysisStep {
        grpc_error_rate: Some(ErrorRateThreshold {
            max,
            max_rise_from_baseline: max_rise,
        }),
        ..step()
    }
}

fn all_three() -> AnalysisStep {
    AnalysisStep {
        success_rate: min_success(99.0).success_rate,
        latency_p99: max_ratio(1.5).latency_p99,
        grpc_error_rate: grpc(None, Some(1.0)).grpc_error_rate,
        ..step()
    }
}

/// HTTP stats: `requests`, of which `errors` 5xx, p99 in milliseconds.
fn http(requests: u64, errors: u64, p99_ms: u64) -> VersionStats {
    VersionStats {
        requests,
        server_errors: errors,
        grpc_requests: 0,
        grpc_errors: 0,
        p99: (requests > 0).then(|| Duration::from_millis(p99_ms)),
    }
}

/// gRPC stats: `calls` calls, `errors` non-OK, none of them a 5xx.
fn calls(calls: u64, errors: u64) -> VersionStats {
    VersionStats {
        grpc_requests: calls,
        grpc_errors: errors,
        ..http(calls, 0, 10)
    }
}

fn pass(s: &str) -> Verdict {
    Verdict::Pass(s.to_string())
}
fn fail(s: &str) -> Verdict {
    Verdict::Fail(s.to_string())
}
fn hold(s: &str) -> Verdict {
    Verdict::Hold(s.to_string())
}

#[test]
fn verdicts() {
    let none = VersionStats::default();
    let cases: Vec<(&str, AnalysisStep, VersionStats, VersionStats, Verdict)> = vec![
        (
            "too little traffic holds, even with every request failing",
            min_success(99.0),
            http(1000, 0, 10),
            http(99, 99, 10),
            hold("99 requests to the new version < minRequests 100"),
        ),
        (
            "no traffic at all holds",
            min_success(99.0),
            http(1000, 0, 10),
            none,
            hold("0 requests to the new version < minRequests 100"),
        ),
        (
            "half the requests failing",
            min_success(99.0),
            http(1000, 0, 10),
            http(1000, 488, 10),
            fail("success rate 51.2% < min 99%"),
        ),
        (
            "exactly at the minimum passes",
            min_success(99.0),
            none,
            http(100, 1, 10),
            pass("100 requests; success rate 99% >= min 99%"),
        ),
        (
            "drop within bounds (equal to the bound)",
            max_drop(0.5),
            http(1000, 5, 10),
            http(1000, 10, 10),
            pass("1000 requests; success rate 99% is 0.5 points below the old version's 99.5% (max drop 0.5)"),
        ),
        (
            "drop too large",
            max_drop(0.5),
            http(1000, 0, 10),
            http(1000, 30, 10),
            fail("success rate 97% is 3 points below the old version's 100% > max drop 0.5"),
        ),
        (
            "better than the baseline is no drop",
            max_drop(0.5),
            http(1000, 50, 10),
            http(1000, 0, 10),
            pass("1000 requests; success rate 100% is 0 points below the old version's 95% (max drop 0.5)"),
        ),
        (
            "relative success rate without baseline traffic holds",
            max_drop(0.5),
            none,
            http(1000, 0, 10),
            hold("success rate 100%: no requests to the old version to compare with (maxDropFromBaseline 0.5)"),
        ),
        (
            "p99 under the absolute max",
            max_p99(800),
            none,
            http(200, 0, 750),
            pass("200 requests; p99 750ms <= max 800ms"),
        ),
        (
            "p99 over the absolute max",
            max_p99(800),
            none,
            http(200, 0, 812),
            fail("p99 812ms > max 800ms"),
        ),
        (
            "p99 ratio within bounds",
            max_ratio(1.5),
            http(200, 0, 20),
            http(200, 0, 30),
            pass("200 requests; p99 30ms is 1.5x the old version's 20ms (max 1.5x)"),
        ),
        (
            "p99 ratio too high",
            max_ratio(1.5),
            http(200, 0, 10),
            http(200, 0, 35),
            fail("p99 35ms is 3.5x the old version's 10ms > max 1.5x"),
        ),
        (
            "p99 ratio without baseline traffic holds",
            max_ratio(1.5),
            none,
            http(200, 0, 35),
            hold("p99 35ms: no requests to the old version to compare with (maxRatioToBaseline 1.5)"),
        ),
        (
            "gRPC error rate not judged without gRPC calls",
            grpc(Some(1.0), None),
            none,
            http(500, 0, 10),
            pass("500 requests"),
        ),
        (
            "gRPC error rate under max",
            grpc(Some(1.0), None),
            none,
            calls(1000, 5),
            pass("1000 requests; gRPC error rate 0.5% <= max 1%"),
        ),
        (
            "gRPC error rate over max",
            grpc(Some(1.0), None),
            none,
            calls(1000, 25),
            fail("gRPC error rate 2.5% > max 1%"),
        ),
        (
            "gRPC rise within bounds",
            grpc(None, Some(1.0)),
            calls(1000, 10),
            calls(1000, 15),
            pass("1000 requests; gRPC error rate 1.5% is 0.5 points above the old version's 1% (max rise 1)"),
        ),
        (
            "gRPC rise too large",
            grpc(None, Some(1.0)),
            calls(1000, 10),
            calls(1000, 40),
            fail("gRPC error rate 4% is 3 points above the old version's 1% > max rise 1"),
        ),
        (
            "gRPC rise without baseline gRPC calls holds",
            grpc(None, Some(1.0)),
            http(1000, 0, 10),
            calls(1000, 40),
            hold("gRPC error rate 4%: no gRPC calls to the old version to compare with (maxRiseFromBaseline 1)"),
        ),
        (
            "all three pass",
            all_three(),
            VersionStats { grpc_requests: 400, grpc_errors: 4, ..http(1000, 2, 20) },
            VersionStats { grpc_requests: 300, grpc_errors: 3, ..http(500, 1, 25) },
            pass("500 requests; success rate 99.8% >= min 99%; p99 25ms is 1.25x the old version's 20ms (max 1.5x); gRPC error rate 1% is 0 points above the old version's 1% (max rise 1)"),
        ),
        (
            "every broken threshold is listed",
            all_three(),
            VersionStats { grpc_requests: 400, grpc_errors: 0, ..http(1000, 0, 10) },
            VersionStats { grpc_requests: 400, grpc_errors: 200, ..http(400, 200, 40) },
            fail("success rate 50% < min 99%; p99 40ms is 4x the old version's 10ms > max 1.5x; gRPC error rate 50% is 50 points above the old version's 0% > max rise 1"),
        ),
        (
            "a failure wins over a threshold that cannot be judged",
            all_three(),
            none,
            http(400, 200, 40),
            fail("success rate 50% < min 99%"),
        ),
        (
            "a pass with one threshold unjudgeable holds",
            all_three(),
            none,
            http(400, 0, 40),
            hold("p99 40ms: no requests to the old version to compare with (maxRatioToBaseline 1.5)"),
        ),
    ];
    for (name, step, baseline, canary, want) in cases {
        assert_eq!(judge(&step, &baseline, &canary), want, "case: {name}");
    }
}

#[test]
fn sub_millisecond_latencies_keep_their_decimals() {
    let canary = VersionStats {
        p99: Some(Duration::from_micros(350)),
        ..http(100, 0, 0)
    };
    assert_eq!(
        judge(&max_p99(1), &VersionStats::default(), &canary),
        pass("100 requests; p99 0.35ms <= max 1ms")
    );
}

#[test]
fn no_traffic_holds_even_without_a_minimum() {
    let step = AnalysisStep {
        min_requests: 0,
        ..min_success(99.0)
    };
    assert_eq!(
        judge(&step, &VersionStats::default(), &VersionStats::default()),
        hold("no requests to the new version: nothing to judge")
    );
}

#[test]
fn a_missing_p99_with_traffic_holds() {
    let canary = VersionStats {
        p99: None,
        ..http(100, 0, 0)
    };
    assert_eq!(
        judge(&max_p99(800), &VersionStats::default(), &canary),
        hold("no p99 latency measured for the new version")
    );
}
