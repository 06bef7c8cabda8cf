//! The view change (PBFT, section 4.4): replacing a primary that is faulty or slow without losing anything
//! that may have committed.
//!
//! A backup whose pending request waited longer than the timeout moves to view v+1 and sends VIEW-CHANGE
//! with its stable checkpoint and every prepared certificate above it. The primary of v+1 collects a quorum
//! of them and sends NEW-VIEW with PRE-PREPAREs derived from them by `derive_new_view`: for every sequence
//! number above the highest stable checkpoint, the batch of the highest-view prepared certificate, or an
//! empty batch where there is none. Any batch that committed was prepared by a quorum, which intersects
//! every quorum of VIEW-CHANGEs in an honest member, so it is re-proposed at the same sequence number.
//! A view that does not install in time is abandoned for the next one, with the timeout doubled.
//!
//! Leaving a view takes F+1 members' support, so that at least one honest member wants it. A backup whose request
//! timed out first only *suspects* the primary: it says so in its STATUS and keeps working in its view. Once F+1
//! members suspect the primary of the view (or F+1 others are in higher views), a member leaves it for the next;
//! past v+1 the new-view timer runs only once a quorum is changing views. A replica cut off from the others can
//! therefore never climb views alone: when the network heals it is still in the view the cluster works in, and
//! votes at once. (A VIEW-CHANGE cannot serve as the suspicion: once sent, it may be part of the next NEW-VIEW, so
//! its sender must stop preparing in the old view, or a batch committed there could be missed.)

use crate::crypto::Digest;
use crate::durable::Entry;
use crate::ledger::SignedTransfer;
use crate::messages::*;
use crate::replica::{Event, Output, Replica, ViewChangeReason};
use crate::verify::Rejection;

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
    pub ops: Vec<crate::governance::Operation>,
    /// The time the batch was first proposed with: it is part of what may have committed.
    pub at_ms: u64,
}

impl Replica {
    /// Moves to `new_view` and asks the others to follow.
    pub(crate) fn start_view_change(&mut self, new_view: View, reason: ViewChangeReason) {
        // A replica that is not (or not yet) a member follows the cluster's views; it never starts one.
        if new_view <= self.view || !self.membership.contains(self.id) {
            return;
        }
        // A quarantined member would not be heard as primary: skip its views (at most F are quarantined).
        let mut new_view = new_view;
        for _ in 0..self.membership.n() {
            if !self.governance.is_quarantined(self.membership.primary(new_view)) {
                break;
            }
            new_view += 1;
        }
        let from_view = self.view;
        self.view = new_view;
        self.view_active = false;
        self.view_change_started_ms.get_or_insert(self.now_ms);
        self.stats.view_changes += 1;
        self.out.push(Output::Event(Event::ViewChangeStarted {
            from_view,
            to_view: new_view,
            reason,
        }));
        // The request timer is void now; the new-view timer starts once a quorum is changing views too.
        self.timer_armed = false;
        self.timer_generation += 1;
        self.failed_views = self.failed_views.saturating_add(1);
        self.send_view_change();
        self.arm_new_view_timer();
        self.try_new_view();
    }

    /// Whether a VIEW-CHANGE from this replica would be one the current membership can check.
    ///
    /// Peers verify a VIEW-CHANGE against the membership in force. Certificates made before the current epoch
    /// began (the stable checkpoint below the epoch's first one, the prepared certificates between them) may
    /// rest on a removed member's votes or on another primary: they would be refused by every member, and a
    /// replica that sent one would never count towards the new view (a cluster where several did stalled for
    /// good). Such a replica has executed up to the epoch's first checkpoint (that is how it entered the
    /// epoch) and signed it; it waits for that checkpoint to become stable, which the CHECKPOINT exchange
    /// brings whatever the view, and only then sends its VIEW-CHANGE (`send_held_view_change`).
    fn view_change_checkable(&self) -> bool {
        self.stable.seq >= self.governance.epoch_started_at.unwrap_or(0)
    }

