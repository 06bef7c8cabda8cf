//! Watching the replicas: each one's Status and Detections, through the replica crate's gRPC client (the same
//! public API `bftctl` uses), merged into what the plan observes. No single replica is believed on its own: a
//! member counts as quarantined once F+1 replicas report it, and counts are those F+1 replicas reached.
//!
//! A member counts as quarantined when F+1 replicas' replicated state says so (a quarantine ordered through
//! consensus); the epoch and the active membership are those F+1 replicas report.

use std::collections::{BTreeMap, BTreeSet};

use bft_client::client::{self, Client};
use bft_client::proto::{DetectionsResponse, StatusResponse};
use bft_client::report;
use bft_core::config::max_failures;
use bft_core::crypto::PublicKey;
use bft_core::messages::ReplicaId;

use crate::crd::DetectionStatus;
use crate::plan::{MemberId, Observed, ObservedMember};

/// A member the operator polls.
#[derive(Clone, Debug)]
pub struct Target {
    pub id: MemberId,
    pub address: String,
    /// Hex.
    pub public_key: String,
}

/// Polls every target once; `None` when none answers.
pub async fn poll(targets: &[Target], voters: usize) -> Option<Observed> {
    let replicas: Vec<client::Replica> = targets
        .iter()
        .filter_map(|t| {
            Some(client::Replica {
                id: t.id,
                address: t.address.clone(),
                public_key: PublicKey::from_hex(&t.public_key).ok()?,
            })
        })
        .collect();
    let client = Client::new(replicas).ok()?;
    let (statuses, detections) = tokio::join!(client.statuses(), client.detections());
    let observed = merge(&statuses, &detections, voters);
    observed.members.values().any(|m| m.reachable).then_some(observed)
}

