//! The core driven by hand through a perfect in-memory network: each scenario of the protocol on its own.

use std::collections::VecDeque;

use bft_core::config::{Config, Membership, Params};
use bft_core::crypto::{Digest, KeyPair, PublicKey};
use bft_core::durable::Durable;
use bft_core::ledger::{RejectReason, SignedTransfer, Transfer, TxOutcome};
use bft_core::messages::*;
use bft_core::replica::{Event, Input, Output, Replica, Timer};
use bft_core::verify::{Rejection, Verifier};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

struct Cluster {
    keys: Vec<KeyPair>,
    replicas: Vec<Replica>,
    verifiers: Vec<Verifier>,
    durables: Vec<Durable>,
    /// (to, message) in flight; delivered first in, first out.
    network: VecDeque<(ReplicaId, Message)>,
    /// Messages from these members are dropped.
    muted: Vec<ReplicaId>,
    /// These members neither send nor receive (crashed, or cut off).
    down: Vec<ReplicaId>,
    /// These members are cut off from the other members (no peer message in or out), but clients still reach
    /// them and their timers still fire: a network partition.
    cut: Vec<ReplicaId>,
    timers: Vec<(ReplicaId, Timer)>,
    replies: Vec<Signed<Reply>>,
    events: Vec<(ReplicaId, Event)>,
    accounts: Vec<KeyPair>,
    /// Signs reconfigurations.
    admin: KeyPair,
    config: Config,
    genesis_digest: Digest,
    now: u64,
    /// When set, every message crosses the wire as bytes, and one larger than this is refused as a peer would.
    wire_limit: Option<usize>,
    /// What the wire refused.
    wire_refusals: Vec<DecodeError>,
    /// The kind of every message each member sent to its peers (whether the network then carried it or not).
    sent: Vec<(ReplicaId, &'static str)>,
}

fn params() -> Params {
    Params {
        checkpoint_interval: 2,
        log_window: 4,
        view_change_timeout_ms: 1000,
        max_concurrent_requests: 1000,
        ..Params::default()
    }
}

impl Cluster {
    fn new(n: u32, params: Params) -> Cluster {
        Cluster::with_accounts(n, params, Vec::new())
    }

    /// A cluster whose genesis holds `extra` accounts besides the four the tests pay from.
    fn with_accounts(n: u32, params: Params, extra: Vec<(PublicKey, u64)>) -> Cluster {
        let keys: Vec<KeyPair> = (1..=n).map(|i| KeyPair::from_secret([i as u8; 32])).collect();
        let members = keys
            .iter()
            .zip(1..)
            .map(|(k, id)| Member {
                id,
                public_key: k.public(),
            })
            .collect();
        let membership = Membership::new(members).unwrap();
        let accounts: Vec<KeyPair> = (0..4).map(|i| KeyPair::from_secret([100 + i; 32])).collect();
        let mut genesis: Vec<(PublicKey, u64)> = accounts.iter().map(|k| (k.public(), 1000)).collect();
        genesis.extend(extra);
        let admin = KeyPair::from_secret([99; 32]);
        let config = Config {
            id: 1,
            membership: membership.clone(),
            genesis: genesis.clone(),
            params: params.clone(),
            admin: Some(admin.public()),
        };
        let genesis_digest = config.genesis_digest().unwrap();
        let mut cluster = Cluster {
            replicas: Vec::new(),
            verifiers: (0..n)
                .map(|_| {
                    Verifier::new(
                        membership.clone(),
                        genesis_digest,
                        params.log_window,
                        params.max_batch_size,
                    )
                })
                .collect(),
            durables: (0..n).map(|_| Durable::default()).collect(),
            keys,
            network: VecDeque::new(),
            muted: Vec::new(),
            down: Vec::new(),
            cut: Vec::new(),
            timers: Vec::new(),
            replies: Vec::new(),
            events: Vec::new(),
            accounts,
            admin,
            config,
            genesis_digest,
            now: 0,
            wire_limit: None,
            wire_refusals: Vec::new(),
            sent: Vec::new(),
        };
        for id in 1..=n {
            let replica = Replica::new(cluster.config_for(id), cluster.keys[id as usize - 1].clone()).unwrap();
            cluster.replicas.push(replica);
            let outputs = cluster.replicas[id as usize - 1].start(0);
            cluster.carry_out(id, outputs);
        }
        cluster
    }

    /// Starts one more replica, not a member yet: a reconfiguration may add it.
    fn add_spare(&mut self) -> ReplicaId {
        let id = self.replicas.len() as ReplicaId + 1;
        let key = KeyPair::from_secret([id as u8; 32]);
        let params = &self.config.params;
        self.verifiers.push(Verifier::new(
            self.config.membership.clone(),
            self.genesis_digest,
            params.log_window,
            params.max_batch_size,
        ));
        self.durables.push(Durable::default());
        self.replicas
            .push(Replica::new(self.config_for(id), key.clone()).unwrap());
        self.keys.push(key);
        let outputs = self.replicas[id as usize - 1].start(self.now);
        self.carry_out(id, outputs);
        id
    }

    fn step(&mut self, id: ReplicaId, input: Input) -> Result<(), Rejection> {
        let outputs = self.replicas[id as usize - 1].step(self.now, input)?;
        self.carry_out(id, outputs);
        Ok(())
    }

    /// Every replica that is up sends its STATUS (a status interval later), and the answers are delivered.
    fn status_round(&mut self) {
        self.now += self.config.params.status_interval_ms;
        for id in 1..=self.replicas.len() as ReplicaId {
            if !self.down.contains(&id) {
                self.step(id, Input::Timer(Timer::Status)).unwrap();
            }
        }
        self.settle();
    }

    fn config_for(&self, id: ReplicaId) -> Config {
        Config {
            id,
            ..self.config.clone()
        }
    }

    fn transfer(&self, from: usize, to: usize, amount: u64, nonce: u64) -> SignedTransfer {
        let t = Transfer {
            from: self.accounts[from].public(),
            to: self.accounts[to].public(),
            amount,
            nonce,
        };
        t.sign(&self.accounts[from])
    }

    fn carry_out(&mut self, id: ReplicaId, outputs: Vec<Output>) {
        if self.down.contains(&id) {
            return;
        }
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    self.sent.push((id, message.kind()));
                    if !self.muted.contains(&id) && !self.cut.contains(&id) {
                        self.network.push_back((to, message));
                    }
                }
                Output::Broadcast(message) => {
                    self.sent.push((id, message.kind()));
                    if !self.muted.contains(&id) && !self.cut.contains(&id) {
                        for to in 1..=self.replicas.len() as ReplicaId {
                            if to != id {
                                self.network.push_back((to, message.clone()));
                            }
                        }
                    }
                }
                Output::Persist(entry) => self.durables[id as usize - 1].apply(entry),
                Output::Reply(reply) => self.replies.push(reply),
                Output::SetTimer { timer, .. } => self.timers.push((id, timer)),
                Output::Event(event) => {
                    // A host's verifier checks against the membership its core has in force.
                    if let Event::EpochStarted { .. } = event {
                        let core = &self.replicas[id as usize - 1];
                        let epoch_started_at = core.governance().epoch_started_at.unwrap_or(0);
                        let membership = core.membership().clone();
                        self.verifiers[id as usize - 1]
                            .shared_membership()
                            .set(membership, epoch_started_at);
                    }
                    self.events.push((id, event))
                }
            }
        }
    }

    fn submit(&mut self, tx: SignedTransfer) {
        for id in 1..=self.replicas.len() as ReplicaId {
            let _ = self.request(id, tx);
        }
    }

    fn request(&mut self, id: ReplicaId, tx: SignedTransfer) -> Result<(), Rejection> {
        let i = id as usize - 1;
        let verified = self.verifiers[i].request(tx)?;
        let outputs = self.replicas[i].step(self.now, Input::Request(verified))?;
        self.carry_out(id, outputs);
        Ok(())
    }

    fn deliver(&mut self, to: ReplicaId, message: Message) -> Result<(), Rejection> {
        let i = to as usize - 1;
        let message = match self.wire_limit {
            None => message,
            Some(limit) => match Message::decode(&message.encode(), limit) {
                Ok(message) => message,
                Err(refused) => {
                    self.wire_refusals.push(refused);
                    return Ok(());
                }
            },
        };
        let verified = self.verifiers[i].message(message)?;
        let outputs = self.replicas[i].step(self.now, Input::Message(verified))?;
        self.carry_out(to, outputs);
        Ok(())
    }

    /// Delivers everything in flight, including what delivering produces.
    /// Delivers PRE-PREPAREs and PREPAREs but loses every COMMIT: prepared everywhere, committed nowhere.
    fn deliver_all_but_commits(&mut self) {
        let mut steps = 0;
        while let Some((to, message)) = self.network.pop_front() {
            if !matches!(message, Message::Commit(_)) {
                let _ = self.deliver(to, message);
            }
            steps += 1;
            assert!(steps < 10_000);
        }
    }

    fn settle(&mut self) {
        let mut steps = 0;
        while let Some((to, message)) = self.network.pop_front() {
            if self.down.contains(&to) || self.cut.contains(&to) {
                continue;
            }
            let _ = self.deliver(to, message);
            steps += 1;
            assert!(steps < 100_000, "the network does not settle");
        }
    }

    /// Fires every progress timer set so far (time jumps past the timeout), then settles.
    fn time_out(&mut self) {
        self.now += 100_000;
        let timers: Vec<_> = self
            .timers
            .drain(..)
            .filter(|(_, t)| matches!(t, Timer::Progress { .. }))
            .collect();
        for (id, timer) in timers {
            if !self.muted.contains(&id) {
                let outputs = self.replicas[id as usize - 1]
                    .step(self.now, Input::Timer(timer))
                    .unwrap();
                self.carry_out(id, outputs);
            }
        }
        self.settle();
    }

    fn outcome_from(&self, replica: ReplicaId, tx: &SignedTransfer) -> Option<TxOutcome> {
        let digest = tx.digest();
        self.replies
            .iter()
            .filter(|r| r.from == replica)
            .flat_map(|r| r.body.outcomes.iter())
            .find(|(d, _)| *d == digest)
            .map(|(_, o)| *o)
    }

    fn honest(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| !self.muted.contains(&r.id()))
    }
}