    /// Whether this replica has a VIEW-CHANGE out for a view above the one it is in: it went back to a NEW-VIEW
    /// that arrived after it had given up on it. That VIEW-CHANGE may still go into a later NEW-VIEW without what
    /// this replica prepares now, so until it moves past it, it sends no COMMIT: no batch that commits counts on
    /// it, and every commit quorum keeps an honest member whose VIEW-CHANGE is current. Its PREPAREs still help.
    pub(crate) fn left_for_a_later_view(&self) -> bool {
        self.highest_view_change_sent > self.view
    }

    /// Whether this replica is changing views and has not sent its VIEW-CHANGE for the view it changes to.
    fn view_change_unsent(&self) -> bool {
        !self.view_active
            && self.membership.contains(self.id)
            && self
                .view_changes
                .get(&self.id)
                .is_none_or(|vc| vc.body.new_view < self.view)
    }

    /// After each input: a VIEW-CHANGE held back until the epoch's first checkpoint became stable goes out now.
    pub(crate) fn send_held_view_change(&mut self) {
        if self.view_change_unsent() && self.view_change_checkable() {
            self.send_view_change();
            self.arm_new_view_timer();
            self.try_new_view();
        }
    }

    /// Signs and broadcasts this replica's VIEW-CHANGE for the view it is changing to, once it can be checked
    /// (and only once per view).
    fn send_view_change(&mut self) {
        if !self.view_change_unsent() || !self.view_change_checkable() {
            return;
        }
        let new_view = self.view;
        let prepared: Vec<PreparedCert> = self
            .log
            .range(self.stable.seq + 1..)
            .filter_map(|(_, slot)| slot.prepared.clone())
            .collect();
        let vc = self.sign(ViewChange {
            new_view,
            checkpoint: self.stable.clone(),
            prepared,
        });
        self.view_changes.insert(self.id, vc.clone());
        self.highest_view_change_sent = self.highest_view_change_sent.max(new_view);
        self.persist_and_broadcast(Message::ViewChange(vc));
    }

    /// PBFT's rule: a replica waits for NEW-VIEW against the clock only once a quorum sent VIEW-CHANGE for
    /// its view or a later one. A replica that suspects the primary alone so waits at v+1 instead of climbing through
    /// views nobody else will join; the others bring it along at their next view change.
    pub(crate) fn arm_new_view_timer(&mut self) {
        if self.view_active || self.timer_armed {
            return;
        }
        // A member already past this view has left the older ones too: it counts.
        let changing = self
            .view_changes
            .values()
            .filter(|vc| vc.body.new_view >= self.view)
            .count();
        if changing >= self.membership.quorum() {
            self.arm_progress_timer();
        }
    }

