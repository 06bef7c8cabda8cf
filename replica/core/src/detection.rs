//! The detection policy: what a replica makes of the misbehaviour it sees, shared by the process (`node`) and the
//! simulator (`sim`), so that every simulated seed runs the policy that ships.
//!
//! Pure: no tokio, no files, no clock of its own (the time comes in as an argument). Given the core, a refusal or
//! an event and the time, it decides the observation, what to put to consensus (quarantine evidence, a signed
//! accusation) and what the durable history records (detections, quarantines, epochs, view changes). The caller
//! carries that out: the node persists, logs and counts; the simulator also checks its invariants on it.

use std::collections::BTreeMap;

use crate::config::Membership;
use crate::crypto::KeyPair;
use crate::evidence::{Evidence, FaultType};
use crate::governance::{Accusation, Decision, Operation};
use crate::history::{EpochRecord, History, MessageSummary, Observation, QuarantineRecord, ViewChangeRecord};
use crate::messages::{Message, ReplicaId, Seq, Signed};
use crate::replica::{Event, Replica, ViewChangeReason};
use crate::verify::Rejection;

/// How often one member's misbehaviour of one kind is put to consensus again while it goes on.
pub const REPORT_INTERVAL_MS: u64 = 2_000;

/// Whether a member's authenticated stream may carry `message`: only what it signed itself, but for the messages
/// whose proof stands whoever relays them (`relayable`). What a stream carries in another's name is refused before
/// it is verified, so a bad signature in the sender's name is the peer's own doing: what makes it worth an
/// accusation.
pub fn may_carry(peer: ReplicaId, message: &Message) -> bool {
    message.sender() == peer || relayable(message.kind())
}

/// A committed batch (the PRE-PREPARE and a quorum of COMMITs) and a NEW-VIEW (its primary's signature over a
/// quorum of VIEW-CHANGEs) prove themselves, so any member may pass them on: a replica that fell behind learns the
/// batches, and the view the cluster works in, from whoever answers its STATUS, even when the primary that made
/// the NEW-VIEW has failed since. A bad signature in one accuses nobody but on its signer's own stream.
fn relayable(kind: &str) -> bool {
    matches!(kind, "committed" | "new_view" | "rejoin_ack")
}

/// Where a peer's message was refused, and what is left of it there.
pub enum Refusal<'a> {
    /// By the stateless verifier, which hands the message back whole, with the member whose stream carried it, and
    /// the membership it checked against (in force after `epoch_started_at`, the replica having executed up to
    /// `executed`): what proof is checked against.
    Verification {
        message: Message,
        carrier: ReplicaId,
        membership: &'a Membership,
        epoch_started_at: Seq,
        executed: Seq,
    },
    /// By the core, which consumed the message: its header (`Evidence::header`), and the core, which knows what
    /// the sender signed before for the slot.
    Core {
        header: Option<Message>,
        replica: &'a Replica,
    },
}

