//! STATUS: how replicas tell each other how far they are, and how one that fell behind catches up.
//!
//! Each replica periodically says how far it is, and a peer that is ahead answers with what it lacks: the NEW-VIEW
//! of a later view, proofs of committed batches, its own votes for batches not yet committed, or chunks of the
//! ledger at its stable checkpoint (`state_transfer`). This also retransmits whatever the network lost. The status
//! timer is also when waiting operations and requests go out again and a member that left a view alone rejoins it.

use crate::governance::Operation;
use crate::messages::*;
use crate::replica::{Output, Replica, Timer};
use crate::verify::Rejection;

/// The most committed batches sent to one lagging peer per STATUS, so one answer stays bounded.
const CATCH_UP_BATCHES_MAX: u64 = 64;

impl Replica {
    /// Tells every peer how far this replica is, and whether it suspects the primary of its view.
    pub(crate) fn broadcast_status(&mut self) {
        let status = self.sign(Status {
            view: self.view,
            view_active: self.view_active,
            last_executed: self.last_executed,
            stable_seq: self.stable.seq,
            suspects: self.suspects(),
            fetching: Some(self.chunks_wanted()),
            new_view: self
                .new_view_id
                .filter(|_| self.view_active && self.new_view.as_ref().is_some_and(|nv| nv.body.view == self.view)),
        });
        self.out.push(Output::Broadcast(Message::Status(status)));
    }

    pub(crate) fn on_status_timer(&mut self) {
        self.pace_state_transfer();
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
        self.relay_waiting_requests();
        self.try_rejoin();
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
        match s.new_view.filter(|_| s.view_active && peer != self.id) {
            Some(id) => self.installed_by_peer.insert(peer, (s.view, id)),
            None => self.installed_by_peer.remove(&peer),
        };
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
        } else if s.view < self.view || !s.view_active {
            // Behind, or changing views (possibly past this one, having given up on its NEW-VIEW just before it
            // arrived): the NEW-VIEW of the view this replica works in.
            if let Some(nv) = self.new_view.clone().filter(|nv| nv.body.view == self.view) {
                self.send(peer, Message::NewView(nv));
            }
        }

        // Executed batches the peer lacks: the state at the stable checkpoint if the log no longer has them,
        // then proofs that the batches above it committed.
        if s.last_executed < self.last_executed {
            let mut from = s.last_executed;
            let mut state_complete = true;
            if s.last_executed < self.stable.seq {
                state_complete = self.send_state_chunks(peer, s.fetching);
                from = self.stable.seq;
            }
            // Proofs of the batches above the checkpoint are of use only once the peer has the state below them.
            let upto = if state_complete {
                self.last_executed.min(from + CATCH_UP_BATCHES_MAX)
            } else {
                from
            };
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
    pub(crate) fn send(&mut self, to: ReplicaId, message: Message) {
        self.out.push(Output::Send { to, message });
    }
}
