//! gRPC between replicas and for clients (tonic).
//!
//! Each replica keeps one long-lived client stream to every peer and sends its protocol messages down it,
//! each already signed and encoded; a peer that is down is retried with back-off, and a peer that is slow
//! only loses its own queued messages (retransmission recovers them), never holds up the others.
//! Messages are bounded in size and verified on the stream's task before they reach the protocol loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};

use bft_client::drill::Action;
use bft_client::{proto, unix_ms};
use bft_core::crypto::Digest;
use bft_core::crypto::KeyPair;
use bft_core::evidence::Evidence;
use bft_core::faults::{Fault, FaultDrill};
use bft_core::governance::Operation;
use bft_core::history::{MessageSummary, Observation};
use bft_core::ledger::SignedTransfer;
use bft_core::messages::{MAX_MESSAGE_BYTES, Message, ReplicaId, Reply, Signable, Signed};
use bft_core::verify::{Rejection, SharedMembership, Verified, Verifier};

use proto::replica_client::ReplicaClient;
use proto::replica_server::Replica as ReplicaRpc;

/// A signed reply (`Signed<Reply>`), encoded once and shared by every waiter it answers.
pub type EncodedReply = Arc<[u8]>;

/// Where a session's answers go: its signed replies and refusals.
pub type SessionReplies = mpsc::UnboundedSender<Result<proto::SessionResponse, Status>>;

/// Where the protocol loop answers a submitted transfer.
pub enum ReplyTo {
    /// A unary `Submit`: the signed reply, or why the transfer was refused.
    Once(oneshot::Sender<Result<EncodedReply, Rejection>>),
    /// A transfer sent on a `Session` stream.
    Session { digest: Digest, replies: SessionReplies },
}

impl ReplyTo {
    pub fn refuse(self, rejection: Rejection) {
        match self {
            ReplyTo::Once(respond) => {
                let _ = respond.send(Err(rejection));
            }
            ReplyTo::Session { digest, replies } => {
                let refusal = proto::Refusal {
                    digest: digest.0.to_vec(),
                    // The words a unary Submit's error carries, so clients compare refusals alike.
                    reason: rejection.to_string(),
                };
                let _ = replies.send(Ok(proto::SessionResponse {
                    reply: Vec::new(),
                    refusal: Some(refusal),
                }));
            }
        }
    }

    /// Sends `reply`, unless this waiter's session already got it: one batch reply answers all of a session's
    /// transfers in the batch, so it goes to each session once (`answered` holds the sessions it went to).
    pub fn answer(self, reply: &EncodedReply, answered: &mut Vec<SessionReplies>) {
        match self {
            ReplyTo::Once(respond) => {
                let _ = respond.send(Ok(reply.clone()));
            }
            ReplyTo::Session { replies, .. } => {
                if answered.iter().any(|session| session.same_channel(&replies)) {
                    return;
                }
                let _ = replies.send(Ok(proto::SessionResponse {
                    reply: reply.to_vec(),
                    refusal: None,
                }));
                answered.push(replies);
            }
        }
    }

    /// Whether the client stopped waiting.
    pub fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Once(respond) => respond.is_closed(),
            ReplyTo::Session { replies, .. } => replies.is_closed(),
        }
    }
}

/// What the gRPC handlers ask of the protocol loop.
pub enum Command {
    Message(Verified<Message>),
    Timer(bft_core::replica::Timer),
    Submit {
        tx: Verified<SignedTransfer>,
        respond: ReplyTo,
    },
    Status {
        respond: oneshot::Sender<proto::StatusResponse>,
    },
    Account {
        account: bft_core::crypto::PublicKey,
        respond: oneshot::Sender<proto::AccountResponse>,
    },
    /// A drill: leave `leave_view` for the next view (nothing to do for a replica already past it).
    ForceViewChange {
        leave_view: bft_core::messages::View,
        respond: oneshot::Sender<proto::ViewChangeEvent>,
    },
    /// Start (or with `None` stop) a fault drill; answered with the drill now running.
    InjectFault {
        drill: Option<FaultDrill>,
        respond: oneshot::Sender<String>,
    },
    /// A peer's message was refused in a way that shows its sender misbehaving.
    Observed(Box<Observation>),
    Detections {
        respond: oneshot::Sender<proto::DetectionsResponse>,
    },
    ViewChanges {
        respond: oneshot::Sender<proto::ViewChangesResponse>,
    },
    /// A governance operation from a client (an administrator's reconfiguration); answered with the epoch, or why
    /// it was refused.
    Propose {
        op: Box<Operation>,
        respond: oneshot::Sender<Result<u64, Rejection>>,
    },
}

