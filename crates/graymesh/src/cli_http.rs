//! The CLI's tiny HTTP client for pilot's admin API (`--server`, or `GRAYMESH_SERVER`).

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:15014";

/// GET `server` + `path` and parse the JSON answer; a non-2xx status is an error with its body.
pub async fn get_json(server: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = request(server, Method::GET, path, None).await?;
    if !status.is_success() {
        anyhow::bail!(
            "{server}{path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("{server}{path}: answer is not JSON"))
}

/// Send a request and return the status with the JSON answer, whatever the status: callers that
/// write print pilot's own error (`{"error": …, "errors": […]}`).
pub async fn send_json(
    server: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(hyper::StatusCode, serde_json::Value)> {
    let (status, body) = request(server, method, path, body).await?;
    let json = serde_json::from_slice(&body).unwrap_or_else(
        |_| serde_json::json!({ "error": String::from_utf8_lossy(&body).trim().to_string() }),
    );
    Ok((status, json))
}

async fn request(
    server: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("invalid server URL {url:?}"))?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .with_context(|| format!("cannot build a request for {url}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // Writes to etcd are bounded by pilot (a few seconds per attempt); 30 s covers its retries.
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
        .await
        .with_context(|| format!("{url}: no answer within 30 s"))?
        .with_context(|| format!("cannot reach pilot at {server} (is `graymesh pilot` running? set --server or GRAYMESH_SERVER)"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading response")?
        .to_bytes();
    Ok((status, body))
}