#[test]
fn a_transfer_commits_at_every_replica_with_signed_replies() {
    let mut c = Cluster::new(4, params());
    let tx = c.transfer(0, 1, 250, 1);
    c.submit(tx);
    c.settle();
    for r in &c.replicas {
        assert_eq!(r.last_executed(), 1, "replica {}", r.id());
        assert_eq!(r.ledger().account(&c.accounts[0].public()).unwrap().balance, 750);
        assert_eq!(r.ledger().account(&c.accounts[1].public()).unwrap().balance, 1250);
    }
    for id in 1..=4 {
        assert_eq!(
            c.outcome_from(id, &tx),
            Some(TxOutcome::Applied),
            "reply from replica {id}"
        );
    }
    for reply in &c.replies {
        assert!(
            c.keys[reply.from as usize - 1]
                .public()
                .verify(&reply.signing_bytes(), &reply.signature)
        );
    }
}

#[test]
fn an_overdraft_is_ordered_and_rejected_with_its_reason() {
    let mut c = Cluster::new(4, params());
    let tx = c.transfer(0, 1, 5000, 1);
    c.submit(tx);
    c.settle();
    let reason = RejectReason::InsufficientFunds {
        balance: 1000,
        amount: 5000,
    };
    for id in 1..=4 {
        assert_eq!(c.outcome_from(id, &tx), Some(TxOutcome::Rejected(reason)));
    }
    // The nonce is used: the rejection is final, and resubmitting is refused at once.
    assert_eq!(
        c.request(1, tx),
        Err(Rejection::Transfer(RejectReason::NonceReused { got: 1, last: 1 })).or(Ok(()))
    );
}

#[test]
fn a_retransmitted_request_gets_its_reply_again_and_is_not_executed_twice() {
    let mut c = Cluster::new(4, params());
    let tx = c.transfer(0, 1, 10, 1);
    c.submit(tx);
    c.settle();
    let replies_before = c.replies.len();
    c.submit(tx);
    c.settle();
    assert_eq!(
        c.replies.len(),
        replies_before + 4,
        "each replica answers the retransmission from its cache"
    );
    assert!(
        c.replicas
            .iter()
            .all(|r| r.last_executed() == 1 && r.stats().transfers_applied == 1)
    );
}

