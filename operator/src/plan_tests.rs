use super::*;
use proptest::prelude::*;

fn spec(replicas: u32) -> ByzantineClusterSpec {
    serde_json::from_value(serde_json::json!({
        "replicas": replicas,
        "image": "bft-replica:test",
        "genesis": {"generatedAccounts": {"count": 4, "balance": 1000}},
    }))
    .unwrap()
}

const T0: u64 = 1_795_539_901_000;

fn keys(ids: impl IntoIterator<Item = MemberId>) -> BTreeMap<MemberId, String> {
    ids.into_iter()
        .map(|id| {
            (
                id,
                bft_core::crypto::KeyPair::from_secret([id as u8; 32]).public().to_hex(),
            )
        })
        .collect()
}

/// Every listed member answers, at `last_executed` 100, with quarantine reports as given.
fn observed(ids: impl IntoIterator<Item = MemberId>, quarantined: &[(MemberId, usize)]) -> Observed {
    let members = ids
        .into_iter()
        .map(|id| {
            let by = quarantined.iter().find(|(q, _)| *q == id).map_or(0, |(_, n)| *n);
            (
                id,
                ObservedMember {
                    reachable: true,
                    quarantined_by: by,
                    last_executed: 100,
                    stable_checkpoint: 100,
                    epoch: 0,
                },
            )
        })
        .collect();
    Observed {
        members,
        epoch: Some(0),
        membership: None,
        view: 0,
        primary: Some(1),
        stable_checkpoint: 100,
        ..Observed::default()
    }
}

/// `o` once F+1 replicas run `membership` in `epoch`, and every member `o` lists answers from that epoch.
fn in_epoch(mut o: Observed, epoch: u64, membership: impl IntoIterator<Item = MemberId>) -> Observed {
    o.epoch = Some(epoch);
    o.membership = Some(membership.into_iter().collect());
    for m in o.members.values_mut() {
        m.epoch = epoch;
    }
    o
}

struct World {
    spec: ByzantineClusterSpec,
    status: ByzantineClusterStatus,
    requests: Requests,
    now: u64,
}

impl World {
    fn new(spec: ByzantineClusterSpec) -> World {
        World {
            spec,
            status: ByzantineClusterStatus::default(),
            requests: Requests::default(),
            now: T0,
        }
    }

    /// One pass; its status is recorded as a successful reconcile would.
    fn pass(&mut self, observed: Option<&Observed>) -> Plan {
        let keys = keys(1..=self.status.next_member_id.max(self.spec.replicas + 1));
        let plan = plan(&Input {
            spec: &self.spec,
            generation: Some(1),
            recorded: &self.status,
            observed,
            keys: &keys,
            requests: &self.requests,
            now_ms: self.now,
        });
        self.status = plan.status.clone();
        plan
    }

    fn member(&self, id: MemberId) -> &MemberStatus {
        self.status.members.iter().find(|m| m.id == id).unwrap()
    }
}

fn condition<'a>(status: &'a ByzantineClusterStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn a_new_cluster_gets_a_key_and_a_workload_per_member_and_the_cluster_objects() {
    let mut w = World::new(spec(7));
    let plan = w.pass(None);
    let ensure: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::EnsureKey(_)))
        .collect();
    assert_eq!(ensure.len(), 7);
    assert!(
        plan.actions.contains(&Action::ApplyCluster {
            voters: (1..=7).collect(),
            learners: vec![],
            max_unavailable: 0,
        }),
        "nothing answers yet: every member counts as unhealthy, so no disruption is allowed"
    );
    let groups: Vec<u32> = w.status.members.iter().map(|m| m.placement_group).collect();
    assert_eq!(
        groups,
        vec![0, 1, 0, 1, 0, 1, 0],
        "F = 2 groups, so at most 2 members per node"
    );
    assert_eq!(w.status.next_member_id, 8);
    assert_eq!(w.status.phase, "Creating");
    assert_eq!((w.status.quorum_size, w.status.max_failures), (5, 2));
}

#[test]
fn a_healthy_cluster_is_ready_and_the_budget_allows_f_disruptions() {
    let mut w = World::new(spec(7));
    w.pass(None);
    let plan = w.pass(Some(&observed(1..=7, &[])));
    assert_eq!(w.status.phase, "Running");
    assert_eq!(w.status.healthy_replicas, 7);
    assert!(w.status.quorum_met);
    assert_eq!(condition(&w.status, "Ready").status, "True");
    assert_eq!(condition(&w.status, "Degraded").status, "False");
    assert_eq!(condition(&w.status, "Ready").observed_generation, Some(1));
    assert_eq!(w.member(1).role, MemberRole::Primary);
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCluster { max_unavailable: 2, .. }))
    );
    assert!(!plan.requeue_soon);
}

