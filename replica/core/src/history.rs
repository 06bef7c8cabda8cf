//! What a replica keeps across restarts besides the protocol state: the faults it detected and the view changes it
//! went through. Both are small (one detection per member and kind of fault, the latest view changes), so the store
//! writes them whole, in the same transaction as the protocol entries of the step that changed them.

use serde::{Deserialize, Serialize};

use crate::evidence::{Evidence, FaultType};
use crate::messages::{Message, ReplicaId, Seq, View};

/// One misbehaving message, as the replica saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub member: ReplicaId,
    pub fault: FaultType,
    /// The protocol message it came in (prepare, checkpoint, …).
    pub message: String,
    pub sequence: Option<Seq>,
    /// The transfer it was about (digest, hex), when it was about one.
    pub transaction: Option<String>,
    pub expected: String,
    pub received: String,
    /// Signed messages that prove it to anyone (see `evidence`); none when only this replica's word stands.
    pub proof: Option<Evidence>,
}

/// What is kept of a message while it is verified (verification consumes it): enough to say who misbehaved.
#[derive(Clone, Copy, Debug)]
pub struct MessageSummary {
    pub sender: ReplicaId,
    pub kind: &'static str,
    pub seq: Option<Seq>,
}

impl MessageSummary {
    pub fn of(message: &Message) -> MessageSummary {
        MessageSummary {
            sender: message.sender(),
            kind: message.kind(),
            seq: message.seq(),
        }
    }
}

