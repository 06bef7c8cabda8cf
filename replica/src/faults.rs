//! Fault drills: what a Byzantine member does to what it sends, shared by the simulator and the replica process
//! (where it is refused unless the replica allows fault injection).
//!
//! A `Saboteur` stands between a member's honest core and the network. Each fault acts on a message with its
//! probability; everything it sends that is not corrupted on purpose is correctly signed with the member's own
//! key, so the other members see exactly what a compromised replica could send.

use std::collections::HashSet;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, KeyPair, PublicKey};
use crate::ledger::{RejectReason, SignedTransfer, Transfer, TxOutcome};
use crate::messages::{Checkpoint, Commit, Message, PrePrepare, Prepare, ReplicaId, Reply, Signed, proposal_digest};

/// A fault a member can be made to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// What it sends carries a signature that does not verify.
    SignatureCorruption,
    /// As primary, proposes batches that spend funds already spent (and, with an accomplice's key, two transfers
    /// spending the same funds); as any member, signs checkpoints and replies of a state the quorum does not have.
    DoubleSpend,
    /// Does not admit client requests, so as primary it proposes nothing.
    Censorship,
    /// Sends conflicting PRE-PREPAREs, PREPAREs and COMMITs for one slot to different peers.
    Equivocation,
    /// Sends nothing.
    Silence,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::SignatureCorruption,
        Fault::DoubleSpend,
        Fault::Censorship,
        Fault::Equivocation,
        Fault::Silence,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Fault::SignatureCorruption => "signature-corruption",
            Fault::DoubleSpend => "double-spend",
            Fault::Censorship => "censorship",
            Fault::Equivocation => "equivocation",
            Fault::Silence => "silence",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(name: &str) -> Result<Fault, String> {
        Fault::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            format!(
                "unknown fault {name:?}; one of {}",
                Fault::ALL.map(|f| f.name()).join(", ")
            )
        })
    }
}

/// A fault and how often it acts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultDrill {
    pub fault: Fault,
    /// In [0, 1]: the chance that the fault acts on each message (for censorship, on each request).
    pub probability: f64,
}

impl FaultDrill {
    pub fn new(fault: Fault, probability: f64) -> Result<FaultDrill, String> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!("probability {probability} is not between 0 and 1"));
        }
        Ok(FaultDrill { fault, probability })
    }
}

impl std::fmt::Display for FaultDrill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} p={}", self.fault, self.probability)
    }
}

/// Two transfers spending the same funds need the payer's key: a member that has one (in the simulator, an
/// accomplice's account) proposes them; one that has not can still propose funds spent before.
pub struct Accomplice {
    pub key: KeyPair,
    pub payee: PublicKey,
}

pub struct Saboteur {
    drill: FaultDrill,
    id: ReplicaId,
    key: KeyPair,
    rng: ChaCha8Rng,
    max_batch_size: usize,
    accomplice: Option<Accomplice>,
    proposed_before: Vec<SignedTransfer>,
    /// Transfers this saboteur signed with the accomplice's key, for whoever keeps track of signed transfers.
    pub forged: Vec<SignedTransfer>,
}

impl Saboteur {
    pub fn new(drill: FaultDrill, id: ReplicaId, key: KeyPair, seed: u64, max_batch_size: usize) -> Saboteur {
        Saboteur {
            drill,
            id,
            key,
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_batch_size,
            accomplice: None,
            proposed_before: Vec::new(),
            forged: Vec::new(),
        }
    }

    pub fn with_accomplice(mut self, accomplice: Accomplice) -> Saboteur {
        self.accomplice = Some(accomplice);
        self
    }

    pub fn drill(&self) -> FaultDrill {
        self.drill
    }

    fn acts(&mut self) -> bool {
        self.rng.random_bool(self.drill.probability)
    }

    /// Whether a client request is admitted (censorship refuses it silently).
    pub fn admits_request(&mut self) -> bool {
        !(self.drill.fault == Fault::Censorship && self.acts())
    }