#[test]
fn the_budget_shrinks_by_the_members_already_unhealthy() {
    let mut w = World::new(spec(7));
    w.pass(None);
    let plan = w.pass(Some(&observed([1, 2, 3, 4, 5, 6], &[])));
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCluster { max_unavailable: 1, .. }))
    );
    assert_eq!(w.status.phase, "Degraded");
    assert_eq!(condition(&w.status, "Degraded").status, "True");
    assert!(condition(&w.status, "Degraded").message.contains("bft-agent-7"));
}

#[test]
fn conditions_keep_their_transition_time_while_unchanged() {
    let mut w = World::new(spec(4));
    w.pass(None);
    w.pass(Some(&observed(1..=4, &[])));
    let first = condition(&w.status, "Ready").last_transition_time.clone();
    w.now += 60_000;
    w.pass(Some(&observed(1..=4, &[])));
    assert_eq!(condition(&w.status, "Ready").last_transition_time, first);
    w.now += 60_000;
    w.pass(Some(&observed(1..=3, &[])));
    assert_ne!(condition(&w.status, "Ready").last_transition_time, first);
}

#[test]
fn one_replicas_word_does_not_quarantine_anyone() {
    let mut w = World::new(spec(7));
    w.pass(None);
    // F = 2 replicas claim agent 3 is quarantined: not enough.
    let plan = w.pass(Some(&observed(1..=7, &[(3, 2)])));
    assert_eq!(w.member(3).state, MemberState::Active);
    assert!(w.status.replacement.is_none());
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Fence(_))));
}

/// The drill's step 9: agents 5 and 6 quarantined, replaced by 8 and 9 through every step.
#[test]
fn quarantined_members_are_fenced_replaced_and_retired_one_step_at_a_time() {
    let mut w = World::new(spec(7));
    w.pass(None);
    w.pass(Some(&observed(1..=7, &[])));

    let q = [(5, 5), (6, 5)];
    let plan = w.pass(Some(&observed(1..=7, &q)));
    let r = w.status.replacement.clone().expect("a replacement starts");
    assert_eq!((r.remove.clone(), r.add.clone()), (vec![5, 6], vec![8, 9]));
    assert_eq!(r.step, ReplacementStep::Fencing);
    assert_eq!(
        &plan.actions[..2],
        &[Action::Fence(5), Action::Fence(6)],
        "stopped first, in the same pass"
    );
    assert!(
        !plan.actions.iter().any(|a| matches!(a, Action::WithdrawKey(_))),
        "not before the status says fenced"
    );
    assert!(!plan.actions.contains(&Action::EnsureKey(5)));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Run { id: 5 | 6, .. })));
    assert!(w.member(5).fenced && w.member(6).fenced);
    assert_eq!(w.status.next_member_id, 10, "ids 8 and 9 are reserved");
    assert!(plan.requeue_soon);
    assert_eq!(w.status.phase, "Reconfiguring");
    assert_eq!(condition(&w.status, "Reconfiguring").status, "True");

    // With the fencing recorded, the keys are withdrawn.
    let plan = w.pass(Some(&observed([1, 2, 3, 4, 7], &q)));
    assert_eq!(
        &plan.actions[..4],
        &[
            Action::Fence(5),
            Action::Fence(6),
            Action::WithdrawKey(5),
            Action::WithdrawKey(6)
        ]
    );
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::CreatingMembers
    );

    // 5 and 6 no longer answer (fenced); 8 and 9 are created as learners.
    let plan = w.pass(Some(&observed([1, 2, 3, 4, 7], &q)));
    assert!(plan.actions.contains(&Action::EnsureKey(8)));
    assert!(plan.actions.contains(&Action::Run {
        id: 8,
        learner: true,
        placement_group: w.member(5).placement_group
    }));
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCluster { learners, .. } if learners == &vec![8, 9]))
    );
    assert_eq!(w.member(8).state, MemberState::Joining);
    assert_eq!(w.status.replacement.as_ref().unwrap().step, ReplacementStep::CatchingUp);

    // Not started yet: 9 does not answer.
    let o = observed([1, 2, 3, 4, 7, 8], &q);
    let plan = w.pass(Some(&o));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Reconfigure { .. })));
    assert_eq!(w.status.replacement.as_ref().unwrap().step, ReplacementStep::CatchingUp);
    assert!(
        w.status
            .replacement
            .as_ref()
            .unwrap()
            .blocked
            .as_ref()
            .unwrap()
            .contains("catching up")
    );

    // Caught up: the reconfiguration is submitted once.
    let o = observed([1, 2, 3, 4, 7, 8, 9], &q);
    w.pass(Some(&o));
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::Reconfiguring
    );
    let plan = w.pass(Some(&o));
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Reconfigure { .. }))
            .collect::<Vec<_>>(),
        vec![&Action::Reconfigure {
            remove: vec![5, 6],
            add: vec![8, 9]
        }]
    );
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::AwaitingEpoch
    );
    // The replicas ordered it; it takes effect at the next checkpoint boundary.
    let mut o = o.clone();
    o.pending_reconfiguration = Some(110);
    let plan = w.pass(Some(&o));
    assert!(
        !plan.actions.iter().any(|a| matches!(a, Action::Reconfigure { .. })),
        "never twice"
    );
    assert!(
        w.status
            .replacement
            .as_ref()
            .unwrap()
            .blocked
            .as_ref()
            .unwrap()
            .contains("after sequence 110")
    );

    // The new epoch, which 9 has not reached yet: 8 and 9 do not count as active before they take part.
    let mut o = in_epoch(observed([1, 2, 3, 4, 7, 8, 9], &[]), 1, [1, 2, 3, 4, 7, 8, 9]);
    o.members.get_mut(&9).unwrap().epoch = 0;
    let plan = w.pass(Some(&o));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Reconfigure { .. })));
    let r = w.status.replacement.clone().unwrap();
    assert_eq!(r.step, ReplacementStep::AwaitingEpoch);
    assert_eq!(
        r.blocked.as_deref(),
        Some("epoch 1 is in force; waiting for bft-agent-9 to take part in it")
    );
    assert_eq!(w.member(8).state, MemberState::Joining);

    // 8 and 9 vote, 5 and 6 are removed, then retired.
    let o = in_epoch(observed([1, 2, 3, 4, 7, 8, 9], &[]), 1, [1, 2, 3, 4, 7, 8, 9]);
    w.pass(Some(&o));
    assert_eq!(w.member(8).state, MemberState::Active);
    assert_eq!(w.member(5).state, MemberState::Removed);
    assert_eq!(w.status.replacement.as_ref().unwrap().step, ReplacementStep::Retiring);
    let plan = w.pass(Some(&o));
    assert!(plan.actions.contains(&Action::Retire(5)) && plan.actions.contains(&Action::Retire(6)));
    assert!(w.status.replacement.is_none());
    assert_eq!(w.status.epoch, 1);
    assert_eq!(w.status.phase, "Running");
    assert_eq!(w.status.healthy_replicas, 7);
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCluster { voters, .. } if voters == &vec![1, 2, 3, 4, 7, 8, 9]))
    );
}

