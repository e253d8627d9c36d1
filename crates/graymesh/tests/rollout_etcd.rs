//! The release controller with several pilots on one etcd: only the leader runs workflows (no
//! decision is taken twice), any pilot takes commands, and when the leader dies another pilot
//! takes over the rollout where it stands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod support;

use graymesh_testkit::EtcdServer;
use std::time::{Duration, Instant};
use support::{temp_dir, Pilot};

const APP: &str = "apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: reviews}
spec:
  components:
  - name: reviews
    type: webservice
    properties: {host: reviews, port: 9080, version: v1}
    traits:
    - type: canary-traffic
      properties:
        versions: {oldVersion: reviews, newVersion: reviews-v2}
  - name: reviews-v2
    type: webservice
    properties: {host: reviews, port: 9080, version: v2}
  workflow:
    steps:
    - name: twenty
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 80}, {revision: reviews-v2, weight: 20}]}
    - name: gate
      type: suspend
    - name: half
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 50}, {revision: reviews-v2, weight: 50}]}
    - name: gate-2
      type: suspend
    - name: done
      type: promote
";

async fn wait_for_step(pilot: &Pilot, step: u64) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let view = pilot.get("/v1/rollouts/default/reviews").await;
        if view["step"] == step {
            return view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never at step {step}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leading(pilot: &Pilot) -> bool {
    pilot.get("/debug/syncz").await["release_controller"]["leading"] == true
}

/// Every (step, action) once: no decision taken by two controllers.
fn assert_no_twice(view: &serde_json::Value) {
    let decisions: Vec<(u64, String)> = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["step"].as_u64().unwrap(),
                d["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut unique = decisions.clone();
    unique.dedup();
    assert_eq!(decisions, unique, "a decision was taken twice: {view:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_runs_the_workflow_and_another_pilot_takes_over_when_it_dies() {
    let etcd = EtcdServer::start().unwrap();
    let mut pilots = vec![
        Pilot::start_etcd(&etcd.endpoint()).await,
        Pilot::start_etcd(&etcd.endpoint()).await,
    ];
    let start = Instant::now();
    while leading(&pilots[0]).await == leading(&pilots[1]).await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never exactly one leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = temp_dir("rollout-etcd");
    std::fs::write(dir.join("app.yaml"), APP).unwrap();
    pilots[0].cli_ok(&["apply", "-f", dir.join("app.yaml").to_str().unwrap()]);

    let at_gate = wait_for_step(&pilots[1], 1).await;
    assert_eq!(
        at_gate["weights"],
        serde_json::json!([{"version": "v1", "weight": 80}, {"version": "v2", "weight": 20}])
    );
    tokio::time::sleep(Duration::from_millis(600)).await; // both controllers had their chance
    let both = [
        pilots[0].get("/v1/rollouts/default/reviews").await,
        pilots[1].get("/v1/rollouts/default/reviews").await,
    ];
    assert_eq!(both[0]["decisions"], both[1]["decisions"]);
    assert_eq!(
        both[0]["decisions"].as_array().unwrap().len(),
        2,
        "start and advance, once: {:#}",
        both[0]
    );

    // the leader dies; the other pilot takes the resume and runs the rest
    let leader = if leading(&pilots[0]).await { 0 } else { 1 };
    let mut dead = pilots.remove(leader);
    dead.process.kill();
    let survivor = &pilots[0];
    survivor.cli_ok(&["rollout", "resume", "reviews"]);
    let at_gate_2 = wait_for_step(survivor, 3).await; // "half" needs a controller to move on
    assert!(leading(survivor).await);
    assert_no_twice(&at_gate_2);
    survivor.cli_ok(&["rollout", "resume", "reviews"]);
    survivor.cli_exits(
        &["rollout", "status", "reviews", "--wait", "--timeout", "10s"],
        0,
    );
    let out = survivor.cli(&["get", "rollouts", "reviews", "-o", "json"]);
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored["spec"]["phase"], "Promoted", "{stored:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
