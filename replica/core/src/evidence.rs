//! Evidence any replica can check for itself: signed messages that prove a member misbehaved, whoever relays them.
//!
//! An observation says what one replica saw; evidence is what it can show others. Only evidence made of the
//! accused member's own signatures (and, where needed, a quorum's) counts as proof: it can be handed on, stored,
//! and checked again later against nothing but the membership's public keys.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Membership, max_failures};
use crate::crypto::Digest;
use crate::ledger::TxOutcome;
use crate::messages::{
    MAX_MESSAGE_BYTES, Message, NewView, PrePrepare, Prepare, PreparedCert, ReplicaId, Reply, Seq, Signable, Signed,
    ViewChange,
};
use crate::new_view::derive_new_view;
// Evidence travels inside operations, so its types live with the messages (`messages.rs`).
pub use crate::messages::{Evidence, FaultType};

impl FaultType {
    pub fn name(&self) -> &'static str {
        match self {
            FaultType::SignatureMismatch => "signature_mismatch",
            FaultType::Equivocation => "equivocation",
            FaultType::DoubleSpend => "double_spend",
            FaultType::DivergentExecution => "divergent_execution",
            FaultType::ProtocolViolation => "protocol_violation",
        }
    }

    /// How it is usually seen.
    pub fn method(&self) -> &'static str {
        match self {
            FaultType::SignatureMismatch => "signature_verification",
            FaultType::Equivocation => "conflicting_signed_messages",
            FaultType::DoubleSpend => "batch_validation",
            FaultType::DivergentExecution => "checkpoint_comparison",
            FaultType::ProtocolViolation => "protocol_rules",
        }
    }
}

/// The most replies one piece of evidence may hold: two per member is already more than a proof needs.
pub const MAX_EVIDENCE_REPLIES: usize = 64;

/// The largest evidence made of NEW-VIEWs or VIEW-CHANGEs a replica puts to consensus (encoded): it travels inside a
/// proposal, which must stay below `MAX_MESSAGE_BYTES` with the rest of its batch. Both are small unless they carry
/// many full batches; larger ones are refused all the same, only not proven.
pub const MAX_VIEW_CHANGE_EVIDENCE_BYTES: usize = MAX_MESSAGE_BYTES / 4;

/// The most steps (re-proposals times prepared certificates) re-deriving a NEW-VIEW's PRE-PREPARES may take when
/// its evidence is checked: every replica checks evidence where it executes, and a NEW-VIEW no honest primary makes
/// could hold far more than any log window. An honest one needs a few million at most (a window of 1,000 sequence
/// numbers, 10 members); a NEW-VIEW beyond this is refused all the same, only not proven.
const MAX_DERIVATION_STEPS: usize = 1 << 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("signature of member {0} does not verify")]
    BadSignature(ReplicaId),
    #[error("member {0} is not a member")]
    NotAMember(ReplicaId),
    #[error("{0}")]
    ProvesNothing(String),
}

fn signed_by_sender(membership: &Membership, m: &Message) -> Result<(), EvidenceError> {
    match m {
        Message::PrePrepare(x) => genuine(membership, x),
        Message::Prepare(x) => genuine(membership, x),
        Message::Commit(x) => genuine(membership, x),
        Message::Checkpoint(x) => genuine(membership, x),
        _ => Err(EvidenceError::ProvesNothing("not a vote or proposal".into())),
    }
}

fn genuine<T: Signable>(membership: &Membership, m: &Signed<T>) -> Result<(), EvidenceError> {
    let key = membership.key(m.from).ok_or(EvidenceError::NotAMember(m.from))?;
    if key.verify(&m.signing_bytes(), &m.signature) {
        Ok(())
    } else {
        Err(EvidenceError::BadSignature(m.from))
    }
}

impl Evidence {
    /// What is kept of a message while the core steps it, to complete an equivocation if the core refuses it:
    /// the signed header of a proposal or vote (small: a PRE-PREPARE without its batch).
    pub fn header(message: &Message) -> Option<Message> {
        match message {
            Message::PrePrepare(pp) => Some(Message::PrePrepare(crate::messages::without_batch(pp))),
            Message::Prepare(_) | Message::Commit(_) | Message::Checkpoint(_) => Some(message.clone()),
            // A PRE-PREPARE header a peer holds: its signer's, whoever passed it on.
            Message::Proposal { proposal, .. } => Some(Message::PrePrepare(crate::messages::without_batch(proposal))),
            _ => None,
        }
    }

    /// The equivocation `second` completes with `first`, what its sender signed before for the slot, if it is proof
    /// (e.g. not a conflict with this replica's own vote).
    pub fn of_equivocation(
        membership: &Membership,
        epoch_started_at: Seq,
        first: Message,
        second: Message,
    ) -> Option<Evidence> {
        let evidence = Evidence::Equivocation { first, second };
        evidence.verify(membership, epoch_started_at).ok().map(|_| evidence)
    }

    /// The proof a PRE-PREPARE the core refused as not its view primary's makes, if it does (its signature was
    /// verified before the core saw it; checked again here, with the epoch, like every proof that leaves).
    pub fn of_backup_proposal(
        membership: &Membership,
        epoch_started_at: Seq,
        proposal: Signed<PrePrepare>,
    ) -> Option<Evidence> {
        let evidence = Evidence::ProposalByBackup { proposal };
        evidence.verify(membership, epoch_started_at).ok().map(|_| evidence)
    }

    /// The proof two NEW-VIEWs for one view make, the one the replica installed first and one it refused as
    /// conflicting with it, if they do (checked here with the epoch, like every proof that leaves).
    pub fn of_conflicting_new_views(
        membership: &Membership,
        epoch_started_at: Seq,
        first: Signed<NewView>,
        second: Signed<NewView>,
    ) -> Option<Evidence> {
        Evidence::ConflictingNewViews { first, second }.proving(membership, epoch_started_at)
    }

