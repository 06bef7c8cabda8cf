//! The cluster-wide reports of the drill (SCENARIO.md steps 7 and 8), built from what every replica answers.
//!
//! No single replica is believed on its own: a member counts as detected once F+1 replicas logged it (so at least
//! one honest replica saw it misbehave), and the transaction counts are those F+1 replicas reached.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::proto::{DetectionsResponse, StatusResponse};
use bft_core::config::{max_failures, quorum_size};
use bft_core::messages::ReplicaId;

pub fn agent(id: ReplicaId) -> String {
    format!("bft-agent-{id}")
}

/// One entry of the detection log (step 7): a member and a kind of fault, with the first evidence seen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectionEntry {
    /// When a replica first saw it (RFC 3339, UTC).
    pub timestamp: String,
    pub agent_id: String,
    pub fault_type: String,
    pub detection_method: String,
    pub evidence: Evidence,
    /// The replicas that logged it.
    pub voted_by: Vec<String>,
    /// Offending messages seen, summed over the replicas.
    pub occurrences: u64,
    /// Whether F+1 replicas logged it, so that at least one honest replica did.
    pub confirmed: bool,
    /// Whether a replica holds signed messages proving it to anyone (evidence, not only its word).
    pub proven: bool,
    /// What consensus decided, as F+1 replicas report it: "quarantined", "removed", "quarantine_expired", or
    /// "logged" when nothing was decided (yet).
    pub action: String,
    pub quarantine_expires: Option<String>,
    /// From the first sighting to the earliest replica executing the quarantine.
    pub detection_latency_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    pub message: String,
    pub sequence: Option<u64>,
    pub transaction: Option<String>,
    pub expected: String,
    pub received: String,
}

/// Merges every replica's detections: one entry per (member, fault type), oldest first.
pub fn detection_log(n: usize, answers: &[(ReplicaId, Option<DetectionsResponse>)]) -> Vec<DetectionEntry> {
    let confirming = max_failures(n) + 1;
    let mut merged: BTreeMap<(ReplicaId, String), (DetectionEntry, u64)> = BTreeMap::new();
    #[derive(Default)]
    struct Decided {
        actions: BTreeMap<String, usize>,
        expires: Option<u64>,
        quarantined: Option<u64>,
    }
    let mut decisions: BTreeMap<(ReplicaId, String), Decided> = BTreeMap::new();
    for (replica, answer) in answers {
        for d in answer.iter().flat_map(|a| &a.detections) {
            let (entry, first_seen) = merged.entry((d.member, d.fault_type.clone())).or_insert_with(|| {
                let entry = DetectionEntry {
                    timestamp: String::new(),
                    agent_id: agent(d.member),
                    fault_type: d.fault_type.clone(),
                    detection_method: d.detection_method.clone(),
                    evidence: Evidence {
                        message: d.message.clone(),
                        sequence: d.sequence,
                        transaction: d.transaction.clone(),
                        expected: d.expected.clone(),
                        received: d.received.clone(),
                    },
                    voted_by: Vec::new(),
                    occurrences: 0,
                    confirmed: false,
                    proven: false,
                    action: "logged".into(),
                    quarantine_expires: None,
                    detection_latency_ms: None,
                };
                (entry, u64::MAX)
            });
            let decided = decisions.entry((d.member, d.fault_type.clone())).or_default();
            *decided.actions.entry(d.action.clone()).or_default() += 1;
            decided.expires = decided.expires.max(d.quarantine_expires_unix_ms);
            if let Some(at) = d.quarantined_unix_ms {
                decided.quarantined = Some(decided.quarantined.map_or(at, |q: u64| q.min(at)));
            }
            // The earliest sighting's evidence stands for the entry.
            if d.first_seen_unix_ms < *first_seen {
                *first_seen = d.first_seen_unix_ms;
                entry.detection_method = d.detection_method.clone();
                entry.evidence.message = d.message.clone();
                entry.evidence.sequence = d.sequence;
                entry.evidence.transaction = d.transaction.clone();
                entry.evidence.expected = d.expected.clone();
                entry.evidence.received = d.received.clone();
            }
            entry.voted_by.push(agent(*replica));
            entry.proven |= d.proven;
            entry.occurrences += d.occurrences;
        }
    }
    let mut log: Vec<(u64, DetectionEntry)> = merged
        .into_iter()
        .map(|(key, (mut entry, first_seen))| {
            entry.timestamp = rfc3339(first_seen);
            entry.confirmed = entry.voted_by.len() >= confirming;
            if let Some(decided) = decisions.get(&key) {
                let agreed = decided
                    .actions
                    .iter()
                    .find(|(a, n)| **n >= confirming && a.as_str() != "logged");
                if let Some((action, _)) = agreed {
                    entry.action = action.clone();
                    if action == "quarantined" {
                        entry.quarantine_expires = decided.expires.map(rfc3339);
                    }
                    entry.detection_latency_ms = decided.quarantined.map(|q| q.saturating_sub(first_seen));
                }
            }
            (first_seen, entry)
        })
        .collect();
    log.sort_by_key(|(first_seen, _)| *first_seen);
    log.into_iter().map(|(_, entry)| entry).collect()
}

