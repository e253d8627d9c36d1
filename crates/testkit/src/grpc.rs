//! gRPC wire details shared by the fake app and [`crate::GrpcClient`]: method paths, status
//! codes, length-prefixed message framing and the `grpc-timeout` header.
//!
//! Only what the testkit speaks lives here; it must never grow into a gRPC implementation (no
//! compression, no streaming, no protobuf): messages are raw bytes.

use hyper::body::Bytes;
use hyper::StatusCode;
use std::time::Duration;

/// Unary method answering with the app's version string as the response message.
pub const VERSION_METHOD: &str = "/graymesh.test.Echo/Version";
/// Unary method that always answers trailers-only with `UNAVAILABLE`.
pub const FAIL_METHOD: &str = "/graymesh.test.Echo/Fail";
/// Unary method answering with the request's metadata as a JSON object (name → value).
pub const METADATA_METHOD: &str = "/graymesh.test.Echo/Metadata";
/// The content type of every gRPC request and response.
pub const CONTENT_TYPE: &str = "application/grpc";

/// The gRPC status codes the testkit produces or maps to.
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const NOT_FOUND: u32 = 5;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// Frames one message: compressed flag 0, 4-byte big-endian length, payload.
pub fn encode_message(payload: &[u8]) -> Bytes {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// Reads the first length-prefixed message of a unary body.
pub fn decode_message(body: &[u8]) -> Result<Bytes, String> {
    let Some((header, rest)) = body.split_first_chunk::<5>() else {
        return Err(format!(
            "gRPC body of {} bytes is shorter than a frame header",
            body.len()
        ));
    };
    if header[0] != 0 {
        return Err("compressed gRPC messages are not supported by the testkit".into());
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    match rest.get(..len) {
        Some(payload) => Ok(Bytes::copy_from_slice(payload)),
        None => Err(format!(
            "gRPC frame says {len} bytes but {} follow",
            rest.len()
        )),
    }
}

/// Formats a deadline as a `grpc-timeout` value (at most 8 digits and a unit).
pub fn timeout_header(deadline: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let units: [(u128, &str); 4] = [
        (deadline.as_nanos(), "n"),
        (deadline.as_micros(), "u"),
        (deadline.as_millis(), "m"),
        (u128::from(deadline.as_secs()), "S"),
    ];
    let fitting = units.iter().find(|(value, _)| *value <= MAX);
    let (value, unit) = fitting.copied().unwrap_or((MAX, "S"));
    format!("{value}{unit}")
}

/// The status a gRPC client reports for a non-200 HTTP response (gRPC's http-grpc-status-mapping).
pub fn status_from_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// Decodes the percent-encoding of `grpc-message`; invalid escapes are kept as they are.
pub fn percent_decode(message: &str) -> String {
    let bytes = message.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame = encode_message(b"v2");
        assert_eq!(&frame[..], &[0, 0, 0, 0, 2, b'v', b'2']);
        assert_eq!(decode_message(&frame).unwrap(), Bytes::from_static(b"v2"));
    }

    #[test]
    fn short_or_compressed_frames_are_rejected() {
        assert!(decode_message(&[0, 0, 0]).is_err());
        assert!(decode_message(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(decode_message(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn timeouts_use_the_finest_unit_that_fits() {
        assert_eq!(timeout_header(Duration::from_nanos(1500)), "1500n");
        assert_eq!(timeout_header(Duration::from_millis(250)), "250000u");
        assert_eq!(timeout_header(Duration::from_secs(2)), "2000000u");
        assert_eq!(timeout_header(Duration::from_secs(3600)), "3600000m");
        assert_eq!(timeout_header(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn messages_are_percent_decoded() {
        assert_eq!(
            percent_decode("no%20healthy%20upstream"),
            "no healthy upstream"
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
