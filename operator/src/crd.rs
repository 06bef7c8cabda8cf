//! The `ByzantineCluster` custom resource: what a platform team asks for (spec) and what the operator reports
//! (status). `crds/` is generated from these types by `bft-operator crd`; a test fails when it is out of date.
//!
//! Validation lives in the schema, so a bad resource is refused by the API server at apply time: ranges and
//! enums from the types, and CEL rules (`x-kubernetes-validations`) for what relates fields to each other or must
//! never change. `validate` checks the same rules in Rust for the local platform, which has no API server.

// The derive's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy takes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Sizing;

pub const GROUP: &str = "bft.dev";
pub const VERSION: &str = "v1alpha1";

/// Bounds of the spec, shared by the schema and `validate`.
pub mod bounds {
    pub const REPLICAS_MIN: u32 = 4;
    /// A bound on the size of a cluster: every member talks to every other, so messages grow as N².
    pub const REPLICAS_MAX: u32 = 64;
    pub const VIEW_CHANGE_TIMEOUT_MS_MIN: u64 = 10;
    pub const VIEW_CHANGE_TIMEOUT_MS_MAX: u64 = 3_600_000;
    pub const CHECKPOINT_INTERVAL_MIN: u64 = 1;
    /// Bounded by what memory holds (`bft_core::config::LOG_TRANSFERS_MAX`): the log holds up to two
    /// intervals of slots, each up to a batch of 512 transfers at 432 bytes a transfer.
    pub const CHECKPOINT_INTERVAL_MAX: u64 = bft_core::config::CHECKPOINT_INTERVAL_MAX;
    /// The replica's pipeline depth (`max_inflight_batches`, not set by the spec): the log window holds at least it.
    pub const LOG_WINDOW_MIN: u64 = 4;
    /// 4,096 slots of 512 transfers: 2,097,152 transfers, about 864 MiB of log at most.
    pub const LOG_WINDOW_MAX: u64 = bft_core::config::LOG_WINDOW_MAX;
    pub const MAX_CONCURRENT_REQUESTS_MIN: u64 = 1;
    pub const MAX_CONCURRENT_REQUESTS_MAX: u64 = 10_000_000;
    pub const QUARANTINE_MS_MIN: u64 = 1_000;
    /// A week.
    pub const QUARANTINE_MS_MAX: u64 = 604_800_000;
    pub const REPLACEMENTS_PER_HOUR_MAX: u32 = 64;
    pub const GENERATED_ACCOUNTS_MAX: u32 = 100_000;
}

/// The parameters fixed when a cluster is created, with why: the schema's transition rules and `validate_update`
/// refuse a change with these messages. The replicas take them from their own flags, so a change rolled out pod by
/// pod would have honest replicas decide differently (their state digests diverge) or judge the same message
/// differently.
pub mod fixed {
    pub const CHECKPOINT_INTERVAL: &str = "protocol.checkpointInterval is part of the replicated state (a reconfiguration takes effect at its next multiple): it is fixed when the cluster is created";
    pub const LOG_WINDOW: &str = "protocol.logWindow is fixed when the cluster is created: every replica must judge the certificates in a VIEW-CHANGE by the same window";
    pub const QUARANTINE_DURATION: &str = "detection.quarantineDurationMs is part of the replicated state (it decides when a quarantine expires): it is fixed when the cluster is created";
    pub const CHECKPOINT_INTERVAL_RULE: &str = "self.checkpointInterval == oldSelf.checkpointInterval";
    pub const QUARANTINE_DURATION_RULE: &str = "self.quarantineDurationMs == oldSelf.quarantineDurationMs";
    /// The window in force, given or derived (twice the interval, at least the pipeline depth of 4), is the same.
    pub const LOG_WINDOW_RULE: &str = "(has(self.logWindow) ? self.logWindow : (2 * self.checkpointInterval >= 4 ? 2 * self.checkpointInterval : 4)) == (has(oldSelf.logWindow) ? oldSelf.logWindow : (2 * oldSelf.checkpointInterval >= 4 ? 2 * oldSelf.checkpointInterval : 4))";
}

