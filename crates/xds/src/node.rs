//! Who is asking: the node a stream announces on its first request, reduced to the few facts that
//! change what it gets (its [`ProxyClass`]). Streams of the same class share one translation.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind as PbKind, Struct, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A gRPC application with the xDS resolver: API listeners named `host:port`, EDS only.
    ProxylessGrpc,
    /// A sidecar proxy (graymesh proxy or Envoy): real listeners on local ports.
    Sidecar,
    /// An ingress (or east-west) gateway: listeners for the servers of the Gateway objects whose
    /// selector its labels match, routed by the VirtualServices bound to those Gateways.
    Gateway,
}

impl NodeKind {
    /// A proxy that resolves DNS itself and serves real listeners (not a gRPC library).
    pub fn is_proxy(self) -> bool {
        self != NodeKind::ProxylessGrpc
    }
}

/// An explicit outbound port a sidecar declares: calls to `bind` go to `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Upstream {
    pub host: String,
    pub port: u32,
    pub bind_ip: String,
    pub bind_port: u32,
}

/// Everything about a node that its resources depend on. Equal classes get equal resources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ProxyClass {
    pub kind: NodeKind,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub upstreams: Vec<Upstream>,
    /// Where a sidecar wants its catch-all outbound listener (`OUTBOUND_ADDR`, `ip:port`);
    /// `None` means the default 127.0.0.1:15001.
    pub outbound_addr: Option<(String, u32)>,
    /// The IP a gateway's listeners bind (`GATEWAY_ADDR`); `None` means 127.0.0.1.
    pub gateway_addr: Option<String>,
}

impl ProxyClass {
    pub fn proxyless(namespace: &str) -> Self {
        Self {
            kind: NodeKind::ProxylessGrpc,
            namespace: namespace.into(),
            labels: BTreeMap::new(),
            upstreams: Vec::new(),
            outbound_addr: None,
            gateway_addr: None,
        }
    }

    pub fn sidecar(namespace: &str) -> Self {
        Self {
            kind: NodeKind::Sidecar,
            ..Self::proxyless(namespace)
        }
    }

    pub fn gateway(namespace: &str, labels: BTreeMap<String, String>) -> Self {
        Self {
            kind: NodeKind::Gateway,
            labels,
            ..Self::proxyless(namespace)
        }
    }

    /// Classify a node. Metadata keys follow Istio's: `NAMESPACE`, `LABELS`, `GENERATOR`
    /// (`grpc` for proxyless), plus graymesh's `UPSTREAMS` (`host:port=ip:port`, comma separated
    /// or a list), `OUTBOUND_ADDR`, and `ROLE: gateway` with `GATEWAY_ADDR` (an IP) for a
    /// gateway. gRPC libraries announce themselves in `user_agent_name`. The role is read from
    /// metadata only, never from the user agent, so an Envoy (whose user agent is always
    /// `envoy`) can be a gateway too.
    pub fn from_node(node: &Node) -> Self {
        let meta = node.metadata.as_ref();
        let generator = meta
            .and_then(|m| string_field(m, "GENERATOR"))
            .unwrap_or_default();
        let proxyless = generator == "grpc"
            || node
                .user_agent_name
                .to_ascii_lowercase()
                .starts_with("grpc");
        let namespace = meta
            .and_then(|m| string_field(m, "NAMESPACE"))
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| graymesh_model::object::DEFAULT_NAMESPACE.to_string());
        let labels = meta
            .and_then(|m| struct_field(m, "LABELS"))
            .unwrap_or_default();
        let mut upstreams: Vec<Upstream> = meta
            .and_then(|m| m.fields.get("UPSTREAMS"))
            .map(list_of_strings)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| parse_upstream(s))
            .collect();
        upstreams.sort();
        let outbound_addr = meta
            .and_then(|m| string_field(m, "OUTBOUND_ADDR"))
            .and_then(|a| {
                a.rsplit_once(':').and_then(|(ip, port)| {
                    Some((
                        ip.trim_matches(|c| c == '[' || c == ']').to_string(),
                        port.parse().ok()?,
                    ))
                })
            });
        let gateway = meta
            .and_then(|m| string_field(m, "ROLE"))
            .is_some_and(|r| r.eq_ignore_ascii_case("gateway"));
        let gateway_addr = meta
            .and_then(|m| string_field(m, "GATEWAY_ADDR"))
            .map(|ip| ip.trim_matches(|c| c == '[' || c == ']').to_string())
            .filter(|ip| !ip.is_empty());
        let kind = if proxyless {
            NodeKind::ProxylessGrpc
        } else if gateway {
            NodeKind::Gateway
        } else {
            NodeKind::Sidecar
        };
        Self {
            kind,
            namespace,
            labels,
            upstreams,
            outbound_addr,
            gateway_addr,
        }
    }
}

/// Where a proxy serves its admin API (node metadata `ADMIN_ADDR`, `ip:port`). An unspecified
/// IP (`0.0.0.0:15000`, `[::]:15000`) means every interface of the proxy's host, reached at the
/// IP the stream came from (`peer`, `ip:port`).
pub fn admin_addr(node: &Node, peer: Option<&str>) -> Option<SocketAddr> {
    let text = string_field(node.metadata.as_ref()?, "ADMIN_ADDR")?;
    let addr: SocketAddr = text.trim().parse().ok()?;
    if !addr.ip().is_unspecified() {
        return Some(addr);
    }
    let peer: SocketAddr = peer?.parse().ok()?;
    Some(SocketAddr::new(peer.ip(), addr.port()))
}

