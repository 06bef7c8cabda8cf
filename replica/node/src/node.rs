//! A replica as a process: its configuration, storage, gRPC service and the loop that drives the core.
//!
//! The loop owns the `Replica`. It takes commands in groups, steps the core for each, makes every `Persist`
//! of the group durable in one fsynced transaction, and only then sends what the group produced: a replica
//! never sends a message it could forget in a crash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::{FaultLabel, KindLabel, Metrics, OutcomeLabel};
use crate::net::{Command, EncodedReply, PeerLink, ReplyTo, Service};
use crate::storage::Store;
use bft_client::node_config::{ConfigFileError, MemberConfig, NodeConfig};
use bft_client::proto;
use bft_client::unix_ms;
use bft_core::config::{Config, ConfigError};
use bft_core::crypto::{Digest, KeyPair};
use bft_core::detection::{Detector, Refusal, observation_of_refusal};
use bft_core::evidence::Evidence;
use bft_core::faults::{FaultDrill, Saboteur};
use bft_core::governance::Decision;
use bft_core::history::{Detection, History, MessageSummary, Observation, ViewChangeRecord};
use bft_core::ledger::SignedTransfer;
use bft_core::messages::{Message, ReplicaId, Reply, Seq, Signed};
use bft_core::replica::{Event, Input, Output, Replica};
use bft_core::verify::{Rejection, SharedMembership, Verified, Verifier};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    ConfigFile(#[from] ConfigFileError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot create data directory {path}: {error}")]
    DataDir { path: PathBuf, error: std::io::Error },
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// Runs a replica until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let key = config.key()?;
    let membership = config.membership()?;
    let genesis = config.genesis()?;
    config.params.validate()?;
    if config.max_message_bytes < bft_core::messages::MAX_MESSAGE_BYTES {
        return Err(ConfigError::OutOfRange {
            name: "max_message_bytes",
            value: config.max_message_bytes as u64,
            min: bft_core::messages::MAX_MESSAGE_BYTES as u64,
            max: u64::MAX,
        }
        .into());
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|error| NodeError::DataDir {
        path: config.data_dir.clone(),
        error,
    })?;
    let store = Store::open(&config.data_dir.join("replica.redb"))?;
    let core_config = Config {
        id: config.id,
        membership,
        genesis,
        params: config.params.clone(),
        admin: config.admin()?,
    };
    let genesis_digest = core_config.genesis_digest().map_err(ConfigError::Genesis)?;
    let replica = Replica::recover(core_config, key.clone(), store.durable())?;
    // The membership in force may be a later epoch's than the configured (genesis) one.
    let membership = replica.membership().clone();
    if !membership.contains(config.id) {
        tracing::warn!(
            id = config.id,
            epoch = replica.epoch(),
            "not a member (yet): following the cluster"
        );
    }
    let addresses = PeerAddresses::new(&config.members);
    let links = addresses.links(&replica, &key);
    let (commands, inbox) = mpsc::channel(65_536);
    let metrics = Metrics::new();
    metrics.members.set(membership.n() as i64);
    metrics.quorum_size.set(membership.quorum() as i64);
    let params = config.params.clone();
    // One record of valid signatures for the whole process, so nothing is verified twice.
    let verifier = Verifier::new(
        membership.clone(),
        genesis_digest,
        params.log_window,
        params.max_batch_size,
    );
    let shared_membership = verifier.shared_membership();
    // After a restart in a later epoch: proof is checked in the epoch the replica is in.
    shared_membership.set(membership.clone(), replica.governance().epoch_started_at.unwrap_or(0));
    shared_membership.executed_up_to(replica.last_executed());
    let make_verifier = move || verifier.sharing_cache();
    let (submits, submit_inbox) = mpsc::channel(65_536);
    tokio::spawn(crate::net::verify_submits(
        make_verifier(),
        submit_inbox,
        commands.clone(),
        metrics.clone(),
    ));
    let service = Service {
        commands: commands.clone(),
        drills: bft_client::drill::Guard::new(config.id, config.allow_fault_injection, config.admin()?),
        metrics: metrics.clone(),
        submits,
        make_verifier: Box::new(make_verifier),
        membership: shared_membership.clone(),
        id: config.id,
        seen_hellos: Default::default(),
        max_message_bytes: config.max_message_bytes,
    };
    let loop_task = tokio::spawn(protocol_loop(
        Host {
            detector: Detector::new(store.history().clone()),
            replica,
            key,
            store,
            links,
            commands,
            metrics: metrics.clone(),
            waiting: HashMap::new(),
            counted: (0, 0),
            view_change_waiters: Vec::new(),
            saboteur: None,
            genesis_digest,
            drilled: false,
            shared_membership,
            addresses,
        },
        inbox,
    ));
    // One shutdown signal for both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    if let Some(address) = config.metrics_listen {
        let metrics = metrics.clone();
        let shutdown = until_stopped();
        tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve(address, metrics, shutdown).await {
                tracing::error!(%address, %error, "metrics endpoint failed");
            }
        });
    }
    // The standard gRPC health service: SERVING while the replica is ready (in an active view, quorum reachable),
    // both for the whole server ("") and for bft.v1.Replica.
    let (health, health_service) = tonic_health::server::health_reporter();
    {
        let metrics = metrics.clone();
        let stopped = until_stopped();
        tokio::spawn(async move {
            tokio::pin!(stopped);
            let mut last = None;
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => return,
                }
                let ready = metrics.ready.load(std::sync::atomic::Ordering::Relaxed);
                if last == Some(ready) {
                    continue;
                }
                last = Some(ready);
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                health.set_service_status("", status).await;
                health.set_service_status("bft.v1.Replica", status).await;
            }
        });
    }
    tracing::info!(id = config.id, listen = %config.listen, metrics = ?config.metrics_listen, "replica serving");
    let server = grpc_server()
        .add_service(health_service)
        .add_service(
            proto::replica_server::ReplicaServer::new(service)
                .max_decoding_message_size(config.max_message_bytes + crate::net::PEER_FRAME_BYTES)
                .max_encoding_message_size(config.max_message_bytes + crate::net::PEER_FRAME_BYTES),
        )
        .serve_with_shutdown(config.listen, until_stopped());
    // A graceful shutdown waits for every open call, and peers' streams never end by themselves: after a short
    // grace the replica stops anyway. Nothing is lost: whatever it acknowledged or sent is already durable.
    let grace = async {
        until_stopped().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        result = server => result,
        _ = grace => Ok(()),
    };
    loop_task.abort();
    tracing::info!("stopped");
    Ok(result?)
}

