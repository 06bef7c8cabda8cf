//! The plan: a pure function from (spec, recorded status, what the replicas report, now) to the actions to take
//! and the status to record. Every safety rule of the operator lives here, where unit and property tests reach it.
//!
//! Crash safety: a pass carries out the actions of the step the recorded status is in, then records the next
//! status. Every action is idempotent (apply, create-if-absent, scale, delete), so a restart between the two
//! repeats the step's actions and never duplicates their effect. A new member's id is reserved in the recorded
//! status before anything is created for it, so a restart reuses it instead of making another. The one action
//! that waits on the cluster, the reconfiguration, runs last in its pass and after its step (`AwaitingEpoch`) is
//! recorded; whether it was ordered or took effect is then read from the membership F+1 replicas report, never
//! from what the operator remembers, so a restart or a failed call at any point neither submits it twice nor
//! waits for what already happened.
//!
//! The safety rules:
//! - a member is taken as quarantined only when F+1 replicas report it (so at least one honest replica does);
//! - one replacement (one reconfiguration) at a time;
//! - no replacement starts, and no reconfiguration is submitted, unless a quorum of healthy members remains;
//! - at most F members fenced or being replaced at once, and at most `maxPerHour` (default F) members replaced
//!   in any hour: forged health data can never make the operator evict more honest members than that;
//! - a fenced member's key is never generated again, its workload never started again, and a new member always
//!   gets a fresh id (ids are never reused) and so a fresh key.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    ByzantineClusterSpec, ByzantineClusterStatus, DetectionStatus, MemberRole, MemberState, MemberStatus, Replacement,
    ReplacementMode, ReplacementStep,
};

pub type MemberId = u32;

/// The most detections kept in status.
pub const DETECTIONS_KEPT: usize = 20;
/// The most past replacement start times kept in status (only the last hour's count).
pub const HISTORY_KEPT: usize = 64;
const HOUR_MS: u64 = 3_600_000;
/// A replacement step that waits on the cluster and has not moved for this long is reported stalled (a Warning
/// event, the Reconfiguring condition's reason, a metric). With a working cluster every step but catching up
/// takes a pass or two, and the reconfiguration is in force well within the 60 s the operator's call gives it
/// (`platform::RECONFIGURE_TIMEOUT`); five minutes is several of those, yet reports a stuck replacement, which
/// holds back every later one, long before the hour the replacement cap counts. Catching up has its own limit,
/// `spec.replacement.catchUpTimeoutSeconds`.
pub const STALL_AFTER_MS: u64 = 300_000;
/// The Reconfiguring condition's reason while a replacement is stalled.
pub const STALLED: &str = "ReplacementStalled";

/// What the replicas report, merged over all of them (`health` builds it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub members: BTreeMap<MemberId, ObservedMember>,
    /// The membership epoch a quorum of replicas reports; `None` while replicas do not report epochs.
    pub epoch: Option<u64>,
    /// The voting members of that epoch as a quorum reports them; `None` while replicas do not report them.
    pub membership: Option<BTreeSet<MemberId>>,
    pub view: u64,
    pub primary: Option<MemberId>,
    pub transactions_committed: u64,
    pub transactions_rejected: u64,
    /// The highest stable checkpoint F+1 replicas reached: what a new member must reach to have caught up.
    pub stable_checkpoint: u64,
    /// A reconfiguration F+1 replicas (of the epoch above) report ordered and waiting for its checkpoint
    /// boundary: the sequence number it takes effect after.
    pub pending_reconfiguration: Option<u64>,
    /// Detections confirmed by F+1 replicas, oldest first.
    pub detections: Vec<DetectionStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedMember {
    pub reachable: bool,
    /// How many distinct replicas report this member quarantined.
    pub quarantined_by: usize,
    pub last_executed: u64,
    pub stable_checkpoint: u64,
    /// The epoch it reports being in (its own word: enough to tell whether a new member takes part yet).
    pub epoch: u64,
}

/// Requests made through annotations, with what was already carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// The replacement name approved (supervised mode).
    pub approved_replacement: Option<String>,
    pub force_view_change: Option<String>,
    pub inject_fault: Option<String>,
    /// The request values already carried out (from the `handled` annotation): `force-view-change=V`, ….
    pub handled: BTreeSet<String>,
}

