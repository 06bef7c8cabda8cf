//! The replica as a pure state machine: `step(now, input)` returns the outputs to carry out.
//!
//! No I/O, clock or randomness: time comes in with every input, messages and client requests arrive already
//! verified (`verify.rs`), and everything the replica wants done (send, persist, reply, set a timer) is an
//! `Output`. Hosts carry outputs out in order, and make each `Persist` durable before any later `Send`, so
//! a replica never forgets what it signed.
//!
//! This file holds the state and the normal case (requests, PRE-PREPARE, PREPARE, COMMIT, execution).
//! `checkpoint.rs` holds checkpoints and garbage collection, `status.rs` the STATUS exchange and catching up,
//! `state_transfer.rs` the transfer of a certified state in chunks, and `view_change.rs` the view change.

// The protocol's phases: each an `impl Replica` of its own, over the state this file defines.
pub mod checkpoint;
pub mod state_transfer;
pub mod status;
pub mod view_change;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::config::{Config, ConfigError, Membership, Params};
use crate::crypto::{Digest, KeyPair};
use crate::durable::{Durable, Entry};
use crate::governance::{
    Decision, Governance, MAX_CLOCK_SKEW_MS, MAX_OPS_PER_BATCH, MAX_PENDING_OPS, Operation, Rules,
};
use crate::ledger::{Ledger, RejectReason, SignedTransfer};
use crate::messages::*;
use crate::verify::{self, Rejection, Verified};

/// How many executed transfers a replica remembers, to answer a retransmitted request with its reply.
const REPLIES_KEPT: usize = 100_000;

/// What drives a replica.
#[derive(Clone, Debug)]
pub enum Input {
    /// A client's signed transfer.
    Request(Verified<SignedTransfer>),
    /// A message from another member.
    Message(Verified<Message>),
    /// A timer this replica set has fired.
    Timer(Timer),
    /// An operator asks for a view change (a fault drill, or a primary suspected by other means): leave
    /// `leave_view`, the view the operator saw. Nothing happens unless the replica is active in that view.
    ForceViewChange { leave_view: View },
    /// A governance operation to order (from the host's own detection, or an administrator's client).
    Operation(Operation),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Time to tell peers how far this replica is.
    Status,
    /// A pending request may have waited too long (in an active view), or a new view is overdue.
    /// Only the most recently set one counts: `generation` tells them apart.
    Progress { view: View, generation: u64 },
}

/// Something the host must do.
#[derive(Clone, Debug)]
pub enum Output {
    Send {
        to: ReplicaId,
        message: Message,
    },
    Broadcast(Message),
    /// Make this durable before carrying out any later output.
    Persist(Entry),
    /// The outcomes of an executed batch, for the clients whose transfers are in it.
    Reply(Signed<Reply>),
    SetTimer {
        timer: Timer,
        after_ms: u64,
    },
    Event(Event),
}

/// Things worth telling an operator about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ViewChangeStarted {
        from_view: View,
        to_view: View,
        reason: ViewChangeReason,
    },
    NewViewInstalled {
        view: View,
        primary: ReplicaId,
        old_primary: ReplicaId,
        started_ms: Option<u64>,
        installed_ms: u64,
        /// The members whose VIEW-CHANGE messages the new view was built from.
        view_changes_from: Vec<ReplicaId>,
        /// Batches re-proposed because they may have committed in an earlier view.
        batches_recovered: usize,
        transfers_recovered: usize,
    },
    /// A batch executed: hosts track progress with it, the simulator checks agreement with it.
    Executed {
        seq: Seq,
        batch_digest: Digest,
        outcomes: Vec<(Digest, crate::ledger::TxOutcome)>,
    },
    CheckpointStable {
        seq: Seq,
    },
    StateTransferred {
        seq: Seq,
    },
    /// This replica executed a state that a quorum did not: a bug or corrupted storage. It fetches the
    /// quorum's state instead.
    StateDiverged {
        seq: Seq,
    },
    /// This replica, having left `view` with too little company, votes in it again: a quorum holds its withdrawal
    /// of the VIEW-CHANGEs it signed since (`view_change.rs`).
    Rejoined {
        view: View,
    },
    /// A member signed a checkpoint whose state differs from the one a quorum certified: it executed differently
    /// (or lies about it). The signed checkpoint is the proof.
    DivergentCheckpoint {
        checkpoint: Signed<Checkpoint>,
        certificate: CheckpointCert,
    },
    /// A governance operation executed at `seq`, and what it decided.
    Decided {
        seq: Seq,
        op: Box<Operation>,
        decision: Decision,
    },
    /// A new membership took effect after the batch at `seq` (or arrived with a state transfer).
    EpochStarted {
        epoch: u64,
        seq: Seq,
        members: Vec<Member>,
        /// Addresses of members added by reconfiguration.
        addresses: BTreeMap<ReplicaId, String>,
        removed: Vec<ReplicaId>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewChangeReason {
    /// A pending request waited longer than the view-change timeout.
    RequestTimeout,
    /// The previous view change did not produce a new view in time.
    NewViewTimeout,
    /// F+1 other members moved to a higher view, so at least one honest member did.
    JoinedPeers,
    /// The primary was quarantined: nothing it proposes counts any more.
    PrimaryQuarantined,
    Forced,
}

impl ViewChangeReason {
    pub fn name(&self) -> &'static str {
        match self {
            ViewChangeReason::RequestTimeout => "request_timeout",
            ViewChangeReason::NewViewTimeout => "new_view_timeout",
            ViewChangeReason::JoinedPeers => "joined_peers",
            ViewChangeReason::PrimaryQuarantined => "primary_quarantined",
            ViewChangeReason::Forced => "forced",
        }
    }
}

/// Counters a host exports as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub transfers_applied: u64,
    pub transfers_rejected: u64,
    pub batches_executed: u64,
    pub view_changes: u64,
    pub state_transfers: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

/// Everything known about one sequence number.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    /// The view the PRE-PREPARE and votes below belong to.
    pub view: View,
    pub pre_prepare: Option<Signed<PrePrepare>>,
    /// The first PREPARE and COMMIT from each member in `view` (a second, different one is equivocation).
    pub prepares: BTreeMap<ReplicaId, Signed<Prepare>>,
    pub commits: BTreeMap<ReplicaId, Signed<Commit>>,
    /// Prepared in `view`, so this replica sent its COMMIT.
    pub prepared_in_view: bool,
    /// The prepared certificate of the highest view; it survives view changes and goes into VIEW-CHANGEs.
    pub prepared: Option<PreparedCert>,
    pub committed: Option<CommittedCert>,
}