    pub(crate) fn on_view_change(&mut self, vc: Signed<ViewChange>) -> Result<(), Rejection> {
        let view = vc.body.new_view;
        // Support counts only within a window above this replica's view: one member's VIEW-CHANGE for a far view
        // would otherwise stand as its support for leaving every view until then. A member that really is that far
        // ahead sends it again in answer to this replica's STATUS once this replica has caught up with its views.
        let window = self.membership.n() as View;
        if view < self.view || (view == self.view && self.view_active) || view > self.view.saturating_add(window) {
            return Err(Rejection::WrongView {
                got: view,
                current: self.view,
            });
        }
        if self
            .view_changes
            .get(&vc.from)
            .is_some_and(|existing| existing.body.new_view >= view)
        {
            return Err(Rejection::Duplicate);
        }
        self.view_changes.insert(vc.from, vc);
        // F+1 others in higher views include an honest member: join the lowest of those views.
        let higher: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(from, vc)| **from != self.id && vc.body.new_view > self.view)
            .map(|(_, vc)| vc.body.new_view)
            .collect();
        if higher.len() > self.membership.f() {
            let lowest = *higher.iter().min().expect("not empty");
            self.start_view_change(lowest, ViewChangeReason::JoinedPeers);
        } else {
            self.check_suspicions();
        }
        self.arm_new_view_timer();
        self.try_new_view();
        Ok(())
    }

    /// As the primary of a view being changed to, sends NEW-VIEW once a quorum of VIEW-CHANGEs is in.
    fn try_new_view(&mut self) {
        if self.view_active || !self.is_primary() {
            return;
        }
        let view = self.view;
        let view_changes: Vec<Signed<ViewChange>> = self
            .view_changes
            .values()
            .filter(|vc| vc.body.new_view == view)
            .take(self.membership.quorum())
            .cloned()
            .collect();
        if view_changes.len() < self.membership.quorum() {
            return;
        }
        let (_, entries) = derive_new_view(&view_changes);
        let pre_prepares = entries
            .into_iter()
            .map(
                |Reproposal {
                     seq,
                     digest,
                     batch,
                     ops,
                     at_ms,
                 }| {
                    self.sign(PrePrepare {
                        view,
                        seq,
                        digest,
                        batch,
                        ops,
                        at_ms,
                    })
                },
            )
            .collect();
        let nv = self.sign(NewView {
            view,
            view_changes,
            pre_prepares,
        });
        self.persist_and_broadcast(Message::NewView(nv.clone()));
        self.install_new_view(nv);
    }

    pub(crate) fn on_new_view(&mut self, nv: Signed<NewView>) -> Result<(), Rejection> {
        let view = nv.body.view;
        // A replica that left this view, or gave up waiting for its NEW-VIEW, with F+1 suspicions may find that the
        // others stayed (the request committed after all, the NEW-VIEW arrived just after): it goes back, as a
        // member that prepares but does not commit (`left_for_a_later_view`). Not when F+1 others left it too:
        // then the cluster is moving on and the NEW-VIEW is only late news (a member still there relays it, and
        // going back each time would keep the cluster from ever giving up on a silent primary). Never the view's
        // own primary, whose NEW-VIEW fixes what it proposed, and only that view's primary in this epoch: a
        // NEW-VIEW from before a reconfiguration may name another primary for the same view number.
        let overtaken = !self.view_active
            && view < self.view
            && view >= self.last_active_view
            && self.others_left(view) <= self.membership.f()
            && self.membership.primary(view) == nv.from
            && nv.from != self.id;
        if !overtaken && (view < self.view || (view == self.view && self.view_active)) {
            return Err(Rejection::WrongView {
                got: view,
                current: self.view,
            });
        }
        self.out.push(Output::Persist(Entry::NewView(nv.clone())));
        self.install_new_view(nv);
        Ok(())
    }

    fn install_new_view(&mut self, nv: Signed<NewView>) {
        let view = nv.body.view;
        let old_primary = self.membership.primary(self.last_active_view);
        let (checkpoint, _) = derive_new_view(&nv.body.view_changes);
        self.view = view;
        self.view_active = true;
        self.last_active_view = view;
        self.view_started_ms = self.now_ms;
        // Support for leaving a view lapses once a view is installed: what members say about later views they say
        // again (in answer to STATUS) if they still mean it. Kept, one member's VIEW-CHANGE for a later view counted
        // towards leaving each view installed after it.
        let me = self.id;
        self.view_changes
            .retain(|from, vc| *from == me && vc.body.new_view > view);
        self.new_view = Some(nv.clone());

        // The new view starts at the highest checkpoint in the VIEW-CHANGEs. A replica below it catches up
        // by state transfer when peers see its STATUS; one at or above it only forgets what the log no
        // longer needs.
        if checkpoint.seq > self.stable.seq
            && let Some((digest, snapshot)) = self.own_checkpoints.get(&checkpoint.seq)
            && *digest == checkpoint.state_digest
        {
            let snapshot = snapshot.clone();
            self.make_stable(checkpoint.clone(), snapshot);
        }

        let is_primary = self.is_primary();
        self.proposed.clear();
        let mut batches_recovered = 0;
        let mut transfers_recovered = 0;
        let mut last_seq = checkpoint.seq.max(self.last_executed);
        for pp in nv.body.pre_prepares {
            let seq = pp.body.seq;
            last_seq = last_seq.max(seq);
            if !pp.body.batch.is_empty() {
                batches_recovered += 1;
                transfers_recovered += pp.body.batch.len();
            }
            if seq <= self.stable.seq || seq > self.high_watermark() {
                continue;
            }
            if is_primary {
                let slot = self.log.entry(seq).or_default();
                slot.enter_view(view);
                slot.pre_prepare = Some(pp.clone());
                self.proposed.extend(pp.body.batch.iter().map(|tx| tx.digest()));
            } else {
                self.accept_pre_prepare(pp);
            }
        }
        if is_primary {
            self.next_seq = last_seq;
        } else {
            self.next_seq = self.next_seq.max(last_seq);
        }

        let started_ms = self.view_change_started_ms.take();
        self.out.push(Output::Event(Event::NewViewInstalled {
            view,
            primary: self.primary(),
            old_primary,
            started_ms,
            installed_ms: self.now_ms,
            view_changes_from: nv.body.view_changes.iter().map(|vc| vc.from).collect(),
            batches_recovered,
            transfers_recovered,
        }));
        if self.pending.is_empty() {
            self.timer_armed = false;
            self.timer_generation += 1;
        } else {
            self.arm_progress_timer();
        }
        self.try_execute();
        self.try_propose();
    }

    /// A replica that left the view it was working in (its own suspicion and F others') learns that the view
    /// still commits: a batch it had not executed committed there after all. Unless F+1 others left that view
    /// too (the cluster is moving on, and it follows them), it goes back, as a member that prepares but sends no
    /// COMMIT while its VIEW-CHANGE is out (`left_for_a_later_view`). View 0 has no NEW-VIEW to return with, and
    /// a later view's NEW-VIEW may never be sent again: this is how such a replica rejoins.
    pub(crate) fn return_to_view(&mut self, view: View) {
        if self.view_active
            || view != self.last_active_view
            || view >= self.view
            || self.membership.primary(view) == self.id
            || (view > 0 && self.new_view.as_ref().is_none_or(|nv| nv.body.view != view))
        {
            return;
        }
        if self.others_left(view) > self.membership.f() {
            return;
        }
        self.view = view;
        self.view_active = true;
        self.view_started_ms = self.now_ms;
        self.view_change_started_ms = None;
        self.suspicions.remove(&self.id);
        if self.pending.is_empty() {
            self.timer_armed = false;
            self.timer_generation += 1;
        } else {
            self.arm_progress_timer();
        }
    }

    /// How many other members have sent a VIEW-CHANGE for a view above `view`.
    fn others_left(&self, view: View) -> usize {
        self.view_changes
            .iter()
            .filter(|(from, vc)| **from != self.id && vc.body.new_view > view)
            .count()
    }

    /// A progress timer fired. Stale generations are ignored.
    pub(crate) fn on_progress_timer(&mut self, view: View, generation: u64) {
        if generation != self.timer_generation || view != self.view {
            return;
        }
        self.timer_armed = false;
        if !self.view_active {
            // The NEW-VIEW is overdue here; it may have been installed elsewhere (peers answer this replica's
            // STATUS with it), so this too is only a suspicion until F+1 members share it.
            self.suspect_primary();
            return;
        }
        self.prune_stale_pending();
        // The oldest pending request, counted from when this view began (a new primary gets a full timeout).
        let oldest_request = self.pending_order.values().next().map(|d| self.pending[d].arrived_ms);
        let oldest_op = self.pending_ops.iter().map(|(_, _, arrived_ms)| *arrived_ms).min();
        let Some(oldest_ms) = oldest_request
            .into_iter()
            .chain(oldest_op)
            .min()
            .map(|arrived_ms| arrived_ms.max(self.view_started_ms))
        else {
            return;
        };
        let waited = self.now_ms.saturating_sub(oldest_ms);
        if waited >= self.params.view_change_timeout_ms {
            self.suspect_primary();
        } else {
            self.suspicions.remove(&self.id);
            self.timer_generation += 1;
            self.timer_armed = true;
            let timer = crate::replica::Timer::Progress {
                view: self.view,
                generation: self.timer_generation,
            };
            self.out.push(Output::SetTimer {
                timer,
                after_ms: self.params.view_change_timeout_ms - waited,
            });
        }
    }
}

