//! What a NEW-VIEW must propose (PBFT, section 4.4): the checkpoint a new view starts from and, for every sequence
//! number above it, the batch of the highest-view prepared certificate among a quorum of VIEW-CHANGEs, or an empty
//! batch where there is none. A pure rule over the VIEW-CHANGEs alone, so that the new primary (`view_change.rs`),
//! every replica checking its NEW-VIEW (`verify.rs`) and a proof of a NEW-VIEW that breaks it (`evidence.rs`) all
//! derive the same thing.

use crate::crypto::Digest;
use crate::ledger::SignedTransfer;
use crate::messages::{CheckpointCert, PrePrepare, PreparedCert, Seq, Signed, View, ViewChange, batch_digest};

/// The checkpoint a new view starts from, and the batches its primary must re-propose above it, derived only
/// from the VIEW-CHANGEs so that every replica can check the primary's NEW-VIEW.
pub fn derive_new_view(view_changes: &[Signed<ViewChange>]) -> (CheckpointCert, Vec<Reproposal>) {
    let checkpoint = view_changes
        .iter()
        .map(|vc| &vc.body.checkpoint)
        .fold(None::<&CheckpointCert>, |best, c| match best {
            Some(b) if b.seq >= c.seq => Some(b),
            _ => Some(c),
        })
        .cloned()
        .unwrap_or(CheckpointCert {
            seq: 0,
            state_digest: Digest::default(),
            proof: Vec::new(),
        });
    let low = checkpoint.seq;
    let certs = || {
        view_changes
            .iter()
            .flat_map(|vc| vc.body.prepared.iter())
            .filter(move |c| c.seq() > low)
    };
    let high = certs().map(|c| c.seq()).max().unwrap_or(low);
    let entries = (low + 1..=high)
        .map(|seq| {
            let best = certs()
                .filter(|c| c.seq() == seq)
                .fold(None::<&PreparedCert>, |best, c| match best {
                    Some(b) if b.view() >= c.view() => Some(b),
                    _ => Some(c),
                });
            match best {
                Some(cert) => {
                    let pp = &cert.pre_prepare.body;
                    Reproposal {
                        seq,
                        digest: pp.digest,
                        batch: pp.batch.clone(),
                        ops: pp.ops.clone(),
                        at_ms: pp.at_ms,
                    }
                }
                None => Reproposal {
                    seq,
                    digest: batch_digest(&[]),
                    batch: Vec::new(),
                    ops: Vec::new(),
                    at_ms: 0,
                },
            }
        })
        .collect();
    (checkpoint, entries)
}

/// A batch the new primary proposes again in its NEW-VIEW (an empty one where nothing may have committed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reproposal {
    pub seq: Seq,
    pub digest: Digest,
    pub batch: Vec<SignedTransfer>,
    pub ops: Vec<crate::messages::Operation>,
    /// The time the batch was first proposed with: it is part of what may have committed.
    pub at_ms: u64,
}

impl Reproposal {
    /// The PRE-PREPARE that proposes it again in `view`.
    pub fn in_view(self, view: View) -> PrePrepare {
        PrePrepare {
            view,
            seq: self.seq,
            digest: self.digest,
            batch: self.batch,
            ops: self.ops,
            at_ms: self.at_ms,
        }
    }
}
