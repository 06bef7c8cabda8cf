//! The protocol's messages, named as in the PBFT paper, and how they are signed.
//!
//! Every protocol message is a `Signed<T>`: the body, the sender's member id and the sender's Ed25519
//! signature over a domain tag, the sender id and a digest of the body. A PRE-PREPARE signs only its header
//! (view, sequence, batch digest): the batch travels beside it and is bound to it by the digest.

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, KeyPair, PublicKey, Signature};
use crate::ledger::{Manifest, SignedTransfer, TxOutcome};

/// The largest message a member sends, and the least every member accepts (a node may be configured to accept
/// more, never less). The largest a protocol answer builds is a state-transfer chunk: `ledger::STATE_CHUNK_BYTES`
/// plus its manifest and certificate, a small fraction of this.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A member's id: `bft-agent-<id>`.
pub type ReplicaId = u32;
pub type View = u64;
pub type Seq = u64;

/// Something a member signs. `DOMAIN` keeps a signature on one kind from being valid as another.
pub trait Signable: Serialize {
    const DOMAIN: &'static str;

    /// The bytes whose digest is signed.
    fn signed_content(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding to memory cannot fail")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub from: ReplicaId,
    pub body: T,
    pub signature: Signature,
}

impl<T: Signable> Signed<T> {
    pub fn new(from: ReplicaId, body: T, key: &KeyPair) -> Signed<T> {
        let signature = key.sign(&signing_bytes(from, &body));
        Signed { from, body, signature }
    }

    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(self.from, &self.body)
    }
}

fn signing_bytes<T: Signable>(from: ReplicaId, body: &T) -> Vec<u8> {
    let content = Digest::of(T::DOMAIN, &[&body.signed_content()]);
    let mut bytes = Vec::with_capacity(T::DOMAIN.len() + 4 + 32);
    bytes.extend_from_slice(T::DOMAIN.as_bytes());
    bytes.extend_from_slice(&from.to_le_bytes());
    bytes.extend_from_slice(&content.0);
    bytes
}

/// The digest of a batch: it names the batch in PREPARE, COMMIT and certificates.
pub fn batch_digest(batch: &[SignedTransfer]) -> Digest {
    let digests: Vec<[u8; 32]> = batch.iter().map(|tx| tx.digest().0).collect();
    Digest::of("batch", &[digests.as_flattened()])
}

/// The digest of a proposal: its transfers, its governance operations and its time stamp. Votes name a proposal by
/// this digest alone, so everything execution depends on is in it. (The empty proposal a new view fills a gap with,
/// with no operations and no time, has the empty batch's digest.)
pub fn proposal_digest(batch: &[SignedTransfer], ops: &[Operation], at_ms: u64) -> Digest {
    let transfers = batch_digest(batch);
    if ops.is_empty() && at_ms == 0 {
        return transfers;
    }
    let ops: Vec<[u8; 32]> = ops.iter().map(|op| op.digest().0).collect();
    Digest::of("proposal", &[&transfers.0, ops.as_flattened(), &at_ms.to_le_bytes()])
}

/// PRE-PREPARE: the primary of `view` assigns `seq` to the batch with `digest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
    pub batch: Vec<SignedTransfer>,
    /// Governance operations ordered with the batch (quarantines, accusations, reconfigurations).
    pub ops: Vec<Operation>,
    /// The primary's clock when it proposed (unix ms): executing the batch moves the replicated clock, by which
    /// quarantines expire, to this time. Backups refuse a time too far ahead of their own clock.
    pub at_ms: u64,
}

impl PrePrepare {
    /// Whether the batch, operations and time it carries are the ones its signed digest names.
    pub fn matches_digest(&self) -> bool {
        proposal_digest(&self.batch, &self.ops, self.at_ms) == self.digest
    }
}

impl Signable for PrePrepare {
    const DOMAIN: &'static str = "pbft/pre-prepare";
    fn signed_content(&self) -> Vec<u8> {
        postcard::to_allocvec(&(self.view, self.seq, self.digest)).expect("encoding to memory cannot fail")
    }
}