pub struct Input<'a> {
    pub spec: &'a ByzantineClusterSpec,
    pub generation: Option<i64>,
    pub recorded: &'a ByzantineClusterStatus,
    /// `None` when no replica answered (or none was asked yet).
    pub observed: Option<&'a Observed>,
    /// Public keys (hex) of the members whose keys exist.
    pub keys: &'a BTreeMap<MemberId, String>,
    pub requests: &'a Requests,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Generate the member's keypair unless it exists (never overwritten).
    EnsureKey(MemberId),
    /// The cluster-wide objects: membership (voters and learners with their keys), services, disruption budget,
    /// network policy.
    ApplyCluster {
        voters: Vec<MemberId>,
        learners: Vec<MemberId>,
        /// Members that may be disrupted voluntarily now: F minus the members already unhealthy.
        max_unavailable: u32,
    },
    /// Run the member's workload (one pod at most) with its placement group.
    Run {
        id: MemberId,
        learner: bool,
        placement_group: u32,
    },
    /// Stop the member and unmount its private key (every pass while it is fenced); its volume stays.
    Fence(MemberId),
    /// Delete the fenced member's private key: no pod can ever mount it again.
    WithdrawKey(MemberId),
    /// Delete the member's workload; its volume stays for forensics.
    Retire(MemberId),
    /// Submit the signed reconfiguration to the replicas.
    Reconfigure {
        remove: Vec<MemberId>,
        add: Vec<MemberId>,
    },
    ForceViewChange,
    /// `drill` None: stop the member's fault drill.
    InjectFault {
        member: MemberId,
        drill: Option<(String, f64)>,
    },
    /// Record that an annotation request was carried out (or refused).
    MarkHandled(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: ByzantineClusterStatus,
    pub events: Vec<PlanEvent>,
    /// The status moved to a step whose actions run on the next pass: reconcile again soon.
    pub requeue_soon: bool,
}

pub fn agent(id: MemberId) -> String {
    format!("bft-agent-{id}")
}

/// The voting members: in the membership and not removed (quarantined members vote until removed).
pub fn voters(status: &ByzantineClusterStatus) -> Vec<MemberId> {
    status
        .members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Active | MemberState::Quarantined))
        .map(|m| m.id)
        .collect()
}

fn max_per_hour(spec: &ByzantineClusterSpec) -> usize {
    spec.replacement
        .max_per_hour
        .map_or(spec.sizing().max_failures.max(1), |m| m as usize)
}