/// Which refusal of a peer's message justifies which observation about its sender: the one place this is decided.
/// Only refusals that no honest member causes count: a bad signature in the sender's own name, a batch spending
/// funds twice, a second signed message for one slot when the core holds the first (proof). Refusals an honest
/// member causes too (late, duplicate, wrong view) do not, nor does an equivocation without proof: the core also
/// refuses as `Equivocation` a proposal that conflicts with another member's for the slot (after an epoch moved
/// the primary) or with this replica's own vote, which honest members cause (the simulator saw it).
pub fn observation_of_refusal(
    summary: &MessageSummary,
    rejection: &Rejection,
    refusal: Refusal<'_>,
) -> Option<Observation> {
    // A relayed message's own signature may have been spoiled by the relay: only its signer's stream makes it theirs.
    let own_stream = match &refusal {
        Refusal::Verification { carrier, .. } => *carrier == summary.sender,
        Refusal::Core { .. } => false,
    };
    let proof = match (rejection, refusal) {
        (
            Rejection::ConflictingTransfers,
            Refusal::Verification {
                message: Message::PrePrepare(proposal),
                ..
            },
        ) => Some(Evidence::DoubleSpend { proposal }),
        // A NEW-VIEW refused for what it holds (too few VIEW-CHANGEs, one whose signature does not verify, other
        // PRE-PREPAREs than its VIEW-CHANGEs determine): proof against its primary if its own signature covers fewer
        // than a quorum of valid ones or PRE-PREPAREs not derived from them, whoever relayed it. Else against the
        // signer of a VIEW-CHANGE in it carrying a certificate that cannot hold, if that signer's own signature
        // verifies. The verifier judged the content before the signatures, so the evidence checks them.
        (
            Rejection::BadCertificate(_) | Rejection::BadRelayedSignature { .. } | Rejection::NotFromPrimary(_),
            Refusal::Verification {
                message: Message::NewView(new_view),
                membership,
                epoch_started_at,
                executed,
                ..
            },
        ) => Evidence::of_refused_new_view(membership, epoch_started_at, executed, new_view.clone()).or_else(|| {
            new_view
                .body
                .view_changes
                .into_iter()
                .find_map(|vc| Evidence::of_refused_view_change(membership, epoch_started_at, executed, vc))
        }),
        // A VIEW-CHANGE refused for a prepared certificate it carries (a vote in it that does not verify, a proposal
        // not by its view's primary, too few votes): its signer signed over the certificate, so it is proof against
        // the signer if the certificate cannot hold (`Evidence::InvalidViewChange`), never against the members
        // named inside (a vote's signature spoiled proves nothing against its voter).
        (
            Rejection::BadCertificate(_) | Rejection::BadRelayedSignature { .. } | Rejection::NotFromPrimary(_),
            Refusal::Verification {
                message: Message::ViewChange(view_change),
                membership,
                epoch_started_at,
                executed,
                ..
            },
        ) => Evidence::of_refused_view_change(membership, epoch_started_at, executed, view_change),
        // A second, different NEW-VIEW from the primary of a view this replica installed: the core keeps both.
        (Rejection::Equivocation, Refusal::Core { header: None, replica }) if summary.kind == "new_view" => {
            replica.conflicting_new_views().and_then(|(first, second)| {
                Evidence::of_conflicting_new_views(
                    replica.membership(),
                    proof_epoch(replica),
                    first.clone(),
                    second.clone(),
                )
            })
        }
        (
            Rejection::Equivocation,
            Refusal::Core {
                header: Some(header),
                replica,
            },
        ) => replica
            .signed_before(&header)
            .and_then(|first| Evidence::of_equivocation(replica.membership(), proof_epoch(replica), first, header)),
        (
            Rejection::NotFromPrimary(_),
            Refusal::Core {
                header: Some(Message::PrePrepare(proposal)),
                replica,
            },
        ) => Evidence::of_backup_proposal(replica.membership(), proof_epoch(replica), proposal),
        // The core keeps the last chunk it refused as not the certified one: signed by its sender, it is proof.
        (Rejection::StateChunk(_), Refusal::Core { replica, .. }) => replica
            .refused_state_chunk()
            .map(|transfer| Evidence::BadStateChunk {
                transfer: transfer.clone(),
            })
            .filter(|evidence| {
                let epoch_started_at = replica.governance().epoch_started_at.unwrap_or(0);
                evidence.verify(replica.membership(), epoch_started_at).is_ok()
            }),
        _ => None,
    };
    if let Some(proof) = proof {
        return Some(Observation::proven(proof));
    }
    let (fault, expected, received) = match rejection {
        // Only the message's own signature: one inside a certificate may have been spoiled by whoever relayed it.
        Rejection::BadSignature { from, .. }
            if *from == summary.sender && own_stream && summary.kind != "committed" =>
        {
            (
                FaultType::SignatureMismatch,
                "a valid Ed25519 signature by the sender",
                "a signature that does not verify",
            )
        }
        // Everything else (a double spend included) counts only with proof: what the accused itself signed.
        _ => return None,
    };
    Some(Observation {
        member: summary.sender,
        fault,
        message: summary.kind.into(),
        sequence: summary.seq,
        transaction: None,
        expected: expected.into(),
        received: received.into(),
        proof: None,
    })
}

/// What the caller carries out after the policy looked at an observation.
#[derive(Debug, Default)]
pub struct Detected {
    /// The detection log gained an entry (the first of its member and kind, or its first proof): log and count it.
    pub logged: bool,
    /// What to put to consensus: quarantine evidence or this replica's signed accusation.
    pub operation: Option<Operation>,
}

/// One replica's detection policy and the history it keeps.
pub struct Detector {
    history: History,
    /// The history changed since `take_changed` last said so: it must be persisted.
    changed: bool,
    /// When this replica last asked consensus to act on each member and kind of fault: at most once per
    /// `REPORT_INTERVAL_MS`, however many faulty messages arrive. Not durable: after a restart it reports again.
    reported: BTreeMap<(ReplicaId, FaultType), u64>,
    /// Why the view change under way started, for the record of the view it installs.
    view_change_reason: Option<ViewChangeReason>,
}