/// The first frame of a peer's stream: who sends, to whom, when. Signed by the sender, so that messages on the
/// stream are known to come from it: a message in its own name with a bad signature is its fault, and a message in
/// another member's name is refused (it could be a forgery meant to frame that member).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub to: ReplicaId,
    /// Random: a recorded hello cannot open a second stream.
    pub nonce: u64,
    pub unix_ms: u64,
}

impl Signable for Hello {
    const DOMAIN: &'static str = "pbft/hello";
}

/// How far a hello's time may be from the receiver's clock.
const HELLO_SKEW_MS: u64 = 60_000;

/// Hellos accepted recently, so none is accepted twice.
#[derive(Default)]
pub struct SeenHellos(std::sync::Mutex<std::collections::VecDeque<(ReplicaId, u64, u64)>>);

impl SeenHellos {
    const KEPT: usize = 4096;

    fn first_time(&self, from: ReplicaId, hello: &Hello) -> bool {
        let mut seen = self.0.lock().expect("no panic while holding the lock");
        if seen.iter().any(|(f, n, _)| *f == from && *n == hello.nonce) {
            return false;
        }
        if seen.len() >= Self::KEPT {
            seen.pop_front();
        }
        seen.push_back((from, hello.nonce, hello.unix_ms));
        true
    }
}

/// How long a client's submit waits for its transfer to execute before giving up.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a gRPC frame adds around one protocol message (the hello, field tags and lengths): the transport's limits
/// are the message limit plus this, so that the protocol's own check (`Message::decode`), which refuses one message
/// and keeps the stream, is the one that applies.
pub const PEER_FRAME_BYTES: usize = 64 << 10;

pub struct Service {
    pub commands: mpsc::Sender<Command>,
    /// Whether fault drills (a forced view change, injected faults) are accepted: only where allowed, and only
    /// signed with the administrator key.
    pub drills: bft_client::drill::Guard,
    pub metrics: crate::metrics::Metrics,
    /// Each stream verifies with its own copy, so streams verify in parallel.
    /// Submitted transfers on their way to be verified in batches (`verify_submits`).
    pub submits: mpsc::Sender<(SignedTransfer, ReplyTo)>,
    pub make_verifier: Box<dyn Fn() -> Verifier + Send + Sync>,
    /// The membership in force (it changes with each epoch).
    pub membership: SharedMembership,
    pub id: ReplicaId,
    pub seen_hellos: SeenHellos,
    pub max_message_bytes: usize,
}

impl Service {
    /// Checks a stream's hello; the member it authenticates.
    fn authenticate(&self, hello: &[u8]) -> Result<ReplicaId, Status> {
        let hello: Signed<Hello> = postcard::from_bytes(hello)
            .map_err(|_| Status::unauthenticated("the stream must open with a signed hello"))?;
        let membership = self.membership.get();
        let key = membership
            .key(hello.from)
            .ok_or_else(|| Status::unauthenticated(format!("member {} is not a member", hello.from)))?;
        if !key.verify(&hello.signing_bytes(), &hello.signature) {
            return Err(Status::unauthenticated("the hello's signature does not verify"));
        }
        if hello.body.to != self.id {
            return Err(Status::unauthenticated("the hello is addressed to another member"));
        }
        if hello.body.unix_ms.abs_diff(unix_ms()) > HELLO_SKEW_MS {
            return Err(Status::unauthenticated(
                "the hello's time is too far from this replica's clock",
            ));
        }
        if !self.seen_hellos.first_time(hello.from, &hello.body) {
            return Err(Status::unauthenticated("the hello was used before"));
        }
        Ok(hello.from)
    }
}

