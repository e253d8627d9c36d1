//! etcd as a source: the config store ([`EtcdStore`]) and the registry ([`EtcdRegistry`]); and
//! lease-based leader election ([`leader::Election`]) for work only one pilot replica may do. One key layout
//! ([`keys`]) and one way to connect, so every pilot replica reads and writes the same keys.

mod config_store;
pub mod keys;
pub mod leader;
mod lease_keeper;
pub mod naming;
mod registry;

pub use config_store::EtcdStore;
pub use registry::{EtcdRegistry, RegistryError};

use std::time::Duration;

/// Bound on one unary etcd request (get, txn): past it etcd counts as unreachable for that call.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("--etcd: no endpoint given (expected http://host:port[,http://host:port...])")]
    NoEndpoint,
    #[error("etcd at {endpoints} is unreachable: {message}")]
    Unreachable { endpoints: String, message: String },
}

/// A client for `endpoints`. Connecting is lazy in the client, so callers make a first request
/// (bounded by [`REQUEST_TIMEOUT`]) to find out whether etcd is really there.
pub async fn connect(endpoints: &[String]) -> Result<etcd_client::Client, EtcdError> {
    if endpoints.is_empty() {
        return Err(EtcdError::NoEndpoint);
    }
    // No per-request timeout in the options: it would also cut long-lived watch streams.
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    let connect = etcd_client::Client::connect(endpoints, Some(options));
    match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(unreachable(endpoints, e.to_string())),
        Err(_) => Err(unreachable(
            endpoints,
            format!("no connection within {REQUEST_TIMEOUT:?}"),
        )),
    }
}

pub(crate) fn unreachable(endpoints: &[String], message: String) -> EtcdError {
    EtcdError::Unreachable {
        endpoints: endpoints.join(","),
        message,
    }
}

/// Run one etcd request with [`REQUEST_TIMEOUT`]; errors and time-outs become a message.
pub(crate) async fn bounded<T>(
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}