impl Slot {
    /// Forget votes of earlier views once a message of `view` is accepted.
    pub fn enter_view(&mut self, view: View) {
        if self.view < view {
            self.view = view;
            self.pre_prepare = None;
            self.prepares.clear();
            self.commits.clear();
            self.prepared_in_view = false;
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub tx: SignedTransfer,
    pub arrived_ms: u64,
    pub order: u64,
}

pub struct Replica {
    pub(crate) id: ReplicaId,
    pub(crate) key: KeyPair,
    pub(crate) membership: Membership,
    pub(crate) params: Params,
    pub(crate) supply: u64,
    pub(crate) now_ms: u64,

    pub(crate) view: View,
    /// False between sending a VIEW-CHANGE and installing the NEW-VIEW.
    pub(crate) view_active: bool,
    pub(crate) view_started_ms: u64,
    /// The last view that was active here (its primary is the one a view change replaces).
    pub(crate) last_active_view: View,
    pub(crate) view_change_started_ms: Option<u64>,
    pub(crate) new_view: Option<Signed<NewView>>,
    /// The last NEW-VIEW refused as another one for the view of `new_view` by the same primary: with it, proof of
    /// that primary's equivocation (`conflicting_new_views`). One message, dropped when the next view installs.
    pub(crate) conflicting_new_view: Option<Signed<NewView>>,
    /// The latest VIEW-CHANGE from each member (this one included).
    pub(crate) view_changes: BTreeMap<ReplicaId, Signed<ViewChange>>,
    /// The highest view this replica ever sent a VIEW-CHANGE for (0: none). Signed and out, it may go into that
    /// view's NEW-VIEW whatever this replica does since (`left_for_a_later_view`).
    pub(crate) highest_view_change_sent: View,
    /// The VIEW-CHANGEs this replica signed for views above the last one installed here, by view and
    /// `view_change_id`: what a REJOIN takes back.
    pub(crate) own_view_changes: Vec<(View, Digest)>,
    /// This replica's REJOIN under way, if any (`view_change.rs`).
    pub(crate) rejoin: Option<view_change::Rejoining>,
    /// Each member's withdrawn VIEW-CHANGEs (this replica's own included) for views above the last installed here:
    /// they count for nothing, and a NEW-VIEW built on one is refused.
    pub(crate) withdrawn: BTreeMap<ReplicaId, BTreeSet<(View, Digest)>>,
    /// Each member's latest withdrawal waiting for the primaries of the views it withdraws to vouch for it, with
    /// those that did and when it first arrived (`view_change.rs`).
    pub(crate) rejoins_held: BTreeMap<ReplicaId, (Signed<Rejoin>, BTreeSet<ReplicaId>, u64)>,
    /// View changes since something last executed; the timeout doubles with each.
    pub(crate) failed_views: u32,
    /// For each member (this one included), the view whose primary it said, in its latest STATUS, it suspects, and
    /// whether that view was active there (a primary that stalls) or still changing (a NEW-VIEW that never came).
    /// One entry per member, so a peer cannot grow it. See `view_change.rs` for why suspicion comes first.
    pub(crate) suspicions: BTreeMap<ReplicaId, (View, bool)>,
    /// The NEW-VIEW this replica installed last (`new_view_id`), which its STATUS names while it is active there.
    pub(crate) new_view_id: Option<Digest>,
    /// For each peer, the view and NEW-VIEW its latest STATUS said it installed and is active in (one entry per
    /// member): a NEW-VIEW built on a VIEW-CHANGE its signer withdrew is accepted once the signer installed it.
    pub(crate) installed_by_peer: BTreeMap<ReplicaId, (View, Digest)>,

    pub(crate) ledger: Ledger,
    /// The membership, its epoch and quarantines: replicated like the ledger. `membership` is its current view.
    pub(crate) governance: Governance,
    /// Operations waiting to be ordered, oldest first, with when they arrived.
    pub(crate) pending_ops: Vec<(Digest, Operation, u64)>,
    /// PRE-PREPAREs beyond the next checkpoint boundary, held until this replica executes up to it: a
    /// reconfiguration ordered below the boundary changes who may propose above it.
    pub(crate) deferred: BTreeMap<Seq, Signed<PrePrepare>>,
    pub(crate) last_executed: Seq,
    /// The last sequence number this replica assigned as primary.
    pub(crate) next_seq: Seq,
    pub(crate) log: BTreeMap<Seq, Slot>,
    pub(crate) stable: CheckpointCert,
    pub(crate) stable_snapshot: Vec<u8>,
    pub(crate) state_transfers: state_transfer::StateTransfers,
    /// This replica's own checkpoint state digests and snapshots above the stable one.
    pub(crate) own_checkpoints: BTreeMap<Seq, (Digest, Vec<u8>)>,
    pub(crate) checkpoint_votes: BTreeMap<Seq, BTreeMap<ReplicaId, Signed<Checkpoint>>>,

    pub(crate) pending: HashMap<Digest, Pending>,
    pub(crate) pending_order: BTreeMap<u64, Digest>,
    pub(crate) next_order: u64,
    /// Transfers in the log above the last executed batch: the primary does not propose them again.
    pub(crate) proposed: HashSet<Digest>,
    /// Recently executed transfers and where, and the replies sent for them, so that a retransmitted request
    /// gets its reply again. The most recent `REPLIES_KEPT` transfers are remembered.
    pub(crate) executed: HashMap<Digest, Seq>,
    pub(crate) executed_order: VecDeque<Digest>,
    pub(crate) replies: BTreeMap<Seq, Signed<Reply>>,

    pub(crate) timer_generation: u64,
    pub(crate) timer_armed: bool,
    pub(crate) last_status_served: HashMap<ReplicaId, u64>,
    /// Each peer's last executed sequence number as its latest STATUS said.
    pub(crate) peer_executed: HashMap<ReplicaId, Seq>,

    pub(crate) stats: Stats,
    pub(crate) out: Vec<Output>,
}

impl Replica {
    /// A replica starting from the genesis.
    pub fn new(config: Config, key: KeyPair) -> Result<Replica, ConfigError> {
        Replica::recover(config, key, &Durable::default())
    }

    /// A replica restarting from what it persisted.
    pub fn recover(config: Config, key: KeyPair, durable: &Durable) -> Result<Replica, ConfigError> {
        config.params.validate()?;
        if config.membership.key(config.id).is_some_and(|k| *k != key.public()) {
            return Err(ConfigError::KeyMismatch(config.id));
        }
        let (genesis, genesis_governance) = config.genesis_state().map_err(ConfigError::Genesis)?;
        let supply = genesis.supply();
        let (stable, stable_snapshot, ledger, governance) = match &durable.checkpoint {
            Some((cert, snapshot)) => {
                let (ledger, governance) = crate::governance::restore_state(snapshot, supply)
                    .map_err(|error| ConfigError::StoredCheckpoint { seq: cert.seq, error })?;
                (cert.clone(), snapshot.clone(), ledger, governance)
            }
            None => {
                let snapshot = crate::governance::state_snapshot(&genesis, &genesis_governance);
                let cert = CheckpointCert {
                    seq: 0,
                    state_digest: Ledger::snapshot_digest(&snapshot),
                    proof: Vec::new(),
                };
                (cert, snapshot, genesis, genesis_governance)
            }
        };
        // The membership in force is the replicated one; this replica may have been added or removed since
        // the genesis (or not be a member yet: a learner catching up before it is added).
        let membership = governance.membership();
        let mut replica = Replica {
            id: config.id,
            key,
            membership,
            params: config.params,
            supply,
            now_ms: 0,
            view: durable.view,
            view_active: durable.view_active,
            view_started_ms: 0,
            // Changing views when it stopped, the view it last worked in is that of its last NEW-VIEW (or view 0):
            // the one it may go back to if the others stayed there (`on_new_view`, `return_to_view`). Taking the
            // view it was changing to left a restarted replica outside the cluster's view for good.
            last_active_view: if durable.view_active {
                durable.view
            } else {
                durable.new_view.as_ref().map_or(0, |nv| nv.body.view)
            },
            view_change_started_ms: None,
            new_view: durable.new_view.clone(),
            conflicting_new_view: None,
            view_changes: BTreeMap::new(),
            highest_view_change_sent: 0,
            own_view_changes: Vec::new(),
            rejoin: None,
            withdrawn: durable.withdrawn.clone(),
            rejoins_held: BTreeMap::new(),
            failed_views: 0,
            suspicions: BTreeMap::new(),
            new_view_id: durable.new_view.as_ref().map(new_view_id),
            installed_by_peer: BTreeMap::new(),
            ledger,
            governance,
            pending_ops: Vec::new(),
            deferred: BTreeMap::new(),
            last_executed: stable.seq,
            next_seq: stable.seq,
            log: BTreeMap::new(),
            stable,
            stable_snapshot,
            state_transfers: Default::default(),
            own_checkpoints: BTreeMap::new(),
            checkpoint_votes: BTreeMap::new(),
            pending: HashMap::new(),
            pending_order: BTreeMap::new(),
            next_order: 0,
            proposed: HashSet::new(),
            executed: HashMap::new(),
            executed_order: VecDeque::new(),
            replies: BTreeMap::new(),
            timer_generation: 0,
            timer_armed: false,
            last_status_served: HashMap::new(),
            peer_executed: HashMap::new(),
            stats: Stats::default(),
            out: Vec::new(),
        };
        replica.restore(durable);
        Ok(replica)
    }

    /// Restores what this replica signed and prepared, so that it never signs anything that conflicts.
    fn restore(&mut self, durable: &Durable) {
        let low = self.stable.seq;
        for cert in durable.prepared.values().filter(|c| c.seq() > low) {
            self.log.entry(cert.seq()).or_default().prepared = Some(cert.clone());
        }
        if let Some(vc) = &durable.view_change {
            self.view_changes.insert(self.id, vc.clone());
            self.highest_view_change_sent = vc.body.new_view;
        }
        // A withdrawal under way when it stopped: it had gone back to the view, and members that hold the withdrawal
        // refuse what it withdraws, so it must not build a NEW-VIEW on that (the simulator saw a restarted primary
        // do so, and the cluster stall: N = 4, seed 41308). It sends the withdrawal again (`try_rejoin`).
        if let Some(signed) = &durable.rejoin_under_way
            && (durable.view, durable.view_active) == (signed.body.view, true)
        {
            self.forget_view_change_of(self.id, &signed.body.withdrawn);
            self.rejoin = Some(view_change::Rejoining {
                signed: signed.clone(),
                acks: BTreeSet::new(),
                primary_acks: Vec::new(),
            });
        }
        // Less what a quorum holds withdrawn (this replica persists its own withdrawal only then).
        let withdrawn = durable.withdrawn.get(&self.id);
        self.own_view_changes = durable
            .view_changes_signed
            .iter()
            .filter(|signed| withdrawn.is_none_or(|held| !held.contains(signed)))
            .copied()
            .collect();
        self.highest_view_change_sent = self
            .own_view_changes
            .iter()
            .map(|(view, _)| *view)
            .fold(self.highest_view_change_sent, View::max);
        if let Some(nv) = &durable.new_view {
            let (_, entries) = crate::new_view::derive_new_view(&nv.body.view_changes);
            if let Some(last) = entries.last() {
                self.next_seq = self.next_seq.max(last.seq);
            }
        }
        // Its own votes and proposals of the view it last worked in, which is the view it is in unless it was changing
        // views when it stopped: then it may still go back to that one (`return_to_view`, `try_rejoin`), and must
        // not sign anything there that conflicts with what it signed before. Restored only for the view it was
        // changing to, a primary of view 0 restarted mid-change went back and proposed again at a sequence number
        // it had proposed another batch for: honest, yet proven an equivocator (N = 4, seed 102580).
        let view = self.last_active_view;
        for message in &durable.sent {
            match message {
                Message::PrePrepare(pp) if pp.body.view == view && pp.body.seq > low => {
                    self.next_seq = self.next_seq.max(pp.body.seq);
                    self.log_pre_prepare(pp.clone());
                }
                Message::Prepare(p) if p.body.view == view && p.body.seq > low => {
                    let slot = self.log.entry(p.body.seq).or_default();
                    slot.enter_view(p.body.view);
                    slot.prepares.insert(self.id, p.clone());
                }
                Message::Commit(c) if c.body.view == view && c.body.seq > low => {
                    let slot = self.log.entry(c.body.seq).or_default();
                    slot.enter_view(c.body.view);
                    slot.commits.insert(self.id, c.clone());
                    slot.prepared_in_view = true;
                }
                _ => {}
            }
        }
    }

    /// The outputs to carry out when the replica starts: its timers.
    pub fn start(&mut self, now_ms: u64) -> Vec<Output> {
        self.now_ms = now_ms;
        self.view_started_ms = now_ms;
        // Changing views when it stopped, it has been since now as far as it can tell: a replica that finds itself
        // alone outside the view the others went back to withdraws its VIEW-CHANGE after a view-change timeout
        // (`try_rejoin`). Without a start, a restarted primary of view 0 stayed changing to view 1 for good while the
        // others, back in view 0, each counted its VIEW-CHANGE and refused one another's withdrawal (N = 4, seed
        // 102580).
        if !self.view_active {
            self.view_change_started_ms.get_or_insert(now_ms);
        }
        self.out.push(Output::SetTimer {
            timer: Timer::Status,
            after_ms: self.params.status_interval_ms,
        });
        self.arm_new_view_timer();
        std::mem::take(&mut self.out)
    }

    /// Feeds one input. On `Err` nothing changed and nothing is to be done; the rejection is counted.
    pub fn step(&mut self, now_ms: u64, input: Input) -> Result<Vec<Output>, Rejection> {
        self.now_ms = self.now_ms.max(now_ms);
        let result = match input {
            Input::Request(tx) => self.on_request(tx.into_inner()),
            Input::Message(message) => self.on_message(message.into_inner()),
            Input::Timer(Timer::Status) => {
                self.on_status_timer();
                Ok(())
            }
            Input::Timer(Timer::Progress { view, generation }) => {
                self.on_progress_timer(view, generation);
                Ok(())
            }
            Input::ForceViewChange { leave_view } => {
                // Asked of every member at once; one already changing views is on its way already, and one
                // already in a later view (its peers' VIEW-CHANGEs got there first) must not move on alone.
                if self.view_active && self.view == leave_view {
                    self.start_view_change(self.view + 1, ViewChangeReason::Forced);
                }
                Ok(())
            }
            Input::Operation(op) => self.on_operation(op),
        };
        if result.is_ok() {
            self.send_held_view_change();
        }
        match result {
            Ok(()) => Ok(std::mem::take(&mut self.out)),
            Err(rejection) => {
                debug_assert!(self.out.is_empty(), "a rejected input produced outputs: {rejection}");
                self.out.clear();
                *self.stats.rejected.entry(rejection.label()).or_default() += 1;
                Err(rejection)
            }
        }
    }

    fn on_message(&mut self, message: Message) -> Result<(), Rejection> {
        if message.sender() == self.id && !matches!(message, Message::Committed(_)) {
            return Err(Rejection::FromSelf);
        }
        // A committed batch's proof stands whoever relays it; everything else from a quarantined member is ignored.
        if !matches!(message, Message::Committed(_)) && self.governance.is_quarantined(message.sender()) {
            return Err(Rejection::Quarantined(message.sender()));
        }
        match message {
            Message::PrePrepare(pp) => self.on_pre_prepare(pp),
            Message::Prepare(p) => self.on_prepare(p),
            Message::Commit(c) => self.on_commit(c),
            Message::Checkpoint(c) => self.on_checkpoint(c),
            Message::ViewChange(vc) => self.on_view_change(vc),
            Message::NewView(nv) => self.on_new_view(nv),
            Message::Status(s) => self.on_status(s),
            Message::StateTransfer(st) => self.on_state_transfer(st),
            Message::Committed(cert) => self.on_committed(cert),
            Message::Operation { op, .. } => self.on_operation(*op),
            Message::Proposal { proposal, .. } => self.on_proposal_held_elsewhere(proposal),
            Message::Rejoin(rejoin) => self.on_rejoin(rejoin),
            Message::RejoinAck(ack) => self.on_rejoin_ack(ack),
            Message::Request { tx, .. } => {
                if !self.is_primary() || !self.view_active {
                    return Err(Rejection::NotPrimary);
                }
                self.on_request(tx)
            }
        }
    }

    // ----- accessors -----

    pub fn id(&self) -> ReplicaId {
        self.id
    }
    pub fn view(&self) -> View {
        self.view
    }
    /// Back in a view it had left alone, this replica sends no COMMIT until a quorum holds its withdrawal of the
    /// VIEW-CHANGEs it signed since (`view_change.rs`).
    pub fn withholds_commits(&self) -> bool {
        self.view_active && self.left_for_a_later_view()
    }

    pub fn view_active(&self) -> bool {
        self.view_active
    }
    pub fn primary(&self) -> ReplicaId {
        self.membership.primary(self.view)
    }
    pub fn is_primary(&self) -> bool {
        self.primary() == self.id
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }
    /// The proof this replica holds that the batch at `seq` committed, while `seq` is in its log.
    pub fn committed_certificate(&self, seq: Seq) -> Option<&CommittedCert> {
        self.log.get(&seq)?.committed.as_ref()
    }
    /// The last NEW-VIEW this replica installed (none until its first view change).
    pub fn installed_new_view(&self) -> Option<&Signed<NewView>> {
        self.new_view.as_ref()
    }
    /// The governance operations waiting to be proposed, oldest first.
    pub fn pending_operations(&self) -> impl Iterator<Item = &Operation> {
        self.pending_ops.iter().map(|(_, op, _)| op)
    }
    /// What `message`'s sender signed before for the same slot, as this replica logged it: the other half of an
    /// equivocation it refused. PRE-PREPAREs come without their batch (their signature covers the header).
    pub fn signed_before(&self, message: &Message) -> Option<Message> {
        let slot = |view: View, seq: Seq| self.log.get(&seq).filter(|s| s.view == view);
        match message {
            Message::PrePrepare(pp) => {
                let logged = slot(pp.body.view, pp.body.seq)?.pre_prepare.as_ref()?;
                (logged.from == pp.from).then(|| Message::PrePrepare(without_batch(logged)))
            }
            Message::Prepare(p) => slot(p.body.view, p.body.seq)?
                .prepares
                .get(&p.from)
                .map(|m| Message::Prepare(m.clone())),
            Message::Commit(c) => slot(c.body.view, c.body.seq)?
                .commits
                .get(&c.from)
                .map(|m| Message::Commit(m.clone())),
            Message::Checkpoint(c) => self
                .checkpoint_votes
                .get(&c.body.seq)?
                .get(&c.from)
                .map(|m| Message::Checkpoint(m.clone())),
            _ => None,
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The NEW-VIEW installed for its view and a different one its primary signed for the same view, refused since:
    /// proof of the primary's equivocation (`Evidence::ConflictingNewViews`).
    pub fn conflicting_new_views(&self) -> Option<(&Signed<NewView>, &Signed<NewView>)> {
        let first = self.new_view.as_ref()?;
        let second = self.conflicting_new_view.as_ref()?;
        (first.body.view == second.body.view).then_some((first, second))
    }

    /// The replicated membership state: epoch, members, quarantines, a pending reconfiguration.
    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    pub fn epoch(&self) -> u64 {
        self.governance.epoch
    }

    pub(crate) fn rules(&self) -> Rules {
        Rules {
            checkpoint_interval: self.params.checkpoint_interval,
            quarantine_duration_ms: self.params.quarantine_duration_ms,
        }
    }

    /// The highest sequence number this replica proposes or prepares before it has executed everything below:
    /// the next checkpoint boundary, where a new epoch may begin.
    pub(crate) fn next_boundary(&self) -> Seq {
        (self.last_executed / self.params.checkpoint_interval + 1) * self.params.checkpoint_interval
    }

    pub fn stable_checkpoint(&self) -> &CheckpointCert {
        &self.stable
    }
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// A one-line account of where the replica stands, for diagnostics.
    pub fn describe(&self) -> String {
        format!(
            "view {}{} primary {} executed {} stable {} assigned {} pending {} log {}",
            self.view,
            match (self.view_active, self.left_for_a_later_view()) {
                (false, _) => " (changing)",
                (true, true) => " (withholding COMMITs)",
                (true, false) => "",
            },
            self.primary(),
            self.last_executed,
            self.stable.seq,
            self.next_seq,
            self.pending.len(),
            self.log.len()
        )
    }

    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    // ----- helpers shared by the protocol's parts -----

    pub(crate) fn high_watermark(&self) -> Seq {
        self.stable.seq + self.params.log_window
    }

    pub(crate) fn check_watermarks(&self, seq: Seq) -> Result<(), Rejection> {
        if seq <= self.stable.seq || seq > self.high_watermark() {
            return Err(Rejection::OutsideWatermarks {
                seq,
                low: self.stable.seq,
                high: self.high_watermark(),
            });
        }
        Ok(())
    }

    pub(crate) fn check_active_view(&self, view: View) -> Result<(), Rejection> {
        if view != self.view {
            return Err(Rejection::WrongView {
                got: view,
                current: self.view,
            });
        }
        if !self.view_active {
            return Err(Rejection::ViewChangeInProgress);
        }
        Ok(())
    }

    pub(crate) fn sign<T: Signable>(&self, body: T) -> Signed<T> {
        Signed::new(self.id, body, &self.key)
    }

    /// Persists, then broadcasts, a message this replica signed.
    pub(crate) fn persist_and_broadcast(&mut self, message: Message) {
        self.out.push(Output::Persist(Entry::Sent(message.clone())));
        self.out.push(Output::Broadcast(message));
    }

    pub(crate) fn arm_progress_timer(&mut self) {
        self.timer_generation += 1;
        self.timer_armed = true;
        let after_ms = if self.view_active {
            self.params.view_change_timeout_ms
        } else {
            let doublings = self.failed_views.min(self.params.view_change_backoff_max);
            self.params.view_change_timeout_ms.saturating_mul(1 << doublings)
        };
        let timer = Timer::Progress {
            view: self.view,
            generation: self.timer_generation,
        };
        self.out.push(Output::SetTimer { timer, after_ms });
    }

    /// Starts timing a request that just arrived, in an active view only: while views change the timer is the
    /// new-view timer, which `arm_new_view_timer` arms only once a quorum is changing too. A request arriving then
    /// must not arm it behind that gate, or a replica cut off from the others would climb views alone.
    fn arm_request_timer(&mut self) {
        if !self.timer_armed && self.view_active {
            self.arm_progress_timer();
        }
    }

    // ----- client requests -----

    fn on_request(&mut self, tx: SignedTransfer) -> Result<(), Rejection> {
        let digest = tx.digest();
        if let Some(reply) = self.executed.get(&digest).and_then(|seq| self.replies.get(seq)) {
            // A retransmission of an executed transfer: send its reply again.
            self.out.push(Output::Reply(reply.clone()));
            return Ok(());
        }
        if self.pending.contains_key(&digest) {
            return Err(Rejection::Duplicate);
        }
        // A nonce once used stays used: such a transfer can never execute, so it is refused at once, unless
        // it is the payer's last executed transfer, whose outcome the replicated state still holds.
        if let Err(reason @ RejectReason::NonceReused { .. }) = self.ledger.check(&tx.transfer) {
            let last = self.ledger.account(&tx.transfer.from).and_then(|a| a.last);
            return match last {
                Some((last_digest, outcome, seq)) if last_digest == digest => {
                    // Signed: it must name where the transfer executed, or it is a false claim peers can hold
                    // against this replica.
                    let reply = self.sign(Reply {
                        view: self.view,
                        seq,
                        outcomes: vec![(digest, outcome)],
                    });
                    self.out.push(Output::Reply(reply));
                    Ok(())
                }
                _ => Err(Rejection::Transfer(reason)),
            };
        }
        if self.pending.len() >= self.params.max_concurrent_requests {
            return Err(Rejection::Busy);
        }
        let order = self.next_order;
        self.next_order += 1;
        self.pending.insert(
            digest,
            Pending {
                tx,
                arrived_ms: self.now_ms,
                order,
            },
        );
        self.pending_order.insert(order, digest);
        self.arm_request_timer();
        self.try_propose();
        Ok(())
    }

    // ----- governance operations -----

    /// Holds an operation to be ordered, if it would do something, and relays it so that every member (and so
    /// whichever is primary) has it.
    fn on_operation(&mut self, op: Operation) -> Result<(), Rejection> {
        let digest = op.digest();
        if self.pending_ops.iter().any(|(d, _, _)| *d == digest) {
            return Err(Rejection::Duplicate);
        }
        if self.pending_ops.iter().any(|(_, pending, _)| pending.same_matter(&op)) {
            return Err(Rejection::Operation(
                op.kind(),
                "one like it already waits to be ordered".into(),
            ));
        }
        self.governance
            .admit(&op, self.now_ms)
            .map_err(|reason| Rejection::Operation(op.kind(), reason))?;
        if self.pending_ops.len() >= MAX_PENDING_OPS {
            return Err(Rejection::Busy);
        }
        self.pending_ops.push((digest, op.clone(), self.now_ms));
        self.out.push(Output::Broadcast(Message::Operation {
            from: self.id,
            op: Box::new(op),
        }));
        self.arm_request_timer();
        self.try_propose();
        Ok(())
    }

    /// Drops pending requests whose nonce the ledger has used: they were executed where this replica did not
    /// see it (state transfer), or lost a double spend to another transfer. Waiting on them would make this
    /// replica suspect an honest primary.
    pub(crate) fn prune_stale_pending(&mut self) {
        let stale: Vec<Digest> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(self.ledger.check(&p.tx.transfer), Err(RejectReason::NonceReused { .. })))
            .map(|(digest, _)| *digest)
            .collect();
        for digest in stale {
            self.remove_pending(&digest);
        }
    }

    fn remove_pending(&mut self, digest: &Digest) {
        if let Some(p) = self.pending.remove(digest) {
            self.pending_order.remove(&p.order);
        }
    }

    /// As primary, proposes batches of pending requests while the pipeline and the watermarks allow.
    pub(crate) fn try_propose(&mut self) {
        if !self.is_primary() || !self.view_active {
            return;
        }
        // A member that became primary by an epoch change (not a view change, which sets it) may last have
        // assigned a number long executed since: it proposed an executed sequence number again, in a view whose
        // primary it was not when that number was ordered.
        self.next_seq = self.next_seq.max(self.last_executed);
        loop {
            let seq = self.next_seq + 1;
            let inflight = self.next_seq.saturating_sub(self.last_executed);
            if seq > self.high_watermark() || seq > self.next_boundary() || inflight >= self.params.max_inflight_batches
            {
                return;
            }
            let mut batch = Vec::new();
            let mut spends = HashSet::new();
            for digest in self.pending_order.values() {
                if batch.len() >= self.params.max_batch_size {
                    break;
                }
                let tx = &self.pending[digest].tx;
                if self.proposed.contains(digest) || !spends.insert(tx.spend_key()) {
                    continue;
                }
                batch.push(*tx);
            }
            let ops: Vec<Operation> = self
                .pending_ops
                .iter()
                .filter(|(digest, _, _)| !self.proposed.contains(digest))
                .take(MAX_OPS_PER_BATCH)
                .map(|(_, op, _)| op.clone())
                .collect();
            // An ordered reconfiguration waits for its checkpoint boundary: with nothing else to propose, empty
            // batches bring the sequence there.
            let reconfiguration_waits = self.governance.pending.as_ref().is_some_and(|(_, at)| seq <= *at);
            // Likewise a quarantine that ran out by this clock ends only when a batch's time says so.
            let idle = self.next_seq == self.last_executed;
            let quarantine_ends = idle && self.governance.quarantine_overdue(self.now_ms);
            if batch.is_empty() && ops.is_empty() && !reconfiguration_waits && !quarantine_ends {
                return;
            }
            self.next_seq = seq;
            let at_ms = self.now_ms;
            let pp = self.sign(PrePrepare {
                view: self.view,
                seq,
                digest: proposal_digest(&batch, &ops, at_ms),
                batch,
                ops,
                at_ms,
            });
            self.log_pre_prepare(pp.clone());
            self.persist_and_broadcast(Message::PrePrepare(pp));
        }
    }

    // ----- normal case -----

    fn on_pre_prepare(&mut self, pp: Signed<PrePrepare>) -> Result<(), Rejection> {
        let PrePrepare { view, seq, digest, .. } = pp.body;
        self.check_active_view(view)?;
        // The same rule the certificates of a view change are checked by: a proposal accepted here must be one this
        // replica can prove in a VIEW-CHANGE, or one backup's proposal stops the cluster for good. Checked before the
        // watermarks, so a backup's proposal arriving late is refused as such, with its proof. Up to the next
        // boundary the membership in force decides; above it, once that boundary has executed (see below).
        if seq > self.governance.epoch_started_at.unwrap_or(0) && seq <= self.next_boundary() {
            verify::check_proposer(&self.membership, &pp)?;
        }
        self.check_watermarks(seq)?;
        if seq <= self.last_executed {
            return Err(Rejection::Duplicate);
        }
        // The time a primary stamps moves the replicated clock forward for good: bound how far it may run ahead.
        let latest_ms = self.now_ms.saturating_add(MAX_CLOCK_SKEW_MS);
        if pp.body.at_ms > latest_ms {
            return Err(Rejection::TimeAhead {
                at_ms: pp.body.at_ms,
                latest_ms,
            });
        }
        if seq > self.next_boundary() {
            // Who may propose it is known once everything up to the boundary has executed. Room is kept for what
            // the primary of the current membership sends: a backup's proposals must not crowd them out.
            let room = self.deferred.len() < self.params.max_inflight_batches as usize * 2;
            let by_primary = verify::check_proposer(&self.membership, &pp).is_ok();
            if room || by_primary {
                if !room {
                    let primary = self.membership.primary(view);
                    let other = self.deferred.iter().find(|(_, d)| d.from != primary).map(|(s, _)| *s);
                    match other {
                        Some(other) => self.deferred.remove(&other),
                        None => return Ok(()),
                    };
                }
                self.deferred.insert(seq, pp);
            }
            return Ok(());
        }
        let slot = self.log.entry(seq).or_default();
        if slot.view == view {
            if let Some(existing) = &slot.pre_prepare {
                return Err(if existing.body.digest == digest {
                    Rejection::Duplicate
                } else {
                    Rejection::Equivocation
                });
            }
            // After a restart this replica may remember its PREPARE but not the PRE-PREPARE it answered.
            if slot
                .prepares
                .get(&self.id)
                .is_some_and(|mine| mine.body.digest != digest)
            {
                return Err(Rejection::Equivocation);
            }
        }
        self.accept_pre_prepare(pp);
        Ok(())
    }

    /// A peer's copy of the PRE-PREPARE for a slot where its vote named another digest than this replica's: if the
    /// same primary signed both, that is proof of equivocation, which the refusal carries to the detection policy.
    /// A primary that sends conflicting proposals to disjoint backups was otherwise never proven: no one replica
    /// ever held both.
    fn on_proposal_held_elsewhere(&mut self, theirs: Signed<PrePrepare>) -> Result<(), Rejection> {
        let (view, seq) = (theirs.body.view, theirs.body.seq);
        let mine = self
            .log
            .get(&seq)
            .filter(|slot| slot.view == view)
            .and_then(|slot| slot.pre_prepare.as_ref());
        match mine {
            Some(mine) if mine.from == theirs.from && mine.body.digest != theirs.body.digest => {
                Err(Rejection::Equivocation)
            }
            _ => Err(Rejection::Duplicate),
        }
    }

    /// Sends this replica's copy of the slot's PRE-PREPARE (its header) to a peer whose vote names another digest,
    /// so that whichever of the two holds both of the primary's proposals can prove it.
    fn show_proposal_to(&mut self, peer: ReplicaId, seq: Seq, voted: Digest) {
        let Some(pp) = self.log.get(&seq).and_then(|slot| slot.pre_prepare.as_ref()) else {
            return;
        };
        if pp.body.digest != voted && pp.from != peer && peer != self.id {
            let proposal = without_batch(pp);
            self.out.push(Output::Send {
                to: peer,
                message: Message::Proposal {
                    from: self.id,
                    proposal,
                },
            });
        }
    }

    /// The one way a proposal enters the log (the primary's own, a peer's, one restored or re-proposed by a
    /// NEW-VIEW): its slot moves to the proposal's view, and what it carries counts as proposed, so the primary
    /// does not propose it again (once, two of five hand-copied sites forgot the governance operations).
    pub(crate) fn log_pre_prepare(&mut self, pp: Signed<PrePrepare>) {
        self.note_proposed(&pp.body);
        let slot = self.log.entry(pp.body.seq).or_default();
        slot.enter_view(pp.body.view);
        slot.pre_prepare = Some(pp);
    }

    /// What a proposal carries, transfers and operations, is in the log above the last executed batch.
    pub(crate) fn note_proposed(&mut self, pp: &PrePrepare) {
        self.proposed.extend(pp.batch.iter().map(|tx| tx.digest()));
        self.proposed.extend(pp.ops.iter().map(|op| op.digest()));
    }

    /// Logs a PRE-PREPARE of the current view and answers it with a PREPARE.
    pub(crate) fn accept_pre_prepare(&mut self, pp: Signed<PrePrepare>) {
        let PrePrepare { view, seq, digest, .. } = pp.body;
        let is_primary = self.is_primary();
        self.log_pre_prepare(pp);
        let votes: Vec<(ReplicaId, Digest)> = self.log[&seq]
            .prepares
            .values()
            .map(|p| (p.from, p.body.digest))
            .collect();
        for (peer, voted) in votes {
            self.show_proposal_to(peer, seq, voted);
        }
        let slot = self.log.get_mut(&seq).expect("just inserted");
        if !is_primary && !slot.prepares.contains_key(&self.id) {
            let prepare = self.sign(Prepare { view, seq, digest });
            self.log
                .get_mut(&seq)
                .expect("just inserted")
                .prepares
                .insert(self.id, prepare.clone());
            self.persist_and_broadcast(Message::Prepare(prepare));
        }
        self.check_prepared(seq);
    }

    fn on_prepare(&mut self, p: Signed<Prepare>) -> Result<(), Rejection> {
        let Prepare { view, seq, .. } = p.body;
        self.check_active_view(view)?;
        self.check_watermarks(seq)?;
        if p.from == self.membership.primary(view) {
            return Err(Rejection::FromPrimary("prepare"));
        }
        let slot = self.log.entry(seq).or_default();
        slot.enter_view(view);
        if let Some(existing) = slot.prepares.get(&p.from) {
            return Err(if existing.body == p.body {
                Rejection::Duplicate
            } else {
                Rejection::Equivocation
            });
        }
        let (from, voted) = (p.from, p.body.digest);
        slot.prepares.insert(p.from, p);
        self.show_proposal_to(from, seq, voted);
        self.check_prepared(seq);
        Ok(())
    }

    fn on_commit(&mut self, c: Signed<Commit>) -> Result<(), Rejection> {
        let Commit { view, seq, .. } = c.body;
        self.check_active_view(view)?;
        self.check_watermarks(seq)?;
        let slot = self.log.entry(seq).or_default();
        slot.enter_view(view);
        if let Some(existing) = slot.commits.get(&c.from) {
            return Err(if existing.body == c.body {
                Rejection::Duplicate
            } else {
                Rejection::Equivocation
            });
        }
        slot.commits.insert(c.from, c);
        self.check_committed(seq);
        Ok(())
    }

    /// Prepared: the PRE-PREPARE and a quorum minus one of matching PREPAREs from other members.
    fn check_prepared(&mut self, seq: Seq) {
        let quorum = self.membership.quorum();
        let commits_withheld = self.left_for_a_later_view();
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(pp) = &slot.pre_prepare else { return };
        if slot.prepared_in_view {
            return;
        }
        let wanted = Prepare {
            view: pp.body.view,
            seq,
            digest: pp.body.digest,
        };
        let prepares: Vec<Signed<Prepare>> = slot
            .prepares
            .values()
            .filter(|p| p.body == wanted && p.from != pp.from)
            .cloned()
            .collect();
        if prepares.len() + 1 < quorum {
            return;
        }
        let cert = PreparedCert {
            pre_prepare: pp.clone(),
            prepares,
        };
        slot.prepared = Some(cert.clone());
        slot.prepared_in_view = true;
        self.out.push(Output::Persist(Entry::Prepared(cert)));
        if commits_withheld {
            self.check_committed(seq);
            return;
        }
        self.send_commit(seq);
    }

    /// Signs and sends this replica's COMMIT for the batch prepared at `seq` in its slot's view.
    pub(crate) fn send_commit(&mut self, seq: Seq) {
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(pp) = &slot.pre_prepare else { return };
        let commit = Signed::new(
            self.id,
            Commit {
                view: pp.body.view,
                seq,
                digest: pp.body.digest,
            },
            &self.key,
        );
        slot.commits.insert(self.id, commit.clone());
        self.persist_and_broadcast(Message::Commit(commit));
        self.check_committed(seq);
    }

    /// Committed: prepared in this view, and a quorum of matching COMMITs.
    fn check_committed(&mut self, seq: Seq) {
        let quorum = self.membership.quorum();
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        if slot.committed.is_some() || !slot.prepared_in_view {
            return;
        }
        let Some(pp) = &slot.pre_prepare else { return };
        let wanted = Commit {
            view: pp.body.view,
            seq,
            digest: pp.body.digest,
        };
        let commits: Vec<Signed<Commit>> = slot.commits.values().filter(|c| c.body == wanted).cloned().collect();
        if commits.len() < quorum {
            return;
        }
        slot.committed = Some(CommittedCert {
            pre_prepare: pp.clone(),
            commits,
        });
        self.try_execute();
    }

    /// A batch committed elsewhere, with its proof: how a replica that lost messages catches up.
    fn on_committed(&mut self, cert: CommittedCert) -> Result<(), Rejection> {
        let seq = cert.pre_prepare.body.seq;
        if seq <= self.last_executed {
            return Err(Rejection::Duplicate);
        }
        self.check_watermarks(seq)?;
        // Above the next checkpoint boundary a reconfiguration ordered below it may change who votes: such a
        // certificate is judged once the boundary has executed (peers send it again). Up to it, only the membership
        // in force counts, whichever one the verifier checked the certificate against: an epoch may have begun since.
        // (The simulator saw a lagging replica execute a batch on a removed member's COMMIT, N = 4, seed 44601.)
        if seq > self.next_boundary() {
            return Err(Rejection::OutsideWatermarks {
                seq,
                low: self.last_executed,
                high: self.next_boundary(),
            });
        }
        if !committed_under(&self.membership, &cert) {
            return Err(Rejection::BadCertificate("committed"));
        }
        if self.log.get(&seq).is_some_and(|slot| slot.committed.is_some()) {
            return Err(Rejection::Duplicate);
        }
        self.note_proposed(&cert.pre_prepare.body);
        let view = cert.pre_prepare.body.view;
        self.log.entry(seq).or_default().committed = Some(cert);
        self.return_to_view(view);
        self.try_execute();
        Ok(())
    }

    fn remember_executed(&mut self, digest: Digest, seq: Seq) {
        // A transfer proposed twice (a faulty primary can) executes once and is then refused as a reused
        // nonce: the reply to resend is the first one.
        if self.executed.contains_key(&digest) {
            return;
        }
        self.executed.insert(digest, seq);
        self.executed_order.push_back(digest);
        while self.executed_order.len() > REPLIES_KEPT {
            let oldest = self.executed_order.pop_front().expect("not empty");
            if let Some(at) = self.executed.remove(&oldest) {
                // Replies are per batch: drop those below the oldest transfer still remembered.
                let keep_from = self
                    .executed_order
                    .front()
                    .and_then(|d| self.executed.get(d))
                    .copied()
                    .unwrap_or(at);
                self.replies = self.replies.split_off(&keep_from);
            }
        }
    }

    /// Executes committed batches in sequence order, each exactly once.
    pub(crate) fn try_execute(&mut self) {
        let mut progressed = false;
        let mut primary_quarantined = false;
        while let Some(cert) = self
            .log
            .get(&(self.last_executed + 1))
            .and_then(|slot| slot.committed.clone())
        {
            let seq = self.last_executed + 1;
            self.governance.advance_clock(cert.pre_prepare.body.at_ms);
            let mut outcomes = Vec::with_capacity(cert.pre_prepare.body.batch.len());
            for tx in &cert.pre_prepare.body.batch {
                let digest = tx.digest();
                let outcome = self.ledger.apply(tx, seq);
                match outcome {
                    crate::ledger::TxOutcome::Applied => self.stats.transfers_applied += 1,
                    crate::ledger::TxOutcome::Rejected(_) => self.stats.transfers_rejected += 1,
                }
                self.remove_pending(&digest);
                self.proposed.remove(&digest);
                self.remember_executed(digest, seq);
                outcomes.push((digest, outcome));
            }
            primary_quarantined |= self.execute_operations(seq, &cert.pre_prepare.body.ops);
            self.last_executed = seq;
            self.stats.batches_executed += 1;
            let batch_digest = cert.pre_prepare.body.digest;
            self.out.push(Output::Event(Event::Executed {
                seq,
                batch_digest,
                outcomes: outcomes.clone(),
            }));
            progressed = true;
            let reply = self.sign(Reply {
                view: self.view,
                seq,
                outcomes,
            });
            if !reply.body.outcomes.is_empty() {
                self.replies.insert(seq, reply.clone());
                self.out.push(Output::Reply(reply));
            }
            if self.governance.epoch_due(seq) {
                self.start_epoch(seq);
            }
            if seq % self.params.checkpoint_interval == 0 {
                self.take_checkpoint(seq);
            }
        }
        if progressed {
            self.failed_views = 0;
            if self.pending.is_empty() && self.pending_ops.is_empty() {
                self.suspicions.remove(&self.id);
            }
            if primary_quarantined && self.view_active {
                self.start_view_change(self.view + 1, ViewChangeReason::PrimaryQuarantined);
                return;
            }
            self.release_deferred();
            self.try_propose();
        }
    }

    /// Applies the governance operations of the batch at `seq`. Returns whether the primary was quarantined.
    fn execute_operations(&mut self, seq: Seq, ops: &[Operation]) -> bool {
        let rules = self.rules();
        let primary = self.primary();
        let mut primary_quarantined = false;
        for op in ops {
            let digest = op.digest();
            let decision = self.governance.apply(op, seq, &rules);
            self.pending_ops.retain(|(d, _, _)| *d != digest);
            self.proposed.remove(&digest);
            primary_quarantined |= matches!(decision, Decision::Quarantined { member, .. } if member == primary);
            self.out.push(Output::Event(Event::Decided {
                seq,
                op: Box::new(op.clone()),
                decision,
            }));
        }
        // What the executed operations settled no longer waits: another reporter's evidence against a member now
        // quarantined would never be ordered (the primary holds only one per matter) and, left waiting, would
        // make this replica suspect an honest primary.
        if !ops.is_empty() {
            let (governance, now_ms) = (&self.governance, self.now_ms);
            self.pending_ops
                .retain(|(_, op, _)| governance.admit(op, now_ms).is_ok());
        }
        primary_quarantined
    }

    /// The ordered reconfiguration takes effect after the batch at `seq`: later sequence numbers belong to the
    /// new membership, and votes of removed members no longer count.
    fn start_epoch(&mut self, seq: Seq) {
        let removed = self.governance.start_epoch();
        self.adopt_membership(seq, removed);
    }

    /// Makes the replicated membership the one in force (after a new epoch, or a state transfer across one).
    pub(crate) fn adopt_membership(&mut self, seq: Seq, removed: Vec<ReplicaId>) {
        let membership = self.governance.membership();
        for (slot_seq, slot) in self.log.iter_mut() {
            slot.prepares.retain(|id, _| membership.contains(*id));
            slot.commits.retain(|id, _| membership.contains(*id));
            // A certificate a peer relayed above the epoch's start was checked against the membership of its day
            // (one below it stays: it is what peers catch up with).
            if *slot_seq > seq
                && slot
                    .committed
                    .as_ref()
                    .is_some_and(|cert| !committed_under(&membership, cert))
            {
                slot.committed = None;
            }
            if slot
                .pre_prepare
                .as_ref()
                .is_some_and(|pp| pp.from != membership.primary(pp.body.view))
            {
                slot.pre_prepare = None;
            }
        }
        for votes in self.checkpoint_votes.values_mut() {
            votes.retain(|id, _| membership.contains(*id));
        }
        // VIEW-CHANGEs were checked against the old membership and may rest on certificates the new one refuses (a
        // removed member's votes, another primary for a view): a NEW-VIEW built on one would be refused (the
        // simulator saw the honest members split 4 to 2 for good). Forget them: members send theirs again in
        // answer to STATUS, and this replica, if it is changing views, signs a fresh one once the new membership
        // can check it (`send_held_view_change`). What it sent before still counts for `left_for_a_later_view`.
        self.view_changes.clear();
        self.suspicions.retain(|id, _| membership.contains(*id));
        self.deferred.clear();
        // Operations of the old epoch that would now be refused (a reconfiguration already applied) no longer wait.
        let (governance, now_ms) = (&self.governance, self.now_ms);
        self.pending_ops
            .retain(|(_, op, _)| governance.admit(op, now_ms).is_ok());
        self.membership = membership;
        self.out.push(Output::Event(Event::EpochStarted {
            epoch: self.governance.epoch,
            seq,
            members: self.membership.members().to_vec(),
            addresses: self.governance.addresses.clone(),
            removed,
        }));
    }

    /// PRE-PREPAREs held beyond a boundary that execution has now reached.
    fn release_deferred(&mut self) {
        let boundary = self.next_boundary();
        let ready: Vec<Seq> = self.deferred.range(..=boundary).map(|(seq, _)| *seq).collect();
        for seq in ready {
            // Handling one may execute more and release the others on the way.
            let Some(pp) = self.deferred.remove(&seq) else {
                continue;
            };
            // Refused or not, it was handled as if it had arrived now.
            let _ = self.on_pre_prepare(pp);
        }
    }
}

/// Whether a committed certificate (its signatures verified) holds under `membership`: proposed by its view's
/// primary there, with a quorum of COMMITs from its members.
fn committed_under(membership: &Membership, cert: &CommittedCert) -> bool {
    let voters = cert
        .commits
        .iter()
        .filter(|c| membership.contains(c.from))
        .map(|c| c.from);
    voters.collect::<BTreeSet<_>>().len() >= membership.quorum()
        && verify::check_proposer(membership, &cert.pre_prepare).is_ok()
}
