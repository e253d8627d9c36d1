//! Connection upgrades (WebSocket and any other `Upgrade:` protocol) pass through: the request is
//! sent upstream with its `Upgrade` header, and if the upstream switches protocols (101) the two
//! connections are joined byte for byte until either side closes. No retries or route timeout
//! apply to the tunnel (it is expected to live long); a drain waits for it, within its bound.

use super::body::{self, local_reply, Body};
use super::ProxyCore;
use crate::table::ClusterSpec;
use crate::upstream::outlier::now_ms;
use crate::upstream::{balance, ClusterState};
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;

/// An HTTP/1.1 request asking to switch protocols.
pub fn is_upgrade(parts: &Parts) -> bool {
    let connection_upgrade = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    parts.version == Version::HTTP_11
        && connection_upgrade
        && parts.headers.contains_key(header::UPGRADE)
}

pub async fn tunnel(
    core: &ProxyCore,
    spec: &ClusterSpec,
    state: &ClusterState,
    mut parts: Parts,
    hash: Option<u64>,
) -> Response<Body> {
    let Some(addr) = balance::pick(spec, state, hash, now_ms(), &[]) else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
            false,
            "UH",
        );
    };
    let downstream = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{addr}{path}"))
        .version(Version::HTTP_11)
        .body(body::empty())
        .unwrap_or_else(|_| Request::new(body::empty()));
    for (name, value) in &parts.headers {
        if name != header::CONNECTION {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    request
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let mut response = match core.h1.get(spec.connect_timeout).request(request).await {
        Ok(r) => r,
        Err(e) => {
            return local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("upstream connect error: {e}"),
                false,
                "UF",
            )
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response.map(body::incoming);
    }
    let upstream = hyper::upgrade::on(&mut response);
    let open = core.tunnels.open();
    tokio::spawn(async move {
        let _open = open;
        let (Some(downstream), Ok(upstream)) = (downstream, upstream.await) else {
            return;
        };
        let Ok(downstream) = downstream.await else {
            return;
        };
        let (mut down, mut up) = (TokioIo::new(downstream), TokioIo::new(upstream));
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });
    let (head, _) = response.into_parts();
    Response::from_parts(head, body::empty())
}
