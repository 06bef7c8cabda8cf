//! Checkpoints, garbage collection, and how a replica that fell behind catches up.
//!
//! Every `checkpoint_interval` sequence numbers a replica signs the digest of its ledger. A quorum of
//! matching CHECKPOINTs makes it stable: the log at and below it is dropped and the watermarks advance.
//!
//! Catching up is driven by STATUS messages: each replica periodically says how far it is, and a peer that
//! is ahead answers with what it lacks: the NEW-VIEW of a later view, proofs of committed batches, its own
//! votes for batches not yet committed, or the ledger at its stable checkpoint (state transfer, verified
//! against the checkpoint's quorum of signatures). This also retransmits whatever the network lost.

use crate::durable::Entry;
use crate::governance::Operation;
use crate::ledger::Ledger;
use crate::messages::*;
use crate::replica::{Event, Output, Replica, Timer};
use crate::verify::Rejection;

/// The most committed batches sent to one lagging peer per STATUS, so one answer stays bounded.
const CATCH_UP_BATCHES_MAX: u64 = 64;

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

    /// Tells every peer how far this replica is, and whether it suspects the primary of its view.
    pub(crate) fn broadcast_status(&mut self) {
        let status = self.sign(Status {
            view: self.view,
            view_active: self.view_active,
            last_executed: self.last_executed,
            stable_seq: self.stable.seq,
            suspects: self.suspects(),
        });
        self.out.push(Output::Broadcast(Message::Status(status)));
    }

    pub(crate) fn on_status_timer(&mut self) {
        self.broadcast_status();
        // Operations still waiting to be ordered go out again: the primary may have lost them.
        let waiting: Vec<Operation> = self
            .pending_ops
            .iter()
            .filter(|(_, _, arrived_ms)| arrived_ms + self.params.status_interval_ms <= self.now_ms)
            .map(|(_, op, _)| op.clone())
            .collect();
        for op in waiting {
            let relay = Message::Operation {
                from: self.id,
                op: Box::new(op),
            };
            self.out.push(Output::Broadcast(relay));
        }
        self.out.push(Output::SetTimer {
            timer: Timer::Status,
            after_ms: self.params.status_interval_ms,
        });
        // An idle primary still has a reason to propose when a quarantine has run out by its clock.
        self.try_propose();
    }

    /// Answers a peer's STATUS with what it is missing. At most one answer per peer per half status interval,
    /// so a peer that floods STATUS gets no more from this replica than an honest one.
    pub(crate) fn on_status(&mut self, s: Signed<Status>) -> Result<(), Rejection> {
        let peer = s.from;
        let s = s.body;
        // A suspicion counts whenever it arrives; what is served in answer is rate-limited below.
        let suspicion_changed = self.note_suspicion(peer, &s);
        if suspicion_changed {
            self.check_suspicions();
        }
        let min_gap = self.params.status_interval_ms / 2;
        if let Some(last) = self.last_status_served.get(&peer)
            && self.now_ms < last + min_gap
        {
            return if suspicion_changed {
                Ok(())
            } else {
                Err(Rejection::Duplicate)
            };
        }
        self.last_status_served.insert(peer, self.now_ms);

        if !self.view_active {
            // Changing views: the peer needs this replica's VIEW-CHANGE if it is not past this view.
            if s.view <= self.view
                && let Some(vc) = self
                    .view_changes
                    .get(&self.id)
                    .filter(|vc| vc.body.new_view == self.view)
            {
                self.send(peer, Message::ViewChange(vc.clone()));
            }
        } else if s.view < self.view || (s.view == self.view && !s.view_active) {
            if let Some(nv) = self.new_view.clone().filter(|nv| nv.body.view == self.view) {
                self.send(peer, Message::NewView(nv));
            }
        }

        // Executed batches the peer lacks: the state at the stable checkpoint if the log no longer has them,
        // then proofs that the batches above it committed.
        if s.last_executed < self.last_executed {
            let mut from = s.last_executed;
            if s.last_executed < self.stable.seq {
                let transfer = self.sign(StateTransfer {
                    checkpoint: self.stable.clone(),
                    snapshot: self.stable_snapshot.clone(),
                });
                self.send(peer, Message::StateTransfer(transfer));
                from = self.stable.seq;
            }
            let upto = self.last_executed.min(from + CATCH_UP_BATCHES_MAX);
            for seq in from + 1..=upto {
                if let Some(cert) = self.log.get(&seq).and_then(|slot| slot.committed.clone()) {
                    self.send(peer, Message::Committed(cert));
                }
            }
        }

        // This replica's own votes for batches not yet executed, in case the peer lost them; only to a peer
        // that executed nothing since its last STATUS, so a cluster that makes progress does not pay for it.
        let stalled = self
            .peer_executed
            .insert(peer, s.last_executed)
            .is_some_and(|before| before >= s.last_executed);
        if stalled && self.view_active && s.view == self.view && s.view_active {
            let mut resend = Vec::new();
            let low = s.last_executed.max(self.last_executed);
            for (_, slot) in self.log.range(low.saturating_add(1)..) {
                if slot.view != self.view {
                    continue;
                }
                if let Some(pp) = slot.pre_prepare.as_ref().filter(|pp| pp.from == self.id) {
                    resend.push(Message::PrePrepare(pp.clone()));
                }
                if let Some(p) = slot.prepares.get(&self.id) {
                    resend.push(Message::Prepare(p.clone()));
                }
                if let Some(c) = slot.commits.get(&self.id) {
                    resend.push(Message::Commit(c.clone()));
                }
            }
            for message in resend {
                self.send(peer, message);
            }
        }

        // Checkpoints the peer has not seen become stable, in any view: the proof of this replica's stable
        // checkpoint, and its own votes above it. Without them a peer that executed far enough could not
        // advance its watermarks to accept the proofs of later batches.
        let mut votes: Vec<Signed<Checkpoint>> = Vec::new();
        if s.stable_seq < self.stable.seq {
            votes.extend(self.stable.proof.iter().filter(|vote| vote.from != peer).cloned());
        }
        if stalled {
            let above = s.stable_seq.max(self.stable.seq);
            let own = self
                .checkpoint_votes
                .range(above.saturating_add(1)..)
                .filter_map(|(_, v)| v.get(&self.id).cloned());
            votes.extend(own);
        }
        for vote in votes {
            self.send(peer, Message::Checkpoint(vote));
        }
        Ok(())
    }

    fn send(&mut self, to: ReplicaId, message: Message) {
        self.out.push(Output::Send { to, message });
    }

    /// The ledger at a stable checkpoint this replica has not reached.
    pub(crate) fn on_state_transfer(&mut self, st: Signed<StateTransfer>) -> Result<(), Rejection> {
        let StateTransfer { checkpoint, snapshot } = st.body;
        if checkpoint.seq <= self.last_executed {
            return Err(Rejection::Duplicate);
        }
        let (ledger, governance) = crate::governance::restore_state(&snapshot, self.supply)
            .map_err(|_| Rejection::BadCertificate("state transfer snapshot"))?;
        let new_epoch = governance.epoch != self.governance.epoch;
        // The certificate becomes this replica's stable checkpoint, which its VIEW-CHANGEs carry: across an epoch
        // it must be one the new membership made. One the previous membership made (it verified against that)
        // would make every VIEW-CHANGE of this replica refused; another peer sends a usable one.
        if new_epoch {
            let next = governance.membership();
            let signers: std::collections::BTreeSet<ReplicaId> = checkpoint
                .proof
                .iter()
                .map(|vote| vote.from)
                .filter(|id| next.contains(*id))
                .collect();
            if signers.len() < next.quorum() {
                return Err(Rejection::BadCertificate("state transfer from an earlier epoch"));
            }
        }
        let seq = checkpoint.seq;
        self.ledger = ledger;
        let removed: Vec<ReplicaId> = self
            .membership
            .ids()
            .filter(|id| !governance.members.iter().any(|m| m.id == *id))
            .collect();
        self.governance = governance;
        if new_epoch {
            self.adopt_membership(seq, removed);
        }

        self.last_executed = seq;
        self.next_seq = self.next_seq.max(seq);
        self.stats.state_transfers += 1;
        self.prune_stale_pending();
        self.proposed.clear();
        self.out.push(Output::Event(Event::StateTransferred { seq }));
        self.make_stable(checkpoint, snapshot);
        let above: Vec<_> = self.log.values().filter_map(|slot| slot.pre_prepare.clone()).collect();
        self.proposed
            .extend(above.iter().flat_map(|pp| pp.body.batch.iter().map(|tx| tx.digest())));
        self.try_execute();
        self.try_propose();
        Ok(())
    }
}
