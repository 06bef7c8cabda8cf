//! Where members run. The plan says what to do; a `Platform` does it (on Kubernetes, or as local processes),
//! and `Replicas` talks to the running replicas. `reconcile` is the one control loop pass both platforms share.

pub mod kube;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;

use bft_core::crypto::{KeyPair, PublicKey};

use crate::crd::{ByzantineClusterSpec, ByzantineClusterStatus, MemberState};
use crate::health::{self, Target};
use crate::plan::{self, Action, MemberId, Observed, Plan, PlanEvent, Requests};

/// An error of a platform: what failed, never a key.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{0}")]
    Kube(#[from] ::kube::Error),
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The replicas offer no such operation (yet).
    #[error("not supported by the replicas: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Refused(String),
}

/// Carries out the plan's actions on one cluster's objects.
pub trait Platform {
    /// Public keys (hex) of the members whose key exists.
    fn keys(&self) -> impl Future<Output = Result<BTreeMap<MemberId, String>, PlatformError>> + Send;
    /// Generates the member's keypair unless it has one (never overwritten); its public key (hex).
    fn ensure_key(&self, id: MemberId) -> impl Future<Output = Result<String, PlatformError>> + Send;
    /// The administrator key that signs reconfigurations (created once).
    fn admin_key(&self) -> impl Future<Output = Result<KeyPair, PlatformError>> + Send;
    /// The genesis accounts (public key hex, balance), generating the test accounts once if the spec asks.
    fn genesis(&self) -> impl Future<Output = Result<Vec<(String, u64)>, PlatformError>> + Send;
    fn apply_cluster(&self, cluster: &ClusterObjects<'_>) -> impl Future<Output = Result<(), PlatformError>> + Send;
    fn run(
        &self,
        id: MemberId,
        learner: bool,
        placement_group: u32,
        admin_key: &str,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;
    /// Stops the member's workload and unmounts its key; idempotent.
    fn fence(&self, id: MemberId, admin_key: &str) -> impl Future<Output = Result<(), PlatformError>> + Send;
    /// Deletes a fenced member's private key; idempotent.
    fn withdraw_key(&self, id: MemberId) -> impl Future<Output = Result<(), PlatformError>> + Send;
    fn retire(&self, id: MemberId) -> impl Future<Output = Result<(), PlatformError>> + Send;
    /// Where a member's gRPC service is.
    fn address(&self, id: MemberId) -> String;
    fn mark_handled(&self, request: &str) -> impl Future<Output = Result<(), PlatformError>> + Send;
    /// Records the status (it changed or not) and publishes the events.
    fn record(
        &self,
        status: &ByzantineClusterStatus,
        events: &[PlanEvent],
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;
}

/// What the cluster-wide objects are built from.
pub struct ClusterObjects<'a> {
    pub voters: &'a [MemberId],
    pub learners: &'a [MemberId],
    pub max_unavailable: u32,
    pub keys: &'a BTreeMap<MemberId, String>,
    pub genesis: &'a [(String, u64)],
    pub admin_key: &'a str,
}

/// Talks to the running replicas through their public API.
pub trait Replicas {
    fn observe(&self, targets: &[Target], voters: usize) -> impl Future<Output = Option<Observed>> + Send;
    /// Submits the reconfiguration signed by `admin`; the epoch it creates.
    fn reconfigure(
        &self,
        targets: &[Target],
        admin: &KeyPair,
        remove: &[MemberId],
        add: &[Target],
    ) -> impl Future<Output = Result<u64, ReplicaError>> + Send;
    /// A drill, signed by `admin`: the cluster leaves the view it is in for the next one.
    fn force_view_change(
        &self,
        targets: &[Target],
        admin: &KeyPair,
    ) -> impl Future<Output = Result<String, ReplicaError>> + Send;
    /// A drill, signed by `admin`: `member` misbehaves as `drill` says (fault, probability), or stops.
    fn inject_fault(
        &self,
        targets: &[Target],
        admin: &KeyPair,
        member: MemberId,
        drill: Option<(String, f64)>,
    ) -> impl Future<Output = Result<String, ReplicaError>> + Send;
}

/// How long a reconfiguration may take to be in force with the added members taking part.
pub const RECONFIGURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The replicas reached over gRPC with `bft_client::client`.
pub struct GrpcReplicas;

fn client(targets: &[Target]) -> Result<bft_client::client::Client, ReplicaError> {
    let replicas = targets
        .iter()
        .filter_map(|t| {
            Some(bft_client::client::Replica {
                id: t.id,
                address: t.address.clone(),
                public_key: PublicKey::from_hex(&t.public_key).ok()?,
            })
        })
        .collect();
    bft_client::client::Client::new(replicas).map_err(|e| ReplicaError::Refused(e.to_string()))
}

impl Replicas for GrpcReplicas {
    async fn observe(&self, targets: &[Target], voters: usize) -> Option<Observed> {
        health::poll(targets, voters).await
    }

    async fn reconfigure(
        &self,
        targets: &[Target],
        admin: &KeyPair,
        remove: &[MemberId],
        add: &[Target],
    ) -> Result<u64, ReplicaError> {
        // Every member is asked, the added ones too: the call returns once F+1 replicas are in the new epoch and
        // each added member has executed up to where it began, which only the added members can tell. The
        // reconfiguration names the epoch it was made in, so a repeat after a restart is refused by the replicas
        // rather than applied twice.
        let added = add
            .iter()
            .map(|t| {
                Ok(bft_core::governance::NewMember {
                    id: t.id,
                    public_key: PublicKey::from_hex(&t.public_key)
                        .map_err(|_| ReplicaError::Refused(format!("member {}: bad public key", t.id)))?,
                    address: t.address.clone(),
                })
            })
            .collect::<Result<Vec<_>, ReplicaError>>()?;
        let done = client(targets)?
            .reconfigure(admin, remove.to_vec(), added, RECONFIGURE_TIMEOUT)
            .await
            .map_err(|e| ReplicaError::Refused(e.to_string()))?;
        Ok(done.epoch)
    }

    async fn force_view_change(&self, targets: &[Target], admin: &KeyPair) -> Result<String, ReplicaError> {
        let event = client(targets)?
            .force_view_change(admin)
            .await
            .map_err(|e| ReplicaError::Refused(e.to_string()))?;
        Ok(format!(
            "view {}: {} -> {} in {} ms",
            event.view,
            plan::agent(event.old_primary),
            plan::agent(event.new_primary),
            event.duration_ms
        ))
    }

    async fn inject_fault(
        &self,
        targets: &[Target],
        admin: &KeyPair,
        member: MemberId,
        drill: Option<(String, f64)>,
    ) -> Result<String, ReplicaError> {
        let drill = match drill {
            None => None,
            Some((fault, p)) => {
                let fault: bft_core::faults::Fault = fault.parse().map_err(|e: String| ReplicaError::Refused(e))?;
                Some(bft_core::faults::FaultDrill::new(fault, p).map_err(ReplicaError::Refused)?)
            }
        };
        client(targets)?
            .inject_fault(admin, member, drill)
            .await
            .map_err(|e| ReplicaError::Refused(e.to_string()))
    }
}

/// The members worth polling: every member not removed and not fenced whose key exists.
pub fn targets<P: Platform>(
    platform: &P,
    status: &ByzantineClusterStatus,
    keys: &BTreeMap<MemberId, String>,
) -> Vec<Target> {
    status
        .members
        .iter()
        .filter(|m| m.state != MemberState::Removed && !m.fenced)
        .filter_map(|m| {
            Some(Target {
                id: m.id,
                address: platform.address(m.id),
                public_key: keys.get(&m.id)?.clone(),
            })
        })
        .collect()
}

/// One pass of the control loop: observe, plan, act, record. An action that fails stops the pass before the
/// status is recorded, so the next pass repeats the step (every action is idempotent). The reconfiguration, the
/// plan's last action, is the exception: its step is recorded before the call (which waits until the new epoch is
/// in force), and a failed call is a warning, not an error, since the replicas may have ordered it all the same;
/// the next pass reads from their membership whether they did.
pub async fn reconcile<P: Platform, R: Replicas>(
    platform: &P,
    replicas: &R,
    spec: &ByzantineClusterSpec,
    generation: Option<i64>,
    recorded: &ByzantineClusterStatus,
    requests: &Requests,
    now_ms: u64,
) -> Result<Plan, PlatformError> {
    let mut keys = platform.keys().await?;
    let polled = targets(platform, recorded, &keys);
    let voters = plan::voters(recorded).len().max(spec.replicas as usize);
    let observed = if polled.is_empty() {
        None
    } else {
        replicas.observe(&polled, voters).await
    };
    let mut plan = plan::plan(&plan::Input {
        spec,
        generation,
        recorded,
        observed: observed.as_ref(),
        keys: &keys,
        requests,
        now_ms,
    });
    let admin = platform.admin_key().await?;
    let admin_hex = admin.public().to_hex();
    let mut genesis = None;
    // The events recorded so far.
    let mut published = 0;
    for action in &plan.actions {
        match action {
            Action::EnsureKey(id) => {
                let key = platform.ensure_key(*id).await?;
                keys.insert(*id, key);
            }
            Action::ApplyCluster {
                voters,
                learners,
                max_unavailable,
            } => {
                if genesis.is_none() {
                    genesis = Some(platform.genesis().await?);
                }
                let objects = ClusterObjects {
                    voters,
                    learners,
                    max_unavailable: *max_unavailable,
                    keys: &keys,
                    genesis: genesis.as_deref().unwrap_or_default(),
                    admin_key: &admin_hex,
                };
                platform.apply_cluster(&objects).await?;
            }
            Action::Run {
                id,
                learner,
                placement_group,
            } => platform.run(*id, *learner, *placement_group, &admin_hex).await?,
            Action::Fence(id) => platform.fence(*id, &admin_hex).await?,
            Action::WithdrawKey(id) => platform.withdraw_key(*id).await?,
            Action::Retire(id) => platform.retire(*id).await?,
            Action::Reconfigure { remove, add } => {
                // Recorded first: a restart during the call finds the step that says it may be under way.
                plan::show_keys(&mut plan.status, &keys);
                platform.record(&plan.status, &plan.events[published..]).await?;
                published = plan.events.len();
                let current = targets(platform, &plan.status, &keys);
                let added: Vec<Target> = current.iter().filter(|t| add.contains(&t.id)).cloned().collect();
                if let Err(error) = replicas.reconfigure(&current, &admin, remove, &added).await {
                    plan.events.push(warning(
                        "ReconfigurationFailed",
                        format!(
                            "remove {remove:?}, add {add:?}: {error}; the next pass reads from the replicas whether it was ordered"
                        ),
                    ));
                    // The next try at the idle polling rate, not at once: a refusal does not go away in a second.
                    plan.requeue_soon = false;
                }
            }
            Action::ForceViewChange => {
                let current = targets(platform, &plan.status, &keys);
                plan.events
                    .push(match replicas.force_view_change(&current, &admin).await {
                        Ok(note) => PlanEvent {
                            warning: false,
                            reason: "ViewChanged",
                            note,
                        },
                        Err(error) => warning("ViewChangeFailed", error.to_string()),
                    });
            }
            Action::InjectFault { member, drill } => {
                let current = targets(platform, &plan.status, &keys);
                plan.events.push(
                    match replicas.inject_fault(&current, &admin, *member, drill.clone()).await {
                        Ok(active) => PlanEvent {
                            warning: true,
                            reason: "FaultDrill",
                            note: format!(
                                "{}: {}",
                                plan::agent(*member),
                                if active.is_empty() { "no fault drill" } else { &active }
                            ),
                        },
                        Err(error) => warning("FaultDrillFailed", error.to_string()),
                    },
                );
            }
            Action::MarkHandled(request) => platform.mark_handled(request).await?,
        }
    }
    plan::show_keys(&mut plan.status, &keys);
    platform.record(&plan.status, &plan.events[published..]).await?;
    Ok(plan)
}

fn warning(reason: &'static str, note: String) -> PlanEvent {
    PlanEvent {
        warning: true,
        reason,
        note,
    }
}