pub fn plan(input: &Input) -> Plan {
    let spec = input.spec;
    let sizing = spec.sizing();
    let (f, quorum) = (sizing.max_failures, sizing.quorum);
    let mut status = input.recorded.clone();
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let mut requeue_soon = false;
    let now = rfc3339(input.now_ms);

    // A new cluster: members 1..=N, in placement groups 0..F round-robin.
    if status.members.is_empty() && status.next_member_id == 0 {
        status.members = (1..=spec.replicas)
            .map(|id| MemberStatus {
                id,
                pod: pod_name(id),
                role: MemberRole::Backup,
                state: MemberState::Active,
                fenced: false,
                public_key: String::new(),
                reachable: false,
                last_executed: 0,
                placement_group: (id - 1) % f.max(1) as u32,
            })
            .collect();
        status.next_member_id = spec.replicas + 1;
        events.push(PlanEvent {
            warning: false,
            reason: "Creating",
            note: format!(
                "{} members, F = {f}, quorum {quorum}: generating keys and starting them",
                spec.replicas
            ),
        });
    }

    // What the replicas report, onto the members.
    let observed = input.observed;
    show_keys(&mut status, input.keys);
    for m in &mut status.members {
        let seen = observed.and_then(|o| o.members.get(&m.id));
        m.reachable = seen.is_some_and(|s| s.reachable) && !m.fenced;
        m.last_executed = seen.map_or(m.last_executed, |s| s.last_executed);
        let quarantined = seen.is_some_and(|s| s.quarantined_by > f);
        // Quarantine comes and goes with what F+1 replicas report, except for a fenced member: it stays out.
        match m.state {
            MemberState::Active if quarantined => {
                m.state = MemberState::Quarantined;
                events.push(PlanEvent {
                    warning: true,
                    reason: "MemberQuarantined",
                    note: format!(
                        "{} is quarantined by {} replicas",
                        agent(m.id),
                        seen.map_or(0, |s| s.quarantined_by)
                    ),
                });
            }
            MemberState::Quarantined if !quarantined && !m.fenced => m.state = MemberState::Active,
            _ => {}
        }
        m.role = match (m.state, observed.and_then(|o| o.primary)) {
            (MemberState::Joining, _) => MemberRole::Learner,
            (_, Some(p)) if p == m.id => MemberRole::Primary,
            _ => MemberRole::Backup,
        };
    }
    if let Some(o) = observed {
        status.view = o.view;
        status.primary = o.primary.map(agent).unwrap_or_default();
        status.epoch = o.epoch.unwrap_or(status.epoch);
        status.transactions_committed = o.transactions_committed;
        status.transactions_rejected = o.transactions_rejected;
        let skip = o.detections.len().saturating_sub(DETECTIONS_KEPT);
        status.detections = o.detections[skip..].to_vec();
    }
    let healthy = healthy_voters(&status);
    status.healthy_replicas = healthy as u32;
    status.quorum_size = quorum as u32;
    status.max_failures = f as u32;
    status.quorum_met = healthy >= quorum;

    // The replacement state machine: at most one at a time.
    match status.replacement.clone() {
        None => {
            if let Some(r) = start_replacement(spec, &mut status, input.now_ms, &mut events) {
                // Stopped in the same pass: a quarantined member stops signing at once. Its key is withdrawn in
                // the next pass, once the status records it fenced (so no pass can ever make it a new key). A
                // restart before the status is recorded starts the same replacement again, with the same ids.
                for m in status.members.iter_mut().filter(|m| r.remove.contains(&m.id)) {
                    m.fenced = true;
                    m.reachable = false;
                }
                status.replacement = Some(r);
                requeue_soon = true;
            }
        }
        Some(mut r) => {
            let before = r.step;
            advance_replacement(input, &mut status, &mut r, &mut actions, &mut events);
            if r.step != before {
                r.step_started = now.clone();
                requeue_soon = true;
            }
            status.replacement = if r.step == ReplacementStep::Retiring && before == ReplacementStep::Retiring {
                None
            } else {
                Some(r)
            };
        }
    }
    // While a step waits on the cluster, look again soon rather than at the idle polling rate.
    if status
        .replacement
        .as_ref()
        .is_some_and(|r| stall_limit_ms(spec, r.step).is_some())
    {
        requeue_soon = true;
    }
    let stalled = status.replacement.as_ref().and_then(|r| stalled(spec, r, input.now_ms));
    if let (Some(r), Some((waited_ms, limit_ms))) = (&status.replacement, stalled) {
        // Once per stall: the recorded condition says whether it was already reported (by this run or before a
        // restart).
        let reported = input
            .recorded
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconfiguring" && c.reason == STALLED);
        if !reported {
            events.push(PlanEvent {
                warning: true,
                reason: STALLED,
                note: format!(
                    "{}: no progress in step {:?} for {} s (limit {} s): {}",
                    r.name,
                    r.step,
                    waited_ms / 1000,
                    limit_ms / 1000,
                    r.blocked.as_deref().unwrap_or("waiting on the cluster")
                ),
            });
        }
    }

    // Level-triggered: the desired state of every member, every pass.
    let voters = voters(&status);
    let learners: Vec<MemberId> = status
        .members
        .iter()
        .filter(|m| m.state == MemberState::Joining)
        .map(|m| m.id)
        .collect();
    // A key is made once, for a member that never had one. A member whose key went missing (deleted by hand,
    // or withdrawn by a fencing whose status was lost) is not given another: a new key under an old id would
    // be a second identity the other replicas never agreed to.
    let mut lost_key = BTreeSet::new();
    for m in &status.members {
        if m.state == MemberState::Removed {
            continue;
        }
        if m.fenced {
            actions.push(Action::Fence(m.id));
        } else if !m.public_key.is_empty() && !input.keys.contains_key(&m.id) {
            lost_key.insert(m.id);
            events.push(PlanEvent {
                warning: true,
                reason: "KeyMissing",
                note: format!(
                    "{}'s key is gone; it is not made again and the member is not started",
                    agent(m.id)
                ),
            });
        } else {
            actions.push(Action::EnsureKey(m.id));
        }
    }
    let unhealthy = voters.len().saturating_sub(healthy);
    actions.push(Action::ApplyCluster {
        voters: voters.clone(),
        learners: learners.clone(),
        max_unavailable: f.saturating_sub(unhealthy) as u32,
    });
    for m in &status.members {
        if m.state != MemberState::Removed && !m.fenced && !lost_key.contains(&m.id) {
            actions.push(Action::Run {
                id: m.id,
                learner: m.state == MemberState::Joining,
                placement_group: m.placement_group,
            });
        }
    }
    requests(spec, input.requests, &status, &mut actions, &mut events);
    // Fencing and retiring run before anything else: a fenced member stops signing first. The reconfiguration
    // runs last: it waits on the cluster, and the platform records the status before it.
    actions.sort_by_key(|a| match a {
        Action::Fence(_) => 0,
        Action::WithdrawKey(_) => 1,
        Action::Retire(_) => 2,
        Action::Reconfigure { .. } => 4,
        _ => 3,
    });

    status.observed_generation = input.generation;
    status.phase = phase(&status, observed.is_some()).into();
    status.conditions = conditions(&status, stalled, &input.recorded.conditions, input.generation, &now);
    Plan {
        actions,
        status,
        events,
        requeue_soon,
    }
}

