//! Throughput of the consensus core alone: N replicas in one thread, real Ed25519 signatures on every
//! message and transfer, no network. Prints committed transfers per second beside the bound set by this
//! machine's Ed25519 verification rate and the verifications each transfer costs.
//!
//! `cargo bench -p bft-replica --bench core_throughput` (BENCH_TRANSFERS sets how many transfers per size).

use std::collections::VecDeque;
use std::time::Instant;

use bft_core::config::{Config, Membership, Params};
use bft_core::crypto::{Digest, KeyPair, PublicKey, SignedItem, verify_many};
use bft_core::ledger::{SignedTransfer, Transfer};
use bft_core::messages::{Member, Message, ReplicaId};
use bft_core::replica::{Input, Output, Replica};
use bft_core::verify::Verifier;

/// Transfers submitted at once, as by that many clients each with one outstanding request.
const WINDOW: usize = 4096;

fn main() {
    let transfers: usize = std::env::var("BENCH_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let (single_rate, batch_rate) = verification_rates();
    println!(
        "Ed25519 on one core of this machine: {single_rate:.0} strict verifications/s one by one, {batch_rate:.0}/s in batches of 64"
    );
    println!();
    println!(
        "{:>3} {:>2} {:>6} {:>10} {:>12} {:>10} {:>14} {:>10}",
        "N", "F", "quorum", "transfers", "tx/s", "verif/tx", "bound tx/s", "of bound"
    );
    for n in [4u32, 7, 10, 13] {
        let result = run(n, transfers);
        let bound = batch_rate / result.verifications_per_tx;
        println!(
            "{:>3} {:>2} {:>6} {:>10} {:>12.0} {:>10.2} {:>14.0} {:>9.0}%",
            n,
            (n - 1) / 3,
            result.quorum,
            transfers,
            result.tx_per_sec,
            result.verifications_per_tx,
            bound,
            100.0 * result.tx_per_sec / bound
        );
    }
    println!();
    println!("bound = batch verification rate / verifications per transfer (every replica checks every client");
    println!("signature once, plus its share of PRE-PREPARE, PREPARE, COMMIT and CHECKPOINT signatures); one thread.");
}

fn verification_rates() -> (f64, f64) {
    let keys: Vec<KeyPair> = (0..64u8).map(|i| KeyPair::from_secret([i; 32])).collect();
    let decoded: Vec<_> = keys.iter().map(|k| k.public().decompress().unwrap()).collect();
    let messages: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_le_bytes().repeat(24)).collect();
    let signatures: Vec<_> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
    let items: Vec<SignedItem> = (0..64)
        .map(|i| SignedItem {
            key: &decoded[i],
            message: &messages[i],
            signature: &signatures[i],
        })
        .collect();
    let rounds = 60;
    let start = Instant::now();
    for _ in 0..rounds {
        for (i, item) in items.iter().enumerate() {
            assert!(keys[i].public().verify(item.message, item.signature));
        }
    }
    let single = (rounds * 64) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..rounds {
        assert!(verify_many(&items).iter().all(|ok| *ok));
    }
    let batch = (rounds * 64) as f64 / start.elapsed().as_secs_f64();
    (single, batch)
}

struct Result {
    quorum: usize,
    tx_per_sec: f64,
    verifications_per_tx: f64,
}

fn run(n: u32, transfers: usize) -> Result {
    let keys: Vec<KeyPair> = (1..=n)
        .map(|i| KeyPair::from_secret(Digest::of("bench-member", &[&i.to_le_bytes()]).0))
        .collect();
    let members = keys
        .iter()
        .zip(1..)
        .map(|(k, id)| Member {
            id,
            public_key: k.public(),
        })
        .collect();
    let membership = Membership::new(members).unwrap();
    let accounts: Vec<KeyPair> = (0..WINDOW as u32)
        .map(|i| KeyPair::from_secret(Digest::of("bench-account", &[&i.to_le_bytes()]).0))
        .collect();
    let genesis: Vec<(PublicKey, u64)> = accounts.iter().map(|k| (k.public(), 1_000_000)).collect();
    let params = Params {
        max_batch_size: 1024,
        max_inflight_batches: 4,
        max_concurrent_requests: WINDOW * 2,
        ..Params::default()
    };
    let genesis_digest = Config {
        id: 1,
        membership: membership.clone(),
        genesis: genesis.clone(),
        params: params.clone(),
        admin: None,
    }
    .genesis_digest()
    .unwrap();
    let mut replicas: Vec<Replica> = keys
        .iter()
        .zip(1..)
        .map(|(key, id)| {
            let config = Config {
                id,
                membership: membership.clone(),
                genesis: genesis.clone(),
                params: params.clone(),
                admin: None,
            };
            Replica::new(config, key.clone()).unwrap()
        })
        .collect();
    let mut verifiers: Vec<Verifier> = (0..n)
        .map(|_| {
            Verifier::new(
                membership.clone(),
                genesis_digest,
                params.log_window,
                params.max_batch_size,
            )
        })
        .collect();
    for r in replicas.iter_mut() {
        r.start(0);
    }
    // Signing is the clients' work, not the cluster's: done before the clock starts.
    let txs: Vec<SignedTransfer> = (0..transfers)
        .map(|i| {
            let from = i % WINDOW;
            let to = (from + 1) % WINDOW;
            let nonce = (i / WINDOW) as u64 + 1;
            Transfer {
                from: accounts[from].public(),
                to: accounts[to].public(),
                amount: 1,
                nonce,
            }
            .sign(&accounts[from])
        })
        .collect();

    let start = Instant::now();
    let mut network: VecDeque<(ReplicaId, Message)> = VecDeque::new();
    for chunk in txs.chunks(WINDOW) {
        for (i, replica) in replicas.iter_mut().enumerate() {
            for verified in verifiers[i].requests(chunk.to_vec()) {
                let outputs = replica
                    .step(0, Input::Request(verified.expect("valid transfer")))
                    .expect("admitted");
                route(i as ReplicaId + 1, n, outputs, &mut network);
            }
        }
        while let Some((to, message)) = network.pop_front() {
            let i = to as usize - 1;
            let Ok(verified) = verifiers[i].message(message) else {
                continue;
            };
            if let Ok(outputs) = replicas[i].step(0, Input::Message(verified)) {
                route(to, n, outputs, &mut network);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let applied: Vec<u64> = replicas.iter().map(|r| r.stats().transfers_applied).collect();
    assert!(
        applied.iter().all(|a| *a == transfers as u64),
        "every replica applied every transfer: {applied:?}"
    );
    let verifications: u64 = verifiers.iter().map(|v| v.signatures_verified()).sum();
    Result {
        quorum: membership.quorum(),
        tx_per_sec: transfers as f64 / elapsed,
        verifications_per_tx: verifications as f64 / transfers as f64,
    }
}

fn route(from: ReplicaId, n: u32, outputs: Vec<Output>, network: &mut VecDeque<(ReplicaId, Message)>) {
    for output in outputs {
        match output {
            Output::Send { to, message } => network.push_back((to, message)),
            Output::Broadcast(message) => {
                for to in (1..=n).filter(|&to| to != from) {
                    network.push_back((to, message.clone()));
                }
            }
            _ => {}
        }
    }
}
