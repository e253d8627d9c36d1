//! graymesh-testkit: the one fake app and the load helpers that every graymesh integration test
//! uses (STYLE rule 5).
//!
//! It owns [`FakeApp`] (a backend speaking HTTP/1.0, HTTP/1.1, h2c and gRPC on one port, with
//! injectable errors and latency), the protocol clients in [`client`] and the bounded load
//! generator [`client::run_load`], and [`EtcdServer`], a real etcd on loopback ports. It must never
//! send traffic beyond the address it is given, never loop without a count *and* a time bound, and
//! never make a test wait by sleeping: tests wait on replies and counters instead.

pub mod app;
pub mod client;
pub mod etcd;
pub mod grpc;
pub mod ports;

pub use app::{FakeApp, FakeAppBuilder, FakeAppHandle, RequestCounts};
pub use client::{
    run_load, CallOptions, GrpcClient, GrpcError, Http1Client, Http2Client, LoadCall, LoadPlan,
    LoadReport, Reply, StopReason,
};
pub use etcd::{EtcdError, EtcdServer};
pub use ports::{free_addr, free_port};