#[test]
fn a_reconfiguration_already_in_effect_after_a_restart_is_not_submitted_again() {
    let mut w = World::new(spec(4));
    w.pass(None);
    w.pass(Some(&observed(1..=4, &[(2, 3)])));
    w.pass(Some(&observed([1, 3, 4], &[(2, 3)])));
    w.pass(Some(&observed([1, 3, 4], &[(2, 3)])));
    let caught_up = observed([1, 3, 4, 5], &[(2, 3)]);
    w.pass(Some(&caught_up));
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::Reconfiguring
    );
    // The operator submitted, crashed before recording it; the replicas already switched membership.
    let o = in_epoch(observed([1, 3, 4, 5], &[]), 1, [1, 3, 4, 5]);
    let plan = w.pass(Some(&o));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Reconfigure { .. })));
    // ...and it finishes: the membership the replicas report is the one the replacement leads to.
    assert_eq!(w.status.replacement.as_ref().unwrap().step, ReplacementStep::Retiring);
    let plan = w.pass(Some(&o));
    assert!(plan.actions.contains(&Action::Retire(2)));
    assert!(w.status.replacement.is_none());
}

#[test]
fn no_replacement_starts_without_a_healthy_quorum() {
    let mut w = World::new(spec(7));
    w.pass(None);
    // 5 quarantined, and 3 and 4 do not answer: 4 healthy < quorum 5.
    let plan = w.pass(Some(&observed([1, 2, 5, 6, 7], &[(5, 5)])));
    assert!(w.status.replacement.is_none());
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Fence(_))));
    assert!(plan.events.iter().any(|e| e.reason == "ReplacementHeld"));
    assert_eq!(w.status.phase, "Failed");
    assert_eq!(condition(&w.status, "QuorumHealthy").status, "False");
}

#[test]
fn at_most_f_members_are_fenced_at_once() {
    // N = 6: F = 1, quorum 4. Two members quarantined leave 4 healthy (a quorum), but only F = 1 is fenced.
    let mut w = World::new(spec(6));
    w.pass(None);
    w.pass(Some(&observed(1..=6, &[(3, 2), (5, 2)])));
    let r = w.status.replacement.as_ref().unwrap();
    assert_eq!(r.remove, vec![3]);
    assert_eq!(w.status.members.iter().filter(|m| m.fenced).count(), 1);
    // While 3 is fenced and not yet removed, 5 waits, whatever the reports say.
    for _ in 0..4 {
        w.pass(Some(&observed([1, 2, 4, 5, 6, 7], &[(3, 2), (5, 2)])));
        assert!(!w.member(5).fenced);
    }
}

#[test]
fn the_hourly_cap_holds_replacements_back() {
    let mut s = spec(7);
    s.replacement.max_per_hour = Some(1);
    let mut w = World::new(s);
    w.pass(None);
    w.pass(Some(&observed(1..=7, &[(5, 3), (6, 3)])));
    assert_eq!(w.status.replacement.as_ref().unwrap().remove, vec![5]);
    assert_eq!(w.status.replacement_history.len(), 1);
}

