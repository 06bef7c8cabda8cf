//! A replica as a process: the host around the pure core (`bft-core`). The protocol loop (`node`) steps the core,
//! stores what it must keep with fsync before sending (`storage`), talks gRPC to peers and clients (`net`), and
//! exposes Prometheus metrics and health (`metrics`).

pub mod metrics;
pub mod net;
pub mod node;
pub mod storage;
