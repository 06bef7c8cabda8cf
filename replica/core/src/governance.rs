//! Who the members are, and who is shut out: the part of the replicated state that the protocol governs itself.
//!
//! Three operations travel in batches beside the transfers, so every honest replica applies them at the same
//! sequence number:
//! - `Quarantine`: a piece of evidence that proves a member misbehaved (anyone can check it);
//! - `Accuse`: a member's signed word that another sent it messages with bad signatures over an authenticated
//!   connection. It proves nothing alone; a quorum of distinct accusers does (at least F+1 of them are honest);
//! - `Reconfigure`: "remove these members, add these", signed by the administrator key named in the genesis.
//!   It takes effect at the first checkpoint boundary at or after the batch that holds it, as a new epoch.
//!
//! A quarantined member's messages are ignored until the quarantine expires or the member is removed; never more
//! than F members are quarantined at once, so a quorum of members always remains. Suspicion (a slow primary)
//! never quarantines anyone: it only changes views.
//!
//! Quarantines expire by the replicated clock, never by a replica's own: the clock is the time the primary stamped
//! on each executed batch (backups refuse a stamp more than `MAX_CLOCK_SKEW_MS` ahead of their own clock), so every
//! honest replica lets a member back in after the same batch. An operation's own stated time does not move it:
//! a quarantine's reporter signs nothing, so its time is the proposer's to choose.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Membership, max_failures};
use crate::crypto::{Digest, KeyPair, PublicKey};
use crate::evidence::FaultType;
use crate::messages::{Member, ReplicaId, Seq};
// The operations travel inside proposals, so their types live with the messages (`messages.rs`).
pub use crate::messages::{Accusation, NewMember, Operation, Reconfiguration, SignedReconfiguration};

/// The most operations one batch may carry; a proposal with more is refused unread.
pub const MAX_OPS_PER_BATCH: usize = 16;
/// The most operations a replica holds waiting to be ordered.
pub const MAX_PENDING_OPS: usize = 64;
/// How far an operation's stated time may be from the receiving replica's clock when it is first admitted.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// The longest address an added member may name.
const MAX_ADDRESS_BYTES: usize = 256;
/// The most members one reconfiguration may add or remove.
const MAX_CHANGES: usize = 64;

impl Operation {
    pub fn digest(&self) -> Digest {
        Digest::of(
            "operation",
            &[&postcard::to_allocvec(self).expect("encoding to memory cannot fail")],
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Quarantine { .. } => "quarantine",
            Operation::Accuse(_) => "accuse",
            Operation::Reconfigure(_) => "reconfigure",
        }
    }

    /// Whether `other` is about the same matter, so that only one of the two waits to be ordered: an accuser's
    /// accusations of one member (they differ in time and count, so each is new to the replicated state), or
    /// evidence against one member. One member once got 65 of its 700 accusations ordered within 2 s, crowding
    /// the batches; honest reporters repeat at most once per report interval.
    pub fn same_matter(&self, other: &Operation) -> bool {
        match (self, other) {
            (Operation::Accuse(a), Operation::Accuse(b)) => (a.from, a.body.accused) == (b.from, b.body.accused),
            (Operation::Quarantine { evidence: a, .. }, Operation::Quarantine { evidence: b, .. }) => {
                a.named() == b.named()
            }
            _ => false,
        }
    }

    /// The time the operation states, which moves the replicated clock forward.
    pub fn at_ms(&self) -> u64 {
        match self {
            Operation::Quarantine { at_ms, .. } => *at_ms,
            Operation::Accuse(a) => a.body.at_ms,
            Operation::Reconfigure(r) => r.body.at_ms,
        }
    }
}

impl SignedReconfiguration {
    const DOMAIN: &'static str = "pbft/reconfiguration";

    fn signing_bytes(body: &Reconfiguration) -> Vec<u8> {
        let content = postcard::to_allocvec(body).expect("encoding to memory cannot fail");
        Digest::of(Self::DOMAIN, &[&content]).0.to_vec()
    }

