//! What a replica publishes and what talks to it from outside: the gRPC API (`proto`), the configuration file a
//! replica reads (`node_config`), the client that submits transfers and reads replies, reports over the replicas'
//! answers, fault-drill orders, the local testnet and the benchmark; the `bftctl` tool. No storage, no server: the
//! operator depends on this crate and the core only.

pub mod bench;
pub mod client;
pub mod drill;
pub mod node_config;
pub mod report;
pub mod testnet;

/// The gRPC service and messages of `proto/bft.proto`.
pub mod proto {
    tonic::include_proto!("bft.v1");
}

/// Milliseconds since the Unix epoch, now: the wall clock hellos, drills and reports are stamped with.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
