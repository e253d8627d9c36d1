//! `graymesh demo --once -o json`, as a user on a fresh checkout runs it: the healthy rollout
//! is promoted by its analysis with no failed request, the faulty one is rolled back by its
//! analysis and its failures all come from the faulty version.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod support;

use std::process::{Command, Stdio};
use support::{free, BIN};

#[test]
fn the_demo_promotes_the_healthy_rollout_and_rolls_the_faulty_one_back() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--once",
            "-o",
            "json",
            "--xds-addr",
            &free().to_string(),
            "--http-addr",
            &free().to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rollout = |name: &str| {
        summary["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let reviews = rollout("reviews");
    assert_eq!(reviews["outcome"], "Promoted", "{reviews:#}");
    assert_eq!(reviews["stepsTaken"], 5);
    assert_eq!(reviews["requests"]["failed"], 0, "{reviews:#}");
    assert!(reviews["requests"]["by_version"]["v2"].as_u64().unwrap() > 100);
    let ratings = rollout("ratings");
    assert_eq!(ratings["outcome"], "RolledBack", "{ratings:#}");
    assert!(
        ratings["reason"]
            .as_str()
            .unwrap()
            .starts_with("analysis failed 2 of 2 allowed checks (success rate"),
        "{ratings:#}"
    );
    let failed = ratings["requests"]["failed"].as_u64().unwrap();
    assert!(failed > 0);
    assert_eq!(
        ratings["requests"]["failed_by_version"]["v2"].as_u64(),
        Some(failed),
        "only the faulty version fails: {ratings:#}"
    );
    assert!(
        ratings["rollbackLatencyMs"].as_u64().unwrap() < 2000,
        "{ratings:#}"
    );
    assert!(
        stderr.contains("rollback analysis failed"),
        "decisions are printed as they are taken:\n{stderr}"
    );
}