    pub fn sign(body: Reconfiguration, admin: &KeyPair) -> SignedReconfiguration {
        let signature = admin.sign(&Self::signing_bytes(&body));
        SignedReconfiguration { body, signature }
    }

    pub fn verify(&self, admin: &PublicKey) -> bool {
        admin.verify(&Self::signing_bytes(&self.body), &self.signature)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub fault: FaultType,
    /// The sequence number of the batch that decided it.
    pub since_seq: Seq,
    pub until_ms: u64,
    /// The accusers, when a quorum of accusations decided it; empty when evidence did.
    pub accusers: Vec<ReplicaId>,
}

/// What an operation did when it executed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Quarantined {
        member: ReplicaId,
        fault: FaultType,
        until_ms: u64,
        accusers: Vec<ReplicaId>,
    },
    /// An accusation was recorded; `accusers` distinct members accuse `accused` so far.
    Accused {
        accused: ReplicaId,
        accuser: ReplicaId,
        accusers: usize,
    },
    /// The reconfiguration takes effect after the batch at `at_seq` executes.
    ReconfigurationScheduled {
        epoch: u64,
        at_seq: Seq,
    },
    Refused(String),
}

/// The membership, its epoch and its quarantines: replicated, in every checkpoint and state transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    pub epoch: u64,
    pub members: Vec<Member>,
    /// Addresses of members added by reconfiguration (the genesis members' are in each replica's configuration).
    pub addresses: BTreeMap<ReplicaId, String>,
    /// The key that signs reconfigurations; without one the membership never changes.
    pub admin: Option<PublicKey>,
    /// Members removed so far: their ids are never used again.
    pub retired: BTreeSet<ReplicaId>,
    pub quarantined: BTreeMap<ReplicaId, Quarantine>,
    /// Who accused whom, and when (the replicated clock).
    pub accusations: BTreeMap<ReplicaId, BTreeMap<ReplicaId, u64>>,
    /// An ordered reconfiguration and the sequence number after which it takes effect.
    pub pending: Option<(Reconfiguration, Seq)>,
    /// The latest time stamped on an executed batch: the replicated clock quarantines expire by.
    pub clock_ms: u64,
    /// The sequence number after which the current epoch began (none for the genesis epoch).
    pub epoch_started_at: Option<Seq>,
}

impl Governance {
    pub fn genesis(membership: &Membership, admin: Option<PublicKey>) -> Governance {
        Governance {
            epoch: 0,
            members: membership.members().to_vec(),
            addresses: BTreeMap::new(),
            admin,
            retired: BTreeSet::new(),
            quarantined: BTreeMap::new(),
            accusations: BTreeMap::new(),
            pending: None,
            clock_ms: 0,
            epoch_started_at: None,
        }
    }

    pub fn membership(&self) -> Membership {
        Membership::new(self.members.clone()).expect("the replicated membership was validated when it was decided")
    }

    /// Whether `member`'s messages are to be ignored, by the replicated clock: the same answer on every honest
    /// replica that executed the same batches.
    pub fn is_quarantined(&self, member: ReplicaId) -> bool {
        self.quarantined
            .get(&member)
            .is_some_and(|q| q.until_ms > self.clock_ms)
    }

    /// Whether a quarantine in force by the replicated clock has run out by `now_ms` (a replica's own clock): the
    /// primary of an idle cluster then proposes a batch, whose time stamp lets the member back in.
    pub fn quarantine_overdue(&self, now_ms: u64) -> bool {
        self.quarantined
            .values()
            .any(|q| q.until_ms > self.clock_ms && q.until_ms <= now_ms)
    }

    /// Moves the replicated clock to the time stamped on the batch being executed (never backwards).
    pub fn advance_clock(&mut self, at_ms: u64) {
        self.clock_ms = self.clock_ms.max(at_ms);
    }