/// PREPARE: a backup accepted the PRE-PREPARE for (view, seq, digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

impl Signable for Prepare {
    const DOMAIN: &'static str = "pbft/prepare";
}

/// COMMIT: the sender holds a prepared certificate for (view, seq, digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

impl Signable for Commit {
    const DOMAIN: &'static str = "pbft/commit";
}

/// CHECKPOINT: the ledger's digest after executing `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: Seq,
    pub state_digest: Digest,
}

impl Signable for Checkpoint {
    const DOMAIN: &'static str = "pbft/checkpoint";
}

/// A quorum of matching CHECKPOINT messages (empty for the genesis checkpoint at sequence 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCert {
    pub seq: Seq,
    pub state_digest: Digest,
    pub proof: Vec<Signed<Checkpoint>>,
}

/// A PRE-PREPARE and a quorum minus one of matching PREPAREs from other members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCert {
    pub pre_prepare: Signed<PrePrepare>,
    pub prepares: Vec<Signed<Prepare>>,
}

impl PreparedCert {
    pub fn view(&self) -> View {
        self.pre_prepare.body.view
    }
    pub fn seq(&self) -> Seq {
        self.pre_prepare.body.seq
    }
}

/// A PRE-PREPARE and a quorum of matching COMMITs: proof that the batch committed at its sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedCert {
    pub pre_prepare: Signed<PrePrepare>,
    pub commits: Vec<Signed<Commit>>,
}

/// VIEW-CHANGE: the sender moves to `new_view`, with its stable checkpoint and every batch it prepared above it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub new_view: View,
    pub checkpoint: CheckpointCert,
    pub prepared: Vec<PreparedCert>,
    /// How many of its VIEW-CHANGEs for `new_view` the sender withdrew before this one (`Rejoin`): one signed after
    /// a withdrawal is never the one withdrawn, even when it carries the same certificates.
    pub revision: u32,
}

impl Signable for ViewChange {
    const DOMAIN: &'static str = "pbft/view-change";
}

/// Which VIEW-CHANGE a member signed: withdrawals name it by this (a member may sign another for the same view
/// after it withdrew one).
pub fn view_change_id(vc: &Signed<ViewChange>) -> Digest {
    Digest::of("pbft/view-change-id", &[&vc.signing_bytes()])
}

/// Which NEW-VIEW a member installed: a STATUS names it by this.
pub fn new_view_id(nv: &Signed<NewView>) -> Digest {
    Digest::of("pbft/new-view-id", &[&nv.signing_bytes()])
}

/// REJOIN: a member that left `view` with too little company (its own suspicion and F others' that the rest did
/// not share) takes back the VIEW-CHANGEs it signed since, each named by its view and `view_change_id`, so that it
/// can vote in `view` again. A withdrawn VIEW-CHANGE counts for nothing with a member that holds the withdrawal,
/// and a NEW-VIEW built on it is refused there unless the member says it installed that NEW-VIEW itself (see
/// `view_change.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejoin {
    pub view: View,
    pub withdrawn: Vec<(View, Digest)>,
}

impl Signable for Rejoin {
    const DOMAIN: &'static str = "pbft/rejoin";
}

impl Rejoin {
    pub fn digest(&self) -> Digest {
        Digest::of(Self::DOMAIN, &[&self.signed_content()])
    }
}

/// The answer to a REJOIN from a member active in its view: it holds `member`'s withdrawal (durably) and refuses
/// every NEW-VIEW built on what was withdrawn. A quorum of these is what lets the member vote again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinAck {
    pub member: ReplicaId,
    pub view: View,
    pub rejoin: Digest,
}

impl Signable for RejoinAck {
    const DOMAIN: &'static str = "pbft/rejoin-ack";
}

/// NEW-VIEW: the new primary's quorum of VIEW-CHANGEs and the PRE-PREPAREs it derives from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

impl Signable for NewView {
    const DOMAIN: &'static str = "pbft/new-view";
}