#[test]
fn supervised_mode_fences_at_once_but_waits_for_approval_to_replace() {
    let mut s = spec(4);
    s.replacement.mode = ReplacementMode::Supervised;
    let mut w = World::new(s);
    w.pass(None);
    w.pass(Some(&observed(1..=4, &[(2, 2)])));
    assert!(w.member(2).fenced, "fencing needs no approval");
    w.pass(Some(&observed([1, 3, 4], &[(2, 2)])));
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::AwaitingApproval
    );
    let plan = w.pass(Some(&observed([1, 3, 4], &[(2, 2)])));
    let r = w.status.replacement.clone().unwrap();
    assert_eq!(r.step, ReplacementStep::AwaitingApproval);
    assert!(r.blocked.unwrap().contains("bft.dev/approve-replacement=r-5"));
    assert!(!plan.actions.contains(&Action::EnsureKey(5)));
    w.requests.approved_replacement = Some("r-5".into());
    w.pass(Some(&observed([1, 3, 4], &[(2, 2)])));
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::CreatingMembers
    );
}

#[test]
fn detection_disabled_never_fences() {
    let mut s = spec(4);
    s.detection.enabled = false;
    let mut w = World::new(s);
    w.pass(None);
    let plan = w.pass(Some(&observed(1..=4, &[(2, 4)])));
    assert_eq!(w.member(2).state, MemberState::Quarantined, "reported, not acted on");
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Fence(_))));
}

#[test]
fn drills_need_fault_drills_allowed_and_run_once() {
    let mut w = World::new(spec(4));
    w.pass(None);
    w.requests.force_view_change = Some("1".into());
    let plan = w.pass(Some(&observed(1..=4, &[])));
    assert!(!plan.actions.contains(&Action::ForceViewChange));
    assert!(plan.events.iter().any(|e| e.reason == "RequestRefused"));
    assert!(
        plan.actions
            .contains(&Action::MarkHandled("force-view-change=1".into()))
    );

    w.spec.fault_drills.allowed = true;
    w.requests.force_view_change = Some("2".into());
    w.requests.inject_fault = Some("3:signature-corruption:0.5".into());
    let plan = w.pass(Some(&observed(1..=4, &[])));
    assert!(plan.actions.contains(&Action::ForceViewChange));
    assert!(plan.actions.contains(&Action::InjectFault {
        member: 3,
        drill: Some(("signature-corruption".into(), 0.5))
    }));
    w.requests.handled = [
        "force-view-change=2".to_string(),
        "inject-fault=3:signature-corruption:0.5".to_string(),
    ]
    .into();
    let plan = w.pass(Some(&observed(1..=4, &[])));
    assert!(!plan.actions.contains(&Action::ForceViewChange));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::InjectFault { .. })));
}

#[test]
fn a_member_whose_key_went_missing_gets_no_new_one_and_is_not_started() {
    let mut w = World::new(spec(4));
    w.pass(None);
    w.pass(Some(&observed(1..=4, &[])));
    let mut keys = keys(1..=4);
    keys.remove(&3);
    let plan = plan(&Input {
        spec: &w.spec,
        generation: Some(1),
        recorded: &w.status,
        observed: Some(&observed([1, 2, 4], &[])),
        keys: &keys,
        requests: &w.requests,
        now_ms: w.now,
    });
    assert!(!plan.actions.contains(&Action::EnsureKey(3)));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::Run { id: 3, .. })));
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == "KeyMissing" && e.note.contains("bft-agent-3"))
    );
}

#[test]
fn fault_requests_are_parsed_strictly() {
    assert_eq!(parse_fault_request("5:clear"), Ok((5, None)));
    assert_eq!(
        parse_fault_request("6:double-spend:0.3"),
        Ok((6, Some(("double-spend".into(), 0.3))))
    );
    assert!(parse_fault_request("6:double-spend:1.5").is_err());
    assert!(parse_fault_request("x:clear").is_err());
    assert!(parse_fault_request("6").is_err());
}

/// The replicas as the resume tests model them: a member answers while its process runs; a reconfiguration is
/// taken for ordering or refused as the replicas do (one pending at a time, only members removed, only fresh ids
/// added) and takes effect at the next checkpoint boundary (`boundary`).
#[derive(Clone, Debug)]
struct Cluster {
    epoch: u64,
    members: BTreeSet<MemberId>,
    retired: BTreeSet<MemberId>,
    running: BTreeSet<MemberId>,
    quarantined: BTreeSet<MemberId>,
    /// Members still catching up to where the current epoch began (they report the epoch before).
    lagging: BTreeSet<MemberId>,
    pending: Option<(Vec<MemberId>, Vec<MemberId>)>,
    /// Every reconfiguration submitted to the replicas, ordered or refused.
    submitted: usize,
    epoch_changes: usize,
}

impl Cluster {
    fn new(n: MemberId) -> Cluster {
        Cluster {
            epoch: 0,
            members: (1..=n).collect(),
            retired: BTreeSet::new(),
            running: (1..=n).collect(),
            quarantined: BTreeSet::new(),
            lagging: BTreeSet::new(),
            pending: None,
            submitted: 0,
            epoch_changes: 0,
        }
    }

