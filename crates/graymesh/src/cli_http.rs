//! The CLI's tiny HTTP client for pilot's admin API (`--server`, or `GRAYMESH_SERVER`).

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:15014";

/// GET `server` + `path` and parse the JSON answer; a non-2xx status is an error with its body.
pub async fn get_json(server: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("invalid server URL {url:?}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), client.get(uri))
        .await
        .with_context(|| format!("{url}: no answer within 10 s"))?
        .with_context(|| format!("cannot reach pilot at {server} (is `graymesh pilot` running? set --server or GRAYMESH_SERVER)"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading response")?
        .to_bytes();
    if !status.is_success() {
        anyhow::bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("{url}: answer is not JSON"))
}