/// What a member has done so far; peers answer with what it is missing (lost messages, state transfer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub view: View,
    pub view_active: bool,
    pub last_executed: Seq,
    pub stable_seq: Seq,
    /// The sender suspects the primary of `view`: a request it holds waited longer than the view-change timeout.
    /// A suspicion alone changes nothing; F+1 members suspecting one view (so at least one honest member) move
    /// every member that hears them to the next view.
    pub suspects: bool,
    /// The state transfer under way, if any: what the member still lacks of it.
    pub fetching: Option<ChunksWanted>,
    /// The NEW-VIEW the member installed for `view` (`new_view_id`), while it is active there. A member that holds
    /// the sender's withdrawal of a VIEW-CHANGE accepts a NEW-VIEW built on it once the sender says it installed
    /// that NEW-VIEW: the sender gave up its withdrawal before it took effect (`view_change.rs`).
    pub new_view: Option<Digest>,
}

/// The chunks a member lacks of the state at the stable checkpoint `seq` (0 while no chunk has arrived yet): `first`,
/// and of the `state_transfer::STATE_CHUNK_WINDOW` chunks from there those whose bit in `held` is clear (bit i stands
/// for chunk `first + i`). Peers split what it lacks among them by rank, shifted by `round`, which the member moves
/// on when its first missing chunk did not come, so that a silent or lying peer's share goes to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunksWanted {
    pub seq: Seq,
    pub first: u32,
    pub held: u64,
    pub round: u32,
}

impl Signable for Status {
    const DOMAIN: &'static str = "pbft/status";
}

/// One chunk of the state at a stable checkpoint, for a member that is behind. The manifest is checked against the
/// certificate's state digest, the chunk against the manifest's digest for `index` (see `ledger::Manifest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTransfer {
    pub checkpoint: CheckpointCert,
    pub manifest: Manifest,
    pub index: u32,
    pub chunk: Vec<u8>,
}

impl Signable for StateTransfer {
    const DOMAIN: &'static str = "pbft/state-transfer";
}

/// REPLY: the outcome of every transfer in the batch executed at `seq`. One signature covers the batch; a
/// client accepts an outcome once F+1 members sent matching ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub view: View,
    pub seq: Seq,
    pub outcomes: Vec<(Digest, TxOutcome)>,
}

impl Signable for Reply {
    const DOMAIN: &'static str = "pbft/reply";
}

/// Everything one member sends another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    PrePrepare(Signed<PrePrepare>),
    Prepare(Signed<Prepare>),
    Commit(Signed<Commit>),
    Checkpoint(Signed<Checkpoint>),
    ViewChange(Signed<ViewChange>),
    NewView(Signed<NewView>),
    Status(Signed<Status>),
    StateTransfer(Signed<StateTransfer>),
    /// Unsigned: it carries its own proof.
    Committed(CommittedCert),
    /// A governance operation relayed by member `from`, to be ordered; it carries its own authority.
    Operation {
        from: ReplicaId,
        op: Box<Operation>,
    },
    /// A client's transfer that member `from` (a backup) holds and passes on to the primary, which may not have
    /// it: a backup suspects the primary only of not ordering what the primary was given. The payer's signature
    /// is its authority.
    Request {
        from: ReplicaId,
        tx: SignedTransfer,
    },
    /// The signed header of a PRE-PREPARE that member `from` logged for a slot, sent to a peer whose vote for the
    /// slot named another digest: if the primary signed both, the peer now holds the proof. It proves itself, so
    /// any member may pass one on.
    Proposal {
        from: ReplicaId,
        proposal: Signed<PrePrepare>,
    },
    Rejoin(Signed<Rejoin>),
    RejoinAck(Signed<RejoinAck>),
}

impl Message {
    /// The member that signed the message (for `Committed`, the primary that proposed the batch).
    pub fn sender(&self) -> ReplicaId {
        match self {
            Message::PrePrepare(m) => m.from,
            Message::Prepare(m) => m.from,
            Message::Commit(m) => m.from,
            Message::Checkpoint(m) => m.from,
            Message::ViewChange(m) => m.from,
            Message::NewView(m) => m.from,
            Message::Status(m) => m.from,
            Message::StateTransfer(m) => m.from,
            Message::Committed(c) => c.pre_prepare.from,
            Message::Operation { from, .. } => *from,
            Message::Request { from, .. } => *from,
            Message::Proposal { from, .. } => *from,
            Message::Rejoin(m) => m.from,
            Message::RejoinAck(m) => m.from,
        }
    }