#[tonic::async_trait]
impl ReplicaRpc for Service {
    async fn deliver(
        &self,
        request: Request<tonic::Streaming<proto::PeerMessage>>,
    ) -> Result<Response<proto::DeliverSummary>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::unauthenticated("the stream must open with a signed hello"))?;
        let peer = self.authenticate(&first.hello)?;
        let mut verifier = (self.make_verifier)();
        let (mut received, mut refused) = (0u64, 0u64);
        while let Some(item) = stream.message().await? {
            received += 1;
            let verified = match Message::decode(&item.message, self.max_message_bytes) {
                Ok(message) if !bft_core::detection::may_carry(peer, &message) => Err((
                    "impersonation",
                    format!("member {peer} sent a message in {}'s name", message.sender()),
                )),
                Ok(message) => {
                    let summary = MessageSummary::of(&message);
                    self.metrics
                        .messages_in
                        .get_or_create(&crate::metrics::KindLabel {
                            kind: summary.kind.into(),
                        })
                        .inc();
                    verifier.message_or_back(message).map_err(|refused| {
                        let (rejection, message) = *refused;
                        let refusal = bft_core::detection::Refusal::Verification {
                            message,
                            carrier: peer,
                            membership: verifier.membership(),
                            epoch_started_at: verifier.epoch_started_at(),
                            executed: verifier.executed(),
                        };
                        if let Some(observation) =
                            bft_core::detection::observation_of_refusal(&summary, &rejection, refusal)
                        {
                            // Best effort: under a flood the loop's queue is full and the count is enough.
                            let _ = self.commands.try_send(Command::Observed(Box::new(observation)));
                        }
                        (rejection.label(), rejection.to_string())
                    })
                }
                Err(e) => Err(("malformed", e.to_string())),
            };
            match verified {
                Ok(message) => {
                    if self.commands.send(Command::Message(message)).await.is_err() {
                        return Err(Status::unavailable("replica is shutting down"));
                    }
                }
                Err((label, reason)) => {
                    refused += 1;
                    self.metrics.refused(label);
                    tracing::debug!(%reason, "refused a peer message");
                }
            }
        }
        Ok(Response::new(proto::DeliverSummary { received, refused }))
    }

    async fn submit(&self, request: Request<proto::SubmitRequest>) -> Result<Response<proto::SubmitResponse>, Status> {
        let tx = decode_transfer(&request.into_inner().transfer)?;
        let (respond, answer) = oneshot::channel();
        self.submits
            .send((tx, ReplyTo::Once(respond)))
            .await
            .map_err(|_| Status::unavailable("replica is shutting down"))?;
        let reply = tokio::time::timeout(SUBMIT_TIMEOUT, answer)
            .await
            .map_err(|_| Status::deadline_exceeded("not executed in time"))?
            .map_err(|_| Status::unavailable("replica is shutting down"))?
            .map_err(rejection_status)?;
        Ok(Response::new(proto::SubmitResponse { reply: reply.to_vec() }))
    }

    type SessionStream = UnboundedReceiverStream<Result<proto::SessionResponse, Status>>;

    async fn session(
        &self,
        request: Request<tonic::Streaming<proto::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut incoming = request.into_inner();
        // Unbounded so that the protocol loop never waits on a client; a client has at most the transfers it
        // sent waiting for an answer, and replies are per batch.
        let (replies, outgoing) = mpsc::unbounded_channel();
        let submits = self.submits.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = incoming.message().await {
                for bytes in frame.transfers {
                    let tx = match decode_transfer(&bytes) {
                        Ok(tx) => tx,
                        Err(status) => {
                            // Without a transfer there is no digest to refuse: end the session instead.
                            let _ = replies.send(Err(status));
                            return;
                        }
                    };
                    let respond = ReplyTo::Session {
                        digest: tx.digest(),
                        replies: replies.clone(),
                    };
                    if submits.send((tx, respond)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(outgoing)))
    }

    async fn propose(&self, request: Request<proto::ProposeRequest>) -> Result<Response<proto::ProposeAnswer>, Status> {
        let bytes = request.into_inner().operation;
        if bytes.len() > self.max_message_bytes {
            return Err(Status::invalid_argument("the operation is too large"));
        }
        let op: Operation = postcard::from_bytes(&bytes)
            .map_err(|e| Status::invalid_argument(format!("the operation does not decode: {e}")))?;
        let answer = self.ask(|respond| Command::Propose {
            op: Box::new(op),
            respond,
        });
        match answer.await? {
            Ok(epoch) => Ok(Response::new(proto::ProposeAnswer { epoch })),
            Err(rejection) => Err(Status::failed_precondition(rejection.to_string())),
        }
    }

    async fn status(&self, _: Request<proto::StatusRequest>) -> Result<Response<proto::StatusResponse>, Status> {
        self.ask(|respond| Command::Status { respond }).await.map(Response::new)
    }

    async fn force_view_change(
        &self,
        request: Request<proto::ForceViewChangeRequest>,
    ) -> Result<Response<proto::ViewChangeEvent>, Status> {
        let request = request.into_inner();
        let leave_view = request.leave_view;
        self.admit_drill(Action::ForceViewChange { leave_view }, request.authorization.as_ref())?;
        let event = self.ask(|respond| Command::ForceViewChange { leave_view, respond });
        tokio::time::timeout(SUBMIT_TIMEOUT, event)
            .await
            .map_err(|_| Status::deadline_exceeded("no new view"))?
            .map(Response::new)
    }

    async fn inject_fault(
        &self,
        request: Request<proto::InjectFaultRequest>,
    ) -> Result<Response<proto::InjectFaultResponse>, Status> {
        let request = request.into_inner();
        // Refused before its content is read when it could not be carried out anyway.
        self.drills
            .precheck(request.authorization.as_ref())
            .map_err(|refusal| Status::permission_denied(refusal.to_string()))?;
        let drill = if request.clear {
            None
        } else {
            let fault: Fault = request.fault.parse().map_err(Status::invalid_argument)?;
            Some(FaultDrill::new(fault, request.probability).map_err(Status::invalid_argument)?)
        };
        self.admit_drill(Action::InjectFault(drill), request.authorization.as_ref())?;
        let active = self.ask(|respond| Command::InjectFault { drill, respond }).await?;
        Ok(Response::new(proto::InjectFaultResponse { active }))
    }

    async fn detections(
        &self,
        _: Request<proto::DetectionsRequest>,
    ) -> Result<Response<proto::DetectionsResponse>, Status> {
        self.ask(|respond| Command::Detections { respond })
            .await
            .map(Response::new)
    }

    async fn view_changes(
        &self,
        _: Request<proto::ViewChangesRequest>,
    ) -> Result<Response<proto::ViewChangesResponse>, Status> {
        self.ask(|respond| Command::ViewChanges { respond })
            .await
            .map(Response::new)
    }

    async fn report_replies(
        &self,
        request: Request<proto::ReplyEvidence>,
    ) -> Result<Response<proto::ReplyEvidenceAnswer>, Status> {
        let encoded = request.into_inner().replies;
        if encoded.len() > bft_core::evidence::MAX_EVIDENCE_REPLIES {
            return Err(Status::invalid_argument("too many replies"));
        }
        let replies = encoded
            .iter()
            .map(|bytes| postcard::from_bytes::<Signed<Reply>>(bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("malformed reply: {e}")))?;
        let membership = self.membership.get();
        let found = tokio::task::block_in_place(|| Evidence::of_replies(&membership, &replies))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let observations: Vec<Observation> = found.into_iter().map(Observation::proven).collect();
        let proven = observations.iter().map(|o| o.member).collect();
        for observation in observations {
            let _ = self.commands.send(Command::Observed(Box::new(observation))).await;
        }
        Ok(Response::new(proto::ReplyEvidenceAnswer { proven }))
    }

    async fn account(
        &self,
        request: Request<proto::AccountRequest>,
    ) -> Result<Response<proto::AccountResponse>, Status> {
        let account = bft_core::crypto::PublicKey::from_slice(&request.into_inner().account)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.ask(|respond| Command::Account { account, respond })
            .await
            .map(Response::new)
    }
}