    /// What each of `peers` peers receives instead of `message`, in order (`None`: nothing).
    pub fn outgoing(&mut self, message: &Message, peers: usize) -> Vec<Option<Message>> {
        match self.drill.fault {
            Fault::Censorship => vec![Some(message.clone()); peers],
            Fault::Silence => (0..peers).map(|_| (!self.acts()).then(|| message.clone())).collect(),
            Fault::SignatureCorruption => (0..peers)
                .map(|_| {
                    let mut m = message.clone();
                    if self.acts() {
                        m.corrupt_signature();
                    }
                    Some(m)
                })
                .collect(),
            Fault::Equivocation => (0..peers)
                .map(|_| {
                    Some(if self.acts() {
                        self.equivocation(message)
                    } else {
                        message.clone()
                    })
                })
                .collect(),
            // One version for every peer: the lie is about the ledger, not about who hears what.
            Fault::DoubleSpend => {
                let m = if self.acts() {
                    self.double_spend(message)
                } else {
                    message.clone()
                };
                vec![Some(m); peers]
            }
        }
    }

    /// The reply sent to a client: a double spender signs outcomes the quorum did not reach.
    pub fn reply(&mut self, reply: Signed<Reply>) -> Signed<Reply> {
        if self.drill.fault != Fault::DoubleSpend || !self.acts() {
            return reply;
        }
        let mut body = reply.body;
        for (_, outcome) in body.outcomes.iter_mut() {
            *outcome = match outcome {
                TxOutcome::Applied => TxOutcome::Rejected(RejectReason::ZeroAmount),
                TxOutcome::Rejected(_) => TxOutcome::Applied,
            };
        }
        Signed::new(self.id, body, &self.key)
    }

    /// A message conflicting with `message` for the same slot, correctly signed.
    fn equivocation(&mut self, message: &Message) -> Message {
        let other = Digest(self.rng.random());
        match message {
            Message::PrePrepare(pp) => {
                let mut batch = pp.body.batch.clone();
                batch.pop();
                let body = PrePrepare {
                    digest: proposal_digest(&batch, &pp.body.ops, pp.body.at_ms),
                    batch,
                    ..pp.body.clone()
                };
                Message::PrePrepare(Signed::new(self.id, body, &self.key))
            }
            Message::Prepare(p) => Message::Prepare(Signed::new(
                self.id,
                Prepare {
                    digest: other,
                    ..p.body
                },
                &self.key,
            )),
            Message::Commit(c) => Message::Commit(Signed::new(
                self.id,
                Commit {
                    digest: other,
                    ..c.body
                },
                &self.key,
            )),
            other_message => other_message.clone(),
        }
    }

    /// Adds spends of spent funds to proposals, and lies about the state in checkpoints.
    fn double_spend(&mut self, message: &Message) -> Message {
        match message {
            Message::PrePrepare(pp) => {
                let mut batch = pp.body.batch.clone();
                let earlier = std::mem::replace(&mut self.proposed_before, batch.clone());
                // Spend again what an earlier proposal spent: a valid batch whose transfers were ordered before,
                // which must execute once and then be refused as reused nonces.
                if !earlier.is_empty() && (self.accomplice.is_none() || self.rng.random_bool(0.5)) {
                    batch.extend(earlier.into_iter().filter(|tx| !pp.body.batch.contains(tx)));
                    batch.truncate(self.max_batch_size);
                    let mut spends = HashSet::new();
                    batch.retain(|tx| spends.insert(tx.spend_key()));
                } else if let Some(accomplice) = &self.accomplice {
                    // Two transfers that spend the same funds, correctly signed by the accomplice.
                    for amount in [1, 2] {
                        let tx = Transfer {
                            from: accomplice.key.public(),
                            to: accomplice.payee,
                            amount,
                            nonce: pp.body.seq,
                        }
                        .sign(&accomplice.key);
                        self.forged.push(tx);
                        batch.push(tx);
                    }
                } else {
                    return message.clone();
                }
                let body = PrePrepare {
                    digest: proposal_digest(&batch, &pp.body.ops, pp.body.at_ms),
                    batch,
                    ..pp.body.clone()
                };
                Message::PrePrepare(Signed::new(self.id, body, &self.key))
            }
            Message::Checkpoint(c) => {
                let body = Checkpoint {
                    state_digest: Digest(self.rng.random()),
                    ..c.body
                };
                Message::Checkpoint(Signed::new(self.id, body, &self.key))
            }
            other => other.clone(),
        }
    }
}