/// Shows each member's public key prefix in status, for keys made during the pass.
pub fn show_keys(status: &mut ByzantineClusterStatus, keys: &BTreeMap<MemberId, String>) {
    for m in &mut status.members {
        if let Some(key) = keys.get(&m.id) {
            m.public_key = key.chars().take(16).collect();
        }
    }
}

pub fn pod_name(id: MemberId) -> String {
    format!("{}-0", agent(id))
}

/// Voting members that answer, are not quarantined and not fenced.
pub fn healthy_voters(status: &ByzantineClusterStatus) -> usize {
    status
        .members
        .iter()
        .filter(|m| m.state == MemberState::Active && m.reachable && !m.fenced)
        .count()
}

/// How long a step may go without progress before it is reported stalled; `None` for a step that waits for a
/// person (approval) or, by the spec, for nothing (replacement disabled).
fn stall_limit_ms(spec: &ByzantineClusterSpec, step: ReplacementStep) -> Option<u64> {
    match step {
        ReplacementStep::AwaitingApproval => None,
        ReplacementStep::CreatingMembers if spec.replacement.mode == ReplacementMode::Disabled => None,
        ReplacementStep::CatchingUp => Some(spec.replacement.catch_up_timeout_seconds.saturating_mul(1000)),
        // A cluster that must change views before it orders the change needs a few view-change timeouts (the
        // timer doubles on each failure): never report that as a stall.
        _ => Some(STALL_AFTER_MS.max(spec.protocol.view_change_timeout_ms.saturating_mul(10))),
    }
}

/// (how long the step has waited, its limit) once it has waited longer than the limit.
fn stalled(spec: &ByzantineClusterSpec, r: &Replacement, now_ms: u64) -> Option<(u64, u64)> {
    let limit = stall_limit_ms(spec, r.step)?;
    let waited = now_ms.saturating_sub(parse_rfc3339(&r.step_started)?);
    (waited > limit).then_some((waited, limit))
}

/// Whether the membership F+1 replicas report is the one the replacement leads to. Ids are never reused, so
/// only this reconfiguration (or the same change made by hand) can have put every added id in and every removed
/// one out.
fn in_effect(r: &Replacement, observed: &Observed) -> bool {
    observed.membership.as_ref().is_some_and(|members| {
        r.add.iter().all(|id| members.contains(id)) && r.remove.iter().all(|id| !members.contains(id))
    })
}

/// The added members that do not yet report the epoch F+1 replicas are in: they have not caught up to where it
/// began, so they do not take part yet.
fn not_joined(r: &Replacement, observed: &Observed) -> Vec<MemberId> {
    let epoch = observed.epoch.unwrap_or(0);
    r.add
        .iter()
        .filter(|id| {
            !observed
                .members
                .get(id)
                .is_some_and(|m| m.reachable && m.epoch >= epoch)
        })
        .copied()
        .collect()
}