    /// The sequence number the message is about, for those about one.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            Message::PrePrepare(m) => Some(m.body.seq),
            Message::Prepare(m) => Some(m.body.seq),
            Message::Commit(m) => Some(m.body.seq),
            Message::Checkpoint(m) => Some(m.body.seq),
            Message::Committed(c) => Some(c.pre_prepare.body.seq),
            Message::Proposal { proposal, .. } => Some(proposal.body.seq),
            Message::ViewChange(_)
            | Message::NewView(_)
            | Message::Status(_)
            | Message::StateTransfer(_)
            | Message::Operation { .. }
            | Message::Request { .. }
            | Message::Rejoin(_)
            | Message::RejoinAck(_) => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Message::PrePrepare(_) => "pre_prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view_change",
            Message::NewView(_) => "new_view",
            Message::Status(_) => "status",
            Message::StateTransfer(_) => "state_transfer",
            Message::Committed(_) => "committed",
            Message::Operation { .. } => "operation",
            Message::Request { .. } => "request",
            Message::Proposal { .. } => "proposal",
            Message::Rejoin(_) => "rejoin",
            Message::RejoinAck(_) => "rejoin_ack",
        }
    }

    /// Flips a bit in the outermost signature (in a certificate, the first one): what a corrupting member sends.
    pub fn corrupt_signature(&mut self) {
        match self {
            Message::PrePrepare(m) => m.signature = m.signature.corrupted(),
            Message::Prepare(m) => m.signature = m.signature.corrupted(),
            Message::Commit(m) => m.signature = m.signature.corrupted(),
            Message::Checkpoint(m) => m.signature = m.signature.corrupted(),
            Message::ViewChange(m) => m.signature = m.signature.corrupted(),
            Message::NewView(m) => m.signature = m.signature.corrupted(),
            Message::Status(m) => m.signature = m.signature.corrupted(),
            Message::StateTransfer(m) => m.signature = m.signature.corrupted(),
            Message::Committed(c) => c.pre_prepare.signature = c.pre_prepare.signature.corrupted(),
            Message::Proposal { proposal, .. } => proposal.signature = proposal.signature.corrupted(),
            Message::Rejoin(m) => m.signature = m.signature.corrupted(),
            Message::RejoinAck(m) => m.signature = m.signature.corrupted(),
            Message::Operation { .. } | Message::Request { .. } => {}
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding to memory cannot fail")
    }

    /// Decodes bytes from the network; anything malformed or larger than `max_bytes` is an error.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Message, DecodeError> {
        if bytes.len() > max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                max: max_bytes,
            });
        }
        let (message, rest) = postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// A member of the cluster as the protocol sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: ReplicaId,
    pub public_key: PublicKey,
}

// ----- What proposals carry besides transfers: operations on the replicated membership, and the evidence they
// rest on. A proposal carries operations, an operation may carry evidence, and evidence carries the proposals and
// votes a member signed: one recursive type, so its parts are defined here together; what they mean and how they
// are checked is in `governance.rs` and `evidence.rs`. -----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Provable misbehaviour, reported by `reporter` at `at_ms` (its clock).
    Quarantine {
        reporter: ReplicaId,
        at_ms: u64,
        evidence: Box<Evidence>,
    },
    Accuse(Signed<Accusation>),
    Reconfigure(SignedReconfiguration),
}

/// "Member `accused` sent me messages in its own name whose signatures do not verify."
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accusation {
    pub accused: ReplicaId,
    pub fault: FaultType,
    /// How many such messages the accuser received before accusing.
    pub observed: u64,
    pub at_ms: u64,
}

impl Signable for Accusation {
    const DOMAIN: &'static str = "pbft/accusation";
}