    /// The proof a refused NEW-VIEW makes if its primary signed it on fewer than a quorum of valid VIEW-CHANGEs.
    /// Whoever relayed it: the check is of the primary's own signature, so a spoiled one proves nothing.
    ///
    /// Only a NEW-VIEW whose VIEW-CHANGEs all start at or below `executed` (the last sequence number this replica
    /// executed), so that it lies in the epoch this replica knows: a replica that has not reached a reconfiguration
    /// yet may be shown a NEW-VIEW of the next membership, whose quorum is another (the simulator saw one framed).
    /// Once ordered, the proof is checked again where it executes, by which point no later epoch can exist.
    pub fn of_refused_new_view(
        membership: &Membership,
        epoch_started_at: Seq,
        executed: Seq,
        new_view: Signed<NewView>,
    ) -> Option<Evidence> {
        if new_view
            .body
            .view_changes
            .iter()
            .any(|vc| vc.body.checkpoint.seq > executed)
        {
            return None;
        }
        let without_quorum = Evidence::NewViewWithoutQuorum {
            new_view: new_view.clone(),
        };
        without_quorum
            .proving(membership, epoch_started_at)
            .or_else(|| Evidence::NewViewNotDerived { new_view }.proving(membership, epoch_started_at))
    }

    /// The proof a refused VIEW-CHANGE makes against its signer if a prepared certificate it carries cannot hold,
    /// whether it came on its signer's stream or inside a NEW-VIEW someone relays: the check is of the signer's own
    /// signature over the certificate, so one spoiled on the way proves nothing.
    ///
    /// Only a VIEW-CHANGE whose checkpoint is at or below `executed`, as for a NEW-VIEW (`of_refused_new_view`): one
    /// from further on may have been made under a membership this replica does not know yet.
    pub fn of_refused_view_change(
        membership: &Membership,
        epoch_started_at: Seq,
        executed: Seq,
        view_change: Signed<ViewChange>,
    ) -> Option<Evidence> {
        if view_change.body.checkpoint.seq > executed {
            return None;
        }
        Evidence::InvalidViewChange { view_change }.proving(membership, epoch_started_at)
    }

    /// This evidence, if it proves something and is small enough to put to consensus.
    fn proving(self, membership: &Membership, epoch_started_at: Seq) -> Option<Evidence> {
        self.verify(membership, epoch_started_at).ok()?;
        let size = postcard::to_allocvec(&self).map_or(usize::MAX, |bytes| bytes.len());
        (size <= MAX_VIEW_CHANGE_EVIDENCE_BYTES).then_some(self)
    }

    /// The member the evidence names, before it is checked (`verify` says whether it proves anything).
    pub fn named(&self) -> ReplicaId {
        match self {
            Evidence::Equivocation { second, .. } => second.sender(),
            Evidence::DoubleSpend { proposal } | Evidence::ProposalByBackup { proposal } => proposal.from,
            Evidence::DivergentCheckpoint { checkpoint, .. } => checkpoint.from,
            Evidence::DivergentReply { member, .. } => *member,
            Evidence::BadStateChunk { transfer } => transfer.from,
            Evidence::ConflictingNewViews { second, .. } => second.from,
            Evidence::NewViewWithoutQuorum { new_view } | Evidence::NewViewNotDerived { new_view } => new_view.from,
            Evidence::InvalidViewChange { view_change } => view_change.from,
        }
    }