impl Replica {
    /// Passes on to the primary the client requests this backup has held for a status interval without seeing them
    /// proposed: a client may have given them to this backup alone. A backup suspects the primary only of not
    /// ordering what the primary was given, or one client, with one Byzantine member's support, could depose an
    /// honest primary at will. Not at once: clients usually send to every member, and relaying each request the
    /// moment it arrives would make the primary handle N-1 copies of everything.
    pub(crate) fn relay_waiting_requests(&mut self) {
        if self.is_primary() || !self.view_active || !self.membership.contains(self.id) {
            return;
        }
        let primary = self.primary();
        let due = self.now_ms.saturating_sub(self.params.status_interval_ms);
        let waiting: Vec<SignedTransfer> = self
            .pending_order
            .values()
            .filter(|digest| !self.proposed.contains(*digest))
            .map(|digest| &self.pending[digest])
            .filter(|p| p.arrived_ms.max(self.view_started_ms) <= due)
            .map(|p| p.tx)
            .collect();
        for tx in waiting {
            self.out.push(Output::Send {
                to: primary,
                message: Message::Request { from: self.id, tx },
            });
        }
    }

    /// A request waited too long in this view: suspect its primary, tell the others at once, and look again after
    /// another timeout (the suspicion is withdrawn once nothing is overdue).
    fn suspect_primary(&mut self) {
        let here = (self.view, self.view_active);
        let first = self.suspicions.insert(self.id, here) != Some(here);
        if first {
            self.broadcast_status();
        }
        // In an active view, look again after another timeout; a view change's timer is re-armed by its gate.
        if self.view_active {
            self.arm_progress_timer();
        } else {
            self.arm_new_view_timer();
        }
        self.check_suspicions();
    }

