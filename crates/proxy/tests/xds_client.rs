//! The xDS client against the real pilot ADS server, in process: subscriptions that follow the
//! resources (listeners name routes, clusters name endpoints), ACK and NACK as the pilot records
//! them, failover between pilots with last-known-good config kept, and the reconnection backoff
//! on tokio's paused clock.
//!
//! The pilot's sync status has no change notification, so "the pilot has read every request so
//! far" is established with a barrier: a new subscription name the pilot must answer, sent behind
//! those requests on the same stream (a stream is read in order).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::Any;
use graymesh_model::{build_config_set, parse_str, ConfigSet};
use graymesh_proxy::xds::client::{TypeStatus, XdsStatusSnapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use graymesh_proxy::xds::{Handler, Subscriptions, XdsClient, XdsClientConfig, XdsStatus};
use graymesh_sources::RegistrySnapshot;
use graymesh_xds::metrics::XdsMetrics;
use graymesh_xds::status::TypeSync;
use graymesh_xds::{AdsServer, SnapshotCache, SyncStatus};
use prost::{Message, Name};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

const BOUND: Duration = Duration::from_secs(10);
const ECHO: &str = "echo.graymesh.test";

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {BOUND:?}"))
}

// === The pilot ===

/// One service `host` with subsets v1 and v2, split `v1`/`v2` by weight.
fn config(host: &str, v1: u32, v2: u32) -> Arc<ConfigSet> {
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [{host}]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: 18081}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: 18082}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: {host}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [{host}]
  http:
  - route:
    - {{destination: {{host: {host}, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: {host}, subset: v2}}, weight: {v2}}}
"#
    );
    Arc::new(build_config_set(parse_str("test.yaml", &yaml).unwrap()).unwrap())
}