/// How long a stopping replica lets open calls finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). tonic sets no limit by
/// default (hyper's own default is 200); a peer link or a load generator uses a few streams, and a client with
/// more calls than this waits for one to end.
pub const MAX_CONCURRENT_STREAMS: u32 = 1_024;

/// Streams a client may have reset before the server accepted them, at once, before it loses its connection (GOAWAY
/// ENHANCE_YOUR_CALM "too_many_resets"): the HTTP/2 rapid-reset protection (CVE-2023-44487).
///
/// h2 (0.4.20) counts only resets of streams still in its accept queue, and the count falls again as the queue
/// is drained: a call the server accepted, is answering or has answered may be cancelled without limit. Its
/// default of 20 is what cut well-behaved clients under faults: while a replica stalls (paused, starved of CPU,
/// or behind a partition) a client's calls time out and it cancels them, and the HEADERS and RST_STREAM of all of
/// them reach the replica together once it runs again (a paused process finds them in its socket buffer, a healed
/// partition delivers them in a burst), before it accepted any. 21 calls cancelled in one stall lost the
/// connection. 1,024, as many calls as a connection may have open at once, lets a client have all of them
/// cancelled unseen in one stall (500 cancelled calls arriving at once, four times over, keep their connection
/// in `replica/tests/http2.rs`); a flood (thousands of HEADERS each followed by RST_STREAM, far faster than the
/// server accepts them) passes it within its first 1,025 streams and loses its connection (the same test). What
/// the queue can hold stays bounded: 1,024 streams whose headers are at most 16 KiB each.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 1_024;

/// Streams the server may reset because the client broke the protocol, over a connection's life, before it sends
/// GOAWAY "too_many_internal_resets" (RUSTSEC-2024-0003). hyper's default, which tonic replaces with no limit at
/// all unless it is given: a client's own cancellations never count here, only its protocol errors.
pub const MAX_LOCAL_ERROR_RESETS: usize = 1_024;

