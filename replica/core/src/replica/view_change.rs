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

use std::collections::BTreeSet;

use crate::crypto::Digest;
use crate::durable::Entry;
use crate::ledger::SignedTransfer;
use crate::messages::*;
use crate::new_view::derive_new_view;
use crate::replica::{Event, Output, Replica, ViewChangeReason};
use crate::verify::Rejection;

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
    pub fn left_for_a_later_view(&self) -> bool {
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
        // Every VIEW-CHANGE it signed for this view, withdrawn or being withdrawn, has a lower revision.
        let signed_before = self
            .own_view_changes
            .iter()
            .chain(self.withdrawn.get(&self.id).into_iter().flatten())
            .filter(|(view, _)| *view == new_view)
            .count();
        let revision = signed_before as u32;
        let vc = self.sign(ViewChange {
            new_view,
            checkpoint: self.stable.clone(),
            prepared,
            revision,
        });
        self.view_changes.insert(self.id, vc.clone());
        self.highest_view_change_sent = self.highest_view_change_sent.max(new_view);
        self.own_view_changes.push((new_view, view_change_id(&vc)));
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
        if self.is_withdrawn(&vc) {
            return Err(Rejection::Withdrawn(vc.from));
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
        let pre_prepares = entries.into_iter().map(|r| self.sign(r.in_view(view))).collect();
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
        // One the verifier let through on the previous membership's word (`new_view_of_either_epoch`) only tells a
        // new member the view the cluster works in: it may propose nothing of this epoch. Else a member removed by
        // the reconfiguration, primary of a view under the old membership, proposed in the new epoch (the
        // simulator saw it, N = 4, seed 30280).
        let epoch_started_at = self.governance.epoch_started_at.unwrap_or(0);
        if nv.from != self.membership.primary(view)
            && nv.body.pre_prepares.iter().any(|pp| pp.body.seq > epoch_started_at)
        {
            return Err(Rejection::NotFromPrimary("new-view"));
        }
        // One NEW-VIEW per view: another one its primary signed for a view installed here is never installed (going
        // back to the view would otherwise take it), and the two are proof against the primary.
        if let Some(installed) = &self.new_view
            && installed.body.view == view
            && installed.from == nv.from
            && installed.body != nv.body
        {
            self.conflicting_new_view = Some(nv);
            return Err(Rejection::Equivocation);
        }
        if let Some(vc) = nv.body.view_changes.iter().find(|vc| self.is_withdrawn(vc))
            && !self.installed_by(vc.from, &nv)
        {
            return Err(Rejection::Withdrawn(vc.from));
        }
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
        self.new_view_id = Some(new_view_id(&nv));
        self.new_view = Some(nv.clone());
        self.conflicting_new_view = None;
        // What this replica signed for this view or earlier ones is settled; a NEW-VIEW for an earlier view is never
        // installed again, so withdrawals for them are of no more use.
        self.own_view_changes.retain(|(new_view, _)| *new_view > view);
        if self.rejoin.as_ref().is_some_and(|r| r.signed.body.view < view) {
            self.rejoin = None;
        }
        for held in self.withdrawn.values_mut() {
            held.retain(|(new_view, _)| *new_view >= view);
        }
        self.withdrawn.retain(|_, held| !held.is_empty());

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
                self.log_pre_prepare(pp);
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
        self.go_back_to(view);
    }

    /// Works in `view` again, which this replica had left: its suspicion of it is over, and the request timer runs
    /// for what is pending.
    fn go_back_to(&mut self, view: View) {
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

/// How many withdrawn VIEW-CHANGEs a replica holds for one member (each for a view within the window above its own):
/// a member that withdraws more is not acknowledged, and so only keeps itself from voting.
const WITHDRAWALS_PER_MEMBER_MAX: usize = 64;

/// The REJOIN under way: what this replica withdrew, and the members that acknowledged it.
#[derive(Clone, Debug)]
pub struct Rejoining {
    pub(crate) signed: Signed<Rejoin>,
    pub(crate) acks: BTreeSet<ReplicaId>,
    /// The acknowledgements of the primaries of the withdrawn views, which the other members wait for.
    pub(crate) primary_acks: Vec<Signed<RejoinAck>>,
}

/// Rejoining a view left with too little company.
///
/// A replica leaves a view on its own suspicion and F others' (`check_suspicions`); when the others stay (the
/// suspicion was its own: a path to the primary that failed and healed; the F others were Byzantine), it is alone
/// outside the view the cluster works in, or back in it (`return_to_view`) sending no COMMIT, since its VIEW-CHANGE
/// is out and may go into the next NEW-VIEW without what it prepares since. Either way one honest voter is lost
/// until the next view change: with F real faults, the cluster stalls until then.
///
/// After a view-change timeout alone (or at once when back in the view), it signs a REJOIN taking back every
/// VIEW-CHANGE it signed since it left, goes back to the view and keeps preparing there, and asks the members to
/// acknowledge. A member acknowledges only while active in that view, having installed no later one, with at most F
/// members leaving it (itself included), and only once it holds the withdrawal durably: from then on it counts those
/// VIEW-CHANGEs for nothing and refuses any NEW-VIEW built on one. Once a quorum holds it (itself included), the
/// replica holds it too and sends COMMITs again. (If the others moved on meanwhile with a NEW-VIEW built on what it
/// withdrew, the replica follows them before a quorum holds the withdrawal, gives it up, and says in its STATUS which
/// NEW-VIEW it installed; a member that acknowledged then installs that NEW-VIEW too: `installed_by`.) Why that is
/// safe: a NEW-VIEW built on a withdrawn VIEW-CHANGE is refused by the F+1 or more honest members among that quorum,
/// so it can never gather the quorum of PREPAREs a batch needs to prepare in its view, let alone commit; every
/// NEW-VIEW that can take effect is built on VIEW-CHANGEs signed since, which carry what the replica prepared. A
/// member that acknowledged was active in the view, so it had installed no later NEW-VIEW.
impl Replica {
    /// Whether a VIEW-CHANGE is one its sender withdrew.
    pub(crate) fn is_withdrawn(&self, vc: &Signed<ViewChange>) -> bool {
        self.withdrawn
            .get(&vc.from)
            .is_some_and(|held| held.contains(&(vc.body.new_view, view_change_id(vc))))
    }

    /// Whether `member` said in its STATUS that it installed `nv`, and is active in its view. Then `nv` may be
    /// installed here even if built on a VIEW-CHANGE `member` withdrew: it withdraws only to vote again in the view it
    /// left, and holds its own withdrawal (refusing such a NEW-VIEW) from the moment a quorum does, before it votes
    /// (`on_rejoin_ack`); once it installed a later view, it never votes in the earlier one again. So what it withdrew
    /// is still true of it. A member that vouched for a withdrawal whose primary had built a NEW-VIEW on it in good
    /// faith (it had not heard of the withdrawal) was left outside the view the others worked in (N = 4, seed 81365).
    fn installed_by(&self, member: ReplicaId, nv: &Signed<NewView>) -> bool {
        member != self.id
            && self
                .installed_by_peer
                .get(&member)
                .is_some_and(|installed| *installed == (nv.body.view, new_view_id(nv)))
    }

    /// Stops counting `member`'s VIEW-CHANGE held here if it is one of `withdrawn` (view, `view_change_id`).
    pub(crate) fn forget_view_change_of(&mut self, member: ReplicaId, withdrawn: &[(View, Digest)]) {
        if self
            .view_changes
            .get(&member)
            .is_some_and(|vc| withdrawn.contains(&(vc.body.new_view, view_change_id(vc))))
        {
            self.view_changes.remove(&member);
        }
    }

    /// Called each status interval: starts (or sends again) a REJOIN when this replica is alone outside the view
    /// the others work in, or back in it without voting.
    pub(crate) fn try_rejoin(&mut self) {
        let view = self.last_active_view;
        if !self.membership.contains(self.id)
            || (view > 0 && self.new_view.as_ref().is_none_or(|nv| nv.body.view != view))
        {
            return;
        }
        let withholding = self.view_active && self.view == view && self.left_for_a_later_view();
        // Outside it: the view's own primary too, which suspects its view when what it proposed does not commit (a
        // path to the others that failed and healed); left out, it stalled a cluster with one faulty member (N = 4,
        // seed 43774). Going back, it proposes after what it proposed before, which its NEW-VIEW fixed.
        let alone = !self.view_active
            && self.view > view
            && self
                .view_change_started_ms
                .is_some_and(|since| self.now_ms >= since + self.params.view_change_timeout_ms)
            && self.others_left(view) <= self.membership.f();
        if !withholding && !alone {
            return;
        }
        let withdrawn: Vec<(View, Digest)> = self
            .own_view_changes
            .iter()
            .filter(|(new_view, _)| *new_view > view)
            .copied()
            .collect();
        if withdrawn.is_empty() {
            return;
        }
        if let Some(rejoining) = &self.rejoin
            && rejoining.signed.body.view == view
            && rejoining.signed.body.withdrawn == withdrawn
        {
            // Under way: a member that lost it, or what the primaries said of it, gets it again.
            let mut messages = vec![Message::Rejoin(rejoining.signed.clone())];
            messages.extend(rejoining.primary_acks.iter().cloned().map(Message::RejoinAck));
            for message in messages {
                self.out.push(Output::Broadcast(message));
            }
            return;
        }
        // Until a quorum holds the withdrawal this replica sends no COMMIT, so what it withdraws is still true of
        // it: it holds its own withdrawal only then, and meanwhile follows a NEW-VIEW built on it like any other
        // (the others may have moved on with it).
        let signed = self.sign(Rejoin { view, withdrawn });
        self.persist_and_broadcast(Message::Rejoin(signed.clone()));
        // Members that hold the withdrawal no longer count what it withdraws: should this replica leave the view
        // again, it signs a new VIEW-CHANGE (of a higher revision) rather than stand on one they refuse.
        self.forget_view_change_of(self.id, &signed.body.withdrawn);
        self.rejoin = Some(Rejoining {
            signed,
            acks: BTreeSet::new(),
            primary_acks: Vec::new(),
        });
        if alone {
            self.go_back_to(view);
        }
    }

    /// A member takes back its VIEW-CHANGEs to vote again in the view this replica is active in: hold the
    /// withdrawal durably, then acknowledge it.
    pub(crate) fn on_rejoin(&mut self, rejoin: Signed<Rejoin>) -> Result<(), Rejection> {
        let view = rejoin.body.view;
        let window = self.membership.n() as View;
        let withdrawn = &rejoin.body.withdrawn;
        if withdrawn.is_empty()
            || withdrawn.len() > window as usize
            || withdrawn
                .iter()
                .any(|(new_view, _)| *new_view <= view || *new_view > view.saturating_add(window))
        {
            return Err(Rejection::Rejoin(
                "it withdraws nothing, or views outside the window above its view",
            ));
        }
        // Whatever this replica may vouch for, the member is no longer leaving the view on those VIEW-CHANGEs: they
        // count as its support for leaving it no more (it signs new ones should it leave again).
        self.forget_view_change_of(rejoin.from, withdrawn);
        self.vouch_checks(&rejoin)?;
        let primaries = self.rejoin_primaries(&rejoin);
        if primaries.contains(&self.id) {
            return self.vouch(rejoin);
        }
        // Held until the primaries of the withdrawn views vouch for it (the member relays what they send at once and
        // again each status interval), or for two status intervals: a faulty primary that never vouches must not keep
        // an honest member from voting for good (N = 7, seed 71223). The quorum that holds the withdrawal is what
        // makes it safe; waiting for the primaries only spares members from refusing a NEW-VIEW the others work in.
        let digest = rejoin.body.digest();
        let (seen, since_ms) = match self.rejoins_held.get(&rejoin.from) {
            Some((held, seen, since_ms)) if held.body.digest() == digest => (seen.clone(), *since_ms),
            _ => (BTreeSet::new(), self.now_ms),
        };
        let waited = self.now_ms >= since_ms.saturating_add(2 * self.params.status_interval_ms);
        let ready = waited || primaries.is_subset(&seen);
        self.rejoins_held.insert(rejoin.from, (rejoin.clone(), seen, since_ms));
        if ready { self.vouch(rejoin) } else { Ok(()) }
    }

    /// The members whose word a withdrawal waits for before anyone else vouches for it: the primaries of the views
    /// it withdraws VIEW-CHANGEs for, the only members that could build a NEW-VIEW on one. One that vouched never
    /// builds one (unless Byzantine: then the NEW-VIEW is refused like any bad one, and the view after follows), and
    /// one that already built one is past the view and cannot vouch, so nobody else does for a while (`on_rejoin`): a
    /// member that vouched is seldom left refusing the NEW-VIEW the others work in.
    fn rejoin_primaries(&self, rejoin: &Signed<Rejoin>) -> BTreeSet<ReplicaId> {
        rejoin
            .body
            .withdrawn
            .iter()
            .map(|(new_view, _)| self.membership.primary(*new_view))
            .filter(|primary| *primary != rejoin.from)
            .collect()
    }

    /// Whether this replica may vouch for a withdrawal now.
    fn vouch_checks(&self, rejoin: &Signed<Rejoin>) -> Result<(), Rejection> {
        let view = rejoin.body.view;
        if !self.view_active || self.view != view {
            return Err(Rejection::WrongView {
                got: view,
                current: self.view,
            });
        }
        // A replica that is no member (yet) vouches for nothing.
        if !self.membership.contains(self.id) {
            return Err(Rejection::NotAMember(self.id));
        }
        // A member back in the view without voting (it left too, and came back: `return_to_view`, `try_rejoin`)
        // installed no later view either, so it may vouch: two members that left together on their own suspicions
        // would otherwise each refuse the other's withdrawal for good, and with one faulty member the cluster
        // stalled (N = 4, seed 50129). It counts among those leaving. Nobody vouches while F+1 others are leaving
        // the view: the cluster is moving on.
        let others_leaving = self
            .view_changes
            .iter()
            .filter(|(from, vc)| **from != self.id && **from != rejoin.from && vc.body.new_view > view)
            .count()
            + usize::from(self.left_for_a_later_view());
        if others_leaving > self.membership.f() {
            return Err(Rejection::Rejoin("the view is being left"));
        }
        Ok(())
    }

    /// Holds the withdrawal durably, then acknowledges it.
    fn vouch(&mut self, rejoin: Signed<Rejoin>) -> Result<(), Rejection> {
        self.rejoins_held.remove(&rejoin.from);
        let withdrawn = &rejoin.body.withdrawn;
        let held = self.withdrawn.entry(rejoin.from).or_default();
        let new: Vec<(View, Digest)> = withdrawn.iter().filter(|w| !held.contains(w)).copied().collect();
        if held.len() + new.len() > WITHDRAWALS_PER_MEMBER_MAX {
            return Err(Rejection::Rejoin("too many withdrawals held for the member"));
        }
        if !new.is_empty() {
            held.extend(new);
            self.out.push(Output::Persist(Entry::Rejoin(rejoin.clone())));
        }
        // One relayed again since it was first forgotten (`on_rejoin`) goes too.
        self.forget_view_change_of(rejoin.from, withdrawn);
        let ack = self.sign(RejoinAck {
            member: rejoin.from,
            view: rejoin.body.view,
            rejoin: rejoin.body.digest(),
        });
        self.out.push(Output::Send {
            to: rejoin.from,
            message: Message::RejoinAck(ack),
        });
        Ok(())
    }

    /// A primary of a withdrawn view vouched for another member's withdrawal (relayed by that member): what this
    /// replica waited for to vouch too.
    fn on_primary_vouched(&mut self, ack: Signed<RejoinAck>) -> Result<(), Rejection> {
        let Some((rejoin, _, _)) = self.rejoins_held.get(&ack.body.member) else {
            return Err(Rejection::Duplicate);
        };
        let rejoin = rejoin.clone();
        let primaries = self.rejoin_primaries(&rejoin);
        if rejoin.body.digest() != ack.body.rejoin || !primaries.contains(&ack.from) {
            return Err(Rejection::Rejoin("not from the primary of a view it withdraws"));
        }
        let (_, seen, _) = self.rejoins_held.get_mut(&ack.body.member).expect("held");
        seen.insert(ack.from);
        if !primaries.is_subset(seen) {
            return Ok(());
        }
        self.vouch_checks(&rejoin)?;
        self.vouch(rejoin)
    }

    /// A member holds this replica's withdrawal. With a quorum holding it, this replica votes again.
    pub(crate) fn on_rejoin_ack(&mut self, ack: Signed<RejoinAck>) -> Result<(), Rejection> {
        if ack.body.member != self.id {
            return self.on_primary_vouched(ack);
        }
        let Some(primaries) = self.rejoin.as_ref().map(|r| self.rejoin_primaries(&r.signed)) else {
            return Err(Rejection::Duplicate);
        };
        let rejoining = self.rejoin.as_mut().expect("under way");
        let wanted = (self.id, rejoining.signed.body.view, rejoining.signed.body.digest());
        if (ack.body.member, ack.body.view, ack.body.rejoin) != wanted {
            return Err(Rejection::Rejoin("acknowledges another withdrawal"));
        }
        // The others vouch once the primaries of the withdrawn views did: they hear it from this replica. Which
        // members those are may change with an epoch begun since an acknowledgement arrived (the simulator saw the
        // primary's come first, its relay never follow: N = 4, seed 40416), so a primary's is kept whenever it comes.
        let first = rejoining.acks.insert(ack.from);
        let primary_unrelayed =
            primaries.contains(&ack.from) && !rejoining.primary_acks.iter().any(|held| held.from == ack.from);
        if !first && !primary_unrelayed {
            return Err(Rejection::Duplicate);
        }
        if primary_unrelayed {
            rejoining.primary_acks.push(ack.clone());
            self.out.push(Output::Broadcast(Message::RejoinAck(ack)));
        }
        let rejoining = self.rejoin.as_ref().expect("under way");
        let view = rejoining.signed.body.view;
        // This replica holds its own withdrawal too.
        if rejoining.acks.len() + 1 < self.membership.quorum() || !self.view_active || self.view != view {
            return Ok(());
        }
        let signed = self.rejoin.take().expect("under way").signed;
        // From now on this replica counts what it withdrew for nothing, after a restart too.
        self.out.push(Output::Persist(Entry::Rejoin(signed.clone())));
        let withdrawn = signed.body.withdrawn;
        self.withdrawn
            .entry(self.id)
            .or_default()
            .extend(withdrawn.iter().copied());
        self.forget_view_change_of(self.id, &withdrawn);
        self.own_view_changes.retain(|w| !withdrawn.contains(w));
        self.highest_view_change_sent = self
            .own_view_changes
            .iter()
            .map(|(new_view, _)| *new_view)
            .fold(view, View::max);
        if self.left_for_a_later_view() {
            return Ok(());
        }
        self.out.push(Output::Event(Event::Rejoined { view }));
        // The COMMITs it withheld: for every batch prepared here in this view.
        let withheld: Vec<Seq> = self
            .log
            .iter()
            .filter(|(seq, slot)| {
                **seq > self.last_executed
                    && slot.prepared_in_view
                    && slot.view == view
                    && !slot.commits.contains_key(&self.id)
                    && slot.pre_prepare.as_ref().is_some_and(|pp| pp.body.view == view)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in withheld {
            self.send_commit(seq);
        }
        Ok(())
    }
}