/// A change of membership: applies to `epoch` only, so it cannot be replayed in a later one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconfiguration {
    pub epoch: u64,
    pub remove: Vec<ReplicaId>,
    pub add: Vec<NewMember>,
    pub at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    pub id: ReplicaId,
    pub public_key: PublicKey,
    /// Where peers reach it (host:port).
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReconfiguration {
    pub body: Reconfiguration,
    pub signature: Signature,
}

/// The kinds of misbehaviour a replica can see in what a member sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultType {
    /// A message in the member's name whose signature does not verify.
    SignatureMismatch,
    /// Two conflicting messages signed by the member for one slot.
    Equivocation,
    /// A proposal signed by the member that spends the same funds twice.
    DoubleSpend,
    /// A checkpoint signed by the member for a state the quorum did not reach.
    DivergentExecution,
    /// A signed message no honest member sends (a backup's proposal).
    ProtocolViolation,
}

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
    /// A NEW-VIEW the primary of its view signed whose PRE-PREPAREs are not exactly those its own VIEW-CHANGEs
    /// determine (`new_view::derive_new_view`). An honest primary derives them from the very VIEW-CHANGEs it puts
    /// in and signs both at once, so anyone derives them again from the NEW-VIEW alone: neither the membership nor
    /// whether the VIEW-CHANGEs are valid (or withdrawn since) enters the derivation, only the primary's signature.
    NewViewNotDerived { new_view: Signed<NewView> },
    /// A VIEW-CHANGE the member signed carrying a prepared certificate that cannot hold (`broken_certificate`). Its
    /// signature covers the certificates it carries, and an honest member carries only certificates it formed from
    /// votes it verified: the member vouched for one it never held, whoever relays the VIEW-CHANGE. Its checkpoint
    /// certificate proves nothing either way.
    InvalidViewChange { view_change: Signed<ViewChange> },
}

/// A PRE-PREPARE's signed header alone: enough to prove what its sender signed.
pub fn without_batch(pp: &Signed<PrePrepare>) -> Signed<PrePrepare> {
    Signed {
        from: pp.from,
        body: PrePrepare {
            batch: Vec::new(),
            ops: Vec::new(),
            at_ms: 0,
            ..pp.body.clone()
        },
        signature: pp.signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Transfer;

    #[test]
    fn signatures_bind_sender_kind_and_body() {
        let key = KeyPair::from_secret([1; 32]);
        let vote = Prepare {
            view: 1,
            seq: 2,
            digest: Digest([3; 32]),
        };
        let signed = Signed::new(7, vote, &key);
        assert!(key.public().verify(&signed.signing_bytes(), &signed.signature));
        let other_sender = Signed {
            from: 8,
            ..signed.clone()
        };
        assert!(!key.public().verify(&other_sender.signing_bytes(), &signed.signature));
        let as_commit = Signed {
            from: 7,
            body: Commit {
                view: 1,
                seq: 2,
                digest: Digest([3; 32]),
            },
            signature: signed.signature,
        };
        assert!(!key.public().verify(&as_commit.signing_bytes(), &as_commit.signature));
    }

    #[test]
    fn decode_refuses_oversized_truncated_and_trailing_bytes() {
        let key = KeyPair::from_secret([1; 32]);
        let payer = KeyPair::from_secret([2; 32]);
        let tx = Transfer {
            from: payer.public(),
            to: key.public(),
            amount: 5,
            nonce: 1,
        }
        .sign(&payer);
        let batch = vec![tx];
        let pp = PrePrepare {
            view: 0,
            seq: 1,
            digest: batch_digest(&batch),
            batch,
            ops: Vec::new(),
            at_ms: 0,
        };
        let message = Message::PrePrepare(Signed::new(1, pp, &key));
        let bytes = message.encode();
        assert_eq!(Message::decode(&bytes, 1 << 20), Ok(message));
        assert!(matches!(Message::decode(&bytes, 10), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(
            Message::decode(&bytes[..bytes.len() - 1], 1 << 20),
            Err(DecodeError::Malformed(_))
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Message::decode(&longer, 1 << 20),
            Err(DecodeError::Malformed(_))
        ));
    }
}