impl Service {
    /// A drill is carried out only if allowed here and signed by the administrator for this replica, recently,
    /// and never before.
    fn admit_drill(&self, action: Action, authorization: Option<&proto::DrillAuthorization>) -> Result<(), Status> {
        match self.drills.admit(action, authorization, unix_ms()) {
            Ok(order) => {
                tracing::warn!(?action, nonce = order.nonce, "fault drill ordered by the administrator");
                Ok(())
            }
            Err(refusal) => {
                tracing::warn!(?action, %refusal, "refused a fault drill");
                Err(Status::permission_denied(refusal.to_string()))
            }
        }
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (respond, answer) = oneshot::channel();
        self.commands
            .send(command(respond))
            .await
            .map_err(|_| Status::unavailable("replica is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("replica is shutting down"))
    }
}

/// Verifies submitted transfers in batches (a batch of 64 costs about half as much per signature as 64 single
/// checks) and hands the valid ones to the protocol loop; the others are answered with their rejection.
pub async fn verify_submits(
    mut verifier: Verifier,
    mut inbox: mpsc::Receiver<(SignedTransfer, ReplyTo)>,
    commands: mpsc::Sender<Command>,
    metrics: crate::metrics::Metrics,
) {
    const BATCH: usize = 64;
    let mut batch = Vec::with_capacity(BATCH);
    while inbox.recv_many(&mut batch, BATCH).await > 0 {
        let (txs, answers): (Vec<SignedTransfer>, Vec<ReplyTo>) = batch.drain(..).unzip();
        // A large batch is worth handing this worker's other tasks away; a few signatures are not.
        let results = if txs.len() > 8 {
            tokio::task::block_in_place(|| verifier.requests(txs))
        } else {
            verifier.requests(txs)
        };
        for (result, respond) in results.into_iter().zip(answers) {
            match result {
                Ok(tx) => {
                    if commands.send(Command::Submit { tx, respond }).await.is_err() {
                        return;
                    }
                }
                Err(rejection) => {
                    metrics.refused(rejection.label());
                    respond.refuse(rejection);
                }
            }
        }
    }
}

fn decode_transfer(bytes: &[u8]) -> Result<SignedTransfer, Status> {
    if bytes.len() > 1024 {
        return Err(Status::invalid_argument("transfer too large"));
    }
    postcard::from_bytes(bytes).map_err(|e| Status::invalid_argument(format!("malformed transfer: {e}")))
}

fn rejection_status(rejection: Rejection) -> Status {
    match rejection {
        Rejection::Busy => Status::resource_exhausted(rejection.to_string()),
        Rejection::Transfer(_) => Status::failed_precondition(rejection.to_string()),
        _ => Status::invalid_argument(rejection.to_string()),
    }
}

/// The sending side of the link to one peer: messages go into a bounded queue; when it is full they are
/// dropped (the peer is slow or down, and will ask again with its STATUS).
#[derive(Clone)]
pub struct PeerLink {
    queue: mpsc::Sender<Vec<u8>>,
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PeerLink {
    const QUEUE: usize = 8192;

    /// Starts the task that keeps a stream open to `address` (host:port), each opened with a hello signed as
    /// member `me`.
    pub fn start(peer: ReplicaId, address: String, me: ReplicaId, key: KeyPair) -> PeerLink {
        let (queue, outgoing) = mpsc::channel(Self::QUEUE);
        let connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hello = move || {
            let body = Hello {
                to: peer,
                nonce: rand::random(),
                unix_ms: unix_ms(),
            };
            postcard::to_allocvec(&Signed::new(me, body, &key)).expect("encoding to memory cannot fail")
        };
        tokio::spawn(run_link(peer, address, outgoing, connected.clone(), hello));
        PeerLink { queue, connected }
    }

    /// Whether a stream to the peer is open.
    pub fn connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn send(&self, message: Vec<u8>) {
        // A message peers would refuse is not sent: on the stream it would end the stream, and everything queued
        // behind it with it. The core builds none (its largest, a state chunk, is bounded well below).
        if message.len() > MAX_MESSAGE_BYTES {
            tracing::warn!(
                bytes = message.len(),
                max = MAX_MESSAGE_BYTES,
                "not sending an oversized message"
            );
            return;
        }
        let _ = self.queue.try_send(message);
    }
}

async fn run_link(
    peer: ReplicaId,
    address: String,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hello: impl Fn() -> Vec<u8> + Send + 'static,
) {
    use std::sync::atomic::Ordering;
    let mut backoff = Duration::from_millis(50);
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
            Ok(endpoint) => endpoint.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true),
            Err(error) => {
                tracing::error!(peer, %address, %error, "peer address is invalid");
                return;
            }
        };
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // Messages queued meanwhile are stale by the time the peer is back; STATUS recovers them.
                while outgoing.try_recv().is_ok() {}
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        connected.store(true, Ordering::Relaxed);
        let mut client = ReplicaClient::new(channel).max_encoding_message_size(MAX_MESSAGE_BYTES + PEER_FRAME_BYTES);
        let (stream_tx, stream_rx) = mpsc::channel::<proto::PeerMessage>(1024);
        let opening = proto::PeerMessage {
            message: Vec::new(),
            hello: hello(),
        };
        if stream_tx.send(opening).await.is_err() {
            continue;
        }
        let call = tokio::spawn(async move { client.deliver(ReceiverStream::new(stream_rx)).await });
        tracing::debug!(peer, %address, "stream to peer open");
        loop {
            let message = match pending.take() {
                Some(message) => message,
                None => match outgoing.recv().await {
                    Some(message) => message,
                    None => return, // the replica is shutting down
                },
            };
            let frame = proto::PeerMessage {
                message,
                hello: Vec::new(),
            };
            if let Err(error) = stream_tx.send(frame).await {
                pending = Some(error.0.message);
                break;
            }
        }
        connected.store(false, Ordering::Relaxed);
        let _ = call.await;
        tracing::debug!(peer, %address, "stream to peer closed; reconnecting");
    }
}