    /// Checks the evidence against the membership's keys alone: who it proves misbehaved, and how.
    /// `epoch_started_at` is the sequence number after which `membership` took effect (0 for the genesis): what a
    /// member signed for a lower one belongs to an earlier membership, where other rules (another primary) held.
    pub fn verify(
        &self,
        membership: &Membership,
        epoch_started_at: Seq,
    ) -> Result<(ReplicaId, FaultType), EvidenceError> {
        match self {
            Evidence::Equivocation { first, second } => {
                let slot = |m: &Message| match m {
                    Message::PrePrepare(x) => Some((x.from, 0, x.body.view, x.body.seq, x.body.digest)),
                    Message::Prepare(x) => Some((x.from, 1, x.body.view, x.body.seq, x.body.digest)),
                    Message::Commit(x) => Some((x.from, 2, x.body.view, x.body.seq, x.body.digest)),
                    Message::Checkpoint(x) => Some((x.from, 3, 0, x.body.seq, x.body.state_digest)),
                    _ => None,
                };
                let (Some(a), Some(b)) = (slot(first), slot(second)) else {
                    return Err(EvidenceError::ProvesNothing("not a vote or proposal".into()));
                };
                if (a.0, a.1, a.2, a.3) != (b.0, b.1, b.2, b.3) || a.4 == b.4 {
                    return Err(EvidenceError::ProvesNothing(
                        "not two different messages of one member for one slot".into(),
                    ));
                }
                for m in [first, second] {
                    signed_by_sender(membership, m)?;
                }
                Ok((a.0, FaultType::Equivocation))
            }
            Evidence::DoubleSpend { proposal } => {
                genuine(membership, proposal)?;
                if !proposal.body.matches_digest() {
                    return Err(EvidenceError::ProvesNothing("the batch is not the one signed".into()));
                }
                let mut spends = BTreeSet::new();
                if proposal.body.batch.iter().all(|tx| spends.insert(tx.spend_key())) {
                    return Err(EvidenceError::ProvesNothing("no funds are spent twice".into()));
                }
                Ok((proposal.from, FaultType::DoubleSpend))
            }
            Evidence::DivergentCheckpoint {
                checkpoint,
                certificate,
            } => {
                genuine(membership, checkpoint)?;
                if checkpoint.body.seq != certificate.seq || checkpoint.body.state_digest == certificate.state_digest {
                    return Err(EvidenceError::ProvesNothing(
                        "the checkpoint does not contradict the certificate".into(),
                    ));
                }
                let mut signers = BTreeSet::new();
                for vote in &certificate.proof {
                    let agrees = vote.body.seq == certificate.seq && vote.body.state_digest == certificate.state_digest;
                    if agrees && genuine(membership, vote).is_ok() {
                        signers.insert(vote.from);
                    }
                }
                if signers.len() < membership.quorum() {
                    return Err(EvidenceError::ProvesNothing(format!(
                        "the certificate holds {} valid signatures of {} needed",
                        signers.len(),
                        membership.quorum()
                    )));
                }
                Ok((checkpoint.from, FaultType::DivergentExecution))
            }
            Evidence::DivergentReply {
                member,
                seq,
                transaction,
                replies,
            } => {
                let found = divergent_replies(membership, replies)?;
                if found.iter().any(|e| e == &(*member, *seq, *transaction)) {
                    Ok((*member, FaultType::DivergentExecution))
                } else {
                    Err(EvidenceError::ProvesNothing(format!(
                        "the replies do not show member {member} diverging at {seq}"
                    )))
                }
            }
            Evidence::ProposalByBackup { proposal } => {
                let PrePrepare { view, seq, .. } = proposal.body;
                if seq <= epoch_started_at {
                    return Err(EvidenceError::ProvesNothing(format!(
                        "sequence {seq} belongs to an earlier membership"
                    )));
                }
                if proposal.from == membership.primary(view) {
                    return Err(EvidenceError::ProvesNothing(format!(
                        "member {} is the primary of view {view}",
                        proposal.from
                    )));
                }
                genuine(membership, proposal)?;
                Ok((proposal.from, FaultType::ProtocolViolation))
            }
            Evidence::BadStateChunk { transfer } => {
                genuine(membership, transfer)?;
                let body = &transfer.body;
                match body.manifest.check_chunk(body.index as usize, &body.chunk) {
                    Ok(()) => Err(EvidenceError::ProvesNothing(
                        "the chunk is the one its manifest names".into(),
                    )),
                    Err(_) => Ok((transfer.from, FaultType::DivergentExecution)),
                }
            }
            Evidence::ConflictingNewViews { first, second } => {
                let view = second.body.view;
                if first.from != second.from || first.body.view != view || first.body == second.body {
                    return Err(EvidenceError::ProvesNothing(
                        "not two different NEW-VIEWs of one member for one view".into(),
                    ));
                }
                for new_view in [first, second] {
                    new_view_of_this_epoch(membership, epoch_started_at, new_view)?;
                }
                Ok((second.from, FaultType::Equivocation))
            }
            Evidence::NewViewWithoutQuorum { new_view } => {
                new_view_of_this_epoch(membership, epoch_started_at, new_view)?;
                let view = new_view.body.view;
                let valid: BTreeSet<ReplicaId> = new_view
                    .body
                    .view_changes
                    .iter()
                    .filter(|vc| vc.body.new_view == view && genuine(membership, *vc).is_ok())
                    .map(|vc| vc.from)
                    .collect();
                if valid.len() >= membership.quorum() {
                    return Err(EvidenceError::ProvesNothing(format!(
                        "the NEW-VIEW holds {} valid VIEW-CHANGEs, a quorum",
                        valid.len()
                    )));
                }
                Ok((new_view.from, FaultType::ProtocolViolation))
            }
            Evidence::NewViewNotDerived { new_view } => {
                new_view_of_this_epoch(membership, epoch_started_at, new_view)?;
                if pre_prepares_derived(new_view)? {
                    return Err(EvidenceError::ProvesNothing(
                        "its PRE-PREPAREs are those its VIEW-CHANGEs determine".into(),
                    ));
                }
                Ok((new_view.from, FaultType::ProtocolViolation))
            }
            Evidence::InvalidViewChange { view_change } => {
                genuine(membership, view_change)?;
                // The checkpoint certificate is left unproven: across an epoch an honest member's rests on the
                // membership before it (a removed member's votes, another quorum), and which membership signed one
                // cannot be told from the certificate alone. A bad one is refused all the same.
                let broken = view_change
                    .body
                    .prepared
                    .iter()
                    .any(|cert| broken_certificate(membership, epoch_started_at, cert));
                if !broken {
                    return Err(EvidenceError::ProvesNothing(
                        "every prepared certificate it carries may hold".into(),
                    ));
                }
                Ok((view_change.from, FaultType::ProtocolViolation))
            }
        }
    }

    /// Every divergence the replies prove, one piece of evidence each, holding only the replies it needs.
    pub fn of_replies(membership: &Membership, replies: &[Signed<Reply>]) -> Result<Vec<Evidence>, EvidenceError> {
        let found = divergent_replies(membership, replies)?;
        Ok(found
            .into_iter()
            .map(|(member, seq, transaction)| {
                let needed = replies
                    .iter()
                    .filter(|r| r.body.seq == seq && r.body.outcomes.iter().any(|(tx, _)| *tx == transaction))
                    .cloned()
                    .collect();
                Evidence::DivergentReply {
                    member,
                    seq,
                    transaction,
                    replies: needed,
                }
            })
            .collect())
    }
}

/// A NEW-VIEW signed by the primary its view has in `membership`, made in the epoch that began after
/// `epoch_started_at`: one whose VIEW-CHANGEs all start from a checkpoint below the epoch's first was made by an earlier
/// membership (a member sends its VIEW-CHANGE in an epoch only once that epoch's first checkpoint is stable), under
/// which another member may have been that view's primary, with another quorum. The VIEW-CHANGEs' checkpoints are
/// what the primary signed: a relay cannot move them.
fn new_view_of_this_epoch(
    membership: &Membership,
    epoch_started_at: Seq,
    new_view: &Signed<NewView>,
) -> Result<(), EvidenceError> {
    let view = new_view.body.view;
    let starts_at = new_view.body.view_changes.iter().map(|vc| vc.body.checkpoint.seq).max();
    if epoch_started_at > 0 && starts_at.is_none_or(|seq| seq < epoch_started_at) {
        return Err(EvidenceError::ProvesNothing(format!(
            "the NEW-VIEW for view {view} starts below sequence {epoch_started_at}: an earlier membership's"
        )));
    }
    if new_view.from != membership.primary(view) {
        return Err(EvidenceError::ProvesNothing(format!(
            "member {} is not the primary of view {view}",
            new_view.from
        )));
    }
    genuine(membership, new_view)
}

