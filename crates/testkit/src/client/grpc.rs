//! A unary gRPC client over h2c that sends raw message bytes, for calling the fake app's
//! `graymesh.test.Echo` service directly or through a proxy.
//!
//! Every outcome is a [`GrpcError`] with a gRPC status code, including transport failures and
//! non-200 answers (mapped as gRPC clients map them), so tests assert on codes only.

use super::connect::{error_chain, pooled_client, ViaConnector};
use super::DEFAULT_TIMEOUT;
use crate::grpc::{self, code};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, TE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A non-OK gRPC status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcError {
    pub code: u32,
    pub message: String,
}

impl GrpcError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        GrpcError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for GrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grpc-status {}: {}", self.code, self.message)
    }
}

impl std::error::Error for GrpcError {}

/// Per-call deadline and metadata.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Sent as `grpc-timeout` and enforced client-side (`DEADLINE_EXCEEDED`).
    pub deadline: Option<Duration>,
    pub metadata: Vec<(String, String)>,
}

impl CallOptions {
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

/// Unary gRPC over one pooled h2c connection to a fixed address.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    client: Client<ViaConnector, Full<Bytes>>,
    authority: String,
}

impl GrpcClient {
    /// Dials `addr`; the `:authority` is `addr` until [`GrpcClient::with_authority`] changes it.
    pub fn new(addr: SocketAddr) -> Self {
        GrpcClient {
            client: pooled_client(true, Some(addr)),
            authority: addr.to_string(),
        }
    }

    /// The `:authority` to send (e.g. `reviews:9080`, for routing in a proxy).
    pub fn with_authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = authority.into();
        self
    }

    /// Calls `graymesh.test.Echo/Version` and returns the version string that answered.
    pub async fn version(&self, options: &CallOptions) -> Result<String, GrpcError> {
        let message = self.unary(grpc::VERSION_METHOD, b"", options).await?;
        Ok(String::from_utf8_lossy(&message).into_owned())
    }

    /// One unary call of `method` (`/package.Service/Method`) with a raw message.
    pub async fn unary(
        &self,
        method: &str,
        message: &[u8],
        options: &CallOptions,
    ) -> Result<Bytes, GrpcError> {
        let request = self.build_request(method, message, options)?;
        let limit = options.deadline.unwrap_or(DEFAULT_TIMEOUT);
        let call = async {
            let response = self.client.request(request).await;
            let response = response.map_err(|e| unavailable(&e))?;
            read_response(response).await
        };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(GrpcError::new(
                code::DEADLINE_EXCEEDED,
                format!("no answer within {limit:?} (client side)"),
            )),
        }
    }

    fn build_request(
        &self,
        method: &str,
        message: &[u8],
        options: &CallOptions,
    ) -> Result<Request<Full<Bytes>>, GrpcError> {
        let uri = format!("http://{}{}", self.authority, method);
        let mut request = Request::new(Full::new(grpc::encode_message(message)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.parse().map_err(|e| internal(format!("{uri}: {e}")))?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(grpc::CONTENT_TYPE));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(deadline) = options.deadline {
            let timeout = HeaderValue::try_from(grpc::timeout_header(deadline));
            headers.insert(
                "grpc-timeout",
                timeout.map_err(|e| internal(e.to_string()))?,
            );
        }
        for (key, value) in &options.metadata {
            let name = HeaderName::try_from(key.as_str());
            let text = HeaderValue::try_from(value.as_str());
            match (name, text) {
                (Ok(name), Ok(text)) => headers.append(name, text),
                _ => return Err(internal(format!("invalid metadata {key:?}: {value:?}"))),
            };
        }
        Ok(request)
    }
}

/// Reads the status from the headers (trailers-only) or else from the trailers.
async fn read_response(response: Response<Incoming>) -> Result<Bytes, GrpcError> {
    let (parts, body) = response.into_parts();
    if parts.status != StatusCode::OK {
        let message = format!("HTTP status {}", parts.status);
        return Err(GrpcError::new(
            grpc::status_from_http(parts.status),
            message,
        ));
    }
    if let Some(status) = status_in(&parts.headers) {
        return status.and_then(|()| Err(internal("trailers-only OK carries no response message")));
    }
    let collected = body.collect().await.map_err(|e| {
        GrpcError::new(
            code::INTERNAL,
            format!("reading response: {}", error_chain(&e)),
        )
    })?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    match status_in(&trailers) {
        Some(Ok(())) => grpc::decode_message(&collected.to_bytes()).map_err(internal),
        Some(Err(error)) => Err(error),
        None => Err(internal("response ended without grpc-status")),
    }
}

/// `None` without a `grpc-status`; otherwise OK or the error it names.
fn status_in(headers: &HeaderMap) -> Option<Result<(), GrpcError>> {
    let raw = headers.get("grpc-status")?;
    let status = raw.to_str().ok().and_then(|s| s.parse::<u32>().ok());
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok());
    let message = grpc::percent_decode(message.unwrap_or_default());
    Some(match status {
        Some(code::OK) => Ok(()),
        Some(code) => Err(GrpcError::new(code, message)),
        None => Err(internal(format!("unparsable grpc-status {raw:?}"))),
    })
}

fn unavailable(error: &(dyn std::error::Error + 'static)) -> GrpcError {
    GrpcError::new(code::UNAVAILABLE, error_chain(error))
}

fn internal(message: impl Into<String>) -> GrpcError {
    GrpcError::new(code::INTERNAL, message)
}
