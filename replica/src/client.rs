//! A client of a cluster: submits signed transfers to every replica and accepts an outcome once F+1 replicas
//! sent matching signed replies (one of them is honest).

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::config::max_failures;
use crate::crypto::PublicKey;
use crate::faults::FaultDrill;
use crate::ledger::{SignedTransfer, TxOutcome};
use crate::messages::{ReplicaId, Reply, Signed};
use crate::net::proto::replica_client::ReplicaClient;
use crate::net::proto::{
    AccountRequest, DetectionsRequest, DetectionsResponse, ForceViewChangeRequest, InjectFaultRequest, StatusRequest,
    StatusResponse, SubmitRequest, ViewChangeEvent, ViewChangesRequest, ViewChangesResponse,
};

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

    /// Asks every replica to change views now (a drill); the first report of the new view.
    pub async fn force_view_change(&self) -> Result<ViewChangeEvent, ClientError> {
        let mut calls = JoinSet::new();
        for (_, client) in &self.replicas {
            let mut client = client.clone();
            calls.spawn(async move { client.force_view_change(ForceViewChangeRequest {}).await });
        }
        let mut errors = Vec::new();
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok(Ok(event)) => return Ok(event.into_inner()),
                Ok(Err(status)) => errors.push(status.message().to_string()),
                Err(error) => errors.push(error.to_string()),
            }
        }
        errors.dedup();
        Err(ClientError::Refused(errors.join("; ")))
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

    /// Starts a fault drill on one member (`None`: stops it); the drill it now runs.
    pub async fn inject_fault(&self, member: ReplicaId, drill: Option<FaultDrill>) -> Result<String, ClientError> {
        let (_, client) = self
            .replicas
            .iter()
            .find(|(r, _)| r.id == member)
            .ok_or_else(|| ClientError::Refused(format!("{member} is not a member")))?;
        let request = InjectFaultRequest {
            fault: drill.map_or(String::new(), |d| d.fault.name().to_string()),
            probability: drill.map_or(0.0, |d| d.probability),
            clear: drill.is_none(),
        };
        let answer = client.clone().inject_fault(request).await;
        answer
            .map(|a| a.into_inner().active)
            .map_err(|status| ClientError::Refused(status.message().to_string()))
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