    /// What a poll of the replicas reports (every replica honest here, so F+1 agree on everything).
    fn observe(&self) -> Observed {
        let members = self
            .running
            .union(&self.members)
            .map(|id| {
                let member = ObservedMember {
                    reachable: self.running.contains(id),
                    quarantined_by: if self.quarantined.contains(id) {
                        self.members.len() - 1
                    } else {
                        0
                    },
                    last_executed: 100,
                    stable_checkpoint: 100,
                    // A member not yet added follows the cluster from the genesis configuration.
                    epoch: if self.members.contains(id) && !self.lagging.contains(id) {
                        self.epoch
                    } else {
                        0
                    },
                };
                (*id, member)
            })
            .collect();
        Observed {
            members,
            epoch: Some(self.epoch),
            membership: Some(self.members.clone()),
            primary: self.members.first().copied(),
            stable_checkpoint: 100,
            pending_reconfiguration: self.pending.as_ref().map(|_| 110),
            ..Observed::default()
        }
    }

    fn carry_out(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::Fence(id) | Action::Retire(id) => {
                    self.running.remove(id);
                }
                Action::Run { id, .. } => {
                    self.running.insert(*id);
                }
                Action::Reconfigure { remove, add } => {
                    self.submitted += 1;
                    let valid = self.pending.is_none()
                        && remove.iter().all(|id| self.members.contains(id))
                        && add
                            .iter()
                            .all(|id| !self.members.contains(id) && !self.retired.contains(id));
                    if valid {
                        self.pending = Some((remove.clone(), add.clone()));
                    }
                }
                _ => {}
            }
        }
    }

    /// The replicas execute up to the checkpoint boundary: an ordered reconfiguration takes effect.
    fn boundary(&mut self) {
        if let Some((remove, add)) = self.pending.take() {
            self.epoch += 1;
            self.epoch_changes += 1;
            for id in &remove {
                self.members.remove(id);
                self.retired.insert(*id);
                self.quarantined.remove(id);
            }
            self.members.extend(add);
        }
    }
}

/// Where in a pass the operator is killed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kill {
    No,
    /// After the plan (and the record the platform makes before a reconfiguration), before any action.
    BeforeActions,
    /// After the pass's actions, before its status is recorded.
    BeforeRecord,
}

impl World {
    /// One pass as `platform::reconcile` makes it against `cluster`: plan, record first when it reconfigures,
    /// carry the actions out, record; killed where `kill` says. Published events go to `published`.
    fn pass_on(&mut self, cluster: &mut Cluster, kill: Kill, published: &mut Vec<PlanEvent>) {
        let o = cluster.observe();
        let keys = keys(1..=self.status.next_member_id.max(self.spec.replicas + 1));
        let plan = plan(&Input {
            spec: &self.spec,
            generation: Some(1),
            recorded: &self.status,
            observed: Some(&o),
            keys: &keys,
            requests: &self.requests,
            now_ms: self.now,
        });
        let recorded_first = plan.actions.iter().any(|a| matches!(a, Action::Reconfigure { .. }));
        if recorded_first {
            self.status = plan.status.clone();
            published.extend(plan.events.iter().cloned());
        }
        if kill == Kill::BeforeActions {
            return;
        }
        cluster.carry_out(&plan.actions);
        if kill == Kill::BeforeRecord {
            return;
        }
        self.status = plan.status.clone();
        if !recorded_first {
            published.extend(plan.events);
        }
    }

    /// The operator started again: nothing but the recorded status, as stored, survives.
    fn restarted(&self) -> World {
        let stored = serde_json::to_string(&self.status).unwrap();
        World {
            spec: self.spec.clone(),
            status: serde_json::from_str(&stored).unwrap(),
            requests: Requests::default(),
            now: self.now,
        }
    }
}

/// A running 4-member cluster in which F+1 replicas report member 4 quarantined.
fn quarantine_4() -> (World, Cluster) {
    let mut w = World::new(spec(4));
    let mut cluster = Cluster::new(4);
    let mut published = Vec::new();
    w.pass_on(&mut cluster, Kill::No, &mut published);
    cluster.quarantined.insert(4);
    (w, cluster)
}

