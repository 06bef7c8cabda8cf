//! Evidence any replica can check for itself: signed messages that prove a member misbehaved, whoever relays them.
//!
//! An observation says what one replica saw; evidence is what it can show others. Only evidence made of the
//! accused member's own signatures (and, where needed, a quorum's) counts as proof: it can be handed on, stored,
//! and checked again later against nothing but the membership's public keys.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{Membership, max_failures};
use crate::crypto::Digest;
use crate::history::FaultType;
use crate::ledger::TxOutcome;
use crate::messages::{
    Checkpoint, CheckpointCert, MAX_MESSAGE_BYTES, Message, NewView, PrePrepare, ReplicaId, Reply, Seq, Signable,
    Signed, StateTransfer,
};
use crate::replica::Replica;

/// The most replies one piece of evidence may hold: two per member is already more than a proof needs.
pub const MAX_EVIDENCE_REPLIES: usize = 64;

/// The largest evidence made of NEW-VIEWs a replica puts to consensus (encoded): it travels inside a proposal, which
/// must stay below `MAX_MESSAGE_BYTES` with the rest of its batch. NEW-VIEWs are small unless they re-propose many
/// full batches; larger ones are refused all the same, only not proven.
pub const MAX_NEW_VIEW_EVIDENCE_BYTES: usize = MAX_MESSAGE_BYTES / 4;

// Evidence is rare and short-lived: its variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// Two messages of one kind the member signed for one slot (view and sequence; for checkpoints, sequence),
    /// that differ. PRE-PREPAREs travel without their batch: the signature covers the header.
    Equivocation { first: Message, second: Message },
    /// A proposal the member signed whose batch (matching the signed digest) spends the same funds twice.
    DoubleSpend { proposal: Signed<PrePrepare> },
    /// A checkpoint the member signed, and the quorum certificate for the same sequence with another state.
    DivergentCheckpoint {
        checkpoint: Signed<Checkpoint>,
        certificate: CheckpointCert,
    },
    /// Replies for one transfer at one sequence: F+1 members signed one outcome, the member another.
    DivergentReply {
        member: ReplicaId,
        seq: Seq,
        transaction: Digest,
        replies: Vec<Signed<Reply>>,
    },
    /// A PRE-PREPARE the member signed for a view whose primary it is not (its signed header: the batch does not
    /// matter). Only the view's primary proposes, so no honest member signs one: it is what let one backup's
    /// proposal halt a cluster whose view change then refused it.
    ProposalByBackup { proposal: Signed<PrePrepare> },
    /// A state-transfer chunk the member signed that the manifest it signed with it contradicts: no honest member
    /// sends one, since it cuts both from one snapshot (`ledger::Manifest::check_chunk`). Whole, as signed: the
    /// signature covers the chunk (at most `STATE_CHUNK_BYTES`).
    BadStateChunk { transfer: Signed<StateTransfer> },
    /// Two different NEW-VIEWs the primary of their view signed for it. An honest primary makes one NEW-VIEW per
    /// view and installs it at once; two let it lead different replicas into one view on different terms.
    ConflictingNewViews {
        first: Signed<NewView>,
        second: Signed<NewView>,
    },
    /// A NEW-VIEW the primary of its view signed on fewer than a quorum of distinct valid VIEW-CHANGEs for that
    /// view: an honest primary waits for a quorum, since only a quorum is sure to carry every batch that may have
    /// committed. Anyone holding the membership can count them.
    NewViewWithoutQuorum { new_view: Signed<NewView> },
}

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
            Message::PrePrepare(pp) => Some(Message::PrePrepare(crate::replica::without_batch(pp))),
            Message::Prepare(_) | Message::Commit(_) | Message::Checkpoint(_) => Some(message.clone()),
            // A PRE-PREPARE header a peer holds: its signer's, whoever passed it on.
            Message::Proposal { proposal, .. } => Some(Message::PrePrepare(crate::replica::without_batch(proposal))),
            _ => None,
        }
    }

    /// The equivocation `refused` completes, if the replica logged what its sender signed before for the slot.
    pub fn of_equivocation(replica: &Replica, refused: Message) -> Option<Evidence> {
        let first = replica.signed_before(&refused)?;
        let evidence = Evidence::Equivocation { first, second: refused };
        // Only what is proof leaves here (e.g. not a conflict with this replica's own vote).
        evidence
            .verify(replica.membership(), replica.governance().epoch_started_at.unwrap_or(0))
            .ok()
            .map(|_| evidence)
    }

    /// The proof a PRE-PREPARE the core refused as not its view primary's makes, if it does (its signature was
    /// verified before the core saw it; checked again here, with the epoch, like every proof that leaves).
    pub fn of_backup_proposal(replica: &Replica, proposal: Signed<PrePrepare>) -> Option<Evidence> {
        let evidence = Evidence::ProposalByBackup { proposal };
        let epoch_started_at = replica.governance().epoch_started_at.unwrap_or(0);
        evidence
            .verify(replica.membership(), epoch_started_at)
            .ok()
            .map(|_| evidence)
    }

    /// The proof two NEW-VIEWs for one view make, the one the replica installed first and one it refused as
    /// conflicting with it, if they do (checked here with the epoch, like every proof that leaves).
    pub fn of_conflicting_new_views(
        replica: &Replica,
        first: Signed<NewView>,
        second: Signed<NewView>,
    ) -> Option<Evidence> {
        let epoch_started_at = replica.governance().epoch_started_at.unwrap_or(0);
        Evidence::ConflictingNewViews { first, second }.proving(replica.membership(), epoch_started_at)
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
        Evidence::NewViewWithoutQuorum { new_view }.proving(membership, epoch_started_at)
    }

    /// This evidence, if it proves something and is small enough to put to consensus.
    fn proving(self, membership: &Membership, epoch_started_at: Seq) -> Option<Evidence> {
        self.verify(membership, epoch_started_at).ok()?;
        let size = postcard::to_allocvec(&self).map_or(usize::MAX, |bytes| bytes.len());
        (size <= MAX_NEW_VIEW_EVIDENCE_BYTES).then_some(self)
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
            Evidence::NewViewWithoutQuorum { new_view } => new_view.from,
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
    use crate::messages::Member;

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
