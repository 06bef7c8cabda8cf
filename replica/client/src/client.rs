//! A client of a cluster: submits signed transfers to every replica and accepts an outcome once F+1 replicas
//! sent matching signed replies (one of them is honest).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::drill;
use crate::proto::ProposeRequest;
use crate::proto::replica_client::ReplicaClient;
use crate::proto::{
    self, AccountRequest, DetectionsRequest, DetectionsResponse, ForceViewChangeRequest, InjectFaultRequest,
    StatusRequest, StatusResponse, SubmitRequest, ViewChangeEvent, ViewChangesRequest, ViewChangesResponse,
};
use bft_core::config::max_failures;
use bft_core::crypto::{Digest, KeyPair, PublicKey};
use bft_core::faults::FaultDrill;
use bft_core::governance::{NewMember, Operation, Reconfiguration, SignedReconfiguration};
use bft_core::ledger::{SignedTransfer, TxOutcome};
use bft_core::messages::{ReplicaId, Reply, Signed, View};
use bft_core::verify::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("replica {id} at {address}: {error}")]
    Connect {
        id: ReplicaId,
        address: String,
        error: tonic::transport::Error,
    },
    /// F+1 replicas refused the transfer for the same reason.
    #[error("refused: {0}")]
    Refused(String),
    #[error("no F+1 matching replies: {0}")]
    NoQuorum(String),
}

/// One replica the client talks to.
#[derive(Clone, Debug)]
pub struct Replica {
    pub id: ReplicaId,
    pub address: String,
    pub public_key: PublicKey,
}

#[derive(Clone)]
pub struct Client {
    replicas: Vec<(Replica, ReplicaClient<Channel>)>,
    f: usize,
}

impl Client {
    /// Prepares connections to every replica (they are made lazily, so replicas that are down do not matter).
    pub fn new(replicas: Vec<Replica>) -> Result<Client, ClientError> {
        let f = max_failures(replicas.len());
        let mut clients = Vec::with_capacity(replicas.len());
        for replica in replicas {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", replica.address))
                .map_err(|error| ClientError::Connect {
                    id: replica.id,
                    address: replica.address.clone(),
                    error,
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true);
            clients.push((replica, ReplicaClient::new(endpoint.connect_lazy())));
        }
        Ok(Client { replicas: clients, f })
    }

    /// Submits to every replica; the outcome F+1 of them signed.
    pub async fn submit(&self, tx: SignedTransfer) -> Result<TxOutcome, ClientError> {
        let digest = tx.digest();
        let bytes = postcard::to_allocvec(&tx).expect("encoding to memory cannot fail");
        let mut calls = JoinSet::new();
        for (replica, client) in &self.replicas {
            let mut client = client.clone();
            let request = SubmitRequest {
                transfer: bytes.clone(),
            };
            let replica = replica.clone();
            calls.spawn(async move { (replica, client.submit(request).await) });
        }
        let mut outcomes: HashMap<TxOutcome, usize> = HashMap::new();
        let mut refusals: HashMap<String, usize> = HashMap::new();
        while let Some(joined) = calls.join_next().await {
            let Ok((replica, result)) = joined else { continue };
            match result {
                Ok(response) => {
                    let Ok(reply) = postcard::from_bytes::<Signed<Reply>>(&response.into_inner().reply) else {
                        continue;
                    };
                    let genuine =
                        reply.from == replica.id && replica.public_key.verify(&reply.signing_bytes(), &reply.signature);
                    let outcome = reply.body.outcomes.iter().find(|(d, _)| *d == digest).map(|(_, o)| *o);
                    if let (true, Some(outcome)) = (genuine, outcome) {
                        let count = outcomes.entry(outcome).or_default();
                        *count += 1;
                        if *count > self.f {
                            return Ok(outcome);
                        }
                    }
                }
                // No answer from this replica (down, unreachable, too slow): it neither agrees nor refuses.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unknown
                    ) => {}
                Err(status) => {
                    let count = refusals.entry(status.message().to_string()).or_default();
                    *count += 1;
                    if *count > self.f {
                        return Err(ClientError::Refused(status.message().to_string()));
                    }
                }
            }
        }
        Err(ClientError::NoQuorum(format!(
            "outcomes {outcomes:?}, refusals {refusals:?}"
        )))
    }