/// Starts replacing quarantined members when every safety rule allows it; the ids of the new members are
/// reserved in `status` now.
fn start_replacement(
    spec: &ByzantineClusterSpec,
    status: &mut ByzantineClusterStatus,
    now_ms: u64,
    events: &mut Vec<PlanEvent>,
) -> Option<Replacement> {
    let sizing = spec.sizing();
    let (f, quorum) = (sizing.max_failures, sizing.quorum);
    let candidates: Vec<MemberId> = status
        .members
        .iter()
        .filter(|m| m.state == MemberState::Quarantined && !m.fenced)
        .map(|m| m.id)
        .collect();
    if candidates.is_empty() || !spec.detection.enabled {
        return None;
    }
    let healthy = healthy_voters(status);
    if healthy < quorum {
        events.push(PlanEvent {
            warning: true,
            reason: "ReplacementHeld",
            note: format!(
                "{} quarantined but only {healthy} healthy members (quorum {quorum}): nothing is changed until a quorum is healthy",
                candidates.iter().map(|id| agent(*id)).collect::<Vec<_>>().join(", ")
            ),
        });
        return None;
    }
    // At most F fenced (and not yet removed) members at once.
    let fenced = status
        .members
        .iter()
        .filter(|m| m.fenced && m.state != MemberState::Removed)
        .count();
    let hour_ago = now_ms.saturating_sub(HOUR_MS);
    let last_hour = status
        .replacement_history
        .iter()
        .filter(|t| parse_rfc3339(t).is_some_and(|ms| ms > hour_ago))
        .count();
    let room = f
        .saturating_sub(fenced)
        .min(max_per_hour(spec).saturating_sub(last_hour));
    if room == 0 {
        events.push(PlanEvent {
            warning: true,
            reason: "ReplacementHeld",
            note: format!(
                "{} quarantined; {fenced} members already fenced of at most F = {f}, {last_hour} replaced in the last hour of at most {}",
                candidates.iter().map(|id| agent(*id)).collect::<Vec<_>>().join(", "),
                max_per_hour(spec)
            ),
        });
        return None;
    }
    let remove: Vec<MemberId> = candidates.into_iter().take(room).collect();
    let add: Vec<MemberId> = (0..remove.len() as u32).map(|i| status.next_member_id + i).collect();
    status.next_member_id += remove.len() as u32;
    let now = rfc3339(now_ms);
    for _ in &remove {
        status.replacement_history.push(now.clone());
    }
    let skip = status.replacement_history.len().saturating_sub(HISTORY_KEPT);
    status.replacement_history.drain(..skip);
    let name = format!("r-{}", add[0]);
    events.push(PlanEvent {
        warning: true,
        reason: "ReplacementStarted",
        note: format!(
            "{name}: fencing {} and replacing with {}",
            remove.iter().map(|id| agent(*id)).collect::<Vec<_>>().join(", "),
            add.iter().map(|id| agent(*id)).collect::<Vec<_>>().join(", ")
        ),
    });
    Some(Replacement {
        name,
        remove,
        add,
        step: ReplacementStep::Fencing,
        started: now.clone(),
        step_started: now,
        epoch_before: None,
        blocked: None,
    })
}