/// Passes (the replicas reaching a checkpoint boundary after each) until the replacement is done, then checks
/// it ended as it must: one reconfiguration submitted, one epoch change, 4 out and 5 in, one ReplacementDone.
fn finish_and_check(mut w: World, cluster: &mut Cluster, mut published: Vec<PlanEvent>, case: &str) {
    let done =
        |w: &World| w.status.replacement.is_none() && w.status.members.iter().any(|m| m.state == MemberState::Removed);
    for _ in 0..20 {
        if done(&w) {
            break;
        }
        w.now += 1000;
        w.pass_on(cluster, Kill::No, &mut published);
        cluster.boundary();
    }
    assert!(done(&w), "{case}: never finished: {:?}", w.status.replacement);
    assert_eq!(cluster.submitted, 1, "{case}: reconfigurations submitted");
    assert_eq!(cluster.epoch_changes, 1, "{case}: epoch changes");
    assert_eq!(cluster.members, [1, 2, 3, 5].into(), "{case}: the replicas' membership");
    assert_eq!(w.status.epoch, 1, "{case}");
    let states: Vec<(MemberId, MemberState)> = w.status.members.iter().map(|m| (m.id, m.state)).collect();
    assert_eq!(
        states,
        vec![
            (1, MemberState::Active),
            (2, MemberState::Active),
            (3, MemberState::Active),
            (4, MemberState::Removed),
            (5, MemberState::Active)
        ],
        "{case}"
    );
    assert_eq!(w.status.phase, "Running", "{case}");
    assert_eq!(cluster.running, [1, 2, 3, 5].into(), "{case}: processes");
    let done = published.iter().filter(|e| e.reason == "ReplacementDone").count();
    assert_eq!(done, 1, "{case}: ReplacementDone events");
    assert!(!published.iter().any(|e| e.reason == STALLED), "{case}: {published:?}");
}

/// The operator killed during the pass of every step (before its actions, and after them but before its record),
/// restarted with nothing but its recorded status: each time the replacement finishes once.
#[test]
fn a_restart_at_any_step_of_a_replacement_resumes_from_what_the_replicas_report() {
    use ReplacementStep::*;
    // `None`: the pass that starts the replacement.
    let steps = [
        None,
        Some(Fencing),
        Some(CreatingMembers),
        Some(CatchingUp),
        Some(Reconfiguring),
        Some(AwaitingEpoch),
        Some(Retiring),
    ];
    for at in steps {
        for kill in [Kill::BeforeActions, Kill::BeforeRecord] {
            let case = format!("killed at {at:?}, {kill:?}");
            let (mut w, mut cluster) = quarantine_4();
            let mut published = Vec::new();
            let mut passes = 0;
            while w.status.replacement.as_ref().map(|r| r.step) != at {
                w.now += 1000;
                w.pass_on(&mut cluster, Kill::No, &mut published);
                cluster.boundary();
                passes += 1;
                assert!(passes < 20, "{case}: step never reached");
            }
            w.now += 1000;
            w.pass_on(&mut cluster, kill, &mut published);
            finish_and_check(w.restarted(), &mut cluster, published, &case);
        }
    }
}

/// The step the operator had not recorded when it stopped: the replicas ordered the reconfiguration (it may
/// already be in force), the status still says it is to be submitted. So an operator left it that recorded the
/// step only after the call returned, and so does one whose call failed after the replicas ordered it.
#[test]
fn a_reconfiguration_ordered_but_not_recorded_is_recognised_from_the_membership() {
    for in_force in [true, false] {
        let case = format!("ordered, in force before the restart: {in_force}");
        let (mut w, mut cluster) = quarantine_4();
        let mut published = Vec::new();
        while w.status.replacement.as_ref().map(|r| r.step) != Some(ReplacementStep::Reconfiguring) {
            w.now += 1000;
            w.pass_on(&mut cluster, Kill::No, &mut published);
            cluster.boundary();
        }
        let before = w.status.clone();
        w.now += 1000;
        w.pass_on(&mut cluster, Kill::No, &mut published);
        assert_eq!(cluster.submitted, 1, "{case}");
        w.status = before;
        if in_force {
            cluster.boundary();
        }
        finish_and_check(w.restarted(), &mut cluster, published, &case);
    }
}

#[test]
fn two_restarts_in_one_replacement_still_finish_it_once() {
    let (mut w, mut cluster) = quarantine_4();
    let mut published = Vec::new();
    let mut kills = vec![
        (ReplacementStep::CatchingUp, Kill::BeforeRecord),
        (ReplacementStep::Reconfiguring, Kill::BeforeRecord),
    ];
    kills.reverse();
    for _ in 0..20 {
        w.now += 1000;
        match (kills.last(), w.status.replacement.as_ref().map(|r| r.step)) {
            (Some((at, kill)), Some(step)) if *at == step => {
                w.pass_on(&mut cluster, *kill, &mut published);
                w = w.restarted();
                kills.pop();
            }
            _ => {
                w.pass_on(&mut cluster, Kill::No, &mut published);
                if kills.is_empty() {
                    break;
                }
            }
        }
    }
    assert!(kills.is_empty(), "every kill happened");
    // The second kill left the reconfiguration ordered, not yet in force: the next pass must wait for it.
    assert!(cluster.pending.is_some());
    finish_and_check(w, &mut cluster, published, "two kills");
}