/// A pilot in its own runtime on its own thread, so that killing it closes every connection it
/// holds at once, as a crashed process would.
struct Pilot {
    addr: SocketAddr,
    cache: SnapshotCache,
    sync: SyncStatus,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pilot {
    async fn start(config: Arc<ConfigSet>) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), config).await
    }

    async fn start_at(addr: SocketAddr, config: Arc<ConfigSet>) -> Self {
        let registry = Arc::new(RegistrySnapshot::build(&config, &[]));
        let cache = SnapshotCache::new(config, registry);
        let sync = SyncStatus::default();
        let service =
            AdsServer::new(cache.clone(), sync.clone(), XdsMetrics::default()).into_service();
        let (bound_tx, bound) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                bound_tx.send(listener.local_addr().unwrap()).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming),
                );
                let _ = stopped.await;
            });
            // Dropping the runtime drops the server and every connection task with it.
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let addr = within("pilot bound", bound).await.unwrap();
        Self {
            addr,
            cache,
            sync,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn publish(&self, config: Arc<ConfigSet>) {
        let registry = Arc::new(RegistrySnapshot::build(&config, &[]));
        self.cache.publish(config, registry);
    }

    /// What the pilot recorded for its only client, for `type_url`.
    fn client_type(&self, type_url: &str) -> TypeSync {
        let clients = self.sync.clients();
        assert_eq!(clients.len(), 1, "one client connected to the pilot");
        clients[0].types[type_url].clone()
    }

    async fn kill(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let thread = self.thread.take().unwrap();
        within(
            "pilot stopped",
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

impl Drop for Pilot {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// === The proxy's handlers ===

/// Keeps the last accepted resources where the test can wait for them. Rejects what `reject`
/// names; subscribes `follow.0` to what `follow.1` finds in the resources.
struct Recorder<M> {
    accepted: watch::Sender<Vec<M>>,
    reject: fn(&[M]) -> Option<String>,
    follow: Option<(&'static str, NamesIn<M>)>,
}

/// Finds the names of another type that resources refer to.
type NamesIn<M> = fn(&[M]) -> BTreeSet<String>;

impl<M: Send + Sync + 'static> Handler<M> for Recorder<M> {
    fn handle(&self, resources: Vec<M>, subscriptions: &Subscriptions) -> Result<(), String> {
        if let Some(error) = (self.reject)(&resources) {
            return Err(error);
        }
        if let Some((type_url, names_in)) = &self.follow {
            subscriptions.set(type_url, names_in(&resources));
        }
        self.accepted.send_replace(resources);
        Ok(())
    }
}

impl<M: Clone> Recorder<M> {
    fn new(reject: fn(&[M]) -> Option<String>) -> Arc<Self> {
        Arc::new(Self {
            accepted: watch::Sender::new(Vec::new()),
            reject,
            follow: None,
        })
    }

    fn following(type_url: &'static str, names_in: fn(&[M]) -> BTreeSet<String>) -> Arc<Self> {
        Arc::new(Self {
            accepted: watch::Sender::new(Vec::new()),
            reject: |_| None,
            follow: Some((type_url, names_in)),
        })
    }

    fn get(&self) -> Vec<M> {
        self.accepted.borrow().clone()
    }

    async fn until(&self, what: &str, mut ready: impl FnMut(&[M]) -> bool) -> Vec<M> {
        let mut rx = self.accepted.subscribe();
        let seen = within(what, rx.wait_for(|m| ready(m))).await.unwrap();
        seen.clone()
    }
}

/// Route configurations the listeners' HTTP connection managers name (filter chains and API
/// listeners alike).
fn route_names(listeners: &[Listener]) -> BTreeSet<String> {
    let mut configs: Vec<&Any> = Vec::new();
    for l in listeners {
        let chains = l.filter_chains.iter().chain(&l.default_filter_chain);
        for f in chains.flat_map(|c| &c.filters) {
            if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type {
                configs.push(any);
            }
        }
        configs.extend(
            l.api_listener
                .as_ref()
                .and_then(|a| a.api_listener.as_ref()),
        );
    }
    configs
        .into_iter()
        .filter(|any| any.type_url == HttpConnectionManager::type_url())
        .filter_map(|any| HttpConnectionManager::decode(any.value.as_slice()).ok())
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}

fn eds_names(clusters: &[Cluster]) -> BTreeSet<String> {
    clusters
        .iter()
        .filter_map(|c| {
            let eds = c.eds_cluster_config.as_ref()?;
            Some(if eds.service_name.is_empty() {
                c.name.clone()
            } else {
                eds.service_name.clone()
            })
        })
        .collect()
}

/// Every weight of every weighted route, in order.
fn weights(routes: &[RouteConfiguration]) -> Vec<u32> {
    routes
        .iter()
        .flat_map(|r| &r.virtual_hosts)
        .flat_map(|v| &v.routes)
        .filter_map(|r| match &r.action {
            Some(Action::Route(a)) => a.cluster_specifier.as_ref(),
            _ => None,
        })
        .flat_map(|spec| match spec {
            ClusterSpecifier::WeightedClusters(w) => w.clusters.iter().collect(),
            _ => Vec::new(),
        })
        .map(|c| c.weight.map(|w| w.value).unwrap_or(0))
        .collect()
}

const POISON_WEIGHT: u32 = 13;

fn refuse_poison_weight(routes: &[RouteConfiguration]) -> Option<String> {
    weights(routes)
        .contains(&POISON_WEIGHT)
        .then(|| format!("weight {POISON_WEIGHT} is refused by this proxy"))
}

// === The proxy ===

struct Proxy {
    listeners: Arc<Recorder<Listener>>,
    routes: Arc<Recorder<RouteConfiguration>>,
    clusters: Arc<Recorder<Cluster>>,
    endpoints: Arc<Recorder<ClusterLoadAssignment>>,
    subscriptions: Subscriptions,
    status: XdsStatus,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    fn start(pilots: Vec<String>) -> Self {
        let node = Node {
            id: "sidecar-1".into(),
            user_agent_name: "graymesh-proxy".into(),
            ..Default::default()
        };
        let config = XdsClientConfig {
            connect_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..XdsClientConfig::new(pilots, node)
        };
        let listeners = Recorder::following(ROUTE, route_names);
        let routes = Recorder::new(refuse_poison_weight);
        let clusters = Recorder::following(ENDPOINT, eds_names);
        let endpoints = Recorder::new(|_| None);
        let client = XdsClient::new(config)
            .with_handler::<Listener, _>(LISTENER, listeners.clone())
            .with_handler::<RouteConfiguration, _>(ROUTE, routes.clone())
            .with_handler::<Cluster, _>(CLUSTER, clusters.clone())
            .with_handler::<ClusterLoadAssignment, _>(ENDPOINT, endpoints.clone());
        let (subscriptions, status) = (client.subscriptions(), client.status());
        Self {
            listeners,
            routes,
            clusters,
            endpoints,
            subscriptions,
            status,
            task: tokio::spawn(client.run()),
        }
    }

    /// Until the endpoints of every cluster and the routes of every listener have been accepted.
    async fn synced(&self) {
        let clusters = self.clusters.until("clusters", |c| !c.is_empty()).await;
        let listeners = self.listeners.until("listeners", |l| !l.is_empty()).await;
        let wanted = eds_names(&clusters);
        self.endpoints
            .until("endpoints of every cluster", |e| {
                e.iter()
                    .map(|c| c.cluster_name.clone())
                    .collect::<BTreeSet<_>>()
                    == wanted
            })
            .await;
        let wanted = route_names(&listeners);
        self.routes
            .until("routes of every listener", |r| {
                r.iter().map(|c| c.name.clone()).collect::<BTreeSet<_>>() == wanted
            })
            .await;
        // The status is written after the handler: wait for it too, so tests can read it.
        self.status_until("all four accepted", |s| {
            [LISTENER, ROUTE, CLUSTER, ENDPOINT].iter().all(|t| {
                s.types
                    .get(*t)
                    .is_some_and(|t| !t.accepted_version.is_empty() && t.nack.is_none())
            })
        })
        .await;
    }

    async fn status_until(
        &self,
        what: &str,
        ready: impl FnMut(&XdsStatusSnapshot) -> bool,
    ) -> XdsStatusSnapshot {
        within(what, self.status.wait_for(ready)).await
    }

    /// Everything the handlers hold.
    fn held(&self) -> impl PartialEq + std::fmt::Debug {
        let (l, r) = (self.listeners.get(), self.routes.get());
        (l, r, self.clusters.get(), self.endpoints.get())
    }

    fn type_status(&self, type_url: &str) -> TypeStatus {
        self.status.snapshot().types[type_url].clone()
    }

    /// Until the pilot has read every request sent so far: subscribe `type_url` to one more
    /// (unknown) name and wait for the pilot's answer, which it sends only after reading them.
    async fn pilot_caught_up(&self, type_url: &str, tag: &str) {
        let before = self.type_status(type_url).responses;
        let mut names = self.subscriptions.get(type_url).unwrap_or_default();
        names.insert(format!("barrier-{tag}"));
        self.subscriptions.set(type_url, names);
        self.status_until("the pilot's answer to the barrier", |s| {
            s.types.get(type_url).is_some_and(|t| t.responses > before)
        })
        .await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn assert_acked(pilot: &Pilot, type_url: &str) {
    let t = pilot.client_type(type_url);
    assert!(!t.sent_nonce.is_empty(), "{type_url}: something was pushed");
    assert_eq!(t.acked_nonce, t.sent_nonce, "{type_url}: {t:?}");
    assert_eq!(t.acked_version, t.sent_version, "{type_url}: {t:?}");
    assert_eq!(t.nack, None, "{type_url}");
}

// === Tests ===

#[tokio::test]
async fn a_sidecar_follows_listeners_to_routes_and_clusters_to_endpoints() {
    let pilot = Pilot::start(config(ECHO, 80, 20)).await;
    let proxy = Proxy::start(vec![pilot.addr.to_string()]);
    proxy.synced().await;

    assert_eq!(
        proxy
            .listeners
            .get()
            .iter()
            .map(|l| &l.name)
            .collect::<Vec<_>>(),
        ["127.0.0.1_15001"],
        "the catch-all outbound listener"
    );
    assert_eq!(
        proxy.subscriptions.get(ROUTE),
        Some(["outbound".to_string()].into())
    );
    let clusters = eds_names(&proxy.clusters.get());
    assert_eq!(clusters.len(), 3, "default + two subsets: {clusters:?}");
    assert_eq!(proxy.subscriptions.get(ENDPOINT), Some(clusters));
    assert_eq!(weights(&proxy.routes.get()), [80, 20]);

    proxy.pilot_caught_up(ENDPOINT, "1").await;
    for t in [LISTENER, ROUTE, CLUSTER] {
        assert_acked(&pilot, t);
    }
    assert_eq!(pilot.client_type(LISTENER).subscribed, ["*"]);
    assert_eq!(pilot.client_type(CLUSTER).subscribed, ["*"]);
    assert_eq!(pilot.client_type(ROUTE).subscribed, ["outbound"]);
    proxy.pilot_caught_up(ROUTE, "2").await;
    assert_acked(&pilot, ENDPOINT);
}

#[tokio::test]
async fn a_rejected_push_is_nacked_and_the_last_good_routes_stay() {
    let pilot = Pilot::start(config(ECHO, 80, 20)).await;
    let proxy = Proxy::start(vec![pilot.addr.to_string()]);
    proxy.synced().await;
    let good = proxy.type_status(ROUTE).accepted_version;
    // The pilot must have read the ACK before the next push, or it would find it stale.
    proxy.pilot_caught_up(ENDPOINT, "0").await;
    assert_acked(&pilot, ROUTE);

    pilot.publish(config(ECHO, 100 - POISON_WEIGHT, POISON_WEIGHT));
    let message = format!("weight {POISON_WEIGHT} is refused by this proxy");
    proxy
        .status_until("the NACK", |s| {
            s.types[ROUTE].nack.as_ref() == Some(&message)
        })
        .await;
    assert_eq!(
        weights(&proxy.routes.get()),
        [80, 20],
        "last good routes kept"
    );
    assert_eq!(proxy.type_status(ROUTE).accepted_version, good);
    proxy.pilot_caught_up(ENDPOINT, "1").await;
    let rds = pilot.client_type(ROUTE);
    assert_eq!(rds.nack, Some(message));
    assert_eq!(
        rds.acked_version, good,
        "the pilot knows which version is in use"
    );
    assert_ne!(rds.sent_version, good);

    pilot.publish(config(ECHO, 30, 70));
    let accepted = proxy
        .status_until("the next routes accepted", |s| {
            s.types[ROUTE].accepted_version != good
        })
        .await
        .types[ROUTE]
        .clone();
    assert_eq!(accepted.nack, None);
    assert_eq!(weights(&proxy.routes.get()), [30, 70]);
    proxy.pilot_caught_up(ENDPOINT, "2").await;
    assert_acked(&pilot, ROUTE);
    assert_eq!(
        pilot.client_type(ROUTE).acked_version,
        accepted.accepted_version
    );
}

#[tokio::test]
async fn a_lost_pilot_keeps_the_config_until_the_next_pilot_serves() {
    // An address nobody listens on (until pilot B takes it).
    let spare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = spare.local_addr().unwrap();
    drop(spare);
    let pilot_a = Pilot::start(config(ECHO, 80, 20)).await;
    let proxy = Proxy::start(vec![dead.to_string(), pilot_a.addr.to_string()]);
    let a = pilot_a.addr.to_string();
    let connected = proxy
        .status_until("connected to A", |s| {
            s.connected && s.pilot.as_ref() == Some(&a)
        })
        .await;
    assert_eq!(
        connected.connect_attempts, 2,
        "the dead address first, then A"
    );
    assert!(connected.last_error.unwrap().starts_with("cannot connect"));
    proxy.synced().await;
    let before = proxy.held();

    pilot_a.kill().await;
    proxy.status_until("disconnected", |s| !s.connected).await;
    let after = proxy.held();
    assert_eq!(after, before, "last-known-good config kept");

    let other = "other.graymesh.test";
    let pilot_b = Pilot::start_at(dead, config(other, 50, 50)).await;
    let b = dead.to_string();
    proxy
        .status_until("connected to B", |s| {
            s.connected && s.pilot.as_ref() == Some(&b)
        })
        .await;
    proxy
        .routes
        .until("B's routes", |r| weights(r) == [50, 50])
        .await;
    let clusters = proxy
        .clusters
        .until("B's clusters", |c| c.iter().all(|c| c.name.contains(other)))
        .await;
    assert_eq!(clusters.len(), 3);
    proxy.synced().await;
    assert!(proxy
        .endpoints
        .get()
        .iter()
        .all(|e| e.cluster_name.contains(other)));
    assert_eq!(pilot_b.sync.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reconnection_delays_double_with_jitter_up_to_the_cap() {
    // Addresses that fail at once, without I/O: only the backoff decides when attempts happen.
    let pilots = vec![
        "unusable pilot a".to_string(),
        "unusable pilot b".to_string(),
    ];
    let config = XdsClientConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..XdsClientConfig::new(pilots.clone(), Node::default())
    };
    let client = XdsClient::new(config);
    let status = client.status();
    let task = tokio::spawn(client.run());

    let mut attempts = Vec::new();
    for n in 1..=10 {
        let s = within("an attempt", status.wait_for(|s| s.connect_attempts >= n)).await;
        assert_eq!(s.connect_attempts, n, "one attempt at a time");
        attempts.push((Instant::now(), s.pilot.unwrap()));
    }
    task.abort();

    for (i, (_, pilot)) in attempts.iter().enumerate() {
        assert_eq!(pilot, &pilots[i % 2], "round-robin over the pilots");
    }
    let delays: Vec<Duration> = attempts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let ceilings = [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000];
    for (delay, ceiling) in delays.iter().zip(ceilings) {
        let ceiling = Duration::from_millis(ceiling);
        assert!(
            *delay >= ceiling / 2 && *delay <= ceiling,
            "{delay:?} outside [{:?}, {ceiling:?}] in {delays:?}",
            ceiling / 2
        );
    }
    let capped = &delays[4..];
    assert!(
        capped.windows(2).any(|w| w[0] != w[1]),
        "jittered: {capped:?}"
    );
    let error = status.snapshot().last_error.unwrap();
    assert!(error.starts_with("invalid pilot address"), "{error}");
}
