//! The Kubernetes operator for `ByzantineCluster` resources.
//!
//! `crd` holds the resource's types; `plan` decides, as a pure function of the spec, the recorded status and what
//! the replicas report, what to do next (every safety rule lives there); `resources` builds each Kubernetes
//! object as a pure function; `platform` carries the plan out on Kubernetes or on local processes; `health`
//! polls the replicas through their public gRPC API.
//!
//! The sizing rule (how many members a cluster may lose and how many must agree) comes from the replica's own
//! definitions, so the two cannot drift.

pub mod controller;
pub mod crd;
pub mod health;
pub mod leader;
pub mod plan;
pub mod platform;
pub mod resources;
pub mod telemetry;

use bft_core::config::{max_failures, quorum_size};

/// What a cluster of `replicas` members tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub replicas: usize,
    /// Members that may be faulty (crashed or malicious) at once.
    pub max_failures: usize,
    /// Members whose agreement commits anything.
    pub quorum: usize,
}

impl Sizing {
    /// `None` below 4 replicas, which tolerate no fault.
    pub fn of(replicas: usize) -> Option<Sizing> {
        (replicas >= 4).then(|| Sizing {
            replicas,
            max_failures: max_failures(replicas),
            quorum: quorum_size(replicas),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drill_sizes() {
        assert_eq!(Sizing::of(3), None);
        let table = [(4, 1, 3), (7, 2, 5), (10, 3, 7), (13, 4, 9)];
        for (n, f, q) in table {
            assert_eq!(
                Sizing::of(n),
                Some(Sizing {
                    replicas: n,
                    max_failures: f,
                    quorum: q
                })
            );
        }
    }
}
