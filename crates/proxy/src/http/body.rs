//! The body type that flows through the proxy, and local (proxy-generated) replies.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// gRPC status codes used in local replies.
pub const GRPC_UNAVAILABLE: u32 = 14;
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;
pub const GRPC_UNIMPLEMENTED: u32 = 12;

/// A reply made by the proxy itself. gRPC callers get HTTP 200 with `grpc-status` (a
/// trailers-only response) so their libraries report a proper status instead of a protocol error.
pub fn local_reply(
    status: StatusCode,
    message: &str,
    grpc: bool,
    flag: &'static str,
) -> Response<Body> {
    let mut builder = Response::builder().header("x-graymesh-local-reply", flag);
    if grpc {
        builder = builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", grpc_status_for(status).to_string())
            .header(
                "grpc-message",
                HeaderValue::from_str(message)
                    .unwrap_or(HeaderValue::from_static("graymesh proxy error")),
            );
        return builder
            .body(empty())
            .unwrap_or_else(|_| Response::new(empty()));
    }
    builder
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(format!("{message}\n")))
        .unwrap_or_else(|_| Response::new(empty()))
}

/// The gRPC status Envoy maps an HTTP status to.
pub fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => GRPC_UNIMPLEMENTED,
        429 | 502 | 503 | 504 => GRPC_UNAVAILABLE,
        _ => 2,
    }
}

pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}
