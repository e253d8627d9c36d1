//! Readiness tells the truth about config: a proxy whose listener cannot be bound (its first
//! listener response NACKed) is not ready, even though clusters and endpoints arrived.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use graymesh_proxy::run::run;
use mesh::{app, free_addr, mesh_yaml, sidecar_options, Pilot};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_listener_cannot_bind_is_not_ready() {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", vs)).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = sidecar_options(&[pilot.addr], "reviews:9080", taken.local_addr().unwrap());
    let admin = opts.admin;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, async move {
        let _ = stopped.await;
    }));
    let client = graymesh_testkit::Http1Client::new().with_timeout(Duration::from_secs(1));
    let ready_url = format!("http://{admin}/ready");
    // The admin port answers, the clusters arrive (its config dump lists them), and /ready
    // still says no, for as long as the listener stays NACKed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dump = client
            .get(&format!("http://{admin}/config_dump"), &[])
            .await;
        if dump.is_ok_and(|d| d.text().contains("reviews")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no clusters within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        let r = client.get(&ready_url, &[]).await.unwrap();
        assert_ne!(
            r.status.as_u16(),
            200,
            "ready although its listener was refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    drop(taken);
}
