//! Checkpoints, garbage collection, and how a replica that fell behind catches up.
//!
//! Every `checkpoint_interval` sequence numbers a replica signs the digest of its ledger. A quorum of
//! matching CHECKPOINTs makes it stable: the log at and below it is dropped and the watermarks advance.

use crate::durable::Entry;
use crate::ledger::Ledger;
use crate::messages::*;
use crate::replica::{Event, Output, Replica};
use crate::verify::Rejection;

impl Replica {
    pub(crate) fn take_checkpoint(&mut self, seq: Seq) {
        let snapshot = crate::governance::state_snapshot(&self.ledger, &self.governance);
        let state_digest = Ledger::snapshot_digest(&snapshot);
        self.own_checkpoints.insert(seq, (state_digest, snapshot));
        let vote = self.sign(Checkpoint { seq, state_digest });
        self.checkpoint_votes
            .entry(seq)
            .or_default()
            .insert(self.id, vote.clone());
        self.out.push(Output::Broadcast(Message::Checkpoint(vote)));
        self.check_stable(seq);
    }

    pub(crate) fn on_checkpoint(&mut self, c: Signed<Checkpoint>) -> Result<(), Rejection> {
        let seq = c.body.seq;
        if seq == self.stable.seq && seq > 0 && c.body.state_digest != self.stable.state_digest {
            // Signed, and contradicting the quorum's certificate: proof that the member executed differently.
            self.out.push(Output::Event(Event::DivergentCheckpoint {
                checkpoint: c,
                certificate: self.stable.clone(),
            }));
            return Ok(());
        }
        if seq <= self.stable.seq {
            return Err(Rejection::Duplicate);
        }
        self.check_watermarks(seq)?;
        if seq % self.params.checkpoint_interval != 0 {
            return Err(Rejection::OutsideWatermarks {
                seq,
                low: self.stable.seq,
                high: self.high_watermark(),
            });
        }
        let votes = self.checkpoint_votes.entry(seq).or_default();
        if let Some(existing) = votes.get(&c.from) {
            return Err(if existing.body == c.body {
                Rejection::Duplicate
            } else {
                Rejection::Equivocation
            });
        }
        votes.insert(c.from, c);
        self.check_stable(seq);
        // A new stable checkpoint raises the high watermark: the primary may propose again.
        self.try_propose();
        Ok(())
    }

    /// A checkpoint is stable once a quorum signed the same state digest for it.
    fn check_stable(&mut self, seq: Seq) {
        let Some(votes) = self.checkpoint_votes.get(&seq) else {
            return;
        };
        let quorum = self.membership.quorum();
        let mut by_digest: std::collections::BTreeMap<_, Vec<Signed<Checkpoint>>> = Default::default();
        // Only the members in force certify: a member removed at this boundary still takes the checkpoint and
        // votes for it, but a certificate counting its vote is one the new epoch refuses (in VIEW-CHANGEs, and
        // in state transfers to the members that would then hold it).
        for vote in votes.values().filter(|vote| self.membership.contains(vote.from)) {
            by_digest.entry(vote.body.state_digest).or_default().push(vote.clone());
        }
        let Some(state_digest) = by_digest.iter().find(|(_, v)| v.len() >= quorum).map(|(d, _)| *d) else {
            return;
        };
        let mut proof = Vec::new();
        let mut divergent = Vec::new();
        for (digest, votes) in by_digest {
            if digest == state_digest {
                proof = votes;
            } else {
                divergent.extend(votes);
            }
        }
        let cert = CheckpointCert {
            seq,
            state_digest,
            proof,
        };
        match self.own_checkpoints.get(&seq) {
            Some((own, snapshot)) if *own == state_digest => {
                let snapshot = snapshot.clone();
                // Reported once, as the checkpoint becomes stable (until then this may run again for each vote).
                self.out.extend(divergent.into_iter().map(|checkpoint| {
                    Output::Event(Event::DivergentCheckpoint {
                        checkpoint,
                        certificate: cert.clone(),
                    })
                }));
                self.make_stable(cert, snapshot);
            }
            Some(_) => {
                // This replica's state differs from the quorum's. It stops here and takes theirs; the STATUS
                // exchange brings a state transfer because peers see it is behind their stable checkpoint.
                self.out.push(Output::Event(Event::StateDiverged { seq }));
                self.own_checkpoints.remove(&seq);
            }
            None => {} // Not executed this far yet: peers send state or batches when they see its STATUS.
        }
    }

    /// Adopts a stable checkpoint: persists it, drops the log at and below it, and advances the watermarks.
    pub(crate) fn make_stable(&mut self, cert: CheckpointCert, snapshot: Vec<u8>) {
        let seq = cert.seq;
        self.out.push(Output::Persist(Entry::Checkpoint {
            cert: cert.clone(),
            snapshot: snapshot.clone(),
        }));
        self.stable = cert;
        self.stable_snapshot = snapshot;
        self.log = self.log.split_off(&seq.saturating_add(1));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&seq.saturating_add(1));
        self.own_checkpoints = self.own_checkpoints.split_off(&seq.saturating_add(1));
        self.out.push(Output::Event(Event::CheckpointStable { seq }));
    }
}