impl Observation {
    /// What verified evidence proves, carrying it.
    pub fn proven(proof: Evidence) -> Observation {
        let mut observation = match &proof {
            Evidence::DoubleSpend { proposal } => Observation {
                member: proposal.from,
                fault: FaultType::DoubleSpend,
                message: "pre_prepare".into(),
                sequence: Some(proposal.body.seq),
                transaction: None,
                expected: "each account's funds spent once".into(),
                received: format!(
                    "a signed proposal of {} transfers spending funds twice",
                    proposal.body.batch.len()
                ),
                proof: None,
            },
            Evidence::Equivocation { first, second } => {
                let digest = |m: &Message| match m {
                    Message::PrePrepare(x) => x.body.digest.to_hex(),
                    Message::Prepare(x) => x.body.digest.to_hex(),
                    Message::Commit(x) => x.body.digest.to_hex(),
                    Message::Checkpoint(x) => x.body.state_digest.to_hex(),
                    _ => String::new(),
                };
                Observation {
                    member: second.sender(),
                    fault: FaultType::Equivocation,
                    message: second.kind().into(),
                    sequence: second.seq(),
                    transaction: None,
                    expected: format!("one signed {} per slot: {}", first.kind(), digest(first)),
                    received: format!("a second one: {}", digest(second)),
                    proof: None,
                }
            }
            Evidence::DivergentCheckpoint {
                checkpoint,
                certificate,
            } => Observation {
                member: checkpoint.from,
                fault: FaultType::DivergentExecution,
                message: "checkpoint".into(),
                sequence: Some(checkpoint.body.seq),
                transaction: None,
                expected: format!("state digest {}", certificate.state_digest.to_hex()),
                received: format!("state digest {}", checkpoint.body.state_digest.to_hex()),
                proof: None,
            },
            Evidence::DivergentReply {
                member,
                seq,
                transaction,
                replies,
            } => {
                let outcome = |from_member: bool| {
                    replies
                        .iter()
                        .filter(|r| (r.from == *member) == from_member)
                        .flat_map(|r| &r.body.outcomes)
                        .find(|(tx, _)| tx == transaction)
                        .map_or("none".to_string(), |(_, o)| format!("{o:?}"))
                };
                Observation {
                    member: *member,
                    fault: FaultType::DivergentExecution,
                    message: "reply".into(),
                    sequence: Some(*seq),
                    transaction: Some(transaction.to_hex()),
                    expected: format!("outcome {}, as F+1 other members signed", outcome(false)),
                    received: format!("outcome {}", outcome(true)),
                    proof: None,
                }
            }
            Evidence::ProposalByBackup { proposal } => Observation {
                member: proposal.from,
                fault: FaultType::ProtocolViolation,
                message: "pre_prepare".into(),
                sequence: Some(proposal.body.seq),
                transaction: None,
                expected: format!("a proposal for view {} by its primary", proposal.body.view),
                received: format!("a proposal signed by backup {}", proposal.from),
                proof: None,
            },
            Evidence::BadStateChunk { transfer } => Observation {
                member: transfer.from,
                fault: FaultType::DivergentExecution,
                message: "state_transfer".into(),
                sequence: Some(transfer.body.checkpoint.seq),
                transaction: None,
                expected: format!(
                    "chunk {} of the state certified at {}",
                    transfer.body.index, transfer.body.checkpoint.seq
                ),
                received: "a signed chunk its manifest contradicts".into(),
                proof: None,
            },
            Evidence::ConflictingNewViews { first, second } => Observation {
                member: second.from,
                fault: FaultType::Equivocation,
                message: "new_view".into(),
                sequence: None,
                transaction: None,
                expected: format!(
                    "one signed NEW-VIEW for view {} ({} VIEW-CHANGEs, {} proposals)",
                    first.body.view,
                    first.body.view_changes.len(),
                    first.body.pre_prepares.len()
                ),
                received: format!(
                    "a second, different one ({} VIEW-CHANGEs, {} proposals)",
                    second.body.view_changes.len(),
                    second.body.pre_prepares.len()
                ),
                proof: None,
            },
            Evidence::NewViewWithoutQuorum { new_view } => Observation {
                member: new_view.from,
                fault: FaultType::ProtocolViolation,
                message: "new_view".into(),
                sequence: None,
                transaction: None,
                expected: format!("a NEW-VIEW for view {} on a quorum of VIEW-CHANGEs", new_view.body.view),
                received: format!("a signed NEW-VIEW on {} VIEW-CHANGEs", new_view.body.view_changes.len()),
                proof: None,
            },
            Evidence::NewViewNotDerived { new_view } => Observation {
                member: new_view.from,
                fault: FaultType::ProtocolViolation,
                message: "new_view".into(),
                sequence: None,
                transaction: None,
                expected: format!(
                    "a NEW-VIEW for view {} re-proposing what its VIEW-CHANGEs determine",
                    new_view.body.view
                ),
                received: format!(
                    "a signed NEW-VIEW with {} other proposals",
                    new_view.body.pre_prepares.len()
                ),
                proof: None,
            },
            Evidence::InvalidViewChange { view_change } => Observation {
                member: view_change.from,
                fault: FaultType::ProtocolViolation,
                message: "view_change".into(),
                sequence: None,
                transaction: None,
                expected: format!(
                    "a VIEW-CHANGE for view {} carrying only prepared certificates that hold",
                    view_change.body.new_view
                ),
                received: format!(
                    "a signed VIEW-CHANGE carrying one that does not hold ({} in all)",
                    view_change.body.prepared.len()
                ),
                proof: None,
            },
        };
        observation.proof = Some(proof);
        observation
    }

    /// How it was seen.
    pub fn method(&self) -> &'static str {
        match (self.fault, self.message.as_str()) {
            (FaultType::DivergentExecution, "reply") => "signed_reply_comparison",
            (fault, _) => fault.method(),
        }
    }
}

/// A member seen misbehaving in one way: the first time, with its evidence, and how often since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    pub first: Observation,
    pub first_seen_unix_ms: u64,
    pub last_seen_unix_ms: u64,
    pub occurrences: u64,
}

/// A view change as this replica saw it end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangeRecord {
    pub view: View,
    pub old_primary: ReplicaId,
    pub new_primary: ReplicaId,
    /// When this replica started it (absent when it joined an installed view without changing itself).
    pub started_unix_ms: Option<u64>,
    pub installed_unix_ms: u64,
    /// Why this replica started it: request_timeout, new_view_timeout, joined_peers or forced.
    pub reason: Option<String>,
    /// The members whose VIEW-CHANGE messages the new view was built from.
    pub triggered_by: Vec<ReplicaId>,
    pub quorum_met: bool,
    pub batches_recovered: u64,
    pub transfers_recovered: u64,
}

/// A quarantine consensus decided, as this replica executed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub member: ReplicaId,
    pub fault: FaultType,
    /// The batch that decided it.
    pub seq: Seq,
    /// When this replica executed that batch.
    pub decided_unix_ms: u64,
    pub until_unix_ms: u64,
    /// The accusers, when accusations decided it; empty when evidence did.
    pub accusers: Vec<ReplicaId>,
}