/// A Byzantine-fault-tolerant validator cluster: N replicas of which up to F = floor((N-1)/3) may crash or lie.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bft.dev",
    version = "v1alpha1",
    kind = "ByzantineCluster",
    namespaced,
    shortname = "bftc",
    category = "bft",
    status = "ByzantineClusterStatus",
    derive = "PartialEq",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Healthy", type_ = "integer", json_path = ".status.healthyReplicas"),
    printcolumn(name = "Quorum", type_ = "integer", json_path = ".status.quorumSize"),
    printcolumn(name = "View", type_ = "integer", json_path = ".status.view"),
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.primary"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!has(self.protocol) || !has(self.protocol.verificationThreshold) || self.protocol.verificationThreshold == (self.replicas + (self.replicas - 1) / 3 + 2) / 2").message("protocol.verificationThreshold must be the quorum ceil((N+F+1)/2), F = floor((N-1)/3): 3 for 4 replicas, 5 for 7, 7 for 10"),
    validation = Rule::new("!has(self.protocol) || !has(self.protocol.logWindow) || self.protocol.logWindow >= 2 * (has(self.protocol.checkpointInterval) ? self.protocol.checkpointInterval : 100)").message("protocol.logWindow must be at least twice protocol.checkpointInterval (leave it out to get exactly that)"),
    validation = Rule::new("!has(self.genesis.generatedAccounts) || !has(self.genesis.accounts) || size(self.genesis.accounts) + self.genesis.generatedAccounts.count <= 100000").message("genesis: at most 100000 accounts in all")
)]
#[serde(rename_all = "camelCase")]
pub struct ByzantineClusterSpec {
    /// N, the number of validator members (at least 4). F = floor((N-1)/3) and the quorum ceil((N+F+1)/2) follow.
    /// It cannot change after creation: resizing is a membership reconfiguration the operator does not do yet.
    #[schemars(range(min = 4, max = 64))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicas cannot change after creation: resizing a cluster is a reconfiguration the operator does not do yet; create a new cluster"))]
    pub replicas: u32,
    /// The bft-replica container image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default)]
    #[x_kube(
        validation = Rule::new("self.signatureAlgorithm == oldSelf.signatureAlgorithm").message("protocol.signatureAlgorithm cannot change after creation: every member's key is of this kind"),
        validation = Rule::new(fixed::CHECKPOINT_INTERVAL_RULE).message(fixed::CHECKPOINT_INTERVAL),
        validation = Rule::new(fixed::LOG_WINDOW_RULE).message(fixed::LOG_WINDOW)
    )]
    pub protocol: ProtocolSpec,
    #[serde(default)]
    #[x_kube(validation = Rule::new(fixed::QUARANTINE_DURATION_RULE).message(fixed::QUARANTINE_DURATION))]
    pub detection: DetectionSpec,
    /// The ledger's starting accounts. Immutable: every replica's ledger starts from it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("genesis cannot change after creation: every replica's ledger started from it"))]
    pub genesis: GenesisSpec,
    #[serde(default)]
    pub storage: StorageSpec,
    /// Compute resources of each replica container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    #[serde(default)]
    pub fault_drills: FaultDrillsSpec,
    #[serde(default)]
    pub replacement: ReplacementSpec,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SignatureAlgorithm {
    #[default]
    #[serde(rename = "ed25519")]
    Ed25519,
}

/// Protocol parameters; the defaults are those of the reference drill. The checkpoint interval and the log window
/// are fixed when the cluster is created.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtocolSpec {
    /// ed25519, the only one supported. It cannot change after creation.
    pub signature_algorithm: SignatureAlgorithm,
    /// Signatures in a quorum certificate. Optional; when given it must be the quorum ceil((N+F+1)/2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_threshold: Option<u32>,
    /// A backup that waits this long for a pending request to commit suspects the primary.
    #[schemars(range(min = 10, max = 3_600_000))]
    pub view_change_timeout_ms: u64,
    /// A stable checkpoint every this many sequence numbers; the log below it is garbage-collected. Part of the
    /// replicated state (a reconfiguration takes effect at the next multiple of it): fixed at creation. At most
    /// 2048: the log holds up to two intervals of batches in memory.
    #[schemars(range(min = 1, max = 2_048))]
    pub checkpoint_interval: u64,
    /// How far above the stable checkpoint sequence numbers may be assigned (PBFT's L). Optional: twice the
    /// checkpoint interval when left out; when given, at least that, and at most 4096 (4096 batches of 512
    /// transfers: about 864 MiB of log). Fixed at creation: every replica judges certificates by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4, max = 4_096))]
    pub log_window: Option<u64>,
    /// In-flight client requests each replica admits at once (back-pressure beyond).
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_concurrent_requests: u64,
}

