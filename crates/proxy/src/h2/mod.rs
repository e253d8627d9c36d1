//! HTTP/2 on both sides of the proxy, with the `h2` crate driven directly: downstream
//! connections (`server`), upstream connections (`client`), and the bodies between them.

pub(crate) mod body;
pub(crate) mod client;
pub mod server;
