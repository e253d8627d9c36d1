//! A small mesh for proxy tests, all real and all on loopback: fake apps from the testkit, the
//! real pilot ADS server in process (config published straight into its cache), and the real
//! proxy with an explicit upstream port for the service under test.

// Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

pub mod envoy_plane;

use graymesh_model::{build_config_set, parse_str};
use graymesh_proxy::run::{run, ProxyOptions};
use graymesh_sources::RegistrySnapshot;
use graymesh_testkit::{FakeApp, FakeAppHandle};
use graymesh_xds::metrics::XdsMetrics;
use graymesh_xds::{AdsServer, SnapshotCache, SyncStatus};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

pub const HOST: &str = "reviews.default.svc.cluster.local";

pub use graymesh_testkit::free_addr;

pub struct Pilot {
    pub addr: SocketAddr,
    pub cache: SnapshotCache,
    sync: SyncStatus,
    task: JoinHandle<()>,
    /// Duplicates of accepted connections, to sever them as a process death would.
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Pilot {
    /// Serve on `addr` (a fixed address, so a restarted pilot is found again).
    pub async fn start(addr: SocketAddr, yaml: &str) -> Self {
        let config = Arc::new(build_config_set(parse_str("mesh.yaml", yaml).unwrap()).unwrap());
        let cache = SnapshotCache::new(
            config.clone(),
            Arc::new(RegistrySnapshot::build(&config, &[])),
        );
        let sync = SyncStatus::default();
        let server =
            AdsServer::new(cache.clone(), sync.clone(), XdsMetrics::default()).into_service();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let kept = conns.clone();
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |accepted| {
                let std_stream = accepted?.into_std()?;
                kept.lock().unwrap().push(std_stream.try_clone()?);
                tokio::net::TcpStream::from_std(std_stream)
            });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            addr,
            cache,
            sync,
            task,
            conns,
        }
    }

    pub fn publish(&self, yaml: &str) {
        let config = Arc::new(build_config_set(parse_str("mesh.yaml", yaml).unwrap()).unwrap());
        let registry = Arc::new(RegistrySnapshot::build(&config, &[]));
        self.cache.publish(config, registry);
    }

    /// Publish `yaml`, then wait (bounded) until every connected proxy has ACKed routes other
    /// than those it had before, with nothing held back: the new routes are in force.
    pub async fn publish_and_settle(&self, yaml: &str) {
        const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
        let routes =
            |c: &graymesh_xds::status::ClientSync| c.types.get(RDS).cloned().unwrap_or_default();
        let before: Vec<String> = self
            .sync
            .clients()
            .iter()
            .map(|c| routes(c).acked_version)
            .collect();
        self.publish(yaml);
        let start = std::time::Instant::now();
        loop {
            let clients = self.sync.clients();
            let settled = !clients.is_empty()
                && clients.iter().all(|c| {
                    let r = routes(c);
                    !before.contains(&r.acked_version)
                        && r.acked_version == r.sent_version
                        && c.types.values().all(|t| t.held_back.is_empty())
                });
            if settled {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "proxies did not ACK the new routes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop serving as a killed process would: the listener closes and every connection is cut.
    pub fn kill(self) {
        self.task.abort();
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

pub struct Proxy {
    /// Where tests send traffic: the explicit outbound port for `reviews:9080`, or a gateway's
    /// server port.
    pub upstream: SocketAddr,
    pub admin: SocketAddr,
    /// The catch-all outbound port (routes by Host / `:authority`, as an `http_proxy`).
    pub outbound: SocketAddr,
    /// The inbound port (bound only for a sidecar with an app: [`Proxy::start_sidecar`]).
    pub inbound: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl Proxy {
    pub async fn start(pilots: Vec<SocketAddr>) -> Self {
        Self::start_for(pilots, "reviews:9080").await
    }

    /// A sidecar with one explicit upstream port for `target` (`host:port`).
    pub async fn start_for(pilots: Vec<SocketAddr>, target: &str) -> Self {
        let upstream = free_addr();
        Self::spawn(sidecar_options(&pilots, target, upstream), upstream).await
    }

    /// A gateway labelled `istio=ingressgateway` with no upstreams; ready once `server` (the
    /// address of a Gateway server in the config pilot serves) accepts connections.
    pub async fn start_gateway(pilots: Vec<SocketAddr>, server: SocketAddr) -> Self {
        Self::spawn(gateway_options(&pilots, server), server).await
    }

    /// A sidecar of `service` `version` with an outbound port for `target` (`host:port`) and,
    /// when `app` is given, an inbound port at `inbound` fronting it.
    pub async fn start_sidecar(
        pilots: Vec<SocketAddr>,
        (service, version): (&str, &str),
        target: &str,
        app: Option<(&FakeAppHandle, SocketAddr)>,
    ) -> Self {
        let upstream = free_addr();
        let mut opts = sidecar_options(&pilots, target, upstream);
        opts.service = Some(service.into());
        opts.service_version = Some(version.into());
        if let Some((app, inbound)) = app {
            opts.app = Some(app.addr());
            opts.inbound = inbound;
        }
        let proxy = Self::spawn(opts, upstream).await;
        if app.is_some() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while tokio::net::TcpStream::connect(proxy.inbound).await.is_err() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "inbound port not bound"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        proxy
    }

    /// A proxy run with `opts`; ready once `upstream` accepts connections.
    pub async fn spawn(opts: ProxyOptions, upstream: SocketAddr) -> Self {
        let (admin, inbound, outbound) = (opts.admin, opts.inbound, opts.outbound);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(opts, async move {
            let _ = stopped.await;
        }));
        let proxy = Self {
            upstream,
            admin,
            outbound,
            inbound,
            stop: Some(stop),
            task,
        };
        proxy.wait_listening().await;
        proxy
    }

    async fn wait_listening(&self) {
        let client = graymesh_testkit::Http1Client::new().with_timeout(Duration::from_secs(1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ready = client
                .get(&format!("http://{}/ready", self.admin), &[])
                .await
                .map(|r| r.status == 200)
                .unwrap_or(false);
            if ready && tokio::net::TcpStream::connect(self.upstream).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "proxy not ready within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.upstream)
    }

    /// The proxy's `/config_dump`.
    pub async fn config_dump(&self) -> serde_json::Value {
        let client = graymesh_testkit::Http1Client::new();
        client
            .get(&format!("http://{}/config_dump", self.admin), &[])
            .await
            .unwrap()
            .json()
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        let client = graymesh_testkit::Http1Client::new();
        client
            .get(&format!("http://{}/metrics", self.admin), &[])
            .await
            .unwrap()
            .text()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// An ingress gateway's options (labelled `istio=ingressgateway`) for a Gateway server at `server`.
pub fn gateway_options(pilots: &[SocketAddr], server: SocketAddr) -> ProxyOptions {
    ProxyOptions {
        node_id: format!("test-gateway-{}", server.port()),
        labels: vec![("istio".into(), "ingressgateway".into())],
        gateway: true,
        gateway_addr: server.ip(),
        ..options(pilots)
    }
}

/// A sidecar's options with one explicit upstream port (`target` = `host:port`) at `listen`.
pub fn sidecar_options(pilots: &[SocketAddr], target: &str, listen: SocketAddr) -> ProxyOptions {
    ProxyOptions {
        node_id: format!("test-proxy-{}", listen.port()),
        upstreams: vec![format!("{target}={listen}")],
        ..options(pilots)
    }
}

/// A proxy with no app, no registration, and free loopback ports for everything it binds.
pub fn options(pilots: &[SocketAddr]) -> ProxyOptions {
    ProxyOptions {
        pilots: pilots.iter().map(|a| a.to_string()).collect(),
        node_id: String::new(),
        namespace: "default".into(),
        service: None,
        service_version: None,
        app: None,
        service_port: None,
        inbound: free_addr(),
        upstreams: Vec::new(),
        outbound: free_addr(),
        admin: free_addr(),
        registry_url: None,
        registration_ttl: Duration::from_secs(10),
        health_path: None,
        drain_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(300),
        labels: Vec::new(),
        access_log: false,
        gateway: false,
        gateway_addr: [127, 0, 0, 1].into(),
    }
}

pub async fn app(version: &str) -> FakeAppHandle {
    FakeApp::builder()
        .service("reviews")
        .version(version)
        .start()
        .await
        .unwrap()
}

/// A ServiceEntry for reviews with the given (version, app) endpoints, v1/v2 subsets, plus extra.
pub fn mesh_yaml(apps: &[&FakeAppHandle], dr_extra: &str, vs_http: &str) -> String {
    mesh_yaml_annotated(apps, "", dr_extra, vs_http)
}

/// [`mesh_yaml`] with annotations on the DestinationRule (`key: value` entries of a flow map).
pub fn mesh_yaml_annotated(
    apps: &[&FakeAppHandle],
    dr_annotations: &str,
    dr_extra: &str,
    vs_http: &str,
) -> String {
    let endpoints: Vec<(SocketAddr, &str)> = apps.iter().map(|a| (a.addr(), a.version())).collect();
    mesh_yaml_endpoints(&endpoints, dr_annotations, dr_extra, vs_http)
}

/// [`mesh_yaml_annotated`] with reviews' endpoints given as (loopback address, version): a
/// sidecar's inbound port, for instance.
pub fn mesh_yaml_endpoints(
    endpoints: &[(SocketAddr, &str)],
    dr_annotations: &str,
    dr_extra: &str,
    vs_http: &str,
) -> String {
    let dr_meta = if dr_annotations.is_empty() {
        String::new()
    } else {
        format!(", annotations: {{{dr_annotations}}}")
    };
    let endpoints: String = endpoints
        .iter()
        .map(|(addr, version)| {
            format!(
                "  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: {version}}}}}\n",
                addr.port(),
            )
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews}}\nspec:\n  hosts: [{HOST}]\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n{endpoints}---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews{dr_meta}}}\nspec:\n  host: reviews\n{dr_extra}  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n{vs_http}"
    )
}

/// `http:` entries of a VirtualService splitting v1/v2.
pub fn split(v1: u32, v2: u32) -> String {
    format!(
        "  - route:\n    - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}\n    - {{destination: {{host: reviews, subset: v2}}, weight: {v2}}}\n"
    )
}

/// The sum of `name`'s samples whose labels include every `(label, value)` of `labels` (0 when
/// none): `/metrics` text read the way a PromQL `sum(name{...})` would.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.rsplit_once("} "))
        .filter(|(set, _)| {
            labels.iter().all(|(k, v)| {
                let pair = format!("{k}=\"{v}\"");
                set.split(',').any(|p| p == pair)
            })
        })
        .map(|(_, value)| value.trim().parse::<f64>().unwrap())
        .sum()
}
