//! TCP proxying for non-HTTP ports: each downstream connection goes, byte for byte, to an
//! endpoint of one of the listener's weighted clusters. A failed connect is retried on other
//! endpoints (up to three in all) and counts against the endpoint for outlier detection.

use crate::http::forward::record_outlier;
use crate::http::ProxyCore;
use crate::metrics::RequestLabels;
use crate::table::TcpRoute;
use crate::upstream::outlier::{now_ms, Outcome};
use crate::upstream::{balance, Counted, InFlight};
use rand::Rng;
use std::sync::Arc;

const CONNECT_ATTEMPTS: usize = 3;

pub async fn serve(
    core: Arc<ProxyCore>,
    route: Arc<TcpRoute>,
    mut downstream: tokio::net::TcpStream,
) {
    let cluster = pick_cluster(&route);
    let mut labels = RequestLabels::new(crate::http::Direction::Outbound);
    labels.set_destination(&crate::metrics::Destination::of_cluster(cluster));
    let table = core.table.load_full();
    let (Some(spec), Some(state)) = (table.cluster(cluster), core.upstreams.cluster(cluster))
    else {
        core.metrics.tcp_connection(&labels, "no_cluster");
        return;
    };
    let max = spec.thresholds.max_connections as usize;
    let Some(_admitted) = Counted::within(&state.counters, |c| &c.tcp_connections, max) else {
        core.metrics.tcp_connection(&labels, "overflow");
        return;
    };
    let mut tried = Vec::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let Some(addr) = balance::pick(spec, &state, None, now_ms(), &tried) else {
            break;
        };
        let endpoint = state.endpoint(&addr).cloned().unwrap_or_default();
        let connected =
            tokio::time::timeout(spec.connect_timeout, tokio::net::TcpStream::connect(addr)).await;
        let connections = &core.metrics.upstream.tcp;
        let Ok(Ok(mut upstream)) = connected else {
            connections.failed();
            record_outlier(
                &core.metrics,
                spec,
                &state,
                &endpoint,
                Outcome::LocalFailure,
            );
            tried.push(addr);
            continue;
        };
        let _open = connections.opened();
        let _ = upstream.set_nodelay(true);
        let in_flight = InFlight::new(endpoint);
        let copied = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
        drop(in_flight);
        core.metrics
            .tcp_connection(&labels, if copied.is_ok() { "closed" } else { "reset" });
        return;
    }
    core.metrics.tcp_connection(&labels, "connect_failure");
}

fn pick_cluster(route: &TcpRoute) -> &str {
    let mut slot = rand::rng().random_range(0..route.total_weight.max(1));
    for (name, weight) in &route.clusters {
        if slot < *weight {
            return name;
        }
        slot -= weight;
    }
    &route.clusters[0].0
}
