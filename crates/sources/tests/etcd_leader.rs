#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Leader election on a real etcd: one leader at a time; a resignation hands over at once; a
//! leader that stops renewing (crashed) is replaced within its TTL.

use graymesh_sources::etcd::leader::Election;
use graymesh_testkit::EtcdServer;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);

async fn client(etcd: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap()
}

/// Wait (bounded) until exactly one of `elections` leads; return its index.
async fn one_leader(elections: &[&Election], bound: Duration) -> usize {
    let start = Instant::now();
    loop {
        let leaders: Vec<usize> = (0..elections.len())
            .filter(|i| elections[*i].is_leader())
            .collect();
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if let [one] = leaders[..] {
            return one;
        }
        assert!(start.elapsed() < bound, "no leader within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_leader_and_handover_on_resign_and_on_crash() {
    let etcd = EtcdServer::start().unwrap();
    let a = Election::start(client(&etcd).await, "controller", "pilot-a", TTL);
    let b = Election::start(client(&etcd).await, "controller", "pilot-b", TTL);
    let first = one_leader(&[&a, &b], Duration::from_secs(10)).await;
    let mut raw = client(&etcd).await;
    let holder = raw.get("/graymesh/leader/controller", None).await.unwrap();
    let holder = holder.kvs()[0].value_str().unwrap().to_string();
    assert_eq!(holder, ["pilot-a", "pilot-b"][first]);
    // Leadership holds across several renewals.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(one_leader(&[&a, &b], Duration::ZERO).await, first);

    // Resigning hands over well within the TTL.
    let (leader, other) = if first == 0 { (a, b) } else { (b, a) };
    let resigned = Instant::now();
    leader.resign().await;
    one_leader(&[&other], Duration::from_secs(1)).await;
    eprintln!("handover after resign: {:?}", resigned.elapsed());

    // A crashed leader (no more renewals, no revoke) is replaced once its lease runs out.
    let c = Election::start(client(&etcd).await, "controller", "pilot-c", TTL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!c.is_leader());
    let crashed = Instant::now();
    drop(other);
    one_leader(&[&c], TTL + Duration::from_secs(2)).await;
    eprintln!("handover after crash: {:?}", crashed.elapsed());
}
