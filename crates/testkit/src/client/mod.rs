//! Clients that talk to the fake app or to a proxy in front of it: [`Http1Client`],
//! [`Http2Client`] (h2c prior knowledge), [`GrpcClient`], and the bounded load generator
//! [`run_load`].
//!
//! Every call is bounded by a timeout, so a test that goes wrong fails instead of hanging. The
//! clients never retry: counting what the proxy did is the tests' job.

mod connect;
mod grpc;
mod load;

pub use grpc::{CallOptions, GrpcClient, GrpcError};
pub use load::{run_load, LoadCall, LoadPlan, LoadReport, StopReason};

use anyhow::{anyhow, Context};
use connect::{error_chain, pooled_client, ViaConnector};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use std::net::SocketAddr;
use std::time::Duration;

/// How long one call may take unless the client is told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP answer, read whole.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// From the `x-version` header, else the `version` field of a JSON body.
    pub version: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    async fn read(response: Response<Incoming>) -> anyhow::Result<Reply> {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.context("reading body")?.to_bytes();
        let version = header_version(&parts.headers).or_else(|| json_version(&body));
        Ok(Reply {
            status: parts.status,
            version,
            headers: parts.headers,
            body,
        })
    }

    /// The body as JSON, e.g. the fake app's echo.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("reply body is not JSON")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn header_version(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(crate::app::X_VERSION)?;
    value.to_str().ok().map(str::to_owned)
}

fn json_version(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json.get("version")?.as_str().map(str::to_owned)
}

// === impl HttpCore ===

/// What both HTTP clients share: a pooled client and a per-call timeout.
#[derive(Clone, Debug)]
struct HttpCore {
    client: Client<ViaConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpCore {
    fn new(http2_only: bool, via: Option<SocketAddr>) -> Self {
        HttpCore {
            client: pooled_client(http2_only, via),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let request = build_request(method, url, headers, body)?;
        let call = async {
            let response = self.client.request(request).await;
            let response = response.map_err(|e| anyhow!("{url}: {}", error_chain(&e)))?;
            Reply::read(response).await.with_context(|| url.to_owned())
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(reply) => reply,
            Err(_) => Err(anyhow!("{url}: no reply within {:?}", self.timeout)),
        }
    }
}

fn build_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    for (name, value) in headers {
        let name = HeaderName::try_from(*name).with_context(|| format!("bad header {name:?}"))?;
        let value =
            HeaderValue::try_from(*value).with_context(|| format!("bad value {value:?}"))?;
        request.headers_mut().append(name, value);
    }
    Ok(request)
}

// === the two HTTP clients ===

macro_rules! http_client {
    ($(#[$doc:meta])* $name:ident, http2_only = $h2:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(HttpCore);

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// Dials the host named in each URL.
            pub fn new() -> Self {
                $name(HttpCore::new($h2, None))
            }

            /// Dials `addr` for every request; the URL still sets path and host/authority.
            pub fn via(addr: SocketAddr) -> Self {
                $name(HttpCore::new($h2, Some(addr)))
            }

            /// Bounds each call (default [`DEFAULT_TIMEOUT`]).
            pub fn with_timeout(mut self, timeout: Duration) -> Self {
                self.0.timeout = timeout;
                self
            }

            pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
                self.0.send(Method::GET, url, headers, Bytes::new()).await
            }

            pub async fn post(
                &self,
                url: &str,
                headers: &[(&str, &str)],
                body: impl Into<Bytes>,
            ) -> anyhow::Result<Reply> {
                self.0.send(Method::POST, url, headers, body.into()).await
            }

            pub async fn request(
                &self,
                method: Method,
                url: &str,
                headers: &[(&str, &str)],
                body: impl Into<Bytes>,
            ) -> anyhow::Result<Reply> {
                self.0.send(method, url, headers, body.into()).await
            }
        }
    };
}

http_client!(
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1Client,
    http2_only = false
);

http_client!(
    /// HTTP/2 cleartext with prior knowledge, multiplexed on pooled connections.
    Http2Client,
    http2_only = true
);