/// Whether a NEW-VIEW's PRE-PREPAREs are exactly those its VIEW-CHANGEs determine, signed by its own signer: what an
/// honest primary always sends. Refused (proving nothing) when re-deriving them would take more than
/// `MAX_DERIVATION_STEPS`.
fn pre_prepares_derived(new_view: &Signed<NewView>) -> Result<bool, EvidenceError> {
    let NewView {
        view,
        view_changes,
        pre_prepares,
    } = &new_view.body;
    // How many re-proposals the derivation makes, counted first: it runs from the highest checkpoint to the highest
    // prepared certificate above it, and a Byzantine primary's NEW-VIEW may name any sequence number.
    let low = view_changes.iter().map(|vc| vc.body.checkpoint.seq).max().unwrap_or(0);
    let certificates = || view_changes.iter().flat_map(|vc| &vc.body.prepared);
    let high = certificates()
        .map(PreparedCert::seq)
        .filter(|seq| *seq > low)
        .max()
        .unwrap_or(low);
    if high - low != pre_prepares.len() as Seq {
        return Ok(false);
    }
    if pre_prepares.len().saturating_mul(certificates().count()) > MAX_DERIVATION_STEPS {
        return Err(EvidenceError::ProvesNothing(
            "the NEW-VIEW is too large to derive again".into(),
        ));
    }
    let (_, derived) = derive_new_view(view_changes);
    Ok(derived
        .into_iter()
        .zip(pre_prepares)
        .all(|(derived, pp)| pp.from == new_view.from && pp.body == derived.in_view(*view)))
}

/// Whether a prepared certificate is one no honest member holds, checked in the epoch that began after
/// `epoch_started_at`. An honest member forms one from a PRE-PREPARE and PREPAREs it verified
/// (`Replica::check_prepared`): each PREPARE for that proposal, none by its proposer, one per member, a quorum with
/// the proposer's, the proposer its view's primary.
///
/// What no reconfiguration changes is judged whatever the certificate's sequence number: the votes' agreement with
/// the proposal, and signatures, since a member keeps its key for good (ids are never reused and a key never changes;
/// `governance::next_members`), so one that does not verify now never did. A removed member's cannot be checked and
/// counts for nothing. So the proof still holds when an epoch begins between its making and its execution (the
/// simulator saw a quarantine dropped so, N = 7, seed 90164). Who is a view's primary and how many make a quorum
/// change with every reconfiguration, and a replica may hold a certificate above an epoch's start formed under the
/// membership before it (it installs a NEW-VIEW's PRE-PREPAREs above its next checkpoint boundary at once, where
/// `on_pre_prepare` defers one until the boundary executed, and keeps the certificate into the new epoch): those two
/// are judged only in the genesis epoch, which no other membership preceded.
fn broken_certificate(membership: &Membership, epoch_started_at: Seq, cert: &PreparedCert) -> bool {
    let does_not_verify = |result: Result<(), EvidenceError>| matches!(result, Err(EvidenceError::BadSignature(_)));
    let pp = &cert.pre_prepare;
    if does_not_verify(genuine(membership, pp)) {
        return true;
    }
    let wanted = Prepare {
        view: pp.body.view,
        seq: pp.body.seq,
        digest: pp.body.digest,
    };
    let mut voters = BTreeSet::new();
    for vote in &cert.prepares {
        let for_another_proposal = vote.body != wanted;
        let by_proposer_or_twice = vote.from == pp.from || !voters.insert(vote.from);
        if for_another_proposal || by_proposer_or_twice || does_not_verify(genuine(membership, vote)) {
            return true;
        }
    }
    if epoch_started_at > 0 {
        return false;
    }
    let prepared_by = voters.iter().filter(|voter| membership.contains(**voter)).count();
    pp.from != membership.primary(pp.body.view) || prepared_by + 1 < membership.quorum()
}