/// `reviews:9080=127.0.0.1:19080`
pub fn parse_upstream(text: &str) -> Option<Upstream> {
    let (target, bind) = text.trim().split_once('=')?;
    let (host, port) = target.rsplit_once(':')?;
    let (bind_ip, bind_port) = bind.rsplit_once(':')?;
    Some(Upstream {
        host: host.to_string(),
        port: port.parse().ok()?,
        bind_ip: bind_ip.trim_matches(|c| c == '[' || c == ']').to_string(),
        bind_port: bind_port.parse().ok()?,
    })
}

fn string_field(s: &Struct, key: &str) -> Option<String> {
    match s.fields.get(key)?.kind.as_ref()? {
        PbKind::StringValue(v) => Some(v.clone()),
        _ => None,
    }
}

fn struct_field(s: &Struct, key: &str) -> Option<BTreeMap<String, String>> {
    match s.fields.get(key)?.kind.as_ref()? {
        PbKind::StructValue(inner) => Some(
            inner
                .fields
                .iter()
                .filter_map(|(k, v)| match v.kind.as_ref()? {
                    PbKind::StringValue(s) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

fn list_of_strings(v: &Value) -> Vec<String> {
    match v.kind.as_ref() {
        Some(PbKind::StringValue(s)) => s
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .collect(),
        Some(PbKind::ListValue(list)) => list
            .values
            .iter()
            .filter_map(|v| match v.kind.as_ref()? {
                PbKind::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(PbKind::StringValue(s.into())),
        }
    }

    #[test]
    fn grpc_user_agent_means_proxyless() {
        let node = Node {
            id: "c1".into(),
            user_agent_name: "gRPC Python".into(),
            ..Default::default()
        };
        let class = ProxyClass::from_node(&node);
        assert_eq!(class.kind, NodeKind::ProxylessGrpc);
        assert_eq!(class.namespace, "default");
    }

    #[test]
    fn sidecar_metadata_is_read() {
        let mut fields = std::collections::HashMap::new();
        fields.insert("NAMESPACE".to_string(), string("shop"));
        fields.insert(
            "UPSTREAMS".to_string(),
            string("reviews:9080=127.0.0.1:19080,ratings:9080=127.0.0.1:19081"),
        );
        let node = Node {
            id: "p1".into(),
            metadata: Some(Struct { fields }),
            ..Default::default()
        };
        let class = ProxyClass::from_node(&node);
        assert_eq!(class.kind, NodeKind::Sidecar);
        assert_eq!(class.namespace, "shop");
        assert_eq!(class.upstreams.len(), 2);
        assert_eq!(class.upstreams[1].host, "reviews");
        assert_eq!(class.upstreams[1].bind_port, 19080);
    }

    #[test]
    fn gateway_role_and_labels_are_read() {
        let mut labels = std::collections::HashMap::new();
        labels.insert("istio".to_string(), string("ingressgateway"));
        let mut fields = std::collections::HashMap::new();
        fields.insert("ROLE".to_string(), string("gateway"));
        fields.insert("GATEWAY_ADDR".to_string(), string("127.0.0.2"));
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(PbKind::StructValue(Struct { fields: labels })),
            },
        );
        let node = Node {
            id: "ingress-1".into(),
            user_agent_name: "envoy".into(),
            metadata: Some(Struct { fields }),
            ..Default::default()
        };
        let class = ProxyClass::from_node(&node);
        assert_eq!(class.kind, NodeKind::Gateway);
        assert_eq!(class.gateway_addr.as_deref(), Some("127.0.0.2"));
        assert_eq!(
            class.labels.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
    }

    fn with_admin(addr: &str) -> Node {
        let mut fields = std::collections::HashMap::new();
        fields.insert("ADMIN_ADDR".to_string(), string(addr));
        Node {
            id: "p1".into(),
            metadata: Some(Struct { fields }),
            ..Default::default()
        }
    }

    #[test]
    fn admin_addr_is_read_and_an_unspecified_ip_becomes_the_peer_ip() {
        let peer = Some("127.0.0.7:40000");
        assert_eq!(
            admin_addr(&with_admin("127.0.0.2:15000"), peer),
            Some("127.0.0.2:15000".parse().unwrap())
        );
        assert_eq!(
            admin_addr(&with_admin("0.0.0.0:15000"), peer),
            Some("127.0.0.7:15000".parse().unwrap())
        );
        assert_eq!(admin_addr(&with_admin("0.0.0.0:15000"), None), None);
        assert_eq!(admin_addr(&with_admin("not an address"), peer), None);
        assert_eq!(admin_addr(&Node::default(), peer), None);
    }

    #[test]
    fn upstream_parsing_rejects_garbage() {
        assert!(parse_upstream("reviews:9080").is_none());
        assert!(parse_upstream("reviews:x=127.0.0.1:1").is_none());
        assert_eq!(
            parse_upstream("r:1=[::1]:2").map(|u| u.bind_ip),
            Some("::1".to_string())
        );
    }
}