#[test]
fn batches_pipeline_and_checkpoints_collect_the_log() {
    let mut c = Cluster::new(4, params());
    for nonce in 1..=20 {
        for from in 0..4 {
            let tx = c.transfer(from, (from + 1) % 4, 1, nonce);
            c.submit(tx);
        }
        c.settle();
    }
    for r in &c.replicas {
        assert_eq!(r.stats().transfers_applied, 80, "replica {}", r.id());
        assert!(
            r.stable_checkpoint().seq >= r.last_executed() - 2,
            "stable checkpoint keeps up"
        );
        assert!(
            r.log_len() <= 4,
            "log of replica {} holds {} slots after GC",
            r.id(),
            r.log_len()
        );
        assert_eq!(r.ledger().total_balance(), 4000);
    }
    let digests: Vec<Digest> = c.replicas.iter().map(|r| r.ledger().digest()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_silent_primary_is_replaced_and_the_request_commits_in_the_new_view() {
    let mut c = Cluster::new(4, params());
    c.muted.push(1);
    let tx = c.transfer(0, 1, 10, 1);
    c.submit(tx);
    c.settle();
    assert!(c.honest().all(|r| r.last_executed() == 0));
    c.time_out();
    for r in c.honest() {
        assert_eq!(
            (r.view(), r.view_active(), r.primary()),
            (1, true, 2),
            "replica {}",
            r.id()
        );
        assert_eq!(r.last_executed(), 1, "replica {}", r.id());
    }
    let installed = c
        .events
        .iter()
        .filter(|(id, e)| *id != 1 && matches!(e, Event::NewViewInstalled { view: 1, .. }));
    assert_eq!(installed.count(), 3);
}

/// A backup cut off from the other members while clients keep reaching it suspects the primary, but a suspicion
/// alone moves no one: it stays in the view the cluster works in, and once the network heals it votes there at
/// once (before the fix it climbed one view per timeout, and the cluster it came back to could not use its votes).
#[test]
fn a_cut_off_replica_never_changes_views_alone_and_votes_as_soon_as_it_is_back() {
    let mut c = Cluster::new(4, params());
    c.cut.push(4);
    for nonce in 1..=5 {
        let tx = c.transfer(0, 1, 1, nonce);
        c.submit(tx);
        c.settle();
        c.time_out();
    }
    for r in &c.replicas {
        assert_eq!(
            (r.view(), r.view_active()),
            (0, true),
            "replica {} after five timeouts cut off: {}",
            r.id(),
            r.describe()
        );
    }
    assert_eq!(c.replicas[0].last_executed(), 5);
    assert_eq!(c.replicas[3].last_executed(), 0);
    assert!(
        !c.events
            .iter()
            .any(|(_, e)| matches!(e, Event::ViewChangeStarted { .. })),
        "no view change started"
    );
    // Healed: a STATUS exchange brings replica 4 up to date; then, with replica 3 silent, no quorum forms
    // without replica 4's votes.
    c.cut.clear();
    c.status_round();
    assert_eq!(c.replicas[3].last_executed(), 5, "{}", c.replicas[3].describe());
    c.muted.push(3);
    let tx = c.transfer(1, 2, 1, 1);
    c.submit(tx);
    c.settle();
    for id in [1, 2, 4] {
        assert_eq!(c.replicas[id - 1].last_executed(), 6, "replica {id}");
    }
}

/// A replica whose request timed out leaves the view only with F more members suspecting its primary (F could all
/// be Byzantine), and others' suspicions alone move no one: a suspicion is withdrawn once the request commits, and
/// a member that left on the word of others who then stayed would be stranded.
#[test]
fn a_suspicion_needs_f_more_others_alone_move_no_one_and_a_replica_that_left_comes_back() {
    let mut c = Cluster::new(4, params());
    let suspicion = |c: &Cluster, from: ReplicaId| {
        let status = Status {
            view: 0,
            view_active: true,
            last_executed: 0,
            stable_seq: 0,
            suspects: true,
            fetching: None,
            new_view: None,
        };
        Message::Status(Signed::new(from, status, &c.keys[from as usize - 1]))
    };
    // Only replica 2 holds the request, and its primary never proposes it.
    c.muted.push(1);
    c.request(2, c.transfer(0, 1, 1, 1)).unwrap();
    c.time_out();
    assert!(
        c.replicas.iter().all(|r| r.view() == 0 && r.view_active()),
        "one suspicion moved someone"
    );
    // Replica 4 says it suspects the primary too: with replica 2's own, F+1.
    let from_4 = suspicion(&c, 4);
    c.deliver(3, from_4.clone()).unwrap();
    c.deliver(2, from_4).unwrap();
    c.settle();
    let r2 = &c.replicas[1];
    assert_eq!((r2.view(), r2.view_active()), (1, false), "{}", r2.describe());
    // Replica 3 heard both suspicions (replica 2's own, and 4's) but suspects nothing itself: it stays.
    let r3 = &c.replicas[2];
    assert_eq!((r3.view(), r3.view_active()), (0, true), "{}", r3.describe());

    // View 0 goes on committing without replica 2 (its primary is heard again). View 0 has no NEW-VIEW to go
    // back with; the batches that commit there bring replica 2 back into it (once stranded in view 1 for good).
    c.muted.clear();
    c.submit(c.transfer(2, 3, 1, 1));
    c.settle();
    c.status_round();
    let (r1, r2) = (&c.replicas[0], &c.replicas[1]);
    assert_eq!((r2.view(), r2.view_active()), (0, true), "{}", r2.describe());
    assert_eq!(r2.last_executed(), r1.last_executed());
    // Back, it prepares but sends no COMMIT while its VIEW-CHANGE for view 1 is out: that VIEW-CHANGE may yet go
    // into a NEW-VIEW without what it prepares now, so no commit quorum may count on it.
    c.sent.clear();
    let tx = c.transfer(3, 2, 1, 1);
    c.submit(tx);
    c.settle();
    assert!(c.outcome_from(1, &tx).is_some(), "the cluster commits without its vote");
    let sent_by_2 = |kind| c.sent.iter().filter(|(id, k)| *id == 2 && *k == kind).count();
    assert_eq!((sent_by_2("commit"), sent_by_2("prepare")), (0, 1));
    assert!(c.sent.iter().any(|(id, k)| *id != 2 && *k == "commit"));
}

/// The reply to a retransmission of a payer's last transfer, by a replica that learnt it from a state transfer,
/// names the sequence number where the transfer executed (it once named the replica's last executed one: a
/// signed false claim).
#[test]
fn a_reply_to_a_retransmission_names_where_the_transfer_executed() {
    let mut c = Cluster::new(4, params());
    c.down.push(4);
    let first = c.transfer(0, 1, 5, 1);
    let submit_to_three = |c: &mut Cluster, tx: SignedTransfer| {
        for id in 1..=3 {
            let _ = c.request(id, tx);
        }
        c.settle();
    };
    submit_to_three(&mut c, first);
    for nonce in 1..=6 {
        let tx = c.transfer(2, 3, 1, nonce);
        submit_to_three(&mut c, tx);
    }
    let executed_at = c
        .replies
        .iter()
        .find(|r| r.from == 1 && r.body.outcomes.iter().any(|(d, _)| *d == first.digest()))
        .map(|r| r.body.seq)
        .expect("replica 1 answered the first transfer");
    assert!(c.replicas[0].last_executed() > executed_at);
    c.down.clear();
    c.status_round();
    assert_eq!(c.replicas[3].last_executed(), c.replicas[0].last_executed());
    c.replies.clear();
    c.request(4, first).unwrap();
    let reply = c
        .replies
        .iter()
        .find(|r| r.from == 4)
        .expect("replica 4 answers the retransmission");
    assert_eq!(reply.body.outcomes, vec![(first.digest(), TxOutcome::Applied)]);
    assert_eq!(reply.body.seq, executed_at);
}

/// Member 2's report that member 4 proposed one payer's nonce twice, with the proposal member 4 signed.
fn quarantine_4_for_a_double_spend(c: &Cluster) -> bft_core::governance::Operation {
    let payer = KeyPair::from_secret([77; 32]);
    let spend = |amount| {
        Transfer {
            from: payer.public(),
            to: c.accounts[0].public(),
            amount,
            nonce: 1,
        }
        .sign(&payer)
    };
    let batch = vec![spend(1), spend(2)];
    let proposal = PrePrepare {
        view: 0,
        seq: 1,
        digest: batch_digest(&batch),
        batch,
        ops: Vec::new(),
        at_ms: 0,
    };
    bft_core::governance::Operation::Quarantine {
        reporter: 2,
        at_ms: c.now,
        evidence: Box::new(bft_core::evidence::Evidence::DoubleSpend {
            proposal: Signed::new(4, proposal, &c.keys[3]),
        }),
    }
}

/// A quarantine ends by the replicated clock (the time on executed batches), at one sequence number everywhere:
/// a replica whose own clock says the quarantine is over still ignores the member until that batch executes.
#[test]
fn a_quarantine_ends_at_the_same_sequence_number_on_every_replica() {
    let mut c = Cluster::new(
        4,
        Params {
            quarantine_duration_ms: 10_000,
            ..params()
        },
    );
    c.now = 1_000;
    let op = quarantine_4_for_a_double_spend(&c);
    c.step(2, Input::Operation(op)).unwrap();
    c.settle();
    assert!(c.replicas.iter().all(|r| r.governance().is_quarantined(4)));
    let quarantined_at = c.replicas[0].last_executed();

    // Past the quarantine by every replica's own clock, but no batch says so yet.
    c.now += 20_000;
    let status = Status {
        view: 0,
        view_active: true,
        last_executed: quarantined_at,
        stable_seq: 0,
        suspects: false,
        fetching: None,
        new_view: None,
    };
    let from_4 = Message::Status(Signed::new(4, status, &c.keys[3]));
    assert_eq!(c.deliver(2, from_4.clone()), Err(Rejection::Quarantined(4)));

    // The idle primary proposes a batch stamped with its time; executing it ends the quarantine everywhere.
    c.status_round();
    let ended_at = quarantined_at + 1;
    for r in &c.replicas[..3] {
        assert_eq!(r.last_executed(), ended_at, "replica {}", r.id());
        assert!(!r.governance().is_quarantined(4), "replica {}", r.id());
        assert_eq!(r.governance().clock_ms, c.replicas[0].governance().clock_ms);
    }
    c.now += 1_000;
    c.deliver(2, from_4).unwrap();
}

/// A primary may not push the replicated clock (and so the end of quarantines) far ahead of the backups' clocks.
#[test]
fn a_proposal_stamped_far_in_the_future_is_refused() {
    let mut c = Cluster::new(4, params());
    let batch = vec![c.transfer(0, 1, 1, 1)];
    let at_ms = c.now + 3_600_000;
    let proposal = PrePrepare {
        view: 0,
        seq: 1,
        digest: proposal_digest(&batch, &[], at_ms),
        batch,
        ops: Vec::new(),
        at_ms,
    };
    let pp = Message::PrePrepare(Signed::new(1, proposal, &c.keys[0]));
    assert!(matches!(c.deliver(2, pp), Err(Rejection::TimeAhead { .. })));
    assert_eq!(c.replicas[1].log_len(), 0);
}

#[test]
fn a_batch_prepared_before_the_view_change_is_recovered_at_the_same_sequence() {
    let mut c = Cluster::new(4, params());
    let tx = c.transfer(0, 1, 10, 1);
    c.submit(tx);
    c.deliver_all_but_commits();
    assert!(c.replicas.iter().all(|r| r.last_executed() == 0));
    c.muted.push(1);
    c.time_out();
    let recovered = c.events.iter().find_map(|(_, e)| match e {
        Event::NewViewInstalled {
            batches_recovered,
            transfers_recovered,
            ..
        } => Some((*batches_recovered, *transfers_recovered)),
        _ => None,
    });
    assert_eq!(recovered, Some((1, 1)));
    for r in c.honest() {
        assert_eq!(r.last_executed(), 1);
        assert_eq!(
            r.stats().transfers_applied,
            1,
            "executed exactly once at replica {}",
            r.id()
        );
    }
}

/// A governance operation re-proposed by a NEW-VIEW is in the new primary's log: it is not proposed again in a
/// later batch. The primary that installs its own NEW-VIEW once noted only the transfers of what it re-proposed
/// (so did a replica restoring its log, and one adopting a state), and ordered the operation a second time.
#[test]
fn an_operation_re_proposed_by_a_new_view_is_not_proposed_again() {
    let mut c = Cluster::new(4, params());
    let op = quarantine_4_for_a_double_spend(&c);
    // Every member holds the operation; the primary of view 0 proposes it, and every COMMIT is lost.
    for id in 1..=4 {
        let outputs = c.replicas[id - 1].step(c.now, Input::Operation(op.clone())).unwrap();
        c.carry_out(id as ReplicaId, outputs);
    }
    c.deliver_all_but_commits();
    assert!(c.replicas.iter().all(|r| r.last_executed() == 0));
    c.muted.push(1);
    c.time_out();
    c.settle();
    for r in c.honest() {
        let decided = c
            .events
            .iter()
            .filter(|(id, e)| *id == r.id() && matches!(e, Event::Decided { op: o, .. } if **o == op))
            .count();
        assert_eq!(decided, 1, "replica {} decided the operation once", r.id());
        assert!(r.governance().is_quarantined(4));
    }
}

#[test]
fn a_forced_view_change_moves_every_replica_to_the_next_primary() {
    let mut c = Cluster::new(4, params());
    for id in 1..=4 {
        let outputs = c.replicas[id - 1]
            .step(0, Input::ForceViewChange { leave_view: 0 })
            .unwrap();
        c.carry_out(id as ReplicaId, outputs);
    }
    c.settle();
    assert!(
        c.replicas
            .iter()
            .all(|r| r.view() == 1 && r.view_active() && r.primary() == 2)
    );
    let tx = c.transfer(2, 3, 7, 1);
    c.submit(tx);
    c.settle();
    assert!(
        c.replicas
            .iter()
            .all(|r| r.last_executed() >= 1 && r.stats().transfers_applied == 1)
    );
}

#[test]
fn a_forced_view_change_arriving_after_its_view_was_left_moves_nobody() {
    let mut c = Cluster::new(4, params());
    // Replicas 1-3 are asked first; replica 4 joins view 1 on their VIEW-CHANGEs before its own request comes.
    for id in 1..=3 {
        c.step(id, Input::ForceViewChange { leave_view: 0 }).unwrap();
    }
    c.settle();
    assert!(c.replicas.iter().all(|r| r.view() == 1 && r.view_active()));
    // The late requests (and any repeat) name view 0: nobody moves on to view 2 alone.
    for id in 1..=4 {
        let outputs = c.replicas[id as usize - 1]
            .step(c.now, Input::ForceViewChange { leave_view: 0 })
            .unwrap();
        assert!(outputs.is_empty(), "replica {id}: {outputs:?}");
    }
    c.settle();
    assert!(c.replicas.iter().all(|r| r.view() == 1 && r.view_active()));
}

#[test]
fn a_replica_behind_the_stable_checkpoint_catches_up_by_state_transfer() {
    let mut c = Cluster::new(4, params());
    c.muted.push(4);
    // Replica 4 hears nothing either while the others commit past several checkpoints.
    for nonce in 1..=8 {
        let tx = c.transfer(0, 1, 1, nonce);
        for id in 1..=3 {
            let _ = c.request(id, tx);
        }
        c.network.retain(|(to, _)| *to != 4);
        while let Some((to, message)) = c.network.pop_front() {
            if to != 4 {
                let _ = c.deliver(to, message);
            }
            c.network.retain(|(to, _)| *to != 4);
        }
    }
    assert_eq!(c.replicas[3].last_executed(), 0);
    let ahead = c.replicas[0].last_executed();
    assert!(ahead >= 8 && c.replicas[0].stable_checkpoint().seq > 4);
    c.muted.clear();
    // Replica 4's STATUS tells the others how far behind it is.
    let outputs = c.replicas[3].step(c.now, Input::Timer(Timer::Status)).unwrap();
    c.carry_out(4, outputs);
    c.settle();
    assert_eq!(c.replicas[3].last_executed(), ahead);
    assert_eq!(c.replicas[3].ledger().digest(), c.replicas[0].ledger().digest());
    assert!(
        c.events
            .iter()
            .any(|(id, e)| *id == 4 && matches!(e, Event::StateTransferred { .. }))
    );
}

/// `n` accounts with distinct keys. Only bytes: the ledger never decodes a key it does not verify with, and making
/// a million real key pairs would take longer than the test.
fn many_accounts(n: u32) -> Vec<(PublicKey, u64)> {
    (0..n)
        .map(|i| {
            let mut bytes = [0xA5u8; 32];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            (postcard::from_bytes(&bytes).unwrap(), 1 + i as u64 % 1000)
        })
        .collect()
}

/// Commits `batches` transfers while replica 4 is down, so that it is behind the others' stable checkpoint.
fn leave_replica_4_behind(c: &mut Cluster, batches: u64) {
    c.down.push(4);
    for nonce in 1..=batches {
        let tx = c.transfer(0, 1, 1, nonce);
        for id in 1..=3 {
            let _ = c.request(id, tx);
        }
        c.settle();
    }
    c.down.clear();
    assert_eq!(c.replicas[3].last_executed(), 0);
    assert!(c.replicas[0].stable_checkpoint().seq >= 4);
}

/// A ledger of a million accounts is far larger than one message may be (its snapshot is some 40 MB, the limit
/// 16 MiB). A replica that missed a few checkpoints still catches up, over the wire limit every peer enforces, and
/// adopts exactly the state the quorum certified.
#[test]
fn a_replica_catches_up_a_million_account_ledger_in_chunks_that_fit_the_message_limit() {
    let started = std::time::Instant::now();
    let mut c = Cluster::with_accounts(4, params(), many_accounts(1_000_000));
    c.wire_limit = Some(MAX_MESSAGE_BYTES);
    leave_replica_4_behind(&mut c, 6);
    let built = started.elapsed();
    let ahead = c.replicas[0].last_executed();
    let started = std::time::Instant::now();
    let mut rounds = 0;
    while c.replicas[3].last_executed() < ahead && rounds < 40 {
        c.status_round();
        rounds += 1;
    }
    let took = started.elapsed();
    assert!(c.wire_refusals.is_empty(), "{:?}", c.wire_refusals);
    assert_eq!(
        c.replicas[3].last_executed(),
        ahead,
        "caught up in {rounds} status rounds"
    );
    assert_eq!(c.replicas[3].ledger().digest(), c.replicas[0].ledger().digest());
    assert_eq!(c.replicas[3].ledger().accounts().count(), 1_000_004);
    assert_eq!(
        c.replicas[3].stable_checkpoint().state_digest,
        c.replicas[0].stable_checkpoint().state_digest
    );
    println!(
        "1,000,004 accounts: caught up in {took:?} over {rounds} status rounds (cluster built and run ahead in {built:?})"
    );
}

/// A member that sends a chunk whose bytes are not the certified ones (under its own valid signature, with a valid
/// certificate and manifest) has it refused with the reason, and the transfer under way keeps exactly what it had;
/// the honest peers' chunks complete it.
#[test]
fn a_corrupted_state_chunk_is_refused_and_the_transfer_completes_from_honest_peers() {
    // Some 2 MB of accounts: three chunks.
    let mut c = Cluster::with_accounts(4, params(), many_accounts(60_000));
    leave_replica_4_behind(&mut c, 6);
    let ahead = c.replicas[0].last_executed();
    let stable = c.replicas[0].stable_checkpoint().seq;
    c.now += c.config.params.status_interval_ms;
    let outputs = c.replicas[3].step(c.now, Input::Timer(Timer::Status)).unwrap();
    c.carry_out(4, outputs);
    let (mut refused, mut corrupted) = (Vec::new(), 0);
    while let Some((to, message)) = c.network.pop_front() {
        match message {
            Message::StateTransfer(st) if to == 4 && st.from == 1 && st.body.index == 1 => {
                let before = c.replicas[3].state_transfer_progress();
                assert_eq!(before, Some((stable, 1, 3)), "replica 1's first chunk was kept");
                let mut body = st.body;
                body.chunk[100] ^= 0x40;
                let lie = Message::StateTransfer(Signed::new(1, body, &c.keys[0]));
                refused.push(c.deliver(4, lie).unwrap_err());
                assert_eq!(
                    c.replicas[3].state_transfer_progress(),
                    before,
                    "the refused chunk changed nothing"
                );
                assert_eq!(c.replicas[3].last_executed(), 0);
                corrupted += 1;
            }
            message => {
                let _ = c.deliver(to, message);
            }
        }
    }
    assert_eq!(corrupted, 1);
    assert_eq!(
        refused,
        [Rejection::StateChunk(
            "the chunk does not match its digest in the certified manifest"
        )]
    );
    for _ in 0..10 {
        if c.replicas[3].last_executed() == ahead {
            break;
        }
        c.status_round();
    }
    assert_eq!(c.replicas[3].last_executed(), ahead);
    assert_eq!(c.replicas[3].state_transfer_progress(), None);
    assert_eq!(c.replicas[3].ledger().digest(), c.replicas[0].ledger().digest());
    assert_eq!(c.replicas[3].stats().rejected.get("state_chunk_refused"), Some(&1));
}

/// Commits `batches` transfers while the last replica is down, so that it is behind the others' stable checkpoint.
fn leave_the_last_replica_behind(c: &mut Cluster, batches: u64) -> ReplicaId {
    let last = c.replicas.len() as ReplicaId;
    c.down.push(last);
    for nonce in 1..=batches {
        let tx = c.transfer(0, 1, 1, nonce);
        for id in 1..last {
            let _ = c.request(id, tx);
        }
        c.settle();
    }
    c.down.clear();
    assert_eq!(c.replicas[last as usize - 1].last_executed(), 0);
    assert!(c.replicas[0].stable_checkpoint().seq >= 4);
    last
}

/// Status rounds until the last replica caught up (or `max` rounds), delivering every message but those from
/// `down`, and re-signing every chunk `liar` sends with one byte changed. The rounds it took, and what the lagging
/// replica's core refused.
fn catch_up_with_faulty_peers(
    c: &mut Cluster,
    down: &[ReplicaId],
    liar: Option<ReplicaId>,
    max: u32,
) -> (u32, Vec<Rejection>) {
    let last = c.replicas.len() as ReplicaId;
    let ahead = c.replicas[0].last_executed();
    c.down = down.to_vec();
    let (mut rounds, mut refused) = (0, Vec::new());
    while c.replicas[last as usize - 1].last_executed() < ahead && rounds < max {
        rounds += 1;
        c.now += c.config.params.status_interval_ms;
        for id in 1..=last {
            if !c.down.contains(&id) {
                c.step(id, Input::Timer(Timer::Status)).unwrap();
            }
        }
        while let Some((to, message)) = c.network.pop_front() {
            if c.down.contains(&to) {
                continue;
            }
            let message = match message {
                Message::StateTransfer(st) if Some(st.from) == liar => {
                    let mut body = st.body;
                    body.chunk[0] ^= 1;
                    Message::StateTransfer(Signed::new(st.from, body, &c.keys[st.from as usize - 1]))
                }
                message => message,
            };
            if let Err(rejection) = c.deliver(to, message)
                && to == last
                && matches!(rejection, Rejection::StateChunk(_))
            {
                refused.push(rejection);
            }
        }
    }
    c.down.clear();
    (rounds, refused)
}

/// Regression (issue 26, hole 3): each peer served its own run of chunks by rank, so when the lowest-ranked peer
/// was down the first chunk never came, and a state of more than 4(N-2) chunks was never caught up (16 chunks at
/// N = 4 stalled at 8). Now the lagging replica asks another peer for its first missing chunk after a status
/// interval without it.
#[test]
fn a_lagging_replica_catches_up_while_its_lowest_ranked_peer_is_down() {
    // Some 16 MB of accounts: 16 chunks, twice what the peers but the first served.
    let mut c = Cluster::with_accounts(4, params(), many_accounts(400_000));
    let last = leave_the_last_replica_behind(&mut c, 6);
    let (rounds, refused) = catch_up_with_faulty_peers(&mut c, &[1], None, 20);
    let lagging = &c.replicas[last as usize - 1];
    assert_eq!(
        lagging.last_executed(),
        c.replicas[1].last_executed(),
        "stuck at {:?} after {rounds} rounds",
        lagging.state_transfer_progress()
    );
    assert!(refused.is_empty());
    assert_eq!(lagging.ledger().digest(), c.replicas[1].ledger().digest());
    assert!(rounds <= 4, "{rounds} status rounds");
}

/// What one STATUS draws is bounded: each peer sends at most `STATE_CHUNKS_PER_ANSWER` chunks, no two peers the same
/// chunk, and none the lagging replica already holds (a replica stalled on a missing chunk used to draw the same
/// 4(N-2) chunks it held again every round).
#[test]
fn one_status_draws_each_missing_chunk_once_and_none_already_held() {
    use bft_core::replica::state_transfer::STATE_CHUNKS_PER_ANSWER;
    let mut c = Cluster::with_accounts(7, params(), many_accounts(400_000));
    let last = leave_the_last_replica_behind(&mut c, 6);
    let mut held = std::collections::BTreeSet::new();
    for round in 0..3 {
        c.now += c.config.params.status_interval_ms;
        // Replica 2 is down this time: its share does not come.
        for id in (1..=last).filter(|id| *id != 2) {
            c.step(id, Input::Timer(Timer::Status)).unwrap();
        }
        let mut sent: Vec<(ReplicaId, u32)> = Vec::new();
        while let Some((to, message)) = c.network.pop_front() {
            if to == 2 {
                continue;
            }
            if let (Message::StateTransfer(st), true) = (&message, to == last) {
                sent.push((st.from, st.body.index));
            }
            let _ = c.deliver(to, message);
        }
        let chunks: std::collections::BTreeSet<u32> = sent.iter().map(|(_, index)| *index).collect();
        assert_eq!(chunks.len(), sent.len(), "round {round}: a chunk sent twice: {sent:?}");
        assert!(chunks.is_disjoint(&held), "round {round}: a chunk sent again: {sent:?}");
        for peer in 1..last {
            let from_peer = sent.iter().filter(|(from, _)| *from == peer).count();
            assert!(
                from_peer <= STATE_CHUNKS_PER_ANSWER,
                "round {round}: {from_peer} chunks from {peer}"
            );
        }
        assert!(!chunks.is_empty() || c.replicas[last as usize - 1].last_executed() > 0);
        held.extend(chunks);
    }
}

/// A chunk its signer's own manifest contradicts is refused, changes nothing, and is kept for the detection policy:
/// as `Evidence::BadStateChunk` it proves its signer wrong, and nobody else (not the honest chunk, not a chunk
/// signed by one member in another's name).
#[test]
fn a_signed_bad_chunk_is_proof_against_its_signer_only() {
    use bft_core::evidence::{Evidence, EvidenceError};
    let mut c = Cluster::with_accounts(4, params(), many_accounts(60_000));
    let last = leave_the_last_replica_behind(&mut c, 6);
    c.now += c.config.params.status_interval_ms;
    c.step(last, Input::Timer(Timer::Status)).unwrap();
    let mut honest = None;
    while let Some((to, message)) = c.network.pop_front() {
        match message {
            Message::StateTransfer(st) if to == last => {
                honest.get_or_insert(st);
            }
            message => {
                let _ = c.deliver(to, message);
            }
        }
    }
    let honest = honest.expect("a chunk was sent");
    let signer = honest.from;
    let membership = c.replicas[0].membership().clone();
    let proves = |transfer: Signed<StateTransfer>| Evidence::BadStateChunk { transfer }.verify(&membership, 0);
    assert!(matches!(proves(honest.clone()), Err(EvidenceError::ProvesNothing(_))));

    let mut body = honest.body.clone();
    body.chunk[7] ^= 0x20;
    let bad = Signed::new(signer, body.clone(), &c.keys[signer as usize - 1]);
    let before = c.replicas[last as usize - 1].state_transfer_progress();
    let refused = c.deliver(last, Message::StateTransfer(bad.clone())).unwrap_err();
    assert!(matches!(refused, Rejection::StateChunk(_)), "{refused:?}");
    let lagging = &c.replicas[last as usize - 1];
    assert_eq!(
        lagging.state_transfer_progress(),
        before,
        "the refused chunk changed nothing"
    );
    assert_eq!(lagging.refused_state_chunk(), Some(&bad));
    assert_eq!(proves(bad).map(|(member, _)| member), Ok(signer));

    // In another member's name: its signature does not verify, so it proves nothing against anyone.
    let other = signer % 3 + 1;
    let forged = Signed {
        from: signer,
        ..Signed::new(other, body, &c.keys[other as usize - 1])
    };
    assert_eq!(proves(forged), Err(EvidenceError::BadSignature(signer)));
}

/// The figure issue 26 asks for: a million accounts (some 40 chunks) caught up at N = 7 while the lowest-ranked peer
/// is down and the next one signs corrupted chunks. The corrupted chunks are refused, the one kept for the detection
/// policy proves its signer wrong, and the state arrives within a few status intervals (printed in status rounds
/// and in the time they stand for at the default status interval).
#[test]
#[ignore = "a benchmark: builds seven ledgers of a million accounts (over a minute); run with --ignored --nocapture"]
fn a_million_accounts_catch_up_with_one_peer_down_and_one_serving_bad_chunks() {
    let started = std::time::Instant::now();
    let mut c = Cluster::with_accounts(7, params(), many_accounts(1_000_000));
    c.wire_limit = Some(MAX_MESSAGE_BYTES);
    let last = leave_the_last_replica_behind(&mut c, 6);
    let built = started.elapsed();
    let started = std::time::Instant::now();
    let (rounds, refused) = catch_up_with_faulty_peers(&mut c, &[1], Some(2), 20);
    let took = started.elapsed();
    let lagging = &c.replicas[last as usize - 1];
    assert_eq!(lagging.last_executed(), c.replicas[2].last_executed());
    assert_eq!(lagging.ledger().digest(), c.replicas[2].ledger().digest());
    assert!(!refused.is_empty(), "replica 2's chunks were refused");
    let interval = c.config.params.status_interval_ms;
    println!(
        "1,000,004 accounts, N = 7, peer 1 down, peer 2 serving bad chunks: caught up in {rounds} status rounds \
         ({} ms at the {interval} ms status interval), {took:?} of computation; {} bad chunks refused \
         (cluster built and run ahead in {built:?})",
        u64::from(rounds) * interval,
        refused.len()
    );
    assert!(rounds <= 6, "{rounds} status rounds");
}

/// Regression (simulation seeds that stalled): a view change right after a reconfiguration. A stayer and the added
/// member are down while the cluster orders and executes the reconfiguration, so the epoch's first checkpoint is
/// signed by two members of the new membership and by the removed member. The removed member must not certify it with its own
/// vote (that certificate, state-transferred to the others, made their VIEW-CHANGEs refused), and members whose
/// stable checkpoint predates the epoch must not send VIEW-CHANGEs that rest on the previous epoch's certificates
/// (refused as well): they hold them back until the epoch's first checkpoint is stable. The view change completes.
#[test]
fn a_view_change_right_after_a_reconfiguration_completes() {
    use bft_core::governance::{NewMember, Operation, Reconfiguration, SignedReconfiguration};
    let mut c = Cluster::new(4, params());
    let added = c.add_spare();
    c.down.extend([3, added]);
    let body = Reconfiguration {
        epoch: 0,
        remove: vec![4],
        add: vec![NewMember {
            id: added,
            public_key: c.keys[added as usize - 1].public(),
            address: "replica-5".into(),
        }],
        at_ms: c.now,
    };
    let op = Operation::Reconfigure(SignedReconfiguration::sign(body, &c.admin));
    for id in [1, 2, 4] {
        c.step(id, Input::Operation(op.clone())).unwrap();
    }
    c.settle();
    // The epoch began after sequence 2, a checkpoint boundary, at the members that executed it.
    for id in [1, 2, 4] {
        let r = &c.replicas[id - 1];
        assert_eq!((r.epoch(), r.last_executed()), (1, 2), "replica {id}");
    }
    let removed = &c.replicas[3];
    assert!(!removed.membership().contains(4));
    assert_eq!(
        removed.stable_checkpoint().seq,
        0,
        "the removed member counted its own vote towards the new epoch's first checkpoint"
    );

    // The stayers that executed it change views before that checkpoint is stable: nothing they could send yet
    // would be accepted, so nothing is sent.
    for id in [1, 2] {
        let leave_view = c.replicas[id as usize - 1].view();
        c.step(id, Input::ForceViewChange { leave_view }).unwrap();
    }
    assert!(
        !c.network.iter().any(|(_, m)| matches!(m, Message::ViewChange(_))),
        "a VIEW-CHANGE resting on the previous epoch's certificates was sent"
    );
    c.settle();

    // Replica 3 comes back; it and the added member catch up, sign the epoch's first checkpoint, and the held
    // VIEW-CHANGEs go out. Replica 3 and the added member follow into view 1, whose primary is 2.
    c.down.clear();
    for _ in 0..3 {
        c.status_round();
    }
    let members = [1, 2, 3, added];
    for id in members {
        let r = &c.replicas[id as usize - 1];
        assert_eq!(
            (r.epoch(), r.view(), r.view_active(), r.primary()),
            (1, 1, true, 2),
            "replica {id}: {}",
            r.describe()
        );
        let cert = r.stable_checkpoint();
        assert!(cert.seq >= 2, "replica {id}: {}", r.describe());
        assert!(
            cert.proof.iter().all(|vote| r.membership().contains(vote.from)),
            "replica {id} holds a stable checkpoint signed by a removed member"
        );
    }
    // And the new view orders requests.
    let tx = c.transfer(0, 1, 10, 1);
    for id in members {
        let _ = c.request(id, tx);
    }
    c.settle();
    for id in members {
        assert_eq!(c.outcome_from(id, &tx), Some(TxOutcome::Applied), "replica {id}");
    }
}

#[test]
fn a_restarted_replica_keeps_its_votes_and_refuses_a_conflicting_proposal() {
    let mut c = Cluster::new(4, params());
    let tx = c.transfer(0, 1, 10, 1);
    c.request(1, tx).unwrap();
    // Replica 2 answers the primary's PRE-PREPARE with a PREPARE, then crashes.
    let (_, pp) = c.network.iter().find(|(to, _)| *to == 2).cloned().unwrap();
    c.deliver(2, pp.clone()).unwrap();
    let recovered = Replica::recover(c.config_for(2), c.keys[1].clone(), &c.durables[1]).unwrap();
    c.replicas[1] = recovered;
    // A PRE-PREPARE for the same slot with another batch, signed by the same primary, is refused.
    let Message::PrePrepare(original) = pp else {
        panic!("expected a PRE-PREPARE")
    };
    let other = vec![c.transfer(2, 3, 1, 1)];
    let conflicting = PrePrepare {
        digest: batch_digest(&other),
        batch: other,
        ..original.body.clone()
    };
    let conflicting = Signed::new(1, conflicting, &c.keys[0]);
    assert_eq!(
        c.deliver(2, Message::PrePrepare(conflicting)),
        Err(Rejection::Equivocation)
    );
}

#[test]
fn bad_messages_are_refused_and_counted_without_changing_anything() {
    let mut c = Cluster::new(4, params());
    let stranger = KeyPair::from_secret([77; 32]);
    let vote = Prepare {
        view: 0,
        seq: 1,
        digest: Digest([1; 32]),
    };
    // Not a member.
    let from_stranger = Signed::new(9, vote, &stranger);
    assert_eq!(
        c.verifiers[1].message(Message::Prepare(from_stranger)).unwrap_err(),
        Rejection::NotAMember(9)
    );
    // A member's id with someone else's signature.
    let forged = Signed::new(3, vote, &stranger);
    assert!(matches!(
        c.verifiers[1].message(Message::Prepare(forged)),
        Err(Rejection::BadSignature { .. })
    ));
    // A PRE-PREPARE from a backup.
    let batch = vec![c.transfer(0, 1, 1, 1)];
    let pp = Signed::new(
        2,
        PrePrepare {
            view: 0,
            seq: 1,
            digest: batch_digest(&batch),
            batch: batch.clone(),
            ops: Vec::new(),
            at_ms: 0,
        },
        &c.keys[1],
    );
    assert!(matches!(
        c.deliver(3, Message::PrePrepare(pp)),
        Err(Rejection::NotFromPrimary(_)) | Ok(())
    ));
    // A batch that does not match its digest.
    let pp = Signed::new(
        1,
        PrePrepare {
            view: 0,
            seq: 1,
            digest: Digest([9; 32]),
            batch: batch.clone(),
            ops: Vec::new(),
            at_ms: 0,
        },
        &c.keys[0],
    );
    assert_eq!(
        c.verifiers[1].message(Message::PrePrepare(pp)).unwrap_err(),
        Rejection::DigestMismatch
    );
    // A client transfer with a bad signature inside a proposal.
    let mut bad_tx = batch[0];
    bad_tx.transfer.amount = 999;
    let bad = vec![bad_tx];
    let pp = Signed::new(
        1,
        PrePrepare {
            view: 0,
            seq: 1,
            digest: batch_digest(&bad),
            batch: bad,
            ops: Vec::new(),
            at_ms: 0,
        },
        &c.keys[0],
    );
    assert_eq!(
        c.verifiers[1].message(Message::PrePrepare(pp)).unwrap_err(),
        Rejection::BadTransferSignature
    );
    // A double spend inside one batch.
    let twice = vec![c.transfer(0, 1, 1, 1), c.transfer(0, 2, 1, 1)];
    let pp = Signed::new(
        1,
        PrePrepare {
            view: 0,
            seq: 1,
            digest: batch_digest(&twice),
            batch: twice,
            ops: Vec::new(),
            at_ms: 0,
        },
        &c.keys[0],
    );
    assert_eq!(
        c.verifiers[1].message(Message::PrePrepare(pp)).unwrap_err(),
        Rejection::ConflictingTransfers
    );
    // Wrong view and outside the watermarks.
    let future = Signed::new(3, Prepare { view: 5, ..vote }, &c.keys[2]);
    assert!(matches!(
        c.deliver(2, Message::Prepare(future)),
        Err(Rejection::WrongView { got: 5, current: 0 })
    ));
    let far = Signed::new(3, Prepare { seq: 1000, ..vote }, &c.keys[2]);
    assert!(matches!(
        c.deliver(2, Message::Prepare(far)),
        Err(Rejection::OutsideWatermarks { .. })
    ));
    // A replayed vote, and a second, different one (equivocation).
    let once = Signed::new(3, vote, &c.keys[2]);
    c.deliver(2, Message::Prepare(once.clone())).unwrap();
    assert_eq!(c.deliver(2, Message::Prepare(once)), Err(Rejection::Duplicate));
    let twice = Signed::new(
        3,
        Prepare {
            digest: Digest([2; 32]),
            ..vote
        },
        &c.keys[2],
    );
    assert_eq!(c.deliver(2, Message::Prepare(twice)), Err(Rejection::Equivocation));
    // A client transfer with a bad signature.
    assert_eq!(
        c.verifiers[0].request(bad_tx).unwrap_err(),
        Rejection::BadTransferSignature
    );
    let stats = c.replicas[1].stats();
    assert_eq!(stats.rejected.get("wrong_view"), Some(&1));
    assert_eq!(stats.rejected.get("duplicate"), Some(&1));
    assert_eq!(stats.rejected.get("equivocation"), Some(&1));
    assert_eq!(c.replicas[1].last_executed(), 0);
}

#[test]
fn a_peer_claiming_absurd_progress_does_not_break_a_replica() {
    let mut c = Cluster::new(4, params());
    let absurd = Status {
        view: 0,
        view_active: true,
        last_executed: u64::MAX,
        stable_seq: u64::MAX,
        suspects: true,
        fetching: None,
        new_view: None,
    };
    for _ in 0..3 {
        c.now += 1000;
        let status = Signed::new(3, absurd, &c.keys[2]);
        c.deliver(2, Message::Status(status)).unwrap();
    }
    let tx = c.transfer(0, 1, 10, 1);
    c.submit(tx);
    c.settle();
    assert!(c.replicas.iter().all(|r| r.last_executed() == 1));
}

/// Messages from the network whose every field is arbitrary.
fn arbitrary_message(c: &Cluster) -> impl Strategy<Value = Message> {
    let keys: Vec<KeyPair> = c.keys.clone();
    let txs: Vec<SignedTransfer> = (0..4).map(|i| c.transfer(i, (i + 1) % 4, 5, 1)).collect();
    (
        0u8..6,
        1u32..=5,
        0u64..4,
        0u64..12,
        any::<[u8; 32]>(),
        any::<bool>(),
        0usize..3,
    )
        .prop_map(move |(kind, from, view, seq, digest, good_digest, txs_len)| {
            let key = &keys[(from as usize - 1) % keys.len()];
            let batch: Vec<SignedTransfer> = txs[..txs_len].to_vec();
            let digest = if good_digest {
                batch_digest(&batch)
            } else {
                Digest(digest)
            };
            match kind {
                0 => Message::PrePrepare(Signed::new(
                    from,
                    PrePrepare {
                        view,
                        seq,
                        digest,
                        batch,
                        ops: Vec::new(),
                        at_ms: 0,
                    },
                    key,
                )),
                1 => Message::Prepare(Signed::new(from, Prepare { view, seq, digest }, key)),
                2 => Message::Commit(Signed::new(from, Commit { view, seq, digest }, key)),
                3 => Message::Checkpoint(Signed::new(
                    from,
                    Checkpoint {
                        seq,
                        state_digest: digest,
                    },
                    key,
                )),
                4 => {
                    // Peers may claim anything, the largest numbers there are included.
                    let (last_executed, stable_seq) = if txs_len == 2 {
                        (u64::MAX, u64::MAX)
                    } else {
                        (seq, seq / 2)
                    };
                    let status = Status {
                        view,
                        view_active: good_digest,
                        last_executed,
                        stable_seq,
                        suspects: txs_len == 1,
                        fetching: None,
                        new_view: None,
                    };
                    Message::Status(Signed::new(from, status, key))
                }
                _ => {
                    let checkpoint = CheckpointCert {
                        seq: 0,
                        state_digest: digest,
                        proof: Vec::new(),
                    };
                    Message::ViewChange(Signed::new(
                        from,
                        ViewChange {
                            new_view: view,
                            checkpoint,
                            prepared: Vec::new(),
                            revision: 0,
                        },
                        key,
                    ))
                }
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Message::decode(&bytes, 1 << 20);
    }

    #[test]
    fn arbitrary_signed_messages_never_break_the_replica(
        script in proptest::collection::vec((1u32..=4, 0usize..64), 1..120)
    ) {
        let mut c = Cluster::new(4, params());
        let messages: Vec<Message> = {
            let strategy = arbitrary_message(&c);
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            (0..64).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect()
        };
        let tx = c.transfer(0, 1, 10, 1);
        c.submit(tx);
        for (to, pick) in script {
            let _ = c.deliver(to, messages[pick].clone());
        }
        c.settle();
        for r in &c.replicas {
            prop_assert_eq!(r.ledger().total_balance(), 4000);
            prop_assert!(r.last_executed() <= 1);
        }
    }
}

/// Every replica steps a forced view change (a drill, or the way a test moves the cluster on).
fn force_view_change(c: &mut Cluster) {
    for id in 1..=c.replicas.len() as ReplicaId {
        let leave_view = c.replicas[id as usize - 1].view();
        let outputs = c.replicas[id as usize - 1]
            .step(c.now, Input::ForceViewChange { leave_view })
            .unwrap();
        c.carry_out(id, outputs);
    }
    c.settle();
}

/// One Byzantine backup's signed proposal for the next sequence number, with a valid client transfer given to
/// nobody else, was accepted by every honest replica, which then could not change views for good: the view change
/// refuses, as a certificate, a proposal not sent by its view's primary. The same rule now refuses it alone, with
/// its own reason, and the backup's signature on it is proof.
#[test]
fn a_backups_proposal_is_refused_with_proof_and_the_cluster_goes_on() {
    use bft_core::evidence::Evidence;
    use bft_core::evidence::FaultType;

    let mut c = Cluster::new(4, params());
    let tx = c.transfer(0, 1, 5, 1);
    let batch = vec![tx];
    let body = PrePrepare {
        view: 0,
        seq: 1,
        digest: proposal_digest(&batch, &[], 0),
        batch,
        ops: Vec::new(),
        at_ms: 0,
    };
    let usurped = Signed::new(4, body, &c.keys[3]);
    for to in 1..=3 {
        let refused = c.deliver(to, Message::PrePrepare(usurped.clone()));
        assert_eq!(refused, Err(Rejection::NotFromPrimary("pre-prepare")), "replica {to}");
    }
    assert!(c.network.is_empty(), "nobody voted for it");
    let evidence = Evidence::ProposalByBackup { proposal: usurped };
    let membership = c.replicas[0].membership().clone();
    assert_eq!(evidence.verify(&membership, 0), Ok((4, FaultType::ProtocolViolation)));

    // The cluster commits, and a view change completes.
    c.submit(c.transfer(1, 2, 1, 1));
    c.settle();
    assert!(c.replicas.iter().all(|r| r.last_executed() == 1), "committed");
    force_view_change(&mut c);
    assert!(c.replicas.iter().all(|r| r.view() == 1 && r.view_active()));
    c.submit(tx);
    c.settle();
    assert!(c.replicas.iter().all(|r| r.last_executed() == 2), "committed in view 1");
}

/// The same proposal is no proof against the primary of its view, nor against anyone once a reconfiguration moved
/// the sequence numbers it names into an earlier membership (where another primary may have proposed there).
#[test]
fn a_proposal_by_its_primary_or_of_an_earlier_epoch_proves_nothing() {
    use bft_core::evidence::Evidence;

    let c = Cluster::new(4, params());
    let body = PrePrepare {
        view: 1,
        seq: 3,
        digest: proposal_digest(&[], &[], 0),
        batch: Vec::new(),
        ops: Vec::new(),
        at_ms: 0,
    };
    let membership = c.replicas[0].membership().clone();
    let by_primary = Evidence::ProposalByBackup {
        proposal: Signed::new(2, body.clone(), &c.keys[1]),
    };
    assert!(by_primary.verify(&membership, 0).is_err());
    let by_backup = Evidence::ProposalByBackup {
        proposal: Signed::new(3, body, &c.keys[2]),
    };
    assert!(by_backup.verify(&membership, 0).is_ok());
    assert!(
        by_backup.verify(&membership, 4).is_err(),
        "sequence 3 is of an earlier epoch"
    );
    let mut forged = by_backup.clone();
    if let Evidence::ProposalByBackup { proposal } = &mut forged {
        proposal.signature = proposal.signature.corrupted();
    }
    assert!(forged.verify(&membership, 0).is_err());
}

/// A client that gives its transfer to one backup only, and a Byzantine member that sends a VIEW-CHANGE for the
/// next view (and for the farthest one), once deposed the honest primary: the backup timed a request the primary
/// never had, and with the Byzantine member's support that made F+1. A backup now passes on to the primary what it
/// held for a status interval, a far VIEW-CHANGE is refused, and the primary stays.
#[test]
fn a_request_given_to_one_backup_is_relayed_and_one_member_cannot_depose_the_primary() {
    let mut c = Cluster::new(4, params());
    let view_change = |c: &Cluster, new_view: View| {
        let body = ViewChange {
            new_view,
            checkpoint: c.replicas[0].stable_checkpoint().clone(),
            prepared: Vec::new(),
            revision: 0,
        };
        Message::ViewChange(Signed::new(4, body, &c.keys[3]))
    };
    for to in 1..=3 {
        let refused = c.deliver(to, view_change(&c, View::MAX));
        assert!(matches!(refused, Err(Rejection::WrongView { .. })), "{refused:?}");
        c.deliver(to, view_change(&c, 1)).unwrap();
    }
    let tx = c.transfer(0, 1, 3, 1);
    c.request(2, tx).unwrap();
    c.settle();
    c.status_round();
    assert!(
        c.outcome_from(1, &tx).is_some(),
        "the primary ordered what backup 2 passed on"
    );
    c.time_out();
    c.status_round();
    for r in &c.replicas {
        assert_eq!(
            (r.view(), r.view_active()),
            (0, true),
            "replica {}: {}",
            r.id(),
            r.describe()
        );
    }
    assert!(
        !c.events
            .iter()
            .any(|(_, e)| matches!(e, Event::ViewChangeStarted { .. }))
    );
}

/// A member's VIEW-CHANGE for a later view is support for leaving the view it names only until a view is
/// installed: kept, a Byzantine member's VIEW-CHANGE for view 2 counted as support for leaving view 1 with one
/// honest backup's lone suspicion, and so for every view after.
#[test]
fn support_for_leaving_a_view_lapses_when_a_view_is_installed() {
    let mut c = Cluster::new(4, params());
    let body = ViewChange {
        new_view: 2,
        checkpoint: c.replicas[0].stable_checkpoint().clone(),
        prepared: Vec::new(),
        revision: 0,
    };
    let far = Message::ViewChange(Signed::new(4, body, &c.keys[3]));
    for to in 1..=3 {
        c.deliver(to, far.clone()).unwrap();
    }
    // A drill moves the honest members to view 1 (member 4 stays silent from now on).
    c.muted.push(4);
    for id in 1..=3 {
        let outputs = c.replicas[id as usize - 1]
            .step(c.now, Input::ForceViewChange { leave_view: 0 })
            .unwrap();
        c.carry_out(id, outputs);
    }
    c.settle();
    assert!(c.replicas[..3].iter().all(|r| r.view() == 1 && r.view_active()));
    // In view 1 (primary 2), replica 3 alone holds a request the primary does not order (it is cut off from the
    // primary's proposals): its suspicion alone must not take it out of the view.
    c.muted.push(2);
    c.request(3, c.transfer(0, 1, 1, 1)).unwrap();
    c.time_out();
    let r3 = &c.replicas[2];
    assert_eq!((r3.view(), r3.view_active()), (1, true), "{}", r3.describe());
}

/// Makes `member` leave view 0 alone: it holds a transfer the primary never gets (what it passes on is lost) and
/// times it out, and member 4, Byzantine, says it suspects the primary too: F+1 suspicions. Returns the VIEW-CHANGE
/// it sent for view 1.
fn leave_view_0_alone(c: &mut Cluster, member: ReplicaId) -> Signed<ViewChange> {
    c.muted.push(member);
    c.request(member, c.transfer(0, 1, 3, 1)).unwrap();
    c.status_round();
    c.muted.clear();
    c.time_out();
    let status = Status {
        view: 0,
        view_active: true,
        last_executed: 0,
        stable_seq: 0,
        suspects: true,
        fetching: None,
        new_view: None,
    };
    c.deliver(member, Message::Status(Signed::new(4, status, &c.keys[3])))
        .unwrap();
    let view_change = c
        .network
        .iter()
        .find_map(|(_, m)| match m {
            Message::ViewChange(vc) if vc.from == member => Some(vc.clone()),
            _ => None,
        })
        .expect("it sent its VIEW-CHANGE");
    c.settle();
    view_change
}

/// A backup that left a view alone (its own suspicion and one Byzantine member's, while the others stayed) once sent
/// no COMMIT until the next view change: with F real faults, the cluster stalled until then. It now takes back the
/// VIEW-CHANGE it signed (REJOIN) and votes again once a quorum holds the withdrawal; what it withdrew counts for
/// nothing with those members, after a restart too, and a NEW-VIEW built on it is refused.
#[test]
fn a_member_that_left_a_view_alone_takes_back_its_view_change_and_votes_again() {
    let mut c = Cluster::new(4, params());
    let withdrawn = leave_view_0_alone(&mut c, 2);
    assert!(
        c.replicas[..1]
            .iter()
            .chain(&c.replicas[2..])
            .all(|r| r.view() == 0 && r.view_active())
    );
    assert_eq!((c.replicas[1].view(), c.replicas[1].view_active()), (1, false));

    // The others go on in view 0; a committed batch brings replica 2 back, sending no COMMIT.
    c.request(1, c.transfer(1, 2, 5, 1)).unwrap();
    c.settle();
    c.status_round();
    let r2 = &c.replicas[1];
    assert!(r2.view() == 0 && r2.withholds_commits(), "{}", r2.describe());

    // At its next status interval it withdraws its VIEW-CHANGE; the others hold that and acknowledge.
    c.status_round();
    assert!(
        c.events
            .iter()
            .any(|(id, e)| *id == 2 && matches!(e, Event::Rejoined { view: 0 }))
    );
    assert!(!c.replicas[1].withholds_commits(), "{}", c.replicas[1].describe());
    let before = c.sent.len();
    c.request(1, c.transfer(2, 3, 7, 1)).unwrap();
    c.settle();
    assert!(c.sent[before..].contains(&(2, "commit")), "replica 2 votes again");

    // What it withdrew counts for nothing, after a restart too.
    let refused = c.deliver(3, Message::ViewChange(withdrawn.clone()));
    assert!(matches!(refused, Err(Rejection::Withdrawn(2))), "{refused:?}");
    c.replicas[2] = Replica::recover(c.config_for(3), c.keys[2].clone(), &c.durables[2]).unwrap();
    let refused = c.deliver(3, Message::ViewChange(withdrawn.clone()));
    assert!(matches!(refused, Err(Rejection::Withdrawn(2))), "{refused:?}");

    // A NEW-VIEW for view 1 (whose primary is replica 2: say it turned Byzantine) built on the withdrawn
    // VIEW-CHANGE, which lacks what replica 2 prepared since, is refused; one built on VIEW-CHANGEs in force is not.
    let checkpoint = c.replicas[2].stable_checkpoint().clone();
    let view_change = |from: ReplicaId, revision: u32| {
        let body = ViewChange {
            new_view: 1,
            checkpoint: checkpoint.clone(),
            prepared: Vec::new(),
            revision,
        };
        Signed::new(from, body, &c.keys[from as usize - 1])
    };
    let new_view = |view_changes: Vec<Signed<ViewChange>>| {
        let (_, entries) = bft_core::new_view::derive_new_view(&view_changes);
        let pre_prepares = entries
            .into_iter()
            .map(|e| Signed::new(2, e.in_view(1), &c.keys[1]))
            .collect();
        let body = NewView {
            view: 1,
            view_changes,
            pre_prepares,
        };
        Message::NewView(Signed::new(2, body, &c.keys[1]))
    };
    let built_on_withdrawn = new_view(vec![withdrawn, view_change(3, 0), view_change(4, 0)]);
    let in_force = new_view(vec![view_change(2, 1), view_change(3, 0), view_change(4, 0)]);
    let refused = c.deliver(3, built_on_withdrawn);
    assert!(matches!(refused, Err(Rejection::Withdrawn(2))), "{refused:?}");
    assert_eq!((c.replicas[2].view(), c.replicas[2].view_active()), (0, true));
    c.deliver(3, in_force).unwrap();
    assert_eq!((c.replicas[2].view(), c.replicas[2].view_active()), (1, true));
}

/// A member that vouched for a withdrawal installs a NEW-VIEW built on the withdrawn VIEW-CHANGE once the member
/// that withdrew it says, in its STATUS, that it installed that very NEW-VIEW: the withdrawal never took effect there
/// (a member holds its own only once a quorum does, and refuses such a NEW-VIEW from then on) and it never votes in
/// the earlier view again. The new primary had built it in good faith, not having heard of the withdrawal; refused
/// for good, the member that vouched was left outside the view the others worked in (simulator, N = 4, seed 81365).
#[test]
fn a_new_view_built_on_a_withdrawal_that_never_took_effect_is_installed_once_its_signer_installed_it() {
    let mut c = Cluster::new(4, params());
    // Replica 3 leaves view 0 alone, for view 1 (primary 2).
    let withdrawn = leave_view_0_alone(&mut c, 3);
    // The others go on in view 0, and a committed batch brings replica 3 back. Primary 2 of view 1 is cut off
    // from then on, so it never hears of the withdrawal; replica 3 never hears that members hold it.
    c.request(1, c.transfer(1, 2, 5, 1)).unwrap();
    c.settle();
    c.cut.push(2);
    c.status_round();
    assert!(c.replicas[2].withholds_commits(), "{}", c.replicas[2].describe());
    c.muted.extend([1, 4]);
    for _ in 0..3 {
        c.status_round();
    }
    c.muted.clear();
    c.cut.clear();
    assert!(c.replicas[2].withholds_commits(), "{}", c.replicas[2].describe());

    let view_change = |from: ReplicaId| {
        let body = ViewChange {
            new_view: 1,
            checkpoint: withdrawn.body.checkpoint.clone(),
            prepared: Vec::new(),
            revision: 0,
        };
        Signed::new(from, body, &c.keys[from as usize - 1])
    };
    let nv = new_view_on(&c, vec![withdrawn.clone(), view_change(2), view_change(4)]);
    let refused = c.deliver(1, Message::NewView(nv.clone()));
    assert!(
        matches!(refused, Err(Rejection::Withdrawn(3))),
        "replica 1 vouched: {refused:?}"
    );
    // Another member's word is not the withdrawer's.
    let claim = Status {
        view: 1,
        view_active: true,
        last_executed: 0,
        stable_seq: 0,
        suspects: false,
        fetching: None,
        new_view: Some(new_view_id(&nv)),
    };
    c.deliver(1, Message::Status(Signed::new(4, claim, &c.keys[3])))
        .unwrap();
    let refused = c.deliver(1, Message::NewView(nv.clone()));
    assert!(matches!(refused, Err(Rejection::Withdrawn(3))), "{refused:?}");

    // Replica 3 installs it (its withdrawal never took effect) and says so in its STATUS; replica 1 follows.
    c.deliver(3, Message::NewView(nv.clone())).unwrap();
    assert_eq!((c.replicas[2].view(), c.replicas[2].view_active()), (1, true));
    c.step(3, Input::Timer(Timer::Status)).unwrap();
    c.settle();
    c.deliver(1, Message::NewView(nv)).unwrap();
    assert_eq!((c.replicas[0].view(), c.replicas[0].view_active()), (1, true));
}

/// A NEW-VIEW for view 1 signed by member 2 on `view_changes`, with the proposals they determine.
fn new_view_on(c: &Cluster, view_changes: Vec<Signed<ViewChange>>) -> Signed<NewView> {
    let (_, entries) = bft_core::new_view::derive_new_view(&view_changes);
    let pre_prepares = entries
        .into_iter()
        .map(|r| Signed::new(2, r.in_view(1), &c.keys[1]))
        .collect();
    let body = NewView {
        view: 1,
        view_changes,
        pre_prepares,
    };
    Signed::new(2, body, &c.keys[1])
}

/// A Byzantine new primary's NEW-VIEWs were refused but never evidence: one on fewer than a quorum of
/// VIEW-CHANGEs, and a second, different one for a view a replica installed (which a replica going back to that view
/// would even have installed). Each is now proof from the primary's own signature, whoever relays it; a spoiled
/// signature proves nothing.
#[test]
fn a_new_primarys_conflicting_or_short_new_views_are_refused_with_proof() {
    use bft_core::detection::{Refusal, observation_of_refusal};
    use bft_core::evidence::Evidence;
    use bft_core::evidence::FaultType;
    use bft_core::history::MessageSummary;

    let mut c = Cluster::new(4, params());
    c.muted.push(1);
    c.submit(c.transfer(0, 1, 10, 1));
    c.settle();
    c.time_out();
    assert!(c.honest().all(|r| r.view() == 1 && r.view_active()));
    let installed = c.durables[2].new_view.clone().expect("replica 3 installed view 1");
    assert_eq!(installed.from, 2);
    let membership = c.replicas[0].membership().clone();

    // The same VIEW-CHANGEs in another order: valid, and different.
    let mut reordered = installed.body.view_changes.clone();
    reordered.reverse();
    let second = new_view_on(&c, reordered);
    assert_ne!(second.body, installed.body);
    let message = Message::NewView(second.clone());
    let summary = MessageSummary::of(&message);
    assert_eq!(c.deliver(3, message), Err(Rejection::Equivocation));
    assert_eq!(c.replicas[2].conflicting_new_views().map(|(_, s)| s), Some(&second));
    let refusal = Refusal::Core {
        header: None,
        replica: &c.replicas[2],
    };
    let observation = observation_of_refusal(&summary, &Rejection::Equivocation, refusal).expect("proof");
    let proof = observation.proof.expect("with evidence");
    assert!(matches!(proof, Evidence::ConflictingNewViews { .. }));
    assert_eq!(proof.verify(&membership, 0), Ok((2, FaultType::Equivocation)));
    // The NEW-VIEW installed, relayed again, is no conflict.
    assert_ne!(
        c.deliver(3, Message::NewView(installed.clone())),
        Err(Rejection::Equivocation)
    );

    // One VIEW-CHANGE short of a quorum, relayed by member 3: refused, and proof against member 2.
    let short = new_view_on(&c, installed.body.view_changes[..2].to_vec());
    let judge = |c: &mut Cluster, new_view: Signed<NewView>| {
        let message = Message::NewView(new_view);
        let summary = MessageSummary::of(&message);
        let (rejection, message) = *c.verifiers[3].message_or_back(message).unwrap_err();
        let refusal = Refusal::Verification {
            message,
            carrier: 3,
            membership: &membership,
            epoch_started_at: 0,
            executed: c.replicas[3].last_executed(),
        };
        (rejection.clone(), observation_of_refusal(&summary, &rejection, refusal))
    };
    let (rejection, observation) = judge(&mut c, short.clone());
    assert_eq!(rejection, Rejection::BadCertificate("new-view quorum"));
    let proof = observation.and_then(|o| o.proof).expect("proof");
    assert!(matches!(proof, Evidence::NewViewWithoutQuorum { .. }));
    assert_eq!(proof.verify(&membership, 0), Ok((2, FaultType::ProtocolViolation)));
    // Its signature spoiled on the way: the relay may have done it, and nobody is proven.
    let mut spoiled = short;
    spoiled.signature = spoiled.signature.corrupted();
    let (_, observation) = judge(&mut c, spoiled);
    assert_eq!(observation, None);
}