fn advance_replacement(
    input: &Input,
    status: &mut ByzantineClusterStatus,
    r: &mut Replacement,
    actions: &mut Vec<Action>,
    events: &mut Vec<PlanEvent>,
) {
    let spec = input.spec;
    let quorum = spec.sizing().quorum;
    r.blocked = None;
    match r.step {
        ReplacementStep::Fencing => {
            for m in status.members.iter_mut().filter(|m| r.remove.contains(&m.id)) {
                m.fenced = true;
                m.reachable = false;
                m.state = MemberState::Quarantined;
                actions.push(Action::WithdrawKey(m.id));
            }
            events.push(PlanEvent {
                warning: true,
                reason: "Fenced",
                note: format!(
                    "{}: stopped, private key withdrawn; volume kept for forensics",
                    r.remove.iter().map(|id| agent(*id)).collect::<Vec<_>>().join(", ")
                ),
            });
            r.step = match spec.replacement.mode {
                ReplacementMode::Supervised => ReplacementStep::AwaitingApproval,
                _ => ReplacementStep::CreatingMembers,
            };
        }
        ReplacementStep::AwaitingApproval => {
            if spec.replacement.mode != ReplacementMode::Supervised
                || input.requests.approved_replacement.as_deref() == Some(r.name.as_str())
            {
                r.step = ReplacementStep::CreatingMembers;
            } else {
                r.blocked = Some(format!(
                    "waiting for approval: annotate with {}={}",
                    crate::crd::annotations::APPROVE_REPLACEMENT,
                    r.name
                ));
            }
        }
        ReplacementStep::CreatingMembers => {
            if spec.replacement.mode == ReplacementMode::Disabled {
                r.blocked = Some("replacement.mode is Disabled: the quarantined members stay fenced".into());
                return;
            }
            let used: Vec<u32> = status
                .members
                .iter()
                .filter(|m| m.state != MemberState::Removed && !r.remove.contains(&m.id))
                .map(|m| m.placement_group)
                .collect();
            for (i, id) in r.add.iter().enumerate() {
                if status.members.iter().any(|m| m.id == *id) {
                    continue;
                }
                // The group a removed member leaves is the one its replacement takes.
                let group = status
                    .members
                    .iter()
                    .find(|m| Some(&m.id) == r.remove.get(i))
                    .map_or_else(
                        || least_used_group(&used, spec.sizing().max_failures),
                        |m| m.placement_group,
                    );
                status.members.push(MemberStatus {
                    id: *id,
                    pod: pod_name(*id),
                    role: MemberRole::Learner,
                    state: MemberState::Joining,
                    fenced: false,
                    public_key: String::new(),
                    reachable: false,
                    last_executed: 0,
                    placement_group: group,
                });
            }
            r.step = ReplacementStep::CatchingUp;
        }
        ReplacementStep::CatchingUp => {
            let target = input.observed.map_or(u64::MAX, |o| o.stable_checkpoint);
            let caught_up = r.add.iter().all(|id| {
                input
                    .observed
                    .and_then(|o| o.members.get(id))
                    // Answering is enough: the replicas let a new member catch up by state transfer once the
                    // reconfiguration adds it, and the reconfiguration call waits for that.
                    .is_some_and(|m| m.reachable)
            });
            if caught_up {
                r.step = ReplacementStep::Reconfiguring;
            } else {
                let waited_s = input
                    .now_ms
                    .saturating_sub(parse_rfc3339(&r.step_started).unwrap_or(input.now_ms))
                    / 1000;
                r.blocked = Some(if waited_s > spec.replacement.catch_up_timeout_seconds {
                    format!("the new members have not caught up to the stable checkpoint {target} after {waited_s} s")
                } else {
                    format!("new members catching up to the stable checkpoint {target}")
                });
            }
        }
        // Whether the change was submitted, ordered or already in force is read from the replicas, never from
        // what this operator remembers: after a restart at any point, or a call that failed once the replicas had
        // ordered it, the membership F+1 replicas report says where the replacement is.
        ReplacementStep::Reconfiguring | ReplacementStep::AwaitingEpoch => {
            let healthy = healthy_voters(status);
            let observed = input.observed;
            let joining = observed.filter(|o| in_effect(r, o)).map(|o| not_joined(r, o));
            if joining.as_ref().is_some_and(|j| !j.is_empty()) {
                // In force; the new members catch up to where the epoch began before they count as active (as the
                // reconfiguration call waits for, when it is not cut short).
                r.step = ReplacementStep::AwaitingEpoch;
                r.blocked = Some(format!(
                    "epoch {} is in force; waiting for {} to take part in it",
                    status.epoch,
                    joining
                        .unwrap_or_default()
                        .iter()
                        .map(|id| agent(*id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            } else if joining.is_some() {
                for m in &mut status.members {
                    if r.add.contains(&m.id) {
                        m.state = MemberState::Active;
                        m.role = MemberRole::Backup;
                    } else if r.remove.contains(&m.id) {
                        m.state = MemberState::Removed;
                    }
                }
                events.push(PlanEvent {
                    warning: false,
                    reason: "Reconfigured",
                    note: format!("{}: epoch {} in effect", r.name, status.epoch),
                });
                r.step = ReplacementStep::Retiring;
            } else if let Some(at) = observed.and_then(|o| o.pending_reconfiguration) {
                // Ordered, and in force at the boundary: another submission would only be refused.
                r.step = ReplacementStep::AwaitingEpoch;
                r.blocked = Some(format!(
                    "the reconfiguration is ordered and takes effect after sequence {at}"
                ));
            } else if healthy < quorum {
                r.blocked = Some(format!(
                    "only {healthy} healthy members (quorum {quorum}): the reconfiguration waits"
                ));
            } else {
                if r.step == ReplacementStep::AwaitingEpoch {
                    // Recorded as submitted, yet the replicas neither ordered it nor are in the new membership:
                    // the operator stopped before the submission reached them, or they refused it.
                    events.push(PlanEvent {
                        warning: true,
                        reason: "ReconfigurationNotOrdered",
                        note: format!(
                            "{}: submitted in epoch {}, but the replicas report it neither ordered nor in effect: submitting again",
                            r.name,
                            r.epoch_before.unwrap_or(status.epoch)
                        ),
                    });
                }
                r.epoch_before = Some(status.epoch);
                actions.push(Action::Reconfigure {
                    remove: r.remove.clone(),
                    add: r.add.clone(),
                });
                events.push(PlanEvent {
                    warning: false,
                    reason: "Reconfiguring",
                    note: format!(
                        "{}: submitted remove {:?}, add {:?} in epoch {}",
                        r.name, r.remove, r.add, status.epoch
                    ),
                });
                r.step = ReplacementStep::AwaitingEpoch;
            }
        }
        ReplacementStep::Retiring => {
            for id in &r.remove {
                actions.push(Action::Retire(*id));
            }
            events.push(PlanEvent {
                warning: false,
                reason: "ReplacementDone",
                note: format!(
                    "{}: {} retired (volumes and detections kept), {} active; {} ms after the quarantine was seen",
                    r.name,
                    r.remove.iter().map(|id| agent(*id)).collect::<Vec<_>>().join(", "),
                    r.add.iter().map(|id| agent(*id)).collect::<Vec<_>>().join(", "),
                    input
                        .now_ms
                        .saturating_sub(parse_rfc3339(&r.started).unwrap_or(input.now_ms))
                ),
            });
        }
    }
}

fn least_used_group(used: &[u32], f: usize) -> u32 {
    (0..f.max(1) as u32)
        .min_by_key(|g| used.iter().filter(|u| *u == g).count())
        .unwrap_or(0)
}

/// Drills asked for through annotations, each carried out once.
fn requests(
    spec: &ByzantineClusterSpec,
    requests: &Requests,
    status: &ByzantineClusterStatus,
    actions: &mut Vec<Action>,
    events: &mut Vec<PlanEvent>,
) {
    let allowed = spec.fault_drills.allowed;
    if let Some(value) = &requests.force_view_change {
        let key = format!("force-view-change={value}");
        if !requests.handled.contains(&key) {
            if allowed {
                actions.push(Action::ForceViewChange);
            } else {
                events.push(refused("a forced view change"));
            }
            actions.push(Action::MarkHandled(key));
        }
    }
    if let Some(value) = &requests.inject_fault {
        let key = format!("inject-fault={value}");
        if !requests.handled.contains(&key) {
            match (allowed, parse_fault_request(value)) {
                (false, _) => events.push(refused("a fault drill")),
                (true, Ok((member, drill))) if status.members.iter().any(|m| m.id == member) => {
                    actions.push(Action::InjectFault { member, drill })
                }
                (true, Ok((member, _))) => events.push(PlanEvent {
                    warning: true,
                    reason: "RequestRefused",
                    note: format!("inject-fault: {} is not a member", agent(member)),
                }),
                (true, Err(error)) => events.push(PlanEvent {
                    warning: true,
                    reason: "RequestRefused",
                    note: format!("inject-fault: {error}"),
                }),
            }
            actions.push(Action::MarkHandled(key));
        }
    }
}

fn refused(what: &str) -> PlanEvent {
    PlanEvent {
        warning: true,
        reason: "RequestRefused",
        note: format!("{what} was asked for but spec.faultDrills.allowed is false"),
    }
}

/// `MEMBER:FAULT:PROBABILITY` or `MEMBER:clear`.
pub fn parse_fault_request(value: &str) -> Result<(MemberId, Option<(String, f64)>), String> {
    let parts: Vec<&str> = value.split(':').collect();
    let member: MemberId = parts
        .first()
        .and_then(|m| m.trim().parse().ok())
        .ok_or_else(|| format!("{value:?}: expected MEMBER:FAULT:PROBABILITY or MEMBER:clear"))?;
    match parts.as_slice() {
        [_, "clear"] => Ok((member, None)),
        [_, fault, p] => {
            let p: f64 = p
                .parse()
                .map_err(|_| format!("{value:?}: probability {p:?} is not a number"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{value:?}: probability must be in [0, 1]"));
            }
            Ok((member, Some((fault.to_string(), p))))
        }
        _ => Err(format!("{value:?}: expected MEMBER:FAULT:PROBABILITY or MEMBER:clear")),
    }
}

fn phase(status: &ByzantineClusterStatus, observed: bool) -> &'static str {
    if !observed && status.healthy_replicas == 0 {
        "Creating"
    } else if status.replacement.is_some() {
        "Reconfiguring"
    } else if !status.quorum_met {
        "Failed"
    } else if status
        .members
        .iter()
        .any(|m| m.state != MemberState::Removed && (!m.reachable || m.state != MemberState::Active))
    {
        "Degraded"
    } else {
        "Running"
    }
}

fn conditions(
    status: &ByzantineClusterStatus,
    stalled: Option<(u64, u64)>,
    old: &[Condition],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let live: Vec<&MemberStatus> = status
        .members
        .iter()
        .filter(|m| m.state != MemberState::Removed)
        .collect();
    let unhealthy: Vec<String> = live
        .iter()
        .filter(|m| !m.reachable || m.state != MemberState::Active)
        .map(|m| agent(m.id))
        .collect();
    let ready = status.quorum_met && unhealthy.is_empty() && status.replacement.is_none();
    let reconfiguring = status.replacement.as_ref().map(|r| {
        let mut message = format!("{}: {:?}, removing {:?}, adding {:?}", r.name, r.step, r.remove, r.add);
        if let Some((waited_ms, limit_ms)) = stalled {
            message.push_str(&format!(
                "; no progress for {} s (limit {} s)",
                waited_ms / 1000,
                limit_ms / 1000
            ));
        }
        if let Some(blocked) = &r.blocked {
            message.push_str(&format!("; {blocked}"));
        }
        message
    });
    let list = [
        (
            "Ready",
            ready,
            if ready {
                "AllMembersHealthy"
            } else {
                "NotAllMembersHealthy"
            },
            format!(
                "{} of {} voting members healthy",
                status.healthy_replicas,
                voters(status).len()
            ),
        ),
        (
            "QuorumHealthy",
            status.quorum_met,
            if status.quorum_met { "QuorumMet" } else { "QuorumLost" },
            format!("{} healthy, quorum {}", status.healthy_replicas, status.quorum_size),
        ),
        (
            "Degraded",
            !unhealthy.is_empty(),
            if unhealthy.is_empty() {
                "NoUnhealthyMembers"
            } else {
                "UnhealthyMembers"
            },
            if unhealthy.is_empty() {
                "every member answers and none is quarantined".to_string()
            } else {
                format!("unhealthy: {}", unhealthy.join(", "))
            },
        ),
        (
            "Reconfiguring",
            reconfiguring.is_some(),
            match (&reconfiguring, stalled) {
                (None, _) => "Idle",
                (Some(_), Some(_)) => STALLED,
                (Some(_), None) => "ReplacementInProgress",
            },
            reconfiguring.unwrap_or_else(|| "no replacement in progress".into()),
        ),
    ];
    list.into_iter()
        .map(|(type_, on, reason, message)| {
            let value = if on { "True" } else { "False" };
            // lastTransitionTime moves only when the condition's value does.
            let since = old
                .iter()
                .find(|c| c.type_ == type_ && c.status == value)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| time(now));
            Condition {
                type_: type_.into(),
                status: value.into(),
                reason: reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

fn time(rfc3339: &str) -> Time {
    Time(rfc3339.parse().unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

pub fn rfc3339(unix_ms: u64) -> String {
    bft_client::report::rfc3339(unix_ms)
}

pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let ts: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    u64::try_from(ts.as_millisecond()).ok()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