    /// Whether this replica suspects the primary of the view it is in (and in the state it is in).
    pub(crate) fn suspects(&self) -> bool {
        self.suspicions.get(&self.id) == Some(&(self.view, self.view_active))
    }

    /// Records what a peer's STATUS says about its suspicion. Returns whether it changed.
    pub(crate) fn note_suspicion(&mut self, peer: ReplicaId, status: &Status) -> bool {
        let before = self.suspicions.get(&peer).copied();
        if status.suspects {
            self.suspicions.insert(peer, (status.view, status.view_active));
        } else {
            self.suspicions.remove(&peer);
        }
        before != self.suspicions.get(&peer).copied()
    }

    /// A replica that suspects the primary of its view itself, with F more members that suspect it too (in the
    /// same state) or have already left it for a higher view, moves to the next view: F+1 include an honest one.
    /// (Suspicions from members still changing to a view that is active here are answered with its NEW-VIEW
    /// instead, and suspicions from an active view do not count while it installs.) Counting those that left
    /// matters: once some members moved on, the suspicions they had of this view are no longer in their STATUS,
    /// and the rest must still be able to follow. Others' suspicions alone move no one: a suspicion is withdrawn
    /// when the request commits after all, and a member that left on the word of others who then stayed would be
    /// stranded; F+1 VIEW-CHANGEs (`on_view_change`) are what bring along a member that suspects nothing.
    pub(crate) fn check_suspicions(&mut self) {
        if !self.suspects() {
            return;
        }
        let here = (self.view, self.view_active);
        let suspecting = self
            .membership
            .ids()
            .filter(|id| !self.governance.is_quarantined(*id))
            .filter(|id| {
                self.suspicions.get(id) == Some(&here)
                    || self.view_changes.get(id).is_some_and(|vc| vc.body.new_view > self.view)
            })
            .count();
        if suspecting > self.membership.f() {
            let reason = if self.view_active {
                ViewChangeReason::RequestTimeout
            } else {
                ViewChangeReason::NewViewTimeout
            };
            self.start_view_change(self.view + 1, reason);
        }
    }
}