/// What F+1 of the replicas' answers support. `voters`: the size of the voting membership.
pub fn merge(
    statuses: &[(ReplicaId, Option<StatusResponse>)],
    detections: &[(ReplicaId, Option<DetectionsResponse>)],
    voters: usize,
) -> Observed {
    let f = max_failures(voters);
    let mut reported: BTreeMap<MemberId, BTreeSet<ReplicaId>> = BTreeMap::new();
    for (reporter, status) in statuses {
        for m in status.iter().flat_map(|s| &s.member_states) {
            if m.state == "quarantined" && m.id != *reporter {
                reported.entry(m.id).or_default().insert(*reporter);
            }
        }
    }
    let members = statuses
        .iter()
        .map(|(id, s)| {
            let member = ObservedMember {
                reachable: s.is_some(),
                quarantined_by: reported.get(id).map_or(0, |r| r.len()),
                last_executed: s.as_ref().map_or(0, |s| s.last_executed),
                stable_checkpoint: s.as_ref().map_or(0, |s| s.stable_checkpoint),
                epoch: s.as_ref().map_or(0, |s| s.epoch),
            };
            (*id, member)
        })
        .collect();
    let answered: Vec<&StatusResponse> = statuses.iter().filter_map(|(_, s)| s.as_ref()).collect();
    // The F+1-th highest value: at least one honest replica reached it.
    let reached = |value: fn(&StatusResponse) -> u64| {
        let mut values: Vec<u64> = answered.iter().map(|s| value(s)).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(f).copied().unwrap_or(0)
    };
    let mut views: BTreeMap<(u64, u32), usize> = BTreeMap::new();
    for s in &answered {
        *views.entry((s.view, s.primary)).or_default() += 1;
    }
    let (view, primary) = views
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .map_or((0, None), |((v, p), _)| (v, Some(p)));
    let detections = report::detection_log(voters, detections)
        .into_iter()
        .filter(|e| e.confirmed)
        .map(|e| DetectionStatus {
            member: e.agent_id.trim_start_matches("bft-agent-").parse().unwrap_or(0),
            fault_type: e.fault_type,
            first_seen: e.timestamp,
            reported_by: e.voted_by.len() as u32,
            proven: e.proven,
            evidence: format!(
                "{} in a {}{}: expected {}, received {}",
                e.detection_method,
                e.evidence.message,
                e.evidence
                    .sequence
                    .map_or(String::new(), |s| format!(" at sequence {s}")),
                e.evidence.expected,
                e.evidence.received
            ),
        })
        .collect();
    // The epoch F+1 replicas reached, and the active members as the replicas in it report them.
    let epoch = reached(|s| s.epoch);
    let mut memberships: BTreeMap<BTreeSet<MemberId>, usize> = BTreeMap::new();
    for s in answered
        .iter()
        .filter(|s| s.epoch == epoch && !s.member_states.is_empty())
    {
        let active = s
            .member_states
            .iter()
            .filter(|m| m.state != "removed")
            .map(|m| m.id)
            .collect();
        *memberships.entry(active).or_default() += 1;
    }
    let membership = memberships.into_iter().find(|(_, count)| *count > f).map(|(m, _)| m);
    // A reconfiguration ordered in that epoch and waiting for its boundary, once F+1 of its replicas say so.
    let mut waiting: Vec<u64> = answered
        .iter()
        .filter(|s| s.epoch == epoch)
        .filter_map(|s| s.reconfiguration_at_seq)
        .collect();
    waiting.sort_unstable_by(|a, b| b.cmp(a));
    let pending_reconfiguration = waiting.get(f).copied();
    Observed {
        members,
        epoch: (!answered.is_empty()).then_some(epoch),
        membership,
        view,
        primary,
        transactions_committed: reached(|s| s.transfers_applied),
        transactions_rejected: reached(|s| s.transfers_rejected),
        stable_checkpoint: reached(|s| s.stable_checkpoint),
        pending_reconfiguration,
        detections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_client::proto::Detection;

    fn status(id: ReplicaId, applied: u64, checkpoint: u64) -> (ReplicaId, Option<StatusResponse>) {
        let s = StatusResponse {
            id,
            view: 1,
            primary: 2,
            transfers_applied: applied,
            stable_checkpoint: checkpoint,
            last_executed: checkpoint + 5,
            ..Default::default()
        };
        (id, Some(s))
    }

    fn detected(by: ReplicaId, member: MemberId) -> (ReplicaId, Option<DetectionsResponse>) {
        let d = Detection {
            member,
            fault_type: "signature_mismatch".into(),
            detection_method: "signature verification".into(),
            message: "prepare".into(),
            sequence: Some(7),
            first_seen_unix_ms: 1_000,
            occurrences: 1,
            ..Default::default()
        };
        (
            by,
            Some(DetectionsResponse {
                id: by,
                detections: vec![d],
            }),
        )
    }

    #[test]
    fn quarantine_counts_distinct_reporters_other_than_the_member_itself() {
        let mut statuses: Vec<_> = (1..=7).map(|id| status(id, 1000, 100)).collect();
        for (id, s) in statuses.iter_mut() {
            let s = s.as_mut().unwrap();
            s.epoch = 1;
            s.member_states = (1..=7)
                .map(|m| bft_client::proto::MemberState {
                    id: m,
                    state: if m == 5 && [1, 2, 3, 5].contains(id) {
                        "quarantined"
                    } else {
                        "active"
                    }
                    .into(),
                    ..Default::default()
                })
                .collect();
        }
        let detections: Vec<_> = [1, 2, 3].iter().map(|by| detected(*by, 5)).collect();
        let o = merge(&statuses, &detections, 7);
        // 1, 2 and 3 say so; 5 saying it of itself counts for nothing.
        assert_eq!(o.members[&5].quarantined_by, 3);
        assert_eq!(o.epoch, Some(1));
        assert_eq!(o.membership, Some((1..=7).collect()));
        assert_eq!(o.members[&4].quarantined_by, 0);
        assert_eq!(o.detections.len(), 1, "three reporters > F = 2 confirm it");
        assert_eq!(o.detections[0].member, 5);
        assert!(o.detections[0].evidence.contains("at sequence 7"));
        assert_eq!((o.view, o.primary), (1, Some(2)));
        assert_eq!(o.pending_reconfiguration, None);
    }

    #[test]
    fn a_pending_reconfiguration_counts_once_f_plus_1_replicas_of_the_epoch_report_it() {
        let mut statuses: Vec<_> = (1..=4).map(|id| status(id, 10, 100)).collect();
        statuses[0].1.as_mut().unwrap().reconfiguration_at_seq = Some(110);
        // F = 1: one replica's word is not enough.
        assert_eq!(merge(&statuses, &[], 4).pending_reconfiguration, None);
        statuses[1].1.as_mut().unwrap().reconfiguration_at_seq = Some(110);
        assert_eq!(merge(&statuses, &[], 4).pending_reconfiguration, Some(110));
    }

    #[test]
    fn counts_are_what_f_plus_1_replicas_reached_and_unreachable_members_show() {
        let mut statuses: Vec<_> = (1..=4)
            .map(|id| status(id, 10 * u64::from(id), 100 * u64::from(id)))
            .collect();
        statuses[3].1 = None;
        statuses[2].1.as_mut().unwrap().transfers_applied = 1_000_000;
        let o = merge(&statuses, &[], 4);
        // F = 1: the second highest of 10, 20, 1000000.
        assert_eq!(o.transactions_committed, 20);
        assert_eq!(o.stable_checkpoint, 200);
        assert!(!o.members[&4].reachable);
        assert_eq!(o.members[&2].last_executed, 205);
    }
}