/// (member, sequence, transfer) for each member whose signed reply contradicts F+1 others' for that transfer.
fn divergent_replies(
    membership: &Membership,
    replies: &[Signed<Reply>],
) -> Result<Vec<(ReplicaId, Seq, Digest)>, EvidenceError> {
    if replies.len() > MAX_EVIDENCE_REPLIES {
        return Err(EvidenceError::ProvesNothing(format!(
            "{} replies; at most {MAX_EVIDENCE_REPLIES}",
            replies.len()
        )));
    }
    // (sequence, transfer) -> outcome -> members that signed it
    let mut signed: BTreeMap<(Seq, Digest), BTreeMap<TxOutcome, BTreeSet<ReplicaId>>> = BTreeMap::new();
    for reply in replies.iter().filter(|r| genuine(membership, *r).is_ok()) {
        for (tx, outcome) in &reply.body.outcomes {
            let by = signed.entry((reply.body.seq, *tx)).or_default();
            by.entry(*outcome).or_default().insert(reply.from);
        }
    }
    let confirming = max_failures(membership.n()) + 1;
    let mut found = Vec::new();
    for ((seq, tx), by_outcome) in signed {
        let Some((agreed, _)) = by_outcome.iter().find(|(_, members)| members.len() >= confirming) else {
            continue;
        };
        for (outcome, members) in &by_outcome {
            if outcome != agreed {
                found.extend(members.iter().map(|m| (*m, seq, tx)));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;
    use crate::ledger::RejectReason;
    use crate::messages::{Checkpoint, CheckpointCert, Member};

    fn cluster() -> (Membership, Vec<KeyPair>) {
        let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_secret([i; 32])).collect();
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                id: i as ReplicaId + 1,
                public_key: k.public(),
            })
            .collect();
        (Membership::new(members).unwrap(), keys)
    }

    #[test]
    fn a_reply_contradicting_f_plus_1_signed_replies_proves_divergent_execution() {
        let (membership, keys) = cluster();
        let tx = Digest([7; 32]);
        let reply = |id: ReplicaId, outcome: TxOutcome| {
            let body = Reply {
                view: 0,
                seq: 9,
                outcomes: vec![(tx, outcome)],
            };
            Signed::new(id, body, &keys[id as usize - 1])
        };
        let lie = TxOutcome::Rejected(RejectReason::ZeroAmount);
        let proof = [
            reply(1, TxOutcome::Applied),
            reply(2, TxOutcome::Applied),
            reply(4, lie),
        ];
        let found = Evidence::of_replies(&membership, &proof).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].verify(&membership, 0), Ok((4, FaultType::DivergentExecution)));

        // One honest reply against one lie proves nothing: either could be the liar.
        assert!(Evidence::of_replies(&membership, &proof[1..]).unwrap().is_empty());
        // A forged reply (signed by another key) does not count as the member's.
        let mut forged = reply(3, lie);
        forged.from = 4;
        let found = Evidence::of_replies(&membership, &[proof[0].clone(), proof[1].clone(), forged]).unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert!(Evidence::of_replies(&membership, &vec![proof[0].clone(); 65]).is_err());
        // Evidence naming another member than the replies show is refused.
        let Evidence::DivergentReply {
            seq,
            transaction,
            replies,
            ..
        } = found_or(&membership, &proof)
        else {
            unreachable!()
        };
        let framed = Evidence::DivergentReply {
            member: 3,
            seq,
            transaction,
            replies,
        };
        assert!(matches!(
            framed.verify(&membership, 0),
            Err(EvidenceError::ProvesNothing(_))
        ));
    }

    #[test]
    fn two_different_votes_of_one_member_for_one_slot_prove_equivocation_and_nothing_else_does() {
        use crate::messages::Prepare;
        let (membership, keys) = cluster();
        let prepare = |id: ReplicaId, view, seq, d: u8| {
            let body = Prepare {
                view,
                seq,
                digest: Digest([d; 32]),
            };
            Message::Prepare(Signed::new(id, body, &keys[id as usize - 1]))
        };
        let proof = Evidence::Equivocation {
            first: prepare(2, 0, 5, 1),
            second: prepare(2, 0, 5, 2),
        };
        assert_eq!(proof.verify(&membership, 0), Ok((2, FaultType::Equivocation)));
        for (first, second) in [
            (prepare(2, 0, 5, 1), prepare(2, 0, 5, 1)), // the same vote twice
            (prepare(2, 0, 5, 1), prepare(2, 1, 5, 2)), // another view
            (prepare(2, 0, 5, 1), prepare(3, 0, 5, 2)), // another member
        ] {
            let evidence = Evidence::Equivocation { first, second };
            assert!(matches!(
                evidence.verify(&membership, 0),
                Err(EvidenceError::ProvesNothing(_))
            ));
        }
        let Message::Prepare(mut forged) = prepare(3, 0, 5, 2) else {
            unreachable!()
        };
        forged.from = 2;
        let framed = Evidence::Equivocation {
            first: prepare(2, 0, 5, 1),
            second: Message::Prepare(forged),
        };
        assert_eq!(framed.verify(&membership, 0), Err(EvidenceError::BadSignature(2)));
    }

    #[test]
    fn a_signed_proposal_spending_funds_twice_proves_a_double_spend() {
        use crate::ledger::Transfer;
        let (membership, keys) = cluster();
        let payer = KeyPair::from_secret([9; 32]);
        let spend = |amount| {
            Transfer {
                from: payer.public(),
                to: keys[0].public(),
                amount,
                nonce: 1,
            }
            .sign(&payer)
        };
        let propose = |batch: Vec<_>| {
            let body = PrePrepare {
                view: 0,
                seq: 1,
                digest: crate::messages::batch_digest(&batch),
                batch,
                ops: Vec::new(),
                at_ms: 0,
            };
            Signed::new(1, body, &keys[0])
        };
        let proof = Evidence::DoubleSpend {
            proposal: propose(vec![spend(1), spend(2)]),
        };
        assert_eq!(proof.verify(&membership, 0), Ok((1, FaultType::DoubleSpend)));
        let honest = Evidence::DoubleSpend {
            proposal: propose(vec![spend(1)]),
        };
        assert!(matches!(
            honest.verify(&membership, 0),
            Err(EvidenceError::ProvesNothing(_))
        ));
        // A batch swapped under the signed digest is not the member's.
        let mut swapped = propose(vec![spend(1)]);
        swapped.body.batch = vec![spend(1), spend(2)];
        let swapped = Evidence::DoubleSpend { proposal: swapped };
        assert!(matches!(
            swapped.verify(&membership, 0),
            Err(EvidenceError::ProvesNothing(_))
        ));
    }

    /// Member `from`'s VIEW-CHANGE for view 1 from a checkpoint at `checkpoint_seq`.
    fn view_change(keys: &[KeyPair], from: ReplicaId, checkpoint_seq: Seq) -> Signed<crate::messages::ViewChange> {
        let body = crate::messages::ViewChange {
            new_view: 1,
            checkpoint: CheckpointCert {
                seq: checkpoint_seq,
                state_digest: Digest([3; 32]),
                proof: Vec::new(),
            },
            prepared: Vec::new(),
            revision: 0,
        };
        Signed::new(from, body, &keys[from as usize - 1])
    }

    /// A NEW-VIEW for view 1 signed by `from` on the VIEW-CHANGEs of `senders`.
    fn new_view(keys: &[KeyPair], from: ReplicaId, senders: &[ReplicaId], checkpoint_seq: Seq) -> Signed<NewView> {
        let body = NewView {
            view: 1,
            view_changes: senders
                .iter()
                .map(|id| view_change(keys, *id, checkpoint_seq))
                .collect(),
            pre_prepares: Vec::new(),
        };
        Signed::new(from, body, &keys[from as usize - 1])
    }

    #[test]
    fn two_different_new_views_of_a_views_primary_prove_equivocation_and_nothing_else_does() {
        let (membership, keys) = cluster();
        // Member 2 is the primary of view 1.
        let first = new_view(&keys, 2, &[1, 2, 3], 0);
        let second = new_view(&keys, 2, &[2, 3, 4], 0);
        let proof = Evidence::ConflictingNewViews {
            first: first.clone(),
            second: second.clone(),
        };
        assert_eq!(proof.verify(&membership, 0), Ok((2, FaultType::Equivocation)));
        assert_eq!(proof.named(), 2);
        let proves_nothing = |first: Signed<NewView>, second: Signed<NewView>, epoch_started_at: Seq| {
            let evidence = Evidence::ConflictingNewViews { first, second };
            matches!(
                evidence.verify(&membership, epoch_started_at),
                Err(EvidenceError::ProvesNothing(_))
            )
        };
        assert!(
            proves_nothing(first.clone(), first.clone(), 0),
            "the same NEW-VIEW twice"
        );
        let mut other_view = second.clone();
        other_view.body.view = 5;
        let other_view = Signed::new(2, other_view.body, &keys[1]);
        assert!(proves_nothing(first.clone(), other_view, 0), "another view");
        // Member 3 is no primary of view 1: what it signs as a NEW-VIEW is refused, never its primary's doing.
        let by_backup = (new_view(&keys, 3, &[1, 2, 3], 0), new_view(&keys, 3, &[2, 3, 4], 0));
        assert!(proves_nothing(by_backup.0, by_backup.1, 0), "not the view's primary");
        // Made before an epoch that began after sequence 10: another membership's view 1.
        assert!(proves_nothing(first.clone(), second.clone(), 10), "an earlier epoch");
        let later = (new_view(&keys, 2, &[1, 2, 3], 10), new_view(&keys, 2, &[2, 3, 4], 12));
        assert_eq!(
            Evidence::ConflictingNewViews {
                first: later.0,
                second: later.1
            }
            .verify(&membership, 10),
            Ok((2, FaultType::Equivocation)),
            "both of the epoch"
        );
        // A forged second NEW-VIEW (member 3's key in 2's name) is not the primary's.
        let mut forged = new_view(&keys, 3, &[2, 3, 4], 0);
        forged.from = 2;
        let framed = Evidence::ConflictingNewViews { first, second: forged };
        assert_eq!(framed.verify(&membership, 0), Err(EvidenceError::BadSignature(2)));
    }

    #[test]
    fn a_new_view_on_fewer_than_a_quorum_of_valid_view_changes_proves_a_protocol_violation() {
        let (membership, keys) = cluster();
        let short = new_view(&keys, 2, &[2, 3], 0);
        let proof = Evidence::NewViewWithoutQuorum {
            new_view: short.clone(),
        };
        assert_eq!(proof.verify(&membership, 0), Ok((2, FaultType::ProtocolViolation)));
        let proves_nothing = |new_view: Signed<NewView>, epoch_started_at: Seq| {
            let evidence = Evidence::NewViewWithoutQuorum { new_view };
            matches!(
                evidence.verify(&membership, epoch_started_at),
                Err(EvidenceError::ProvesNothing(_))
            )
        };
        assert!(proves_nothing(new_view(&keys, 2, &[1, 2, 3], 0), 0), "a quorum");
        // The same VIEW-CHANGE twice counts once; one whose signature does not verify counts for nothing.
        let mut twice = new_view(&keys, 2, &[2, 3], 0).body;
        twice.view_changes.push(twice.view_changes[1].clone());
        assert!(!proves_nothing(Signed::new(2, twice, &keys[1]), 0), "a duplicate");
        let mut spoiled = new_view(&keys, 2, &[1, 2, 3], 0).body;
        spoiled.view_changes[0].signature = spoiled.view_changes[0].signature.corrupted();
        assert!(
            !proves_nothing(Signed::new(2, spoiled, &keys[1]), 0),
            "signed over a spoiled one"
        );
        assert!(
            proves_nothing(new_view(&keys, 3, &[2, 3], 0), 0),
            "not the view's primary"
        );
        assert!(proves_nothing(short.clone(), 10), "an earlier epoch's");
        assert!(!proves_nothing(new_view(&keys, 2, &[2, 3], 10), 10), "this epoch's");
        // The primary's own signature spoiled (by whoever relayed it): nothing is proven.
        let mut forged = short;
        forged.signature = forged.signature.corrupted();
        let forged = Evidence::NewViewWithoutQuorum { new_view: forged };
        assert_eq!(forged.verify(&membership, 0), Err(EvidenceError::BadSignature(2)));
        // A refused NEW-VIEW reaching past what this replica executed may be a later membership's: no proof made.
        let ahead = new_view(&keys, 2, &[2, 3], 20);
        assert!(Evidence::of_refused_new_view(&membership, 0, 19, ahead.clone()).is_none());
        assert!(Evidence::of_refused_new_view(&membership, 0, 20, ahead).is_some());
    }

    /// A prepared certificate for an empty batch at `seq` in `view`, proposed by `proposer` and prepared by `voters`.
    fn certificate(keys: &[KeyPair], proposer: ReplicaId, view: u64, seq: Seq, voters: &[ReplicaId]) -> PreparedCert {
        let body = PrePrepare {
            view,
            seq,
            digest: crate::messages::proposal_digest(&[], &[], 0),
            batch: Vec::new(),
            ops: Vec::new(),
            at_ms: 0,
        };
        let vote = Prepare {
            view,
            seq,
            digest: body.digest,
        };
        PreparedCert {
            pre_prepare: Signed::new(proposer, body, &keys[proposer as usize - 1]),
            prepares: voters
                .iter()
                .map(|id| Signed::new(*id, vote, &keys[*id as usize - 1]))
                .collect(),
        }
    }

    /// Member `from`'s VIEW-CHANGE for view 1 from a checkpoint at `checkpoint_seq`, carrying `prepared`.
    fn view_change_carrying(
        keys: &[KeyPair],
        from: ReplicaId,
        checkpoint_seq: Seq,
        prepared: Vec<PreparedCert>,
    ) -> Signed<ViewChange> {
        let mut body = view_change(keys, from, checkpoint_seq).body;
        body.prepared = prepared;
        Signed::new(from, body, &keys[from as usize - 1])
    }

    /// The NEW-VIEW for view 1 `from` signs on `view_changes`, with the PRE-PREPAREs they determine.
    fn derived_new_view(keys: &[KeyPair], from: ReplicaId, view_changes: Vec<Signed<ViewChange>>) -> Signed<NewView> {
        let (_, derived) = derive_new_view(&view_changes);
        let pre_prepares = derived
            .into_iter()
            .map(|r| Signed::new(from, r.in_view(1), &keys[from as usize - 1]))
            .collect();
        let body = NewView {
            view: 1,
            view_changes,
            pre_prepares,
        };
        Signed::new(from, body, &keys[from as usize - 1])
    }

    #[test]
    fn a_new_view_re_proposing_what_its_view_changes_do_not_determine_proves_a_protocol_violation() {
        let (membership, keys) = cluster();
        let proves = |new_view: Signed<NewView>, epoch_started_at: Seq| {
            Evidence::NewViewNotDerived { new_view }.verify(&membership, epoch_started_at)
        };
        let proves_nothing = |new_view: Signed<NewView>, epoch_started_at: Seq| {
            matches!(proves(new_view, epoch_started_at), Err(EvidenceError::ProvesNothing(_)))
        };
        // Member 1 (primary of view 0) proposed at 1, members 2 and 3 prepared it: a VIEW-CHANGE carries it.
        let prepared = certificate(&keys, 1, 0, 1, &[2, 3]);
        let view_changes = vec![
            view_change_carrying(&keys, 1, 0, Vec::new()),
            view_change_carrying(&keys, 2, 0, Vec::new()),
            view_change_carrying(&keys, 3, 0, vec![prepared.clone()]),
        ];
        // What member 2, primary of view 1, signs honestly: nothing proven, here or with no certificate at all.
        let honest = derived_new_view(&keys, 2, view_changes.clone());
        assert_eq!(honest.body.pre_prepares.len(), 1);
        assert!(proves_nothing(honest.clone(), 0), "the honest NEW-VIEW");
        assert!(
            proves_nothing(new_view(&keys, 2, &[1, 2, 3], 0), 0),
            "nothing to re-propose"
        );

        // Another batch at 1, or nothing at all, where a VIEW-CHANGE carries a prepared one: proof.
        let mut other_batch = honest.body.clone();
        let payer = KeyPair::from_secret([9; 32]);
        let transfer = crate::ledger::Transfer {
            from: payer.public(),
            to: keys[0].public(),
            amount: 1,
            nonce: 1,
        }
        .sign(&payer);
        let mut swapped = other_batch.pre_prepares[0].body.clone();
        swapped.batch = vec![transfer];
        swapped.digest = crate::messages::proposal_digest(&swapped.batch, &[], 0);
        other_batch.pre_prepares[0] = Signed::new(2, swapped, &keys[1]);
        let other_batch = Signed::new(2, other_batch, &keys[1]);
        assert_eq!(proves(other_batch.clone(), 0), Ok((2, FaultType::ProtocolViolation)));
        let mut dropped = honest.body.clone();
        dropped.pre_prepares.clear();
        assert_eq!(
            proves(Signed::new(2, dropped, &keys[1]), 0),
            Ok((2, FaultType::ProtocolViolation)),
            "the prepared batch left out"
        );
        // The derived proposal in another member's name is not what the primary re-proposes either.
        let mut by_another = honest.body.clone();
        by_another.pre_prepares[0] = Signed::new(3, by_another.pre_prepares[0].body.clone(), &keys[2]);
        assert_eq!(
            proves(Signed::new(2, by_another, &keys[1]), 0),
            Ok((2, FaultType::ProtocolViolation))
        );

        // Whatever the VIEW-CHANGEs hold, an honest primary's derivation from them proves nothing: not even over one
        // carrying a certificate with a spoiled vote (the primary is not judged here for taking it in).
        let mut spoiled = prepared.clone();
        spoiled.prepares[0].signature = spoiled.prepares[0].signature.corrupted();
        let mut over_spoiled = view_changes.clone();
        over_spoiled[2] = view_change_carrying(&keys, 3, 0, vec![spoiled]);
        assert!(proves_nothing(derived_new_view(&keys, 2, over_spoiled), 0));

        assert!(
            proves_nothing(derived_new_view(&keys, 3, view_changes.clone()), 0) && {
                let mut by_backup = other_batch.body.clone();
                by_backup.pre_prepares.clear();
                proves_nothing(Signed::new(3, by_backup, &keys[2]), 0)
            },
            "not the view's primary"
        );
        assert!(proves_nothing(other_batch.clone(), 10), "an earlier epoch's");
        let mut forged = other_batch.clone();
        forged.signature = forged.signature.corrupted();
        assert_eq!(
            proves(forged, 0),
            Err(EvidenceError::BadSignature(2)),
            "relayed, spoiled"
        );

        // A certificate at a sequence number far past any window is answered without deriving every number up to it.
        let far = certificate(&keys, 1, 0, 1 << 40, &[2, 3]);
        let mut far_view_changes = view_changes.clone();
        far_view_changes[2] = view_change_carrying(&keys, 3, 0, vec![far]);
        let body = NewView {
            view: 1,
            view_changes: far_view_changes,
            pre_prepares: Vec::new(),
        };
        assert_eq!(
            proves(Signed::new(2, body, &keys[1]), 0),
            Ok((2, FaultType::ProtocolViolation))
        );

        // A refused NEW-VIEW: on fewer than a quorum, that is its proof; on a quorum, the re-proposals are.
        let short = new_view(&keys, 2, &[2, 3], 0);
        assert!(matches!(
            Evidence::of_refused_new_view(&membership, 0, 0, short),
            Some(Evidence::NewViewWithoutQuorum { .. })
        ));
        assert!(matches!(
            Evidence::of_refused_new_view(&membership, 0, 0, other_batch),
            Some(Evidence::NewViewNotDerived { .. })
        ));
        assert_eq!(Evidence::of_refused_new_view(&membership, 0, 0, honest), None);
    }

    #[test]
    fn a_view_change_carrying_a_certificate_that_cannot_hold_proves_its_signer_and_nothing_else_does() {
        let (membership, keys) = cluster();
        let proves = |view_change: Signed<ViewChange>, epoch_started_at: Seq| {
            Evidence::InvalidViewChange { view_change }.verify(&membership, epoch_started_at)
        };
        let proves_nothing = |view_change: Signed<ViewChange>, epoch_started_at: Seq| {
            matches!(
                proves(view_change, epoch_started_at),
                Err(EvidenceError::ProvesNothing(_))
            )
        };
        // Member 1 is the primary of views 0 and 4, member 2 of view 1.
        let valid = certificate(&keys, 1, 0, 1, &[2, 3]);
        assert!(
            proves_nothing(view_change_carrying(&keys, 3, 0, vec![valid.clone()]), 0),
            "a valid one"
        );
        assert!(proves_nothing(view_change_carrying(&keys, 3, 0, Vec::new()), 0), "none");

        // A vote whose signature does not verify, under member 3's signature: member 3's doing, never the voter's.
        let mut spoiled = valid.clone();
        spoiled.prepares[0].signature = spoiled.prepares[0].signature.corrupted();
        let carrying_spoiled = view_change_carrying(&keys, 3, 0, vec![valid.clone(), spoiled.clone()]);
        let evidence = Evidence::InvalidViewChange {
            view_change: carrying_spoiled.clone(),
        };
        assert_eq!(evidence.named(), 3);
        assert_eq!(
            proves(carrying_spoiled.clone(), 0),
            Ok((3, FaultType::ProtocolViolation))
        );
        // The same VIEW-CHANGE with its own signature spoiled (by whoever relayed it): nothing is proven.
        let mut relayed = carrying_spoiled.clone();
        relayed.signature = relayed.signature.corrupted();
        assert_eq!(proves(relayed, 0), Err(EvidenceError::BadSignature(3)));
        let mut bad_proposal = valid.clone();
        bad_proposal.pre_prepare.signature = bad_proposal.pre_prepare.signature.corrupted();
        assert_eq!(
            proves(view_change_carrying(&keys, 3, 0, vec![bad_proposal]), 0),
            Ok((3, FaultType::ProtocolViolation)),
            "a proposal whose signature does not verify"
        );

        // Votes that no honest member counts: for another proposal, by the proposer, the same voter twice.
        let mut other_digest = valid.clone();
        let mut vote = other_digest.prepares[0].body;
        vote.digest = Digest([5; 32]);
        other_digest.prepares[0] = Signed::new(2, vote, &keys[1]);
        let by_proposer = certificate(&keys, 1, 0, 1, &[2, 1]);
        let twice = certificate(&keys, 1, 0, 1, &[2, 2]);
        for broken in [other_digest, by_proposer, twice] {
            assert_eq!(
                proves(view_change_carrying(&keys, 3, 0, vec![broken.clone()]), 0),
                Ok((3, FaultType::ProtocolViolation)),
                "{broken:?}"
            );
        }

        // Not the view's primary, or too few votes: proof in the genesis epoch, which no membership preceded. In a
        // later one an honest member may carry such a certificate, formed under the membership before.
        let by_backup = certificate(&keys, 2, 0, 5, &[3, 4]);
        let one_vote = certificate(&keys, 1, 4, 5, &[2]);
        for broken in [by_backup, one_vote] {
            assert_eq!(
                proves(view_change_carrying(&keys, 3, 4, vec![broken.clone()]), 0),
                Ok((3, FaultType::ProtocolViolation))
            );
            assert!(
                proves_nothing(view_change_carrying(&keys, 3, 4, vec![broken]), 4),
                "a later epoch"
            );
        }
        // A removed member's vote cannot be checked: it counts for nothing, and blames nobody.
        let mut with_outsider = valid.clone();
        let outsider = KeyPair::from_secret([77; 32]);
        with_outsider
            .prepares
            .push(Signed::new(9, with_outsider.prepares[0].body, &outsider));
        assert!(proves_nothing(
            view_change_carrying(&keys, 3, 0, vec![with_outsider]),
            0
        ));

        // A certificate at or below the epoch's start, made under the membership before (another primary, another
        // quorum) proves nothing; a signature in it that does not verify proves the signer wrong in any epoch, as a
        // member keeps its key for good (so a proof made before an epoch began still holds where it executes after).
        let stale = certificate(&keys, 2, 0, 10, &[3]);
        assert!(
            proves_nothing(view_change_carrying(&keys, 3, 8, vec![stale.clone()]), 10),
            "a stale one"
        );
        let mut spoiled_stale = stale;
        spoiled_stale.prepares[0].signature = spoiled_stale.prepares[0].signature.corrupted();
        assert_eq!(
            proves(view_change_carrying(&keys, 3, 8, vec![spoiled_stale]), 10),
            Ok((3, FaultType::ProtocolViolation)),
            "a spoiled vote in a stale one"
        );
        assert_eq!(
            proves(carrying_spoiled, 16),
            Ok((3, FaultType::ProtocolViolation)),
            "after an epoch began"
        );

        // A refused VIEW-CHANGE from past what this replica executed may be a later membership's: no proof made.
        let ahead = view_change_carrying(&keys, 3, 20, vec![certificate(&keys, 2, 0, 21, &[3, 4])]);
        assert!(Evidence::of_refused_view_change(&membership, 0, 19, ahead.clone()).is_none());
        assert!(Evidence::of_refused_view_change(&membership, 0, 20, ahead).is_some());
    }

    fn found_or(membership: &Membership, replies: &[Signed<Reply>]) -> Evidence {
        Evidence::of_replies(membership, replies).unwrap().remove(0)
    }

    #[test]
    fn a_checkpoint_against_a_quorum_certificate_proves_divergence_and_a_thin_certificate_does_not() {
        let (membership, keys) = cluster();
        let vote = |id: ReplicaId, state: u8| {
            let body = Checkpoint {
                seq: 100,
                state_digest: Digest([state; 32]),
            };
            Signed::new(id, body, &keys[id as usize - 1])
        };
        let certificate = CheckpointCert {
            seq: 100,
            state_digest: Digest([1; 32]),
            proof: vec![vote(1, 1), vote(2, 1), vote(3, 1)],
        };
        let evidence = Evidence::DivergentCheckpoint {
            checkpoint: vote(4, 2),
            certificate: certificate.clone(),
        };
        assert_eq!(evidence.verify(&membership, 0), Ok((4, FaultType::DivergentExecution)));

        let thin = CheckpointCert {
            proof: certificate.proof[..2].to_vec(),
            ..certificate.clone()
        };
        let evidence = Evidence::DivergentCheckpoint {
            checkpoint: vote(4, 2),
            certificate: thin,
        };
        assert!(matches!(
            evidence.verify(&membership, 0),
            Err(EvidenceError::ProvesNothing(_))
        ));

        let agreeing = Evidence::DivergentCheckpoint {
            checkpoint: vote(4, 1),
            certificate: certificate.clone(),
        };
        assert!(matches!(
            agreeing.verify(&membership, 0),
            Err(EvidenceError::ProvesNothing(_))
        ));

        let mut forged = vote(3, 2);
        forged.from = 4;
        let forged = Evidence::DivergentCheckpoint {
            checkpoint: forged,
            certificate,
        };
        assert_eq!(forged.verify(&membership, 0), Err(EvidenceError::BadSignature(4)));
    }
}