/// A membership change as this replica went through it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    /// The last sequence number of the previous epoch.
    pub seq: Seq,
    pub unix_ms: u64,
    pub members: Vec<ReplicaId>,
    pub removed: Vec<ReplicaId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Newest last; one per (member, fault type).
    pub detections: Vec<Detection>,
    /// Newest last; at most `VIEW_CHANGES_KEPT`.
    pub view_changes: Vec<ViewChangeRecord>,
    /// Newest last; at most `VIEW_CHANGES_KEPT`.
    pub quarantines: Vec<QuarantineRecord>,
    /// Newest last; at most `VIEW_CHANGES_KEPT`.
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// View changes beyond this many are forgotten, oldest first.
    pub const VIEW_CHANGES_KEPT: usize = 1000;

    /// Records an observation; true when it is the first of its member and kind (the log gained an entry).
    pub fn observe(&mut self, observation: Observation, now_unix_ms: u64) -> bool {
        let existing = self
            .detections
            .iter_mut()
            .find(|d| d.first.member == observation.member && d.first.fault == observation.fault);
        match existing {
            Some(detection) => {
                detection.occurrences += 1;
                detection.last_seen_unix_ms = now_unix_ms;
                // The first proof is kept: an entry that had only this replica's word gains one once it comes.
                if detection.first.proof.is_none() && observation.proof.is_some() {
                    detection.first = observation;
                    return true;
                }
                false
            }
            None => {
                self.detections.push(Detection {
                    first: observation,
                    first_seen_unix_ms: now_unix_ms,
                    last_seen_unix_ms: now_unix_ms,
                    occurrences: 1,
                });
                true
            }
        }
    }

    pub fn view_changed(&mut self, record: ViewChangeRecord) {
        push_bounded(&mut self.view_changes, record);
    }

    pub fn quarantined(&mut self, record: QuarantineRecord) {
        push_bounded(&mut self.quarantines, record);
    }

    pub fn epoch_started(&mut self, record: EpochRecord) {
        push_bounded(&mut self.epochs, record);
    }

    /// The latest quarantine of `member`.
    pub fn quarantine_of(&self, member: ReplicaId) -> Option<&QuarantineRecord> {
        self.quarantines.iter().rev().find(|q| q.member == member)
    }
}

fn push_bounded<T>(records: &mut Vec<T>, record: T) {
    records.push(record);
    let excess = records.len().saturating_sub(History::VIEW_CHANGES_KEPT);
    records.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_signature(member: ReplicaId, sequence: Seq) -> Observation {
        Observation {
            member,
            fault: FaultType::SignatureMismatch,
            message: "prepare".into(),
            sequence: Some(sequence),
            transaction: None,
            expected: "a valid signature".into(),
            received: "one that does not verify".into(),
            proof: None,
        }
    }

    #[test]
    fn one_entry_per_member_and_fault_keeps_the_first_evidence_and_counts_the_rest() {
        let mut history = History::default();
        assert!(history.observe(bad_signature(5, 10), 1_000));
        assert!(!history.observe(bad_signature(5, 11), 2_000));
        assert!(history.observe(bad_signature(6, 12), 3_000));
        assert_eq!(history.detections.len(), 2);
        let first = &history.detections[0];
        assert_eq!((first.first.sequence, first.occurrences), (Some(10), 2));
        assert_eq!((first.first_seen_unix_ms, first.last_seen_unix_ms), (1_000, 2_000));
    }

    #[test]
    fn only_the_latest_view_changes_are_kept() {
        let mut history = History::default();
        for view in 0..(History::VIEW_CHANGES_KEPT as u64 + 5) {
            history.view_changed(ViewChangeRecord {
                view,
                old_primary: 1,
                new_primary: 2,
                started_unix_ms: None,
                installed_unix_ms: view,
                reason: None,
                triggered_by: vec![],
                quorum_met: true,
                batches_recovered: 0,
                transfers_recovered: 0,
            });
        }
        assert_eq!(history.view_changes.len(), History::VIEW_CHANGES_KEPT);
        assert_eq!(history.view_changes[0].view, 5);
    }
}