    /// Opens a session stream to every replica (see `Session`); the streams close when the last clone of the
    /// session is dropped.
    pub fn session(&self) -> Session {
        let (links, queues): (Vec<_>, Vec<_>) = self.replicas.iter().map(|_| mpsc::unbounded_channel()).unzip();
        let votes = Arc::new(Votes {
            pending: Mutex::new(HashMap::new()),
            f: self.f,
            n: self.replicas.len(),
            replicas: self.replicas.clone(),
            links: links.clone(),
            reported: Mutex::new(HashSet::new()),
            decided: Mutex::new(Decided::default()),
        });
        for ((replica, client), queue) in self.replicas.iter().zip(queues) {
            tokio::spawn(run_session_link(replica.clone(), client.clone(), queue, votes.clone()));
        }
        Session { links, votes }
    }

    /// The highest nonce any replica reports for `account` (replicas that are behind report lower ones).
    pub async fn account_nonce(&self, account: &PublicKey) -> Option<u64> {
        let mut best = None;
        for (_, client) in &self.replicas {
            let mut client = client.clone();
            let request = AccountRequest {
                account: account.as_bytes().to_vec(),
            };
            if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(2), client.account(request)).await {
                let answer = answer.into_inner();
                if answer.exists {
                    best = best.max(Some(answer.nonce));
                }
            }
        }
        best
    }

    /// Asks every replica to leave the view the cluster is in now (a drill, signed with the administrator key);
    /// the first report of a later view.
    pub async fn force_view_change(&self, admin: &KeyPair) -> Result<ViewChangeEvent, ClientError> {
        let leave_view = self.view().await;
        self.force_view_change_leaving(admin, leave_view).await
    }

    /// Asks every replica to leave `leave_view` (a drill, signed with the administrator key): the cluster moves
    /// one view, since a replica already past `leave_view` does not move again. The first report of a later
    /// view.
    pub async fn force_view_change_leaving(
        &self,
        admin: &KeyPair,
        leave_view: View,
    ) -> Result<ViewChangeEvent, ClientError> {
        let action = drill::Action::ForceViewChange { leave_view };
        let mut calls = JoinSet::new();
        for (replica, client) in &self.replicas {
            let mut client = client.clone();
            let request = ForceViewChangeRequest {
                leave_view,
                authorization: Some(drill::Order::new(replica.id, action).sign(admin)),
            };
            calls.spawn(async move { client.force_view_change(request).await });
        }
        let mut errors = Vec::new();
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok(Ok(event)) if event.get_ref().view > leave_view => return Ok(event.into_inner()),
                Ok(Ok(event)) => errors.push(format!("still in view {}", event.get_ref().view)),
                Ok(Err(status)) => errors.push(status.message().to_string()),
                Err(error) => errors.push(error.to_string()),
            }
        }
        errors.sort();
        errors.dedup();
        Err(ClientError::Refused(errors.join("; ")))
    }

    /// The view at least F+1 replicas reached (one honest replica did, so the cluster is there or beyond).
    pub async fn view(&self) -> View {
        let mut views: Vec<View> = self
            .statuses()
            .await
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| s.view))
            .collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        views.get(self.f).copied().unwrap_or(0)
    }

    /// Every replica's status; `None` for one that does not answer.
    pub async fn statuses(&self) -> Vec<(ReplicaId, Option<StatusResponse>)> {
        self.ask_each(|mut c| async move { c.status(StatusRequest {}).await })
            .await
    }

    /// What each replica detected in its peers; `None` for one that does not answer.
    pub async fn detections(&self) -> Vec<(ReplicaId, Option<DetectionsResponse>)> {
        self.ask_each(|mut c| async move { c.detections(DetectionsRequest {}).await })
            .await
    }

    /// The view changes each replica went through; `None` for one that does not answer.
    pub async fn view_changes(&self) -> Vec<(ReplicaId, Option<ViewChangesResponse>)> {
        self.ask_each(|mut c| async move { c.view_changes(ViewChangesRequest {}).await })
            .await
    }

    /// Starts a fault drill on one member (`None`: stops it), signed with the administrator key; the drill it
    /// now runs.
    pub async fn inject_fault(
        &self,
        admin: &KeyPair,
        member: ReplicaId,
        drill: Option<FaultDrill>,
    ) -> Result<String, ClientError> {
        let (_, client) = self
            .replicas
            .iter()
            .find(|(r, _)| r.id == member)
            .ok_or_else(|| ClientError::Refused(format!("{member} is not a member")))?;
        let request = InjectFaultRequest {
            fault: drill.map_or(String::new(), |d| d.fault.name().to_string()),
            probability: drill.map_or(0.0, |d| d.probability),
            clear: drill.is_none(),
            authorization: Some(drill::Order::new(member, drill::Action::InjectFault(drill)).sign(admin)),
        };
        let answer = client.clone().inject_fault(request).await;
        answer
            .map(|a| a.into_inner().active)
            .map_err(|status| ClientError::Refused(status.message().to_string()))
    }

    /// The epoch at least F+1 replicas are in: one honest replica is, so the cluster reached it.
    pub async fn epoch(&self) -> u64 {
        let mut epochs: Vec<u64> = self
            .statuses()
            .await
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| s.epoch))
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        epochs.get(self.f).copied().unwrap_or(0)
    }

    /// Hands a governance operation to every replica; the epoch they are in, once one holds it for ordering.
    pub async fn propose(&self, op: &Operation) -> Result<u64, ClientError> {
        let operation = postcard::to_allocvec(op).expect("encoding to memory cannot fail");
        let answers = self
            .ask_each(|mut c| {
                let operation = operation.clone();
                async move { c.propose(ProposeRequest { operation }).await }
            })
            .await;
        if let Some(epoch) = answers.iter().find_map(|(_, a)| a.as_ref().map(|a| a.epoch)) {
            return Ok(epoch);
        }
        // Every replica refused: ask one for why.
        let (_, client) = self
            .replicas
            .first()
            .ok_or(ClientError::Refused("no replicas".into()))?;
        let reason = match client.clone().propose(ProposeRequest { operation }).await {
            Ok(_) => "refused, then accepted".to_string(),
            Err(status) => status.message().to_string(),
        };
        Err(ClientError::Refused(reason))
    }

    /// Asks the cluster to remove and add members, signed with the administrator key, and waits until the new
    /// epoch is in force and every added member takes part in it (it reports the new epoch and has executed up to
    /// where it began).
    pub async fn reconfigure(
        &self,
        admin: &KeyPair,
        remove: Vec<ReplicaId>,
        add: Vec<NewMember>,
        timeout: Duration,
    ) -> Result<Reconfigured, ClientError> {
        let started = std::time::Instant::now();
        let epoch = self.epoch().await;
        let added: Vec<ReplicaId> = add.iter().map(|m| m.id).collect();
        let body = Reconfiguration {
            epoch,
            remove,
            add,
            at_ms: crate::unix_ms(),
        };
        let op = Operation::Reconfigure(SignedReconfiguration::sign(body, admin));
        self.propose(&op).await?;
        loop {
            let statuses = self.statuses().await;
            let in_new_epoch = statuses
                .iter()
                .filter(|(_, s)| s.as_ref().is_some_and(|s| s.epoch > epoch))
                .count();
            let started_at = statuses
                .iter()
                .filter_map(|(_, s)| s.as_ref())
                .filter(|s| s.epoch > epoch)
                .filter_map(|s| s.epoch_started_at_seq)
                .min();
            let joined = added.iter().all(|id| {
                statuses.iter().any(|(r, s)| {
                    r == id
                        && s.as_ref()
                            .is_some_and(|s| s.epoch > epoch && started_at.is_some_and(|at| s.last_executed >= at))
                })
            });
            if in_new_epoch > self.f && joined {
                return Ok(Reconfigured {
                    epoch: epoch + 1,
                    took: started.elapsed(),
                });
            }
            if started.elapsed() > timeout {
                return Err(ClientError::NoQuorum(format!(
                    "epoch {} not in force with every added member after {timeout:?} ({in_new_epoch} replicas in it)",
                    epoch + 1
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks every replica in turn, each within two seconds.
    async fn ask_each<T, F, Fut>(&self, ask: F) -> Vec<(ReplicaId, Option<T>)>
    where
        F: Fn(ReplicaClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut result = Vec::new();
        for (replica, client) in &self.replicas {
            let answer = tokio::time::timeout(Duration::from_secs(2), ask(client.clone())).await;
            result.push((replica.id, answer.ok().and_then(|a| a.ok()).map(|a| a.into_inner())));
        }
        result
    }
}

/// A reconfiguration in force.
#[derive(Clone, Debug)]
pub struct Reconfigured {
    pub epoch: u64,
    /// From the request to the added members taking part.
    pub took: Duration,
}

/// How long a transfer sent on a session waits for F+1 matching answers.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The most transfers put in one frame of a session stream.
const FRAME_MAX: usize = 256;

/// A client's long-lived stream to every replica: transfers go out in frames, and each replica streams back
/// its signed batch replies (one per batch, however many of the session's transfers it covers) and refusals.
/// Each reply's signature is verified once, then counted for every transfer it answers. Cheaper than a unary
/// `Submit` per transfer per replica, which costs an HTTP/2 request and a signature check each.
#[derive(Clone)]
pub struct Session {
    /// Encoded transfers on their way to each replica.
    links: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    votes: Arc<Votes>,
}

/// The transfers of a session awaiting F+1 matching answers.
struct Votes {
    pending: Mutex<HashMap<Digest, Pending>>,
    f: usize,
    n: usize,
    /// The replicas, in the order of `links`.
    replicas: Vec<(Replica, ReplicaClient<Channel>)>,
    links: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    /// (member, sequence) of contradicting replies already reported, so a lying batch reply is reported once.
    reported: Mutex<HashSet<(ReplicaId, u64)>>,
    /// The latest decisions, so a reply that arrives after one can still be checked against it.
    decided: Mutex<Decided>,
}

/// The outcomes of the latest decided transfers with the replies that decided them, oldest forgotten first.
#[derive(Default)]
struct Decided {
    outcomes: HashMap<Digest, (TxOutcome, Vec<SharedReply>)>,
    order: std::collections::VecDeque<Digest>,
}

impl Decided {
    const KEPT: usize = 4096;

    fn remember(&mut self, digest: Digest, outcome: TxOutcome, entry: &Pending) {
        let agreeing = entry
            .answers
            .iter()
            .filter(|(_, a, _)| *a == Answer::Outcome(outcome))
            .filter_map(|(_, _, reply)| reply.clone())
            .collect();
        self.outcomes.insert(digest, (outcome, agreeing));
        self.order.push_back(digest);
        if self.order.len() > Self::KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.outcomes.remove(&oldest);
        }
    }
}

/// A signed batch reply, shared by every transfer it answers.
type SharedReply = Arc<Signed<Reply>>;

struct Pending {
    /// One answer per replica, the first it sent, with the signed reply it came in.
    answers: Vec<(ReplicaId, Answer, Option<SharedReply>)>,
    decided: oneshot::Sender<Result<TxOutcome, ClientError>>,
    /// The encoded transfer, to send again to a replica that was too busy to admit it.
    transfer: Vec<u8>,
    busy_retries: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Outcome(TxOutcome),
    Refused(String),
}

impl Session {
    /// Submits over the session; the outcome F+1 replicas signed, as `Client::submit` answers it.
    pub async fn submit(&self, tx: SignedTransfer) -> Result<TxOutcome, ClientError> {
        let digest = tx.digest();
        let (decided, outcome) = oneshot::channel();
        let bytes = postcard::to_allocvec(&tx).expect("encoding to memory cannot fail");
        let pending = Pending {
            answers: Vec::new(),
            decided,
            transfer: bytes.clone(),
            busy_retries: 0,
        };
        self.votes.pending.lock().expect("not poisoned").insert(digest, pending);
        for link in &self.links {
            let _ = link.send(bytes.clone());
        }
        match tokio::time::timeout(SESSION_TIMEOUT, outcome).await {
            Ok(Ok(result)) => result,
            _ => {
                let pending = self.votes.pending.lock().expect("not poisoned").remove(&digest);
                let answers = pending.map(|p| p.answers).unwrap_or_default();
                Err(ClientError::NoQuorum(format!(
                    "no F+1 matching answers in time: {answers:?}"
                )))
            }
        }
    }
}

impl Votes {
    /// Counts `replica`'s answer for the transfer with `digest`, and decides it once F+1 answers match (or
    /// every replica answered without F+1 agreeing).
    fn record(&self, replica: ReplicaId, digest: &Digest, answer: Answer, reply: Option<SharedReply>) {
        let mut pending = self.pending.lock().expect("not poisoned");
        let Some(entry) = pending.get_mut(digest) else {
            drop(pending);
            // Already decided: a late reply may still contradict the outcome F+1 replicas signed.
            if let (Answer::Outcome(outcome), Some(reply)) = (answer, reply) {
                let decided = self.decided.lock().expect("not poisoned");
                if let Some((agreed, agreeing)) = decided.outcomes.get(digest)
                    && *agreed != outcome
                {
                    self.report(agreeing, vec![&reply]);
                }
            }
            return;
        };
        if entry.answers.iter().any(|(from, _, _)| *from == replica) {
            return;
        }
        // A replica that is full for now has not refused the transfer itself.
        if matches!(&answer, Answer::Refused(reason) if *reason == Rejection::Busy.to_string()) {
            // Back-pressure, not a verdict: ask that replica again shortly, backing off while it stays full.
            let delay = Duration::from_millis(5 << entry.busy_retries.min(7));
            entry.busy_retries += 1;
            let index = self.replicas.iter().position(|(r, _)| r.id == replica);
            if let Some(link) = index.map(|i| self.links[i].clone()) {
                let transfer = entry.transfer.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = link.send(transfer);
                });
            }
            return;
        }
        entry.answers.push((replica, answer.clone(), reply));
        let matching = entry.answers.iter().filter(|(_, a, _)| *a == answer).count();
        let result = if matching > self.f {
            match answer {
                Answer::Outcome(outcome) => {
                    self.report_contradictions(entry, outcome);
                    self.decided
                        .lock()
                        .expect("not poisoned")
                        .remember(*digest, outcome, entry);
                    Ok(outcome)
                }
                Answer::Refused(reason) => Err(ClientError::Refused(reason)),
            }
        } else if entry.answers.len() == self.n {
            Err(ClientError::NoQuorum(format!("{:?}", entry.answers)))
        } else {
            return;
        };
        if let Some(entry) = pending.remove(digest) {
            let _ = entry.decided.send(result);
        }
    }

    /// Once F+1 replicas signed `agreed`, a signed reply with another outcome proves its signer executed
    /// differently: the replies go to every replica, which check them and log the member (see `ReportReplies`).
    fn report_contradictions(&self, entry: &Pending, agreed: TxOutcome) {
        let signed = |a: &Answer| matches!(a, Answer::Outcome(_));
        let contradicting: Vec<&SharedReply> = entry
            .answers
            .iter()
            .filter(|(_, a, _)| signed(a) && *a != Answer::Outcome(agreed))
            .filter_map(|(_, _, reply)| reply.as_ref())
            .collect();
        if contradicting.is_empty() {
            return;
        }
        let agreeing: Vec<SharedReply> = entry
            .answers
            .iter()
            .filter(|(_, a, _)| *a == Answer::Outcome(agreed))
            .filter_map(|(_, _, reply)| reply.clone())
            .collect();
        self.report(&agreeing, contradicting);
    }

    /// Hands F+1 agreeing replies and the contradicting ones to every replica (each one once per member and
    /// sequence), which check them and log the member they prove wrong (see `ReportReplies`).
    fn report(&self, agreeing: &[SharedReply], contradicting: Vec<&SharedReply>) {
        let contradicting: Vec<&SharedReply> = contradicting
            .into_iter()
            .filter(|r| self.reported.lock().expect("not poisoned").insert((r.from, r.body.seq)))
            .collect();
        if contradicting.is_empty() {
            return;
        }
        let replies: Vec<Vec<u8>> = agreeing
            .iter()
            .chain(contradicting)
            .map(|r| postcard::to_allocvec(r.as_ref()).expect("encoding to memory cannot fail"))
            .collect();
        for (_, client) in &self.replicas {
            let mut client = client.clone();
            let evidence = proto::ReplyEvidence {
                replies: replies.clone(),
            };
            tokio::spawn(async move {
                let _ = client.report_replies(evidence).await;
            });
        }
    }

    /// One message from `replica`'s session stream.
    fn receive(&self, replica: &Replica, response: proto::SessionResponse) {
        if let Some(refusal) = response.refusal {
            if let Ok(digest) = <[u8; 32]>::try_from(refusal.digest.as_slice()) {
                self.record(replica.id, &Digest(digest), Answer::Refused(refusal.reason), None);
            }
            return;
        }
        let Ok(reply) = postcard::from_bytes::<Signed<Reply>>(&response.reply) else {
            return;
        };
        if reply.from != replica.id || !replica.public_key.verify(&reply.signing_bytes(), &reply.signature) {
            return;
        }
        let reply = Arc::new(reply);
        for (digest, outcome) in &reply.body.outcomes {
            self.record(replica.id, digest, Answer::Outcome(*outcome), Some(reply.clone()));
        }
    }
}

/// Keeps a session stream open to one replica: sends queued transfers in frames and records what comes back.
/// Transfers queued while the replica is unreachable are dropped (the other replicas still answer them).
async fn run_session_link(
    replica: Replica,
    mut client: ReplicaClient<Channel>,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    votes: Arc<Votes>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let (frames, outgoing) = mpsc::channel::<proto::SessionRequest>(64);
        let opened = client.session(ReceiverStream::new(outgoing)).await;
        let mut reader = match opened {
            Ok(responses) => {
                backoff = Duration::from_millis(50);
                let (replica, votes) = (replica.clone(), votes.clone());
                let mut responses = responses.into_inner();
                tokio::spawn(async move {
                    while let Ok(Some(response)) = responses.message().await {
                        votes.receive(&replica, response);
                    }
                })
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                loop {
                    match queue.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                continue;
            }
        };
        let mut batch = Vec::with_capacity(FRAME_MAX);
        loop {
            tokio::select! {
                received = queue.recv_many(&mut batch, FRAME_MAX) => {
                    if received == 0 {
                        reader.abort();
                        return; // the session was dropped
                    }
                    let frame = proto::SessionRequest { transfers: std::mem::take(&mut batch) };
                    if frames.send(frame).await.is_err() {
                        break;
                    }
                }
                _ = &mut reader => break,
            }
        }
        reader.abort();
        tokio::time::sleep(backoff).await;
    }
}