/// Restarted once the new membership is in force but before the new member caught up to it (the call that would
/// have waited for that was cut short): the replacement is done only once the new member takes part.
#[test]
fn a_new_member_counts_only_once_it_takes_part_in_the_new_epoch() {
    let (mut w, mut cluster) = quarantine_4();
    let mut published = Vec::new();
    while w.status.replacement.as_ref().map(|r| r.step) != Some(ReplacementStep::Reconfiguring) {
        w.now += 1000;
        w.pass_on(&mut cluster, Kill::No, &mut published);
    }
    w.now += 1000;
    w.pass_on(&mut cluster, Kill::BeforeRecord, &mut published);
    cluster.boundary();
    cluster.lagging.insert(5);
    let mut w = w.restarted();
    for _ in 0..3 {
        w.now += 1000;
        w.pass_on(&mut cluster, Kill::No, &mut published);
        let r = w.status.replacement.as_ref().expect("not done while 5 lags");
        assert_eq!(r.step, ReplacementStep::AwaitingEpoch);
        assert!(r.blocked.as_ref().unwrap().contains("waiting for bft-agent-5"), "{r:?}");
        assert_eq!(w.member(5).state, MemberState::Joining);
    }
    cluster.lagging.clear();
    finish_and_check(w, &mut cluster, published, "the new member caught up late");
}

#[test]
fn a_replacement_that_makes_no_progress_is_reported_once_with_a_reason() {
    let mut w = World::new(spec(4));
    w.pass(None);
    w.pass(Some(&observed(1..=4, &[(4, 3)])));
    w.pass(Some(&observed(1..=3, &[(4, 3)])));
    w.pass(Some(&observed(1..=3, &[(4, 3)])));
    assert_eq!(w.status.replacement.as_ref().unwrap().step, ReplacementStep::CatchingUp);
    // Member 5 never answers. Within catchUpTimeoutSeconds (600 s) that is no stall.
    w.now += 600_000;
    let plan = w.pass(Some(&observed(1..=3, &[(4, 3)])));
    assert!(!plan.events.iter().any(|e| e.reason == STALLED));
    assert_eq!(condition(&w.status, "Reconfiguring").reason, "ReplacementInProgress");
    assert!(
        plan.requeue_soon,
        "a step that waits on the cluster is looked at again soon"
    );
    w.now += 2_000;
    let plan = w.pass(Some(&observed(1..=3, &[(4, 3)])));
    let stalled: Vec<&PlanEvent> = plan.events.iter().filter(|e| e.reason == STALLED).collect();
    assert_eq!(stalled.len(), 1);
    assert!(stalled[0].warning);
    assert!(
        stalled[0].note.contains("CatchingUp") && stalled[0].note.contains("have not caught up"),
        "{}",
        stalled[0].note
    );
    let c = condition(&w.status, "Reconfiguring");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", STALLED));
    assert!(
        c.message.contains("no progress for 602 s (limit 600 s)"),
        "{}",
        c.message
    );
    // Reported once, also by an operator restarted since.
    w.now += 10_000;
    let plan = w.pass(Some(&observed(1..=3, &[(4, 3)])));
    assert!(!plan.events.iter().any(|e| e.reason == STALLED));
    let mut w = w.restarted();
    let plan = w.pass(Some(&observed(1..=3, &[(4, 3)])));
    assert!(!plan.events.iter().any(|e| e.reason == STALLED));
    assert_eq!(condition(&w.status, "Reconfiguring").reason, STALLED);
    // Progress clears it.
    w.pass(Some(&observed([1, 2, 3, 5], &[(4, 3)])));
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::Reconfiguring
    );
    assert_eq!(condition(&w.status, "Reconfiguring").reason, "ReplacementInProgress");

    // Submitted, and never ordered (the replicas refuse it, say): submitted again every pass, and after five
    // minutes reported, although each pass does something.
    let o = observed([1, 2, 3, 5], &[(4, 3)]);
    for _ in 0..3 {
        let plan = w.pass(Some(&o));
        assert!(plan.actions.iter().any(|a| matches!(a, Action::Reconfigure { .. })));
    }
    assert!(
        w.status
            .replacement
            .as_ref()
            .is_some_and(|r| r.step == ReplacementStep::AwaitingEpoch)
    );
    w.now += STALL_AFTER_MS + 1_000;
    let plan = w.pass(Some(&o));
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == STALLED && e.note.contains("AwaitingEpoch"))
    );
    assert!(
        plan.events.iter().any(|e| e.reason == "ReconfigurationNotOrdered"),
        "{:?}",
        plan.events
    );
}

#[test]
fn waiting_for_approval_is_no_stall() {
    let mut s = spec(4);
    s.replacement.mode = ReplacementMode::Supervised;
    let mut w = World::new(s);
    w.pass(None);
    w.pass(Some(&observed(1..=4, &[(2, 2)])));
    w.pass(Some(&observed([1, 3, 4], &[(2, 2)])));
    w.now += 24 * HOUR_MS;
    let plan = w.pass(Some(&observed([1, 3, 4], &[(2, 2)])));
    assert_eq!(
        w.status.replacement.as_ref().unwrap().step,
        ReplacementStep::AwaitingApproval
    );
    assert!(!plan.events.iter().any(|e| e.reason == STALLED));
    assert!(!plan.requeue_soon);
}