    /// Quarantines still in force by the replicated clock.
    fn active_quarantines(&self) -> usize {
        self.quarantined.values().filter(|q| q.until_ms > self.clock_ms).count()
    }

    /// Whether an operation is worth ordering: it would do something if executed now. Refuses what the replica
    /// should not hold waiting (stale, repeated, unauthorised); `now_ms` is the replica's own clock.
    pub fn admit(&self, op: &Operation, now_ms: u64) -> Result<(), String> {
        if op.at_ms().abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(format!(
                "its time {} ms is more than {MAX_CLOCK_SKEW_MS} ms from this replica's clock",
                op.at_ms()
            ));
        }
        // Whether it would be refused does not depend on the sequence number or the rules' values.
        let rules = Rules {
            checkpoint_interval: 1,
            quarantine_duration_ms: u64::MAX / 4,
        };
        match self.clone().apply(op, 1, &rules) {
            Decision::Refused(reason) => Err(reason),
            Decision::Accused { .. } if self.accused_by(op) => Err("already accused by this member".into()),
            _ => Ok(()),
        }
    }

    fn accused_by(&self, op: &Operation) -> bool {
        match op {
            Operation::Accuse(a) => self
                .accusations
                .get(&a.body.accused)
                .is_some_and(|by| by.contains_key(&a.from)),
            _ => false,
        }
    }

    /// Executes an ordered operation at `seq`. Deterministic: every honest replica decides the same.
    pub fn apply(&mut self, op: &Operation, seq: Seq, rules: &Rules) -> Decision {
        match self.decide(op, seq, rules) {
            Ok(decision) => decision,
            Err(reason) => Decision::Refused(reason),
        }
    }

    fn decide(&mut self, op: &Operation, seq: Seq, rules: &Rules) -> Result<Decision, String> {
        let membership = self.membership();
        let clock = self.clock_ms;
        match op {
            Operation::Quarantine { evidence, .. } => {
                let (member, fault) = evidence
                    .verify(&membership, self.epoch_started_at.unwrap_or(0))
                    .map_err(|e| e.to_string())?;
                self.quarantine(member, fault, seq, clock, rules, Vec::new())
            }
            Operation::Accuse(a) => {
                let Accusation { accused, fault, .. } = a.body;
                let key = membership
                    .key(a.from)
                    .ok_or_else(|| format!("accuser {} is not a member", a.from))?;
                if !key.verify(&a.signing_bytes(), &a.signature) {
                    return Err(format!("the accusation's signature by {} does not verify", a.from));
                }
                if fault != FaultType::SignatureMismatch {
                    return Err("only signature mismatches are accused; other faults need evidence".into());
                }
                if accused == a.from || !membership.contains(accused) {
                    return Err(format!("member {} cannot accuse {accused}", a.from));
                }
                if self.quarantined.get(&a.from).is_some_and(|q| q.until_ms > clock) {
                    return Err(format!("accuser {} is quarantined", a.from));
                }
                self.ensure_not_quarantined(accused, clock)?;
                let by = self.accusations.entry(accused).or_default();
                by.insert(a.from, clock);
                // Accusations older than a quarantine's length no longer count.
                by.retain(|_, at| at.saturating_add(rules.quarantine_duration_ms) > clock);
                let accusers: Vec<ReplicaId> = by.keys().copied().collect();
                if accusers.len() >= membership.quorum() {
                    return self.quarantine(accused, fault, seq, clock, rules, accusers);
                }
                Ok(Decision::Accused {
                    accused,
                    accuser: a.from,
                    accusers: accusers.len(),
                })
            }
            Operation::Reconfigure(r) => {
                let admin = self.admin.ok_or("this cluster has no administrator key")?;
                if !r.verify(&admin) {
                    return Err("the reconfiguration is not signed by the administrator key".into());
                }
                if r.body.epoch != self.epoch {
                    return Err(format!(
                        "it is for epoch {}, the current epoch is {}",
                        r.body.epoch, self.epoch
                    ));
                }
                if let Some((_, at)) = &self.pending {
                    return Err(format!("another reconfiguration takes effect at sequence {at}"));
                }
                self.next_members(&r.body)?;
                let at_seq = seq.div_ceil(rules.checkpoint_interval) * rules.checkpoint_interval;
                self.pending = Some((r.body.clone(), at_seq));
                Ok(Decision::ReconfigurationScheduled {
                    epoch: self.epoch + 1,
                    at_seq,
                })
            }
        }
    }

    fn ensure_not_quarantined(&self, member: ReplicaId, clock: u64) -> Result<(), String> {
        match self.quarantined.get(&member) {
            Some(q) if q.until_ms > clock => Err(format!("member {member} is already quarantined")),
            _ => Ok(()),
        }
    }

    fn quarantine(
        &mut self,
        member: ReplicaId,
        fault: FaultType,
        seq: Seq,
        clock: u64,
        rules: &Rules,
        accusers: Vec<ReplicaId>,
    ) -> Result<Decision, String> {
        self.ensure_not_quarantined(member, clock)?;
        let f = max_failures(self.members.len());
        let active = self.quarantined.values().filter(|q| q.until_ms > clock).count();
        if active >= f {
            return Err(format!(
                "{active} members are quarantined already, the most F = {f} allows"
            ));
        }
        let until_ms = clock.saturating_add(rules.quarantine_duration_ms);
        self.quarantined.insert(
            member,
            Quarantine {
                fault,
                since_seq: seq,
                until_ms,
                accusers: accusers.clone(),
            },
        );
        self.accusations.remove(&member);
        Ok(Decision::Quarantined {
            member,
            fault,
            until_ms,
            accusers,
        })
    }

    /// The membership a reconfiguration leads to, if it is a valid one.
    fn next_members(&self, r: &Reconfiguration) -> Result<Vec<Member>, String> {
        if r.remove.len() + r.add.len() > MAX_CHANGES || (r.remove.is_empty() && r.add.is_empty()) {
            return Err(format!("a reconfiguration changes between 1 and {MAX_CHANGES} members"));
        }
        let mut members = self.members.clone();
        for id in &r.remove {
            let before = members.len();
            members.retain(|m| m.id != *id);
            if members.len() == before {
                return Err(format!("member {id} is not a member"));
            }
        }
        for new in &r.add {
            if self.members.iter().any(|m| m.id == new.id) || self.retired.contains(&new.id) {
                return Err(format!("id {} is or was a member's", new.id));
            }
            if self.members.iter().any(|m| m.public_key == new.public_key) {
                return Err(format!("the key of new member {} belongs to a member", new.id));
            }
            if new.address.is_empty() || new.address.len() > MAX_ADDRESS_BYTES {
                return Err(format!(
                    "new member {} needs an address of at most {MAX_ADDRESS_BYTES} bytes",
                    new.id
                ));
            }
            members.push(Member {
                id: new.id,
                public_key: new.public_key,
            });
        }
        let next = Membership::new(members.clone()).map_err(|e| e.to_string())?;
        // The members that stay must form a quorum of the new membership by themselves: they certify the first
        // checkpoint of the new epoch before the added members have its state.
        let staying = members
            .iter()
            .filter(|m| self.members.iter().any(|o| o.id == m.id))
            .count();
        if staying < next.quorum() {
            return Err(format!(
                "only {staying} members stay, fewer than the new quorum of {}; change fewer members at once",
                next.quorum()
            ));
        }
        Ok(members)
    }

    /// Whether the pending reconfiguration takes effect after the batch at `seq`.
    pub fn epoch_due(&self, seq: Seq) -> bool {
        self.pending.as_ref().is_some_and(|(_, at)| *at == seq)
    }

    /// Starts the next epoch with the pending reconfiguration. Returns the members removed.
    pub fn start_epoch(&mut self) -> Vec<ReplicaId> {
        let Some((r, at)) = self.pending.take() else {
            return Vec::new();
        };
        self.epoch_started_at = Some(at);
        self.members = self
            .next_members(&r)
            .expect("checked when it was ordered, against the same members");
        self.epoch += 1;
        for new in &r.add {
            self.addresses.insert(new.id, new.address.clone());
        }
        for id in &r.remove {
            self.retired.insert(*id);
            self.addresses.remove(id);
            self.quarantined.remove(id);
            self.accusations.remove(id);
        }
        for by in self.accusations.values_mut() {
            by.retain(|accuser, _| !r.remove.contains(accuser));
        }
        r.remove
    }

    /// How many members are quarantined by the replicated clock.
    pub fn quarantined_now(&self) -> usize {
        self.active_quarantines()
    }
}