/// The consensus-health report (step 8).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// "healthy" while a quorum of members is reachable, undetected and agrees on the state; else "critical".
    pub status: String,
    pub total_agents: usize,
    pub malicious_detected: usize,
    pub healthy_agents: usize,
    pub quorum_met: bool,
    pub quorum_threshold: usize,
    pub max_failures: usize,
    pub transactions_committed: u64,
    pub transactions_rejected: u64,
    /// Confirmed detections of members that never ran a fault drill, over the members that never did.
    pub false_positive_rate: f64,
    /// "intact" when no two undetected replicas hold different states at one stable checkpoint.
    pub system_integrity: String,
    pub view: u64,
    pub primary: String,
    pub detected_agents: Vec<String>,
    pub unreachable_agents: Vec<String>,
}

/// The members of the newest epoch that F+1 of its own members report alike (so at least one honest replica
/// does); `None` when no replica reports a membership (every replica asked is then taken as a member).
fn current_members(statuses: &[(ReplicaId, Option<StatusResponse>)]) -> Option<BTreeSet<ReplicaId>> {
    let mut votes: BTreeMap<(u64, BTreeSet<ReplicaId>), usize> = BTreeMap::new();
    for (id, s) in statuses {
        let Some(s) = s else { continue };
        let members: BTreeSet<ReplicaId> = s
            .member_states
            .iter()
            .filter(|m| m.state != "removed")
            .map(|m| m.id)
            .collect();
        if members.contains(id) {
            *votes.entry((s.epoch, members)).or_default() += 1;
        }
    }
    votes
        .into_iter()
        // F+1 of the larger of that membership and the replicas asked: a lone liar cannot shrink the membership
        // to one it alone vouches for.
        .filter(|((_, members), count)| *count > max_failures(members.len().max(statuses.len())))
        .max_by_key(|((epoch, _), _)| *epoch)
        .map(|((_, members), _)| members)
}