/// One round of what replicas might report: which members answer and how many replicas claim each quarantined.
fn arb_round(n: MemberId) -> impl Strategy<Value = (Vec<bool>, Vec<usize>, bool, bool)> {
    (
        proptest::collection::vec(proptest::bool::weighted(0.85), 12),
        proptest::collection::vec(0..(n as usize + 1), 12),
        any::<bool>(),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the replicas report (forged quarantines, members coming and going, epochs moving), the plan
    /// keeps every safety rule.
    #[test]
    fn safety_rules_hold_under_any_health_reports(
        n in prop_oneof![Just(4u32), Just(7u32), Just(10u32)],
        rounds in proptest::collection::vec(arb_round(10), 1..40),
        per_hour in proptest::option::of(1u32..4),
        restarts in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut s = spec(n);
        s.replacement.max_per_hour = per_hour;
        let sizing = s.sizing();
        let (f, quorum) = (sizing.max_failures, sizing.quorum);
        let cap = per_hour.map_or(f.max(1), |p| p as usize);
        let mut w = World::new(s);
        w.pass(None);
        let mut fenced_ever: BTreeSet<MemberId> = BTreeSet::new();
        let mut ids_seen: BTreeSet<MemberId> = w.status.members.iter().map(|m| m.id).collect();
        let mut epoch = 0;
        let mut membership: BTreeSet<MemberId> = (1..=n).collect();
        for (i, (up, quarantined_by, advance_epoch, catch_up)) in rounds.into_iter().enumerate() {
            let live: Vec<MemberId> = w.status.members.iter().filter(|m| m.state != MemberState::Removed).map(|m| m.id).collect();
            let mut o = Observed { epoch: Some(epoch), stable_checkpoint: 100, primary: live.first().copied(), ..Observed::default() };
            for (k, id) in live.iter().enumerate() {
                o.members.insert(*id, ObservedMember {
                    reachable: up[k % up.len()],
                    quarantined_by: quarantined_by[k % quarantined_by.len()],
                    last_executed: if catch_up { 100 } else { 50 },
                    stable_checkpoint: 100,
                    epoch: if catch_up { epoch + 1 } else { epoch },
                });
            }
            if let Some(r) = w.status.replacement.as_ref().filter(|r| r.step == ReplacementStep::AwaitingEpoch && advance_epoch) {
                epoch += 1;
                o.epoch = Some(epoch);
                membership.retain(|id| !r.remove.contains(id));
                membership.extend(r.add.iter().copied());
            }
            o.membership = Some(membership.clone());
            let before = w.status.clone();
            // Healthy by this round's reports: a voter that answers, is not fenced and not quarantined by F+1.
            let healthy_now = before
                .members
                .iter()
                .filter(|m| matches!(m.state, MemberState::Active | MemberState::Quarantined) && !m.fenced)
                .filter(|m| o.members.get(&m.id).is_some_and(|s| s.reachable && s.quarantined_by <= f))
                .count();
            let plan = w.pass(Some(&o));
            // A restart: the status is lost and the pass runs again from what was recorded before.
            if restarts[i % restarts.len()] {
                w.status = before.clone();
                let again = w.pass(Some(&o));
                prop_assert_eq!(&again.actions, &plan.actions, "a repeated pass does the same, nothing more");
            }
            let status = &w.status;
            // Fenced (not yet removed) members never exceed F.
            let fenced: Vec<MemberId> = status.members.iter().filter(|m| m.fenced && m.state != MemberState::Removed).map(|m| m.id).collect();
            prop_assert!(fenced.len() <= f, "{} fenced > F = {}", fenced.len(), f);
            // Only members F+1 replicas reported quarantined are ever fenced.
            for id in &fenced {
                if !fenced_ever.contains(id) {
                    let reported = o.members.get(id).map_or(0, |m| m.quarantined_by);
                    prop_assert!(reported > f, "{} fenced on {} reports", agent(*id), reported);
                    // ...and only with a healthy quorum.
                    prop_assert!(healthy_now >= quorum);
                }
            }
            fenced_ever.extend(fenced.iter().copied());
            // A fenced member's key is never made again and its workload never started again.
            for a in &plan.actions {
                match a {
                    Action::EnsureKey(id) | Action::Run { id, .. } => prop_assert!(!fenced_ever.contains(id)),
                    Action::Reconfigure { .. } => prop_assert!(healthy_now >= quorum),
                    _ => {}
                }
            }
            // Ids are never reused.
            for m in &status.members {
                if !ids_seen.contains(&m.id) {
                    prop_assert!(m.id > *ids_seen.iter().max().unwrap());
                    ids_seen.insert(m.id);
                }
            }
            // At most `cap` replacements started in the hour (the whole run fits in one).
            prop_assert!(status.replacement_history.len() <= cap);
            // At most one reconfiguration submitted per pass.
            let submitted = plan.actions.iter().filter(|a| matches!(a, Action::Reconfigure { .. })).count();
            prop_assert!(submitted <= 1, "{} reconfigurations in one pass", submitted);
        }
    }
}