/// The protocol parameters operations are decided by.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub checkpoint_interval: u64,
    pub quarantine_duration_ms: u64,
}

/// The whole replicated state as bytes: the ledger and the governance. Checkpoints sign its digest.
pub fn state_snapshot(ledger: &crate::ledger::Ledger, governance: &Governance) -> Vec<u8> {
    postcard::to_allocvec(&(ledger.snapshot(), governance)).expect("encoding to memory cannot fail")
}

/// The membership a state snapshot holds, if it decodes and is a valid one.
pub fn snapshot_membership(bytes: &[u8]) -> Option<Membership> {
    let (_, governance): (Vec<u8>, Governance) = postcard::from_bytes(bytes).ok()?;
    Membership::new(governance.members).ok()
}

/// Decodes a state snapshot, checking the ledger's supply.
pub fn restore_state(
    bytes: &[u8],
    supply: u64,
) -> Result<(crate::ledger::Ledger, Governance), crate::ledger::SnapshotError> {
    let (ledger_bytes, governance): (Vec<u8>, Governance) =
        postcard::from_bytes(bytes).map_err(|e| crate::ledger::SnapshotError::Decode(e.to_string()))?;
    Membership::new(governance.members.clone())
        .map_err(|e| crate::ledger::SnapshotError::Decode(format!("membership: {e}")))?;
    Ok((crate::ledger::Ledger::from_snapshot(&ledger_bytes, supply)?, governance))
}