/// The gRPC server of a replica, with the HTTP/2 limits above.
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
}

/// The most commands stepped before their outputs are persisted and sent together.
const GROUP_MAX: usize = 512;

/// Where each member is reached: the configured (genesis) members, and those added by reconfiguration.
struct PeerAddresses {
    configured: HashMap<ReplicaId, String>,
}

impl PeerAddresses {
    fn new(members: &[MemberConfig]) -> PeerAddresses {
        PeerAddresses {
            configured: members.iter().map(|m| (m.id, m.address.clone())).collect(),
        }
    }

    fn address(&self, replica: &Replica, id: ReplicaId) -> Option<String> {
        replica
            .governance()
            .addresses
            .get(&id)
            .or_else(|| self.configured.get(&id))
            .cloned()
    }

    /// A link to every member in force but this replica.
    fn links(&self, replica: &Replica, key: &KeyPair) -> HashMap<ReplicaId, PeerLink> {
        replica
            .membership()
            .ids()
            .filter(|id| *id != replica.id())
            .filter_map(|id| {
                let address = self.address(replica, id)?;
                Some((id, PeerLink::start(id, address, replica.id(), key.clone())))
            })
            .collect()
    }
}

async fn protocol_loop(mut host: Host, mut inbox: mpsc::Receiver<Command>) {
    let mut outputs = host.replica.start(host.now());
    let mut group = Vec::with_capacity(GROUP_MAX);
    loop {
        host.carry_out(&mut outputs);
        // Take the next group of commands.
        match inbox.recv().await {
            Some(command) => group.push(command),
            None => return,
        }
        while group.len() < GROUP_MAX {
            match inbox.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        for command in group.drain(..) {
            host.handle(command, &mut outputs);
        }
    }
}

/// What the protocol loop keeps around the core: storage, links, waiting clients, the history and drills.
struct Host {
    replica: Replica,
    key: KeyPair,
    store: Store,
    links: HashMap<ReplicaId, PeerLink>,
    commands: mpsc::Sender<Command>,
    metrics: Metrics,
    waiting: HashMap<Digest, Vec<(ReplyTo, Instant)>>,
    /// Transfers applied and rejected already added to the metrics.
    counted: (u64, u64),
    view_change_waiters: Vec<oneshot::Sender<proto::ViewChangeEvent>>,
    /// The detection policy, shared with the simulator, and the history it keeps: detections, quarantines, epochs
    /// and view changes, written with the next group's entries whenever they changed.
    detector: Detector,
    saboteur: Option<Saboteur>,
    /// What a fault drill's made-up VIEW-CHANGEs rest on.
    genesis_digest: Digest,
    /// Whether any fault drill ran since the start.
    drilled: bool,
    /// The membership the stream verifiers check against: changed with each epoch.
    shared_membership: SharedMembership,
    addresses: PeerAddresses,
}

impl Host {
    /// The core's clock is the wall clock: quarantines expire at times all members share.
    fn now(&self) -> u64 {
        unix_ms()
    }

    /// Carries out a group's outputs: persists, then sends.
    fn carry_out(&mut self, outputs: &mut Vec<Output>) {
        let entries: Vec<_> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Persist(entry) => Some(entry.clone()),
                _ => None,
            })
            .collect();
        let changed = self.detector.take_changed().then_some(self.detector.history());
        // Handing the worker's other tasks away for a blocking write costs a thread hand-off: only when writing.
        let persisted = if entries.is_empty() && changed.is_none() {
            Ok(())
        } else {
            tokio::task::block_in_place(|| self.store.append(entries, changed))
        };
        if let Err(error) = persisted {
            // Without storage the replica could sign something it later forgets: stop rather than risk it.
            tracing::error!(%error, "cannot persist; stopping the replica");
            std::process::exit(1);
        }
        for output in outputs.drain(..) {
            self.carry_out_one(output);
        }
        update_gauges(&self.replica, &self.links, &self.metrics, &mut self.counted);
        self.shared_membership.executed_up_to(self.replica.last_executed());
        // Forget clients that gave up waiting.
        if self.waiting.len() > 4 * GROUP_MAX {
            self.waiting.retain(|_, waiters| {
                waiters.retain(|(w, _)| !w.is_closed());
                !waiters.is_empty()
            });
        }
    }

    fn carry_out_one(&mut self, output: Output) {
        match output {
            Output::Persist(_) => {}
            Output::Send { to, message } => {
                if let Some(link) = self.links.get(&to) {
                    let now = self.now();
                    let copies = match self.saboteur.as_mut() {
                        Some(saboteur) => {
                            saboteur.now_ms = now;
                            saboteur.outgoing(&message, 1)
                        }
                        None => vec![Some(message)],
                    };
                    for copy in copies.into_iter().flatten() {
                        send(link, &copy.encode(), copy.kind(), &self.metrics);
                    }
                }
            }
            Output::Broadcast(message) => match self.saboteur.as_mut() {
                None => {
                    let bytes = message.encode();
                    for link in self.links.values() {
                        send(link, &bytes, message.kind(), &self.metrics);
                    }
                }
                Some(saboteur) => {
                    saboteur.now_ms = unix_ms();
                    let copies = saboteur.outgoing(&message, self.links.len());
                    for (link, copy) in self.links.values().zip(copies) {
                        if let Some(copy) = copy {
                            send(link, &copy.encode(), copy.kind(), &self.metrics);
                        }
                    }
                }
            },
            Output::Reply(reply) => {
                let reply = match self.saboteur.as_mut() {
                    Some(saboteur) => saboteur.reply(reply),
                    None => reply,
                };
                answer_waiters(&mut self.waiting, &reply, &self.metrics)
            }
            Output::SetTimer { timer, after_ms } => {
                let commands = self.commands.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
                    let _ = commands.send(Command::Timer(timer)).await;
                });
            }
            Output::Event(event) => self.on_event(event),
        }
        // What a fault drill makes up beyond the core's messages goes to every peer.
        if let Some(saboteur) = self.saboteur.as_mut() {
            for message in std::mem::take(&mut saboteur.extra) {
                let bytes = message.encode();
                for link in self.links.values() {
                    send(link, &bytes, message.kind(), &self.metrics);
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        log_event(&event);
        let observed = self.detector.on_event(&self.replica, &event, self.now());
        if let Some(observation) = observed {
            // Handled like a peer's refused message: on the loop's next turn, where it may step the core.
            let _ = self.commands.try_send(Command::Observed(Box::new(observation)));
        }
        match event {
            Event::ViewChangeStarted { .. } => {
                self.metrics.view_changes.inc();
            }
            Event::Decided { seq, decision, .. } => self.decided(seq, decision),
            Event::EpochStarted {
                epoch, seq, removed, ..
            } => self.epoch_started(epoch, seq, removed),
            event @ Event::NewViewInstalled { .. } => {
                if let Some(answer) = view_change_event(&event, self.replica.membership().quorum()) {
                    for waiter in self.view_change_waiters.drain(..) {
                        let _ = waiter.send(answer.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// The installation of the view this replica is in, as its view-change history has it (a view it joined
    /// without a record, after a restart or by catching up, is reported with what is known now).
    fn installed_view_event(&self) -> proto::ViewChangeEvent {
        let view = self.replica.view();
        let recorded = self
            .detector
            .history()
            .view_changes
            .iter()
            .rev()
            .find(|r| r.view == view);
        match recorded {
            Some(r) => proto::ViewChangeEvent {
                view,
                old_primary: r.old_primary,
                new_primary: r.new_primary,
                duration_ms: r.started_unix_ms.map_or(0, |s| r.installed_unix_ms.saturating_sub(s)),
                triggered_by: r.triggered_by.clone(),
                quorum_met: r.quorum_met,
                batches_recovered: r.batches_recovered,
                transfers_recovered: r.transfers_recovered,
            },
            None => proto::ViewChangeEvent {
                view,
                old_primary: self.replica.membership().primary(view.saturating_sub(1)),
                new_primary: self.replica.primary(),
                ..Default::default()
            },
        }
    }

    /// Steps the core with `input`; what it refuses is counted by the core.
    fn step(&mut self, input: Input, outputs: &mut Vec<Output>) -> Result<(), Rejection> {
        let out = self.replica.step(self.now(), input)?;
        outputs.extend(out);
        Ok(())
    }

    fn handle(&mut self, command: Command, outputs: &mut Vec<Output>) {
        match command {
            Command::Message(message) => self.on_message(message, outputs),
            Command::Timer(timer) => {
                let _ = self.step(Input::Timer(timer), outputs);
            }
            Command::Submit { tx, respond } => self.on_submit(tx, respond, outputs),
            Command::Observed(observation) => self.detected(*observation, outputs),
            Command::Propose { op, respond } => {
                let result = self.step(Input::Operation(*op), outputs);
                let _ = respond.send(result.map(|()| self.replica.epoch()));
            }
            Command::InjectFault { drill, respond } => {
                self.saboteur = drill.map(|drill| {
                    let max_batch = self.replica.params().max_batch_size;
                    Saboteur::new(drill, self.replica.id(), self.key.clone(), rand::random(), max_batch)
                        .with_genesis(self.genesis_digest)
                        .with_members(self.replica.membership().n() as u32)
                });
                let active = self.saboteur.as_ref().map_or(String::new(), |s| s.drill().to_string());
                tracing::warn!(drill = %active, "fault drill changed");
                self.metrics.fault_drill_active.set(i64::from(self.saboteur.is_some()));
                self.drilled |= self.saboteur.is_some();
                let _ = respond.send(active);
            }
            Command::Detections { respond } => {
                let _ = respond.send(proto::DetectionsResponse {
                    id: self.replica.id(),
                    detections: self
                        .detector
                        .history()
                        .detections
                        .iter()
                        .map(|d| detection_proto(d, &self.replica, self.detector.history()))
                        .collect(),
                });
            }
            Command::ViewChanges { respond } => {
                let _ = respond.send(proto::ViewChangesResponse {
                    id: self.replica.id(),
                    view_changes: self
                        .detector
                        .history()
                        .view_changes
                        .iter()
                        .map(view_change_proto)
                        .collect(),
                });
            }
            Command::Status { respond } => {
                let drill = self.saboteur.as_ref().map(|s| s.drill());
                let _ = respond.send(status(&self.replica, drill, self.drilled));
            }
            Command::ForceViewChange { leave_view, respond } => {
                let (view, active) = (self.replica.view(), self.replica.view_active());
                if active && view != leave_view {
                    // Already past the view to leave (or not yet in it): no second move; the view it is in.
                    let _ = respond.send(self.installed_view_event());
                    return;
                }
                // Answered once a view is installed: the next one, or the one a view change under way reaches.
                self.view_change_waiters.push(respond);
                let _ = self.step(Input::ForceViewChange { leave_view }, outputs);
            }
            Command::Account { account, respond } => {
                let found = self.replica.ledger().account(&account);
                let _ = respond.send(proto::AccountResponse {
                    exists: found.is_some(),
                    balance: found.map_or(0, |a| a.balance),
                    nonce: found.map_or(0, |a| a.nonce),
                    last_executed: self.replica.last_executed(),
                });
            }
        }
    }

    /// A verified peer message; a refusal that shows its sender misbehaving is logged, with proof if there is one.
    fn on_message(&mut self, message: Verified<Message>, outputs: &mut Vec<Output>) {
        // A censoring drill ignores the requests other members pass on, as it ignores clients'.
        if matches!(*message, Message::Request { .. }) && self.saboteur.as_mut().is_some_and(|s| !s.admits_request()) {
            return;
        }
        let summary = MessageSummary::of(&message);
        let header = Evidence::header(&message);
        let Err(rejection) = self.step(Input::Message(message), outputs) else {
            return;
        };
        // Counted by reason like the verifier's refusals: a backup's proposal shows as not_from_primary, a far
        // VIEW-CHANGE as wrong_view, an accusation beyond the one pending as operation_refused.
        self.metrics.refused(rejection.label());
        let refusal = Refusal::Core {
            header,
            replica: &self.replica,
        };
        if let Some(observation) = observation_of_refusal(&summary, &rejection, refusal) {
            self.detected(observation, outputs);
        }
    }

    fn on_submit(&mut self, tx: Verified<SignedTransfer>, respond: ReplyTo, outputs: &mut Vec<Output>) {
        let digest = tx.digest();
        if self.saboteur.as_mut().is_some_and(|s| !s.admits_request()) {
            // Censored: never proposed here, but answered if the transfer executes anyway.
            self.waiting.entry(digest).or_default().push((respond, Instant::now()));
            return;
        }
        match self.step(Input::Request(tx), outputs) {
            // An already executed transfer is answered at once, from the outputs; an already pending one waits
            // for the same execution.
            Ok(()) | Err(Rejection::Duplicate) => {
                self.waiting.entry(digest).or_default().push((respond, Instant::now()))
            }
            Err(rejection) => {
                self.metrics.refused(rejection.label());
                respond.refuse(rejection);
            }
        }
    }

    /// Hands an observation to the detection policy; puts what it decides to consensus, logs and counts it.
    fn detected(&mut self, observation: Observation, outputs: &mut Vec<Output>) {
        let (member, fault) = (observation.member, observation.fault);
        let now = self.now();
        let detected = self.detector.observed(&self.replica, &self.key, observation, now);
        if let Some(op) = detected.operation {
            match self.step(Input::Operation(op), outputs) {
                Ok(()) => tracing::info!(member, fault_type = fault.name(), "asked consensus to act"),
                Err(rejection) => tracing::debug!(member, %rejection, "consensus need not act"),
            }
        }
        if !detected.logged {
            return;
        }
        tracing::warn!(member, fault_type = fault.name(), "detected a misbehaving member");
        self.metrics
            .detections
            .get_or_create(&FaultLabel {
                fault_type: fault.name().into(),
            })
            .inc();
        let detections = &self.detector.history().detections;
        let members: std::collections::BTreeSet<_> = detections.iter().map(|d| d.first.member).collect();
        self.metrics.members_detected.set(members.len() as i64);
    }

    /// A governance decision executed (the detector recorded quarantines in the history): logged and counted.
    fn decided(&mut self, seq: Seq, decision: Decision) {
        match decision {
            Decision::Quarantined {
                member,
                fault,
                until_ms,
                ..
            } => {
                tracing::warn!(
                    member,
                    seq,
                    fault_type = fault.name(),
                    until_ms,
                    "member quarantined by consensus"
                );
                self.metrics.quarantines.inc();
            }
            Decision::ReconfigurationScheduled { epoch, at_seq } => {
                tracing::info!(
                    seq,
                    epoch,
                    at_seq,
                    "reconfiguration ordered; it takes effect at the boundary"
                )
            }
            Decision::Accused {
                accused,
                accuser,
                accusers,
            } => tracing::info!(seq, accused, accuser, accusers, "accusation recorded"),
            Decision::Refused(reason) => tracing::debug!(seq, %reason, "operation refused at execution"),
        }
    }

    /// A new membership: verifiers check against it, links follow it (the detector recorded it in the history).
    fn epoch_started(&mut self, epoch: u64, seq: Seq, removed: Vec<ReplicaId>) {
        let membership = self.replica.membership().clone();
        tracing::warn!(epoch, seq, members = ?membership.ids().collect::<Vec<_>>(), ?removed, "new epoch");
        let epoch_started_at = self.replica.governance().epoch_started_at.unwrap_or(0);
        self.shared_membership.set(membership.clone(), epoch_started_at);
        self.links.retain(|id, _| membership.contains(*id));
        let me = self.replica.id();
        for id in membership.ids().filter(|id| *id != me) {
            if self.links.contains_key(&id) {
                continue;
            }
            if let Some(address) = self.addresses.address(&self.replica, id) {
                self.links
                    .insert(id, PeerLink::start(id, address, me, self.key.clone()));
            }
        }
        self.metrics.members.set(membership.n() as i64);
        self.metrics.quorum_size.set(membership.quorum() as i64);
        self.metrics.epoch.set(epoch as i64);
    }
}

/// Answers everyone waiting for a transfer the reply covers. The reply is encoded once for all of them.
fn answer_waiters(waiting: &mut HashMap<Digest, Vec<(ReplyTo, Instant)>>, reply: &Signed<Reply>, metrics: &Metrics) {
    let mut encoded: Option<EncodedReply> = None;
    let mut answered = Vec::new();
    for (digest, _) in &reply.body.outcomes {
        for (waiter, since) in waiting.remove(digest).unwrap_or_default() {
            metrics.commit_latency.observe(since.elapsed().as_secs_f64());
            let encoded = encoded.get_or_insert_with(|| {
                postcard::to_allocvec(reply)
                    .expect("encoding to memory cannot fail")
                    .into()
            });
            waiter.answer(encoded, &mut answered);
        }
    }
}

fn update_gauges(
    replica: &Replica,
    links: &HashMap<ReplicaId, PeerLink>,
    metrics: &Metrics,
    (applied, rejected): &mut (u64, u64),
) {
    metrics.heartbeat();
    metrics.view.set(replica.view() as i64);
    metrics.primary.set(replica.primary() as i64);
    metrics.last_executed.set(replica.last_executed() as i64);
    metrics.stable_checkpoint.set(replica.stable_checkpoint().seq as i64);
    metrics.pending_requests.set(replica.pending_requests() as i64);
    metrics.epoch.set(replica.epoch() as i64);
    let quarantined = replica
        .membership()
        .ids()
        .filter(|id| replica.governance().is_quarantined(*id));
    metrics.members_quarantined.set(quarantined.count() as i64);
    let stats = replica.stats();
    let label = |outcome: &str| OutcomeLabel {
        outcome: outcome.into(),
    };
    metrics
        .transfers
        .get_or_create(&label("applied"))
        .inc_by(stats.transfers_applied - *applied);
    metrics
        .transfers
        .get_or_create(&label("rejected"))
        .inc_by(stats.transfers_rejected - *rejected);
    (*applied, *rejected) = (stats.transfers_applied, stats.transfers_rejected);
    let reachable = 1 + links.values().filter(|l| l.connected()).count();
    let quorum = reachable >= replica.membership().quorum();
    metrics.members_reachable.set(reachable as i64);
    metrics.quorum_healthy.set(i64::from(quorum));
    metrics
        .ready
        .store(quorum && replica.view_active(), std::sync::atomic::Ordering::Relaxed);
}

/// The view-change report of a newly installed view.
fn view_change_event(event: &Event, quorum: usize) -> Option<proto::ViewChangeEvent> {
    let Event::NewViewInstalled {
        view,
        primary,
        old_primary,
        started_ms,
        installed_ms,
        view_changes_from,
        batches_recovered,
        transfers_recovered,
    } = event
    else {
        return None;
    };
    Some(proto::ViewChangeEvent {
        view: *view,
        old_primary: *old_primary,
        new_primary: *primary,
        duration_ms: started_ms.map_or(0, |s| installed_ms.saturating_sub(s)),
        triggered_by: view_changes_from.clone(),
        quorum_met: view_changes_from.len() >= quorum,
        batches_recovered: *batches_recovered as u64,
        transfers_recovered: *transfers_recovered as u64,
    })
}

fn status(replica: &Replica, drill: Option<FaultDrill>, drilled: bool) -> proto::StatusResponse {
    let key = replica
        .membership()
        .key(replica.id())
        .map(|k| k.to_hex())
        .unwrap_or_default();
    proto::StatusResponse {
        id: replica.id(),
        view: replica.view(),
        view_active: replica.view_active(),
        primary: replica.primary(),
        last_executed: replica.last_executed(),
        stable_checkpoint: replica.stable_checkpoint().seq,
        pending_requests: replica.pending_requests() as u64,
        public_key: key,
        transfers_applied: replica.ledger().executed().applied,
        transfers_rejected: replica.ledger().executed().rejected,
        fault_drill: drill.map_or(String::new(), |d| d.to_string()),
        members: replica.membership().n() as u32,
        quorum_size: replica.membership().quorum() as u32,
        max_failures: bft_core::config::max_failures(replica.membership().n()) as u32,
        stable_state_digest: replica.stable_checkpoint().state_digest.to_hex(),
        drilled,
        epoch: replica.epoch(),
        member_states: member_states(replica),
        reconfiguration_at_seq: replica.governance().pending.as_ref().map(|(_, at)| *at),
        epoch_started_at_seq: replica.governance().epoch_started_at,
    }
}

/// Every current and removed member, with its state as the replicated governance has it.
fn member_states(replica: &Replica) -> Vec<proto::MemberState> {
    let governance = replica.governance();
    let mut states: Vec<proto::MemberState> = governance
        .members
        .iter()
        .map(|m| {
            let quarantine = governance
                .quarantined
                .get(&m.id)
                .filter(|_| governance.is_quarantined(m.id));
            proto::MemberState {
                id: m.id,
                public_key: m.public_key.to_hex(),
                state: if quarantine.is_some() { "quarantined" } else { "active" }.into(),
                quarantined_until_unix_ms: quarantine.map(|q| q.until_ms),
                quarantine_fault: quarantine.map_or(String::new(), |q| q.fault.name().into()),
                quarantined_at_seq: quarantine.map(|q| q.since_seq),
                address: governance.addresses.get(&m.id).cloned().unwrap_or_default(),
            }
        })
        .collect();
    states.extend(governance.retired.iter().map(|id| proto::MemberState {
        id: *id,
        state: "removed".into(),
        ..Default::default()
    }));
    states
}

fn send(link: &PeerLink, bytes: &[u8], kind: &'static str, metrics: &Metrics) {
    metrics
        .messages_out
        .get_or_create(&KindLabel { kind: kind.into() })
        .inc();
    link.send(bytes.to_vec());
}

fn detection_proto(d: &Detection, replica: &Replica, history: &History) -> proto::Detection {
    let member = d.first.member;
    let governance = replica.governance();
    let quarantine = governance.quarantined.get(&member);
    let action = if governance.retired.contains(&member) {
        "removed"
    } else if governance.is_quarantined(member) {
        "quarantined"
    } else if quarantine.is_some() {
        "quarantine_expired"
    } else {
        "logged"
    };
    proto::Detection {
        action: action.into(),
        quarantine_expires_unix_ms: quarantine.map(|q| q.until_ms),
        quarantined_unix_ms: history.quarantine_of(member).map(|q| q.decided_unix_ms),
        member: d.first.member,
        fault_type: d.first.fault.name().into(),
        detection_method: d.first.method().into(),
        message: d.first.message.clone(),
        sequence: d.first.sequence,
        transaction: d.first.transaction.clone(),
        proven: d.first.proof.is_some(),
        expected: d.first.expected.clone(),
        received: d.first.received.clone(),
        first_seen_unix_ms: d.first_seen_unix_ms,
        last_seen_unix_ms: d.last_seen_unix_ms,
        occurrences: d.occurrences,
    }
}

fn view_change_proto(r: &ViewChangeRecord) -> proto::ViewChangeRecord {
    proto::ViewChangeRecord {
        view: r.view,
        old_primary: r.old_primary,
        new_primary: r.new_primary,
        started_unix_ms: r.started_unix_ms,
        installed_unix_ms: r.installed_unix_ms,
        reason: r.reason.clone().unwrap_or_default(),
        triggered_by: r.triggered_by.clone(),
        quorum_met: r.quorum_met,
        batches_recovered: r.batches_recovered,
        transfers_recovered: r.transfers_recovered,
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Executed { .. } => {}
        Event::ViewChangeStarted {
            from_view,
            to_view,
            reason,
        } => {
            tracing::warn!(from_view, to_view, ?reason, "view change started")
        }
        Event::NewViewInstalled {
            view,
            primary,
            old_primary,
            batches_recovered,
            ..
        } => {
            tracing::info!(view, primary, old_primary, batches_recovered, "new view installed")
        }
        Event::CheckpointStable { seq } => tracing::debug!(seq, "checkpoint stable"),
        Event::StateTransferred { seq } => tracing::info!(seq, "caught up by state transfer"),
        Event::StateDiverged { seq } => tracing::error!(seq, "executed state differs from the quorum's"),
        Event::Rejoined { view } => {
            tracing::info!(
                view,
                "votes again in the view it had left alone: a quorum holds its withdrawal"
            )
        }
        Event::DivergentCheckpoint { checkpoint, .. } => {
            let (member, seq) = (checkpoint.from, checkpoint.body.seq);
            tracing::warn!(member, seq, "a member signed a divergent checkpoint")
        }
        // The host logs what they did.
        Event::Decided { .. } | Event::EpochStarted { .. } => {}
    }
}