/// The consensus-health report over the current membership: members removed by a reconfiguration (and replicas
/// the client knows that are not members yet) count neither as agents nor as unreachable, but what they were
/// detected doing stays in the counts of detected members.
pub fn health(
    statuses: &[(ReplicaId, Option<StatusResponse>)],
    detections: &[(ReplicaId, Option<DetectionsResponse>)],
) -> Health {
    let members = current_members(statuses);
    let is_member = |id: &ReplicaId| members.as_ref().is_none_or(|m| m.contains(id));
    let all = statuses;
    let statuses: Vec<(ReplicaId, Option<StatusResponse>)> =
        all.iter().filter(|(id, _)| is_member(id)).cloned().collect();
    let n = members.as_ref().map_or(statuses.len(), |m| m.len());
    let f = max_failures(n);
    let quorum = quorum_size(n);
    let log = detection_log(n, detections);
    let detected: BTreeSet<String> = log.iter().filter(|e| e.confirmed).map(|e| e.agent_id.clone()).collect();
    let unreachable: Vec<String> = statuses
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(id, _)| agent(*id))
        .collect();
    let healthy = statuses
        .iter()
        .filter(|(id, s)| s.is_some() && !detected.contains(&agent(*id)))
        .count();

    // Counts that F+1 replicas reached: a lying replica can neither inflate nor deflate them.
    let answered: Vec<&StatusResponse> = statuses.iter().filter_map(|(_, s)| s.as_ref()).collect();
    let reached_by_f_plus_1 = |value: fn(&StatusResponse) -> u64| {
        let mut values: Vec<u64> = answered.iter().map(|s| value(s)).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(f).copied().unwrap_or(0)
    };

    // Honest: replicas that answer and ran no fault drill, members or not. A replica that does not answer (a
    // fenced one is stopped) cannot say whether it ran one, so it is left out of the rate rather than guessed.
    let honest: BTreeSet<String> = all
        .iter()
        .filter(|(_, s)| s.as_ref().is_some_and(|s| !s.drilled))
        .map(|(id, _)| agent(*id))
        .collect();
    let false_positives = detected.intersection(&honest).count();
    let false_positive_rate = if honest.is_empty() {
        0.0
    } else {
        false_positives as f64 / honest.len() as f64
    };

    let mut states: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for (id, s) in &statuses {
        if let Some(s) = s
            && !detected.contains(&agent(*id))
        {
            states
                .entry(s.stable_checkpoint)
                .or_default()
                .insert(&s.stable_state_digest);
        }
    }
    let intact = states.values().all(|digests| digests.len() == 1);

    // The view most replicas are in, and its primary.
    let mut views: BTreeMap<(u64, u32), usize> = BTreeMap::new();
    for s in &answered {
        *views.entry((s.view, s.primary)).or_default() += 1;
    }
    let (view, primary) = views
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .map_or((0, 0), |(v, _)| v);

    let quorum_met = healthy >= quorum;
    Health {
        status: if quorum_met && intact { "healthy" } else { "critical" }.into(),
        total_agents: n,
        malicious_detected: detected.len(),
        healthy_agents: healthy,
        quorum_met,
        quorum_threshold: quorum,
        max_failures: f,
        transactions_committed: reached_by_f_plus_1(|s| s.transfers_applied),
        transactions_rejected: reached_by_f_plus_1(|s| s.transfers_rejected),
        false_positive_rate,
        system_integrity: if intact { "intact" } else { "compromised" }.into(),
        view,
        primary: agent(primary),
        detected_agents: detected.into_iter().collect(),
        unreachable_agents: unreachable,
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC, e.g. 2026-11-24T19:05:01.123Z.
pub fn rfc3339(unix_ms: u64) -> String {
    let at = i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    format!("{at:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Detection, MemberState};

    fn status(id: ReplicaId, applied: u64, digest: &str, drilled: bool) -> (ReplicaId, Option<StatusResponse>) {
        let s = StatusResponse {
            id,
            primary: 1,
            transfers_applied: applied,
            stable_checkpoint: 100,
            stable_state_digest: digest.into(),
            drilled,
            ..Default::default()
        };
        (id, Some(s))
    }

    fn detections(id: ReplicaId, members: &[ReplicaId]) -> (ReplicaId, Option<DetectionsResponse>) {
        let detections = members
            .iter()
            .map(|m| Detection {
                member: *m,
                fault_type: "signature_mismatch".into(),
                first_seen_unix_ms: 1_000 + u64::from(id),
                occurrences: 2,
                ..Default::default()
            })
            .collect();
        (id, Some(DetectionsResponse { id, detections }))
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_539_901_123), "2026-11-24T17:05:01.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_member_logged_by_f_plus_1_replicas_is_detected_and_one_logged_by_a_single_replica_is_not() {
        // 7 replicas, F = 2: agent 5 is seen by five replicas; agent 7 claims agent 2 misbehaved.
        let statuses: Vec<_> = (1..=7).map(|id| status(id, 1000, "aa", id == 5)).collect();
        let mut answers: Vec<_> = [1, 2, 3, 4, 6].iter().map(|id| detections(*id, &[5])).collect();
        answers.push(detections(7, &[2]));
        let log = detection_log(7, &answers);
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].agent_id, "bft-agent-5");
        assert!(log[0].confirmed);
        assert_eq!(log[0].voted_by.len(), 5);
        assert_eq!(log[0].occurrences, 10);
        assert!(!log[1].confirmed, "one replica's word is not enough");

        let report = health(&statuses, &answers);
        assert_eq!(report.status, "healthy");
        assert_eq!(report.malicious_detected, 1);
        assert_eq!(report.healthy_agents, 6);
        assert!(report.quorum_met);
        assert_eq!(report.quorum_threshold, 5);
        assert_eq!(report.false_positive_rate, 0.0);
        assert_eq!(report.system_integrity, "intact");
        assert_eq!(report.transactions_committed, 1000);
    }

    #[test]
    fn counts_are_what_f_plus_1_replicas_reached_and_diverging_states_break_integrity() {
        let mut statuses: Vec<_> = (1..=4).map(|id| status(id, 10 * u64::from(id), "aa", false)).collect();
        // One replica claims far more; F + 1 = 2 replicas reached at least 30.
        statuses[3].1.as_mut().unwrap().transfers_applied = 1_000_000;
        assert_eq!(health(&statuses, &[]).transactions_committed, 30);
        statuses[1].1.as_mut().unwrap().stable_state_digest = "bb".into();
        let report = health(&statuses, &[]);
        assert_eq!(
            (report.system_integrity.as_str(), report.status.as_str()),
            ("compromised", "critical")
        );
    }

    #[test]
    fn an_honest_member_detected_is_a_false_positive_and_unreachable_members_are_not_healthy() {
        let mut statuses: Vec<_> = (1..=4).map(|id| status(id, 5, "aa", false)).collect();
        statuses[3].1 = None;
        let answers: Vec<_> = [1, 3].iter().map(|id| detections(*id, &[2])).collect();
        let report = health(&statuses, &answers);
        assert_eq!(report.detected_agents, vec!["bft-agent-2"]);
        assert_eq!(report.unreachable_agents, vec!["bft-agent-4"]);
        assert_eq!(report.healthy_agents, 2);
        assert!(!report.quorum_met);
        assert_eq!(report.status, "critical");
        assert_eq!(
            report.false_positive_rate,
            1.0 / 3.0,
            "of the three that answer, one is detected"
        );
    }

    #[test]
    fn after_a_reconfiguration_the_report_is_over_the_new_membership() {
        // Genesis 1..=7; 5 and 6 removed (fenced: they do not answer), 8 and 9 added.
        let membership: Vec<MemberState> = (1..=9)
            .map(|id| MemberState {
                id,
                state: if id == 5 || id == 6 { "removed" } else { "active" }.into(),
                ..Default::default()
            })
            .collect();
        let statuses: Vec<_> = (1..=9)
            .map(|id| {
                let (id, mut s) = status(id, 1000, "aa", false);
                if id == 5 || id == 6 {
                    return (id, None);
                }
                let s = s.as_mut().unwrap();
                s.epoch = 1;
                s.member_states = membership.clone();
                (id, Some(s.clone()))
            })
            .collect();
        let answers: Vec<_> = [1, 2, 3, 4, 7].iter().map(|id| detections(*id, &[5, 6])).collect();
        let report = health(&statuses, &answers);
        assert_eq!(report.total_agents, 7);
        assert_eq!(report.quorum_threshold, 5);
        assert_eq!(
            report.malicious_detected, 2,
            "what the removed members did stays counted"
        );
        assert_eq!(report.healthy_agents, 7);
        assert!(report.unreachable_agents.is_empty(), "{:?}", report.unreachable_agents);
        assert_eq!(report.false_positive_rate, 0.0);
        assert_eq!(report.status, "healthy");

        // A single replica claiming a newer epoch is not believed.
        let mut lying = statuses.clone();
        let s = lying[0].1.as_mut().unwrap();
        s.epoch = 2;
        s.member_states.retain(|m| m.id < 4);
        assert_eq!(health(&lying, &answers).total_agents, 7);
    }
}