// The genesis state's head is the governance, so the genesis is built here rather than in config.rs.
impl Config {
    /// The genesis state: the ledger's accounts and the governance (membership, administrator key).
    pub fn genesis_state(&self) -> Result<(crate::ledger::Ledger, Governance), crate::ledger::GenesisError> {
        let ledger = crate::ledger::Ledger::from_genesis(&self.genesis)?;
        Ok((ledger, Governance::genesis(&self.membership, self.admin)))
    }

    /// The digest of the genesis state: the checkpoint at sequence 0 that needs no signatures.
    pub fn genesis_digest(&self) -> Result<crate::crypto::Digest, crate::ledger::GenesisError> {
        let (ledger, governance) = self.genesis_state()?;
        let snapshot = state_snapshot(&ledger, &governance);
        Ok(crate::ledger::Ledger::snapshot_digest(&snapshot))
    }
}

/// The membership a state's head (its governance) holds, if it decodes and is a valid one.
pub(crate) fn head_membership(head: &[u8]) -> Option<crate::config::Membership> {
    let governance: Governance = postcard::from_bytes(head).ok()?;
    crate::config::Membership::new(governance.members).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Evidence, Signed};

    fn keys(n: u32) -> Vec<KeyPair> {
        (1..=n).map(|i| KeyPair::from_secret([i as u8; 32])).collect()
    }

    fn governance(n: u32, admin: &KeyPair) -> (Governance, Vec<KeyPair>) {
        let keys = keys(n);
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                id: i as u32 + 1,
                public_key: k.public(),
            })
            .collect();
        let membership = Membership::new(members).unwrap();
        (Governance::genesis(&membership, Some(admin.public())), keys)
    }

    const RULES: Rules = Rules {
        checkpoint_interval: 100,
        quarantine_duration_ms: 3_600_000,
    };

    fn accuse(keys: &[KeyPair], accuser: ReplicaId, accused: ReplicaId, at_ms: u64) -> Operation {
        let body = Accusation {
            accused,
            fault: FaultType::SignatureMismatch,
            observed: 3,
            at_ms,
        };
        Operation::Accuse(Signed::new(accuser, body, &keys[accuser as usize - 1]))
    }

    #[test]
    fn a_quorum_of_accusations_quarantines_and_fewer_do_not() {
        let admin = KeyPair::from_secret([99; 32]);
        let (mut g, keys) = governance(7, &admin);
        for accuser in [1, 2, 3, 4] {
            let d = g.apply(&accuse(&keys, accuser, 5, 1000), 10, &RULES);
            assert!(matches!(d, Decision::Accused { accused: 5, .. }), "{d:?}");
        }
        g.advance_clock(1000);
        assert!(!g.is_quarantined(5));
        // The same accuser twice still counts once.
        assert!(g.admit(&accuse(&keys, 4, 5, 1000), 1000).is_err());
        let d = g.apply(&accuse(&keys, 6, 5, 1001), 11, &RULES);
        assert!(matches!(d, Decision::Quarantined { member: 5, .. }), "{d:?}");
        g.advance_clock(2000);
        assert!(g.is_quarantined(5));
        // The quarantine began at the replicated clock's time (1000), whatever the accusations state.
        assert!(!g.quarantine_overdue(1000 + 3_600_000 - 1));
        assert!(g.quarantine_overdue(1000 + 3_600_000));
        // Only an executed batch's time lets the member back in.
        g.advance_clock(1000 + 3_600_000);
        assert!(!g.is_quarantined(5));
    }

    /// Evidence that `member` signed a proposal spending one account's funds twice.
    fn double_spend(keys: &[KeyPair], member: ReplicaId) -> Operation {
        let payer = KeyPair::from_secret([77; 32]);
        let spend = |amount| {
            crate::ledger::Transfer {
                from: payer.public(),
                to: keys[0].public(),
                amount,
                nonce: 1,
            }
            .sign(&payer)
        };
        let batch = vec![spend(1), spend(2)];
        let body = crate::messages::PrePrepare {
            view: 0,
            seq: 1,
            digest: crate::messages::batch_digest(&batch),
            batch,
            ops: Vec::new(),
            at_ms: 0,
        };
        Operation::Quarantine {
            reporter: 1,
            at_ms: 1000,
            evidence: Box::new(Evidence::DoubleSpend {
                proposal: Signed::new(member, body, &keys[member as usize - 1]),
            }),
        }
    }

    #[test]
    fn evidence_quarantines_but_never_more_than_f_members_at_once() {
        let admin = KeyPair::from_secret([99; 32]);
        let (mut g, keys) = governance(7, &admin);
        for member in [5, 6] {
            let d = g.apply(&double_spend(&keys, member), 10, &RULES);
            assert!(
                matches!(d, Decision::Quarantined { member: m, .. } if m == member),
                "{d:?}"
            );
        }
        let d = g.apply(&double_spend(&keys, 7), 11, &RULES);
        assert!(matches!(&d, Decision::Refused(r) if r.contains("F = 2")), "{d:?}");
        assert_eq!(g.quarantined_now(), 2);
        assert!(!g.is_quarantined(7));
        // An operation stating a later time does not move the replicated clock: its reporter signed nothing.
        let mut later = double_spend(&keys, 7);
        if let Operation::Quarantine { at_ms, .. } = &mut later {
            *at_ms = RULES.quarantine_duration_ms + 1;
        }
        assert!(matches!(g.apply(&later, 12, &RULES), Decision::Refused(_)));
        // Once a quarantine expires by the replicated clock (a batch's time), another may begin.
        g.advance_clock(RULES.quarantine_duration_ms + 1);
        assert!(matches!(
            g.apply(&later, 13, &RULES),
            Decision::Quarantined { member: 7, .. }
        ));
    }

    #[test]
    fn forged_or_foreign_accusations_are_refused() {
        let admin = KeyPair::from_secret([99; 32]);
        let (mut g, keys) = governance(4, &admin);
        let mut forged = accuse(&keys, 1, 2, 0);
        if let Operation::Accuse(a) = &mut forged {
            a.from = 3;
        }
        assert!(matches!(g.apply(&forged, 1, &RULES), Decision::Refused(_)));
        assert!(matches!(
            g.apply(&accuse(&keys, 2, 2, 0), 1, &RULES),
            Decision::Refused(_)
        ));
        assert!(g.accusations.is_empty());
    }

    #[test]
    fn reconfiguration_applies_at_the_next_checkpoint_as_a_new_epoch() {
        let admin = KeyPair::from_secret([99; 32]);
        let (mut g, _) = governance(7, &admin);
        let add = |id: u32| NewMember {
            id,
            public_key: KeyPair::from_secret([id as u8 + 50; 32]).public(),
            address: format!("127.0.0.1:{}", 9000 + id),
        };
        let body = Reconfiguration {
            epoch: 0,
            remove: vec![5, 6],
            add: vec![add(8), add(9)],
            at_ms: 5,
        };
        let op = Operation::Reconfigure(SignedReconfiguration::sign(body.clone(), &admin));
        assert_eq!(
            g.apply(&op, 142, &RULES),
            Decision::ReconfigurationScheduled { epoch: 1, at_seq: 200 }
        );
        // Replayed, or a second one while the first is pending: refused.
        assert!(matches!(g.apply(&op, 143, &RULES), Decision::Refused(_)));
        assert!(g.epoch_due(200) && !g.epoch_due(199));
        assert_eq!(g.start_epoch(), vec![5, 6]);
        assert_eq!(g.epoch, 1);
        let ids: Vec<u32> = g.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 7, 8, 9]);
        // The old epoch's reconfiguration cannot be replayed, and removed ids never come back.
        assert!(matches!(g.apply(&op, 300, &RULES), Decision::Refused(_)));
        let back = Reconfiguration {
            epoch: 1,
            remove: vec![],
            add: vec![add(5)],
            at_ms: 6,
        };
        let op = Operation::Reconfigure(SignedReconfiguration::sign(back, &admin));
        assert!(matches!(g.apply(&op, 301, &RULES), Decision::Refused(_)));
    }

    #[test]
    fn reconfigurations_need_the_admin_key_and_a_staying_quorum() {
        let admin = KeyPair::from_secret([99; 32]);
        let (mut g, keys) = governance(4, &admin);
        let body = Reconfiguration {
            epoch: 0,
            remove: vec![4],
            add: vec![NewMember {
                id: 5,
                public_key: KeyPair::from_secret([55; 32]).public(),
                address: "x:1".into(),
            }],
            at_ms: 0,
        };
        let by_member = Operation::Reconfigure(SignedReconfiguration::sign(body.clone(), &keys[0]));
        assert!(matches!(g.apply(&by_member, 1, &RULES), Decision::Refused(_)));
        let too_many = Reconfiguration {
            remove: vec![3, 4],
            add: vec![
                NewMember {
                    id: 5,
                    public_key: KeyPair::from_secret([55; 32]).public(),
                    address: "x:1".into(),
                },
                NewMember {
                    id: 6,
                    public_key: KeyPair::from_secret([56; 32]).public(),
                    address: "x:2".into(),
                },
            ],
            ..body.clone()
        };
        let op = Operation::Reconfigure(SignedReconfiguration::sign(too_many, &admin));
        assert!(matches!(g.apply(&op, 1, &RULES), Decision::Refused(r) if r.contains("quorum")));
        let op = Operation::Reconfigure(SignedReconfiguration::sign(body, &admin));
        assert!(matches!(
            g.apply(&op, 1, &RULES),
            Decision::ReconfigurationScheduled { .. }
        ));
    }
}