impl Detector {
    /// A detector over the history kept so far (empty on a first start).
    pub fn new(history: History) -> Detector {
        Detector {
            history,
            changed: false,
            reported: BTreeMap::new(),
            view_change_reason: None,
        }
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Whether the history changed since the last call (and so must be persisted).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Records an observation (never one about this replica itself: a client reports a liar's replies to every
    /// replica, the liar included) and decides what to put to consensus: evidence asks for a quarantine, a bad
    /// signature on the member's own authenticated stream becomes this replica's signed accusation.
    pub fn observed(&mut self, replica: &Replica, key: &KeyPair, observation: Observation, now_ms: u64) -> Detected {
        if observation.member == replica.id() {
            return Detected::default();
        }
        // Proof is judged by the membership in force when it is acted on, as where it would execute: an epoch begun
        // since it was observed may have removed a member whose signature it needs.
        let epoch_started_at = replica.governance().epoch_started_at.unwrap_or(0);
        if let Some(evidence) = &observation.proof
            && evidence.verify(replica.membership(), epoch_started_at).is_err()
        {
            return Detected::default();
        }
        let operation = self.report(replica, key, &observation, now_ms);
        let logged = self.history.observe(observation, now_ms);
        self.changed |= logged;
        Detected { logged, operation }
    }

    /// What to put to consensus about `observation`, if anything, and when: not when this replica is no member
    /// (its word counts for nothing), not about a member already quarantined, at most once per interval.
    fn report(&mut self, replica: &Replica, key: &KeyPair, observation: &Observation, now: u64) -> Option<Operation> {
        let (member, fault) = (observation.member, observation.fault);
        let me = replica.id();
        if !replica.membership().contains(me) || replica.governance().is_quarantined(member) {
            return None;
        }
        if self
            .reported
            .get(&(member, fault))
            .is_some_and(|at| now < at + REPORT_INTERVAL_MS)
        {
            return None;
        }
        let operation = match (&observation.proof, fault) {
            (Some(evidence), _) => Operation::Quarantine {
                reporter: me,
                at_ms: now,
                evidence: Box::new(evidence.clone()),
            },
            (None, FaultType::SignatureMismatch) => {
                let occurrences = self
                    .history
                    .detections
                    .iter()
                    .find(|d| d.first.member == member && d.first.fault == fault)
                    .map_or(1, |d| d.occurrences + 1);
                let accusation = Accusation {
                    accused: member,
                    fault,
                    observed: occurrences,
                    at_ms: now,
                };
                Operation::Accuse(Signed::new(me, accusation, key))
            }
            // Only this replica's word about something other than signatures: logged, not acted on.
            (None, _) => return None,
        };
        self.reported.insert((member, fault), now);
        Some(operation)
    }

    /// Records what an event of the core means for the history. A divergent checkpoint is proof against its
    /// signer: the observation is returned for the caller to hand to `observed` once it may step the core again.
    pub fn on_event(&mut self, replica: &Replica, event: &Event, now_ms: u64) -> Option<Observation> {
        match event {
            Event::ViewChangeStarted { reason, .. } => self.view_change_reason = Some(*reason),
            Event::NewViewInstalled {
                view,
                primary,
                old_primary,
                started_ms,
                installed_ms,
                view_changes_from,
                batches_recovered,
                transfers_recovered,
            } => {
                let reason = self.view_change_reason.take();
                let duration = started_ms.map_or(0, |s| installed_ms.saturating_sub(s));
                self.history.view_changed(ViewChangeRecord {
                    view: *view,
                    old_primary: *old_primary,
                    new_primary: *primary,
                    started_unix_ms: reason.map(|_| now_ms.saturating_sub(duration)),
                    installed_unix_ms: now_ms,
                    reason: reason.map(|r| r.name().to_string()),
                    triggered_by: view_changes_from.clone(),
                    quorum_met: view_changes_from.len() >= replica.membership().quorum(),
                    batches_recovered: *batches_recovered as u64,
                    transfers_recovered: *transfers_recovered as u64,
                });
                self.changed = true;
            }
            Event::DivergentCheckpoint {
                checkpoint,
                certificate,
            } => {
                let evidence = Evidence::DivergentCheckpoint {
                    checkpoint: checkpoint.clone(),
                    certificate: certificate.clone(),
                };
                // A certificate the membership before an epoch signed proves nothing under the one in force, which
                // is what the evidence is checked against (a removed member's vote no longer counts: N = 7, seed
                // 40297 saw 4 valid signatures of 5).
                let epoch_started_at = replica.governance().epoch_started_at.unwrap_or(0);
                return evidence
                    .verify(replica.membership(), epoch_started_at)
                    .is_ok()
                    .then(|| Observation::proven(evidence));
            }
            Event::Decided {
                seq,
                decision:
                    Decision::Quarantined {
                        member,
                        fault,
                        until_ms,
                        accusers,
                    },
                ..
            } => {
                self.history.quarantined(QuarantineRecord {
                    member: *member,
                    fault: *fault,
                    seq: *seq,
                    decided_unix_ms: now_ms,
                    until_unix_ms: *until_ms,
                    accusers: accusers.clone(),
                });
                self.changed = true;
            }
            Event::EpochStarted {
                epoch,
                seq,
                members,
                removed,
                ..
            } => {
                self.history.epoch_started(EpochRecord {
                    epoch: *epoch,
                    seq: *seq,
                    unix_ms: now_ms,
                    members: members.iter().map(|m| m.id).collect(),
                    removed: removed.clone(),
                });
                self.changed = true;
            }
            _ => {}
        }
        None
    }
}

/// The sequence number a replica's current epoch started at: a proof is checked against that epoch's membership.
fn proof_epoch(replica: &Replica) -> Seq {
    replica.governance().epoch_started_at.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Membership, Params};
    use crate::crypto::Digest;
    use crate::messages::{Member, NewView, Prepare};

    fn keys() -> Vec<KeyPair> {
        (1..=5u8).map(|i| KeyPair::from_secret([i; 32])).collect()
    }

    /// Replica `id` of the members 1..=4 (5 is no member).
    fn replica(id: ReplicaId) -> (Replica, KeyPair) {
        let keys = keys();
        let members = (1..=4)
            .map(|i| Member {
                id: i,
                public_key: keys[i as usize - 1].public(),
            })
            .collect();
        let config = Config {
            id,
            membership: Membership::new(members).unwrap(),
            genesis: vec![(KeyPair::from_secret([9; 32]).public(), 100)],
            params: Params::default(),
            admin: None,
        };
        let key = keys[id as usize - 1].clone();
        (Replica::new(config, key.clone()).unwrap(), key)
    }

    fn prepare(from: ReplicaId) -> Message {
        let vote = Prepare {
            view: 0,
            seq: 1,
            digest: Digest([7; 32]),
        };
        Message::Prepare(Signed::new(from, vote, &keys()[from as usize - 1]))
    }

    fn bad_signature(signer: ReplicaId, message: Message) -> Option<Observation> {
        let summary = MessageSummary::of(&message);
        let rejection = Rejection::BadSignature {
            kind: summary.kind,
            from: signer,
        };
        let carrier = message.sender();
        let membership = replica(1).0.membership().clone();
        let refusal = Refusal::Verification {
            message,
            carrier,
            membership: &membership,
            epoch_started_at: 0,
            executed: 0,
        };
        observation_of_refusal(&summary, &rejection, refusal)
    }

    fn accused(detected: &Detected) -> Option<(ReplicaId, u64, u64)> {
        match &detected.operation {
            Some(Operation::Accuse(a)) => Some((a.body.accused, a.body.observed, a.body.at_ms)),
            _ => None,
        }
    }

    #[test]
    fn only_a_bad_signature_in_the_senders_own_name_is_an_observation() {
        let observation = bad_signature(2, prepare(2)).expect("the sender's own signature");
        assert_eq!(
            (observation.member, observation.fault),
            (2, FaultType::SignatureMismatch)
        );
        assert!(observation.proof.is_none());
        // A signature by another member inside what the sender relays: not the sender's doing.
        assert_eq!(bad_signature(3, prepare(2)), None);
        let summary = MessageSummary::of(&prepare(2));
        let membership = replica(1).0.membership().clone();
        let refusal = Refusal::Verification {
            message: prepare(2),
            carrier: 2,
            membership: &membership,
            epoch_started_at: 0,
            executed: 0,
        };
        let duplicate = observation_of_refusal(&summary, &Rejection::Duplicate, refusal);
        assert_eq!(duplicate, None, "an honest member sends duplicates too");
    }

    /// A NEW-VIEW proves itself, so any member may pass it on (a replica that fell behind learns the cluster's view
    /// even when its primary has failed since; the simulator saw a new member stranded in view 0 for want of it).
    /// Then a bad signature in it may be the relay's doing: it accuses nobody, not even the primary it names.
    #[test]
    fn a_new_view_may_be_relayed_and_a_bad_signature_in_it_accuses_nobody() {
        let new_view = NewView {
            view: 1,
            view_changes: Vec::new(),
            pre_prepares: Vec::new(),
        };
        let relayed = Message::NewView(Signed::new(2, new_view, &keys()[1]));
        assert!(may_carry(3, &relayed) && may_carry(2, &relayed));
        assert!(!may_carry(3, &prepare(2)), "a vote travels only on its signer's stream");
        let summary = MessageSummary::of(&relayed);
        let rejection = Rejection::BadSignature {
            kind: summary.kind,
            from: 2,
        };
        let membership = replica(1).0.membership().clone();
        let carried_by = |carrier| {
            let refusal = Refusal::Verification {
                message: relayed.clone(),
                carrier,
                membership: &membership,
                epoch_started_at: 0,
                executed: 0,
            };
            observation_of_refusal(&summary, &rejection, refusal).map(|o| (o.member, o.fault))
        };
        assert_eq!(carried_by(3), None, "relayed: the relay may have spoiled it");
        assert_eq!(carried_by(2), Some((2, FaultType::SignatureMismatch)));
    }

    #[test]
    fn a_member_is_accused_at_most_once_per_interval_while_every_occurrence_is_counted() {
        let (replica, key) = replica(1);
        let mut detector = Detector::new(History::default());
        let seen = || bad_signature(2, prepare(2)).unwrap();
        let first = detector.observed(&replica, &key, seen(), 10_000);
        assert!(first.logged);
        assert_eq!(accused(&first), Some((2, 1, 10_000)));
        assert!(detector.take_changed() && !detector.take_changed());
        // Within the interval: counted in the log, not put to consensus again.
        let again = detector.observed(&replica, &key, seen(), 10_000 + REPORT_INTERVAL_MS - 1);
        assert!(!again.logged && again.operation.is_none());
        assert_eq!(detector.history().detections[0].occurrences, 2);
        // Another member is not held back by the first one's interval.
        let other = detector.observed(&replica, &key, bad_signature(3, prepare(3)).unwrap(), 10_001);
        assert_eq!(accused(&other), Some((3, 1, 10_001)));
        // Once the interval passed, accused again, saying how often it was seen.
        let later = detector.observed(&replica, &key, seen(), 10_000 + REPORT_INTERVAL_MS);
        assert_eq!(accused(&later), Some((2, 3, 10_000 + REPORT_INTERVAL_MS)));
    }

    #[test]
    fn never_about_itself_and_never_a_report_when_not_a_member() {
        let (replica_1, key_1) = replica(1);
        let mut detector = Detector::new(History::default());
        let about_itself = detector.observed(&replica_1, &key_1, bad_signature(1, prepare(1)).unwrap(), 5);
        assert!(!about_itself.logged && about_itself.operation.is_none());
        assert!(detector.history().detections.is_empty() && !detector.take_changed());

        // A replica that is no member (yet) logs what it sees, but its word counts for nothing: no accusation.
        let (outsider, key_5) = replica(5);
        assert!(!outsider.membership().contains(5));
        let mut detector = Detector::new(History::default());
        for at in [5, 5 + REPORT_INTERVAL_MS] {
            let seen = detector.observed(&outsider, &key_5, bad_signature(2, prepare(2)).unwrap(), at);
            assert!(seen.operation.is_none(), "{:?}", seen.operation);
        }
        assert_eq!(detector.history().detections.len(), 1);
    }

    #[test]
    fn an_equivocation_or_a_double_spend_counts_only_with_proof() {
        let (replica, key) = replica(1);
        let summary = MessageSummary::of(&prepare(2));
        let core = |header| Refusal::Core {
            header,
            replica: &replica,
        };
        // The core holds nothing member 2 signed for the slot: the conflict is not provably its own.
        let unproven = observation_of_refusal(&summary, &Rejection::Equivocation, core(Some(prepare(2))));
        assert_eq!(unproven, None);
        // A double spend is only ever observed with the proposal its proposer signed: a refusal that carries
        // none (a relayed certificate's content, say) names nobody.
        let unproven = observation_of_refusal(&summary, &Rejection::ConflictingTransfers, core(None));
        assert_eq!(unproven, None);
        let mut detector = Detector::new(History::default());
        let observation = bad_signature(2, prepare(2)).unwrap();
        let detected = detector.observed(&replica, &key, observation, 5);
        assert!(detected.logged);
    }
}