impl Default for ProtocolSpec {
    fn default() -> Self {
        let params = bft_core::Params::default();
        ProtocolSpec {
            signature_algorithm: SignatureAlgorithm::Ed25519,
            verification_threshold: None,
            view_change_timeout_ms: params.view_change_timeout_ms,
            checkpoint_interval: params.checkpoint_interval,
            log_window: None,
            max_concurrent_requests: params.max_concurrent_requests as u64,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DetectionSpec {
    /// Whether the operator acts on members the replicas quarantine (fences and replaces them).
    pub enabled: bool,
    /// How long the replicas ignore a member proven malicious (unless it is removed first). Part of the
    /// replicated state (a quarantine's expiry is decided by it): fixed at creation.
    #[schemars(range(min = 1_000, max = 604_800_000))]
    pub quarantine_duration_ms: u64,
}

impl Default for DetectionSpec {
    fn default() -> Self {
        DetectionSpec {
            enabled: true,
            quarantine_duration_ms: 3_600_000,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenesisSpec {
    /// Accounts given by their public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100_000))]
    pub accounts: Vec<GenesisAccount>,
    /// Accounts whose keys the operator generates (into the cluster's accounts Secret, or DIR/accounts.json
    /// locally): test material for drills, never for real funds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_accounts: Option<GeneratedAccounts>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenesisAccount {
    /// The account's Ed25519 public key, 64 hex digits.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub account: String,
    pub balance: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedAccounts {
    #[schemars(range(min = 1, max = 100_000))]
    pub count: u32,
    pub balance: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StorageSpec {
    /// Each member's persistent volume (a Kubernetes quantity).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    pub size: String,
    /// The storage class; the cluster's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: "1Gi".into(),
            storage_class_name: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SchedulingSpec {
    /// Added to the operator's own anti-affinity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The node label naming zones; the operator spreads members so no zone holds more than F of them. Default
    /// topology.kubernetes.io/zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_label: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MonitoringSpec {
    /// Create a prometheus-operator ServiceMonitor for the replicas.
    pub service_monitor: bool,
    /// Create a prometheus-operator PrometheusRule with the cluster's alerts.
    pub prometheus_rule: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultDrillsSpec {
    /// Let replicas accept fault drills (injected faults, forced view changes). Never in production.
    pub allowed: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReplacementMode {
    /// Quarantined members are fenced and replaced without asking.
    #[default]
    Automatic,
    /// Each replacement waits for the approval annotation naming it.
    Supervised,
    /// Quarantined members are fenced, never replaced.
    Disabled,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplacementSpec {
    pub mode: ReplacementMode,
    /// At most this many members replaced in any hour, whatever the health data says. Default F.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_per_hour: Option<u32>,
    /// How long a new member may take to catch up before the replacement is reported stuck.
    #[schemars(range(min = 1, max = 86_400))]
    pub catch_up_timeout_seconds: u64,
}

impl Default for ReplacementSpec {
    fn default() -> Self {
        ReplacementSpec {
            mode: ReplacementMode::Automatic,
            max_per_hour: None,
            catch_up_timeout_seconds: 600,
        }
    }
}

/// What the operator observed and did, in Kubernetes' camelCase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ByzantineClusterStatus {
    pub observed_generation: Option<i64>,
    /// Pending, Creating, Running, Degraded, Reconfiguring or Failed.
    pub phase: String,
    pub members: Vec<MemberStatus>,
    /// The membership epoch a quorum of replicas is in.
    pub epoch: u64,
    pub view: u64,
    /// The primary's member name, e.g. bft-agent-1.
    pub primary: String,
    pub healthy_replicas: u32,
    pub quorum_size: u32,
    pub max_failures: u32,
    pub quorum_met: bool,
    pub transactions_committed: u64,
    pub transactions_rejected: u64,
    /// The latest confirmed detections, newest last (at most 20).
    pub detections: Vec<DetectionStatus>,
    /// The replacement in progress, if any: recorded before each step acts, so a restart resumes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<Replacement>,
    /// When each past replacement started (RFC 3339), for the cap per hour; the latest 64.
    pub replacement_history: Vec<String>,
    /// The id the next new member gets; ids are never reused.
    pub next_member_id: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub id: u32,
    /// Its pod (or, locally, its process).
    pub pod: String,
    pub role: MemberRole,
    pub state: MemberState,
    /// Whether its workload is stopped and its private key withdrawn.
    #[serde(default)]
    pub fenced: bool,
    /// The first 16 hex digits of its public key.
    pub public_key: String,
    #[serde(default)]
    pub reachable: bool,
    #[serde(default)]
    pub last_executed: u64,
    /// Members of one placement group never share a node: with F groups, no node holds more than F members.
    #[serde(default)]
    pub placement_group: u32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum MemberRole {
    Primary,
    Backup,
    Learner,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum MemberState {
    Joining,
    Active,
    Quarantined,
    Removed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetectionStatus {
    pub member: u32,
    pub fault_type: String,
    pub first_seen: String,
    /// How many replicas logged it (F+1 confirm it).
    pub reported_by: u32,
    pub proven: bool,
    pub evidence: String,
}

/// A crash-safe replacement of quarantined members by new ones, one step at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replacement {
    /// A name for the approval annotation in supervised mode, e.g. r-3.
    pub name: String,
    /// The quarantined members being replaced.
    pub remove: Vec<u32>,
    /// The new members (fresh ids, fresh keys).
    pub add: Vec<u32>,
    pub step: ReplacementStep,
    /// RFC 3339.
    pub started: String,
    /// When the current step began (RFC 3339).
    pub step_started: String,
    /// The epoch before the reconfiguration was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_before: Option<u64>,
    /// Why it is waiting, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum ReplacementStep {
    /// Supervised mode: waiting for the approval annotation.
    AwaitingApproval,
    /// Stopping the quarantined members and withdrawing their keys.
    Fencing,
    /// Creating the new members' keys and workloads.
    CreatingMembers,
    /// The new members fetch the stable checkpoint as non-voting learners.
    CatchingUp,
    /// The signed reconfiguration (remove the old, add the new) is submitted.
    Reconfiguring,
    /// Waiting until a quorum is in the new epoch.
    AwaitingEpoch,
    /// Deleting the old workloads; their volumes stay for forensics.
    Retiring,
}

/// The annotations a user sets on a ByzantineCluster to ask for something once.
pub mod annotations {
    /// Supervised mode: the name of the replacement approved (status.replacement.name).
    pub const APPROVE_REPLACEMENT: &str = "bft.dev/approve-replacement";
    /// Any new value asks for one forced view change (a drill; needs faultDrills.allowed).
    pub const FORCE_VIEW_CHANGE: &str = "bft.dev/force-view-change";
    /// `MEMBER:FAULT:PROBABILITY`, e.g. `5:signature-corruption:0.5`, or `MEMBER:clear` (needs faultDrills.allowed).
    pub const INJECT_FAULT: &str = "bft.dev/inject-fault";
    /// Where the operator records which of the requests above it carried out.
    pub const HANDLED: &str = "bft.dev/handled";
}

/// A spec refused, with what is wrong in the words of the schema's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ByzantineCluster spec: {}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

impl ByzantineClusterSpec {
    pub fn sizing(&self) -> Sizing {
        Sizing::of(self.replicas as usize).unwrap_or(Sizing {
            replicas: self.replicas as usize,
            max_failures: 0,
            quorum: self.replicas as usize,
        })
    }

    /// The replica's protocol parameters this spec asks for; the log window follows the checkpoint interval
    /// unless the spec gives one.
    pub fn params(&self) -> bft_core::Params {
        let params = bft_core::Params {
            view_change_timeout_ms: self.protocol.view_change_timeout_ms,
            max_concurrent_requests: self.protocol.max_concurrent_requests as usize,
            quarantine_duration_ms: self.detection.quarantine_duration_ms,
            ..bft_core::Params::default()
        }
        .with_checkpoint_interval(self.protocol.checkpoint_interval);
        bft_core::Params {
            log_window: self.protocol.log_window.unwrap_or(params.log_window),
            ..params
        }
    }

    /// The same rules the schema and its CEL rules enforce at apply time, for where no API server checks them.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        use bounds::*;
        let mut errors = Vec::new();
        let mut range = |name: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                errors.push(format!("{name} must be between {min} and {max}, got {value}"));
            }
        };
        range(
            "replicas",
            self.replicas.into(),
            REPLICAS_MIN.into(),
            REPLICAS_MAX.into(),
        );
        let p = &self.protocol;
        range(
            "protocol.viewChangeTimeoutMs",
            p.view_change_timeout_ms,
            VIEW_CHANGE_TIMEOUT_MS_MIN,
            VIEW_CHANGE_TIMEOUT_MS_MAX,
        );
        range(
            "protocol.checkpointInterval",
            p.checkpoint_interval,
            CHECKPOINT_INTERVAL_MIN,
            CHECKPOINT_INTERVAL_MAX,
        );
        if let Some(window) = p.log_window {
            range("protocol.logWindow", window, LOG_WINDOW_MIN, LOG_WINDOW_MAX);
        }
        range(
            "protocol.maxConcurrentRequests",
            p.max_concurrent_requests,
            MAX_CONCURRENT_REQUESTS_MIN,
            MAX_CONCURRENT_REQUESTS_MAX,
        );
        range(
            "detection.quarantineDurationMs",
            self.detection.quarantine_duration_ms,
            QUARANTINE_MS_MIN,
            QUARANTINE_MS_MAX,
        );
        if let Some(max) = self.replacement.max_per_hour {
            range(
                "replacement.maxPerHour",
                max.into(),
                1,
                REPLACEMENTS_PER_HOUR_MAX.into(),
            );
        }
        range(
            "replacement.catchUpTimeoutSeconds",
            self.replacement.catch_up_timeout_seconds,
            1,
            86_400,
        );
        if let Some(generated) = &self.genesis.generated_accounts {
            range(
                "genesis.generatedAccounts.count",
                generated.count.into(),
                1,
                GENERATED_ACCOUNTS_MAX.into(),
            );
        }
        if self.image.is_empty() {
            errors.push("image must not be empty".into());
        }
        if p.log_window
            .is_some_and(|window| window < p.checkpoint_interval.saturating_mul(2))
        {
            errors.push(
                "protocol.logWindow must be at least twice protocol.checkpointInterval (leave it out to get exactly that)"
                    .into(),
            );
        }
        if let Some(threshold) = p.verification_threshold {
            let quorum = bft_core::config::quorum_size(self.replicas as usize);
            if threshold as usize != quorum {
                errors.push(format!(
                    "protocol.verificationThreshold must be the quorum ceil((N+F+1)/2) = {quorum} for {} replicas, got {threshold}",
                    self.replicas
                ));
            }
        }
        for (i, a) in self.genesis.accounts.iter().enumerate() {
            let hex = a.account.len() == 64
                && a.account
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex || bft_core::crypto::PublicKey::from_hex(&a.account).is_err() {
                errors.push(format!(
                    "genesis.accounts[{i}].account must be an Ed25519 public key in 64 lowercase hex digits"
                ));
            }
        }
        let total =
            self.genesis.accounts.len() as u64 + self.genesis.generated_accounts.as_ref().map_or(0, |g| g.count.into());
        if total == 0 {
            errors.push("genesis needs at least one account (genesis.accounts or genesis.generatedAccounts)".into());
        }
        if total > GENERATED_ACCOUNTS_MAX.into() {
            errors.push("genesis: at most 100000 accounts in all".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec(errors))
        }
    }

    /// Changes from `old` that the schema's transition rules refuse, with the same messages.
    pub fn validate_update(&self, old: &ByzantineClusterSpec) -> Result<(), InvalidSpec> {
        let mut errors = Vec::new();
        if self.replicas != old.replicas {
            errors.push("replicas cannot change after creation: resizing a cluster is a reconfiguration the operator does not do yet; create a new cluster".to_string());
        }
        if self.protocol.signature_algorithm != old.protocol.signature_algorithm {
            errors.push(
                "protocol.signatureAlgorithm cannot change after creation: every member's key is of this kind".into(),
            );
        }
        if self.protocol.checkpoint_interval != old.protocol.checkpoint_interval {
            errors.push(fixed::CHECKPOINT_INTERVAL.into());
        }
        if self.params().log_window != old.params().log_window {
            errors.push(fixed::LOG_WINDOW.into());
        }
        if self.detection.quarantine_duration_ms != old.detection.quarantine_duration_ms {
            errors.push(fixed::QUARANTINE_DURATION.into());
        }
        if self.genesis != old.genesis {
            errors.push("genesis cannot change after creation: every replica's ledger started from it".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec(errors))
        }
    }
}

/// Reads a ByzantineCluster from YAML (the same file `kubectl apply` takes) and checks it.
pub fn from_yaml(text: &str) -> Result<ByzantineCluster, String> {
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let expected = format!("{GROUP}/{VERSION}");
    if value["apiVersion"] != expected.as_str() || value["kind"] != "ByzantineCluster" {
        return Err(format!(
            "expected apiVersion {expected} and kind ByzantineCluster, got {} {}",
            value["apiVersion"], value["kind"]
        ));
    }
    let cluster: ByzantineCluster =
        serde_json::from_value(value).map_err(|e| format!("not a valid ByzantineCluster: {e}"))?;
    cluster.spec.validate().map_err(|e| e.to_string())?;
    Ok(cluster)
}

/// The CRD as YAML, as committed in crds/.
pub fn crd_yaml() -> String {
    let crd = ByzantineCluster::crd();
    let yaml = serde_saphyr::to_string(&crd).expect("a CRD serialises");
    format!("# Generated by `bft-operator crd` from operator/src/crd.rs: do not edit by hand.\n---\n{yaml}")
}
