//! Checking what arrives before the protocol sees it.
//!
//! Verification needs only the membership, so it is a separate, stateless step that a host can run on other
//! threads, in batches. The core accepts only `Verified` inputs, which only this module makes: every
//! signature in them (including those inside certificates) is valid, every sender is a member, every batch
//! matches its digest, and every certificate has a quorum of distinct signers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::config::Membership;
use crate::crypto::{Digest, PublicKey, Signature, SignedItem, VerifyingKey, verify_many};
use crate::ledger::SignedTransfer;
use crate::messages::*;
use crate::new_view::derive_new_view;

/// An input that passed verification. Only this module can make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Why an input was dropped. Every rejection is counted; none changes the replica's state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("sender {0} is not a member")]
    NotAMember(ReplicaId),
    /// The sender's own signature on the message does not verify: on its authenticated stream, only the sender
    /// can have sent that, so this alone may ground an accusation against `from`.
    #[error("signature of {kind} from {from} does not verify")]
    BadSignature { kind: &'static str, from: ReplicaId },
    /// A signature inside what the sender relayed (an embedded VIEW-CHANGE, a certificate's vote) does not
    /// verify. It names the member it claims to be by, but proves nothing against anyone: the relay may have
    /// spoiled it, or received it so. Never grounds an accusation, neither of the relay nor of `signer`.
    #[error("a {inner} signature in the name of {signer} inside a {kind} does not verify")]
    BadRelayedSignature {
        kind: &'static str,
        inner: &'static str,
        signer: ReplicaId,
    },
    #[error("a client transfer in the batch has a bad signature")]
    BadTransferSignature,
    #[error("the batch does not match its digest")]
    DigestMismatch,
    #[error("batch of {0} transfers exceeds the limit")]
    BatchTooLarge(usize),
    #[error("the batch spends the same funds twice")]
    ConflictingTransfers,
    #[error("invalid certificate: {0}")]
    BadCertificate(&'static str),
    #[error("{0} was not sent by the primary of its view")]
    NotFromPrimary(&'static str),
    #[error("the primary of the view does not send {0}")]
    FromPrimary(&'static str),
    #[error("message for view {got} while in view {current}")]
    WrongView { got: View, current: View },
    #[error("sequence {seq} outside the watermarks ({low}, {high}]")]
    OutsideWatermarks { seq: Seq, low: Seq, high: Seq },
    #[error("already have this message")]
    Duplicate,
    #[error("conflicts with a message the sender signed before")]
    Equivocation,
    #[error("the replica is changing views")]
    ViewChangeInProgress,
    #[error("too many pending requests")]
    Busy,
    #[error("proposal time {at_ms} ms is ahead of the latest this replica accepts ({latest_ms} ms)")]
    TimeAhead { at_ms: u64, latest_ms: u64 },
    #[error("a member does not send this to itself")]
    FromSelf,
    #[error("transfer refused: {0}")]
    Transfer(crate::ledger::RejectReason),
    #[error("member {0} is quarantined")]
    Quarantined(ReplicaId),
    #[error("{0} operation refused: {1}")]
    Operation(&'static str, String),
    #[error("state transfer chunk refused: {0}")]
    StateChunk(&'static str),
    #[error("a relayed request goes to the primary, and this replica is not the primary")]
    NotPrimary,
    /// A VIEW-CHANGE its sender withdrew (`Message::Rejoin`), or a NEW-VIEW built on one.
    #[error("built on a VIEW-CHANGE of member {0} that it withdrew")]
    Withdrawn(ReplicaId),
    #[error("withdrawal refused: {0}")]
    Rejoin(&'static str),
}

impl Rejection {
    /// A short stable label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::NotAMember(_) => "not_a_member",
            Rejection::BadSignature { .. } => "bad_signature",
            Rejection::BadRelayedSignature { .. } => "bad_relayed_signature",
            Rejection::BadTransferSignature => "bad_transfer_signature",
            Rejection::DigestMismatch => "digest_mismatch",
            Rejection::BatchTooLarge(_) => "batch_too_large",
            Rejection::ConflictingTransfers => "conflicting_transfers",
            Rejection::BadCertificate(_) => "bad_certificate",
            Rejection::NotFromPrimary(_) => "not_from_primary",
            Rejection::FromPrimary(_) => "from_primary",
            Rejection::WrongView { .. } => "wrong_view",
            Rejection::OutsideWatermarks { .. } => "outside_watermarks",
            Rejection::Duplicate => "duplicate",
            Rejection::Equivocation => "equivocation",
            Rejection::ViewChangeInProgress => "view_change_in_progress",
            Rejection::Busy => "busy",
            Rejection::TimeAhead { .. } => "time_ahead",
            Rejection::FromSelf => "from_self",
            Rejection::Transfer(_) => "transfer_refused",
            Rejection::Quarantined(_) => "quarantined",
            Rejection::Operation(..) => "operation_refused",
            Rejection::StateChunk(_) => "state_chunk_refused",
            Rejection::NotPrimary => "not_primary",
            Rejection::Withdrawn(_) => "withdrawn_view_change",
            Rejection::Rejoin(_) => "rejoin_refused",
        }
    }
}

/// Remembers signatures already found valid, so the same bytes are never verified twice (a transfer is seen
/// once from its client and again in a PRE-PREPARE; VIEW-CHANGEs again inside a NEW-VIEW). Two generations
/// bound its memory.
#[derive(Default)]
struct SignatureCache {
    current: HashSet<Digest>,
    previous: HashSet<Digest>,
}

impl SignatureCache {
    const GENERATION_SIZE: usize = 1 << 16;

    fn key(key: &PublicKey, item: &SignedItem<'_>) -> Digest {
        Digest::of("sig-cache", &[key.as_bytes(), item.message, &item.signature.to_bytes()])
    }

    fn contains(&self, key: &Digest) -> bool {
        self.current.contains(key) || self.previous.contains(key)
    }

    fn insert(&mut self, key: Digest) {
        if self.current.len() >= Self::GENERATION_SIZE {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key);
    }
}

/// Whose signature a check is: who is named when it fails.
#[derive(Clone, Copy)]
enum Signer {
    /// The sender's own signature on the message it sent.
    Sender(ReplicaId),
    /// A member's signature on a `what` (its signing domain) inside what the sender relayed.
    Relayed { member: ReplicaId, what: &'static str },
    /// A client's signature on a transfer.
    Client,
}

/// Signature checks gathered from one input, made together so they can be batched.
struct Checks {
    keys: Vec<PublicKey>,
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
    signers: Vec<Signer>,
}

impl Checks {
    fn new() -> Checks {
        Checks {
            keys: Vec::new(),
            messages: Vec::new(),
            signatures: Vec::new(),
            signers: Vec::new(),
        }
    }

    fn append(&mut self, other: Checks) {
        self.keys.extend(other.keys);
        self.messages.extend(other.messages);
        self.signatures.extend(other.signatures);
        self.signers.extend(other.signers);
    }

    fn push(&mut self, key: PublicKey, message: Vec<u8>, signature: Signature, signer: Signer) {
        self.keys.push(key);
        self.messages.push(message);
        self.signatures.push(signature);
        self.signers.push(signer);
    }
}

/// The membership in force, the one before it, and the sequence number after which the one in force took effect.
type CurrentAndPrevious = (Arc<Membership>, Option<Arc<Membership>>, Seq);

/// The membership in force and the one before it, shared by a process's verifiers: a new epoch changes them for
/// all of them at once.
#[derive(Clone)]
pub struct SharedMembership {
    current: Arc<std::sync::RwLock<CurrentAndPrevious>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The last sequence number the replica executed, as its host last said (`executed_up_to`).
    executed: Arc<std::sync::atomic::AtomicU64>,
}

impl SharedMembership {
    pub fn new(membership: Membership) -> SharedMembership {
        SharedMembership {
            current: Arc::new(std::sync::RwLock::new((Arc::new(membership), None, 0))),
            generation: Arc::default(),
            executed: Arc::default(),
        }
    }

    /// The membership in force from the sequence number after `epoch_started_at` (0 for the genesis's).
    pub fn set(&self, membership: Membership, epoch_started_at: Seq) {
        let mut both = self.current.write().expect("no panic while holding the lock");
        if *both.0 != membership {
            let before = std::mem::replace(&mut both.0, Arc::new(membership));
            both.1 = Some(before);
        }
        both.2 = epoch_started_at;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub fn get(&self) -> Arc<Membership> {
        self.current.read().expect("no panic while holding the lock").0.clone()
    }

    /// The host says how far its replica executed, after each step: proof from a refused message is drawn only
    /// from what lies in that span of the epoch (what lies above may be a later membership's, unknown here yet).
    pub fn executed_up_to(&self, seq: Seq) {
        self.executed.store(seq, std::sync::atomic::Ordering::Release);
    }

    /// The membership in force and the sequence number after which it took effect, read together.
    fn get_with_epoch(&self) -> (Arc<Membership>, Seq) {
        let both = self.current.read().expect("no panic while holding the lock");
        (both.0.clone(), both.2)
    }

    /// The membership of the epoch before the current one, if this process saw it.
    fn previous(&self) -> Option<Arc<Membership>> {
        self.current.read().expect("no panic while holding the lock").1.clone()
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Checks inputs against the membership in force.
pub struct Verifier {
    shared: SharedMembership,
    /// The shared membership as of `seen_generation`: re-read only when it changed.
    membership: Arc<Membership>,
    /// The sequence number after which `membership` took effect: what proof is checked against.
    epoch_started_at: Seq,
    seen_generation: u64,
    genesis_digest: Digest,
    log_window: u64,
    max_batch_size: usize,
    /// Shared by the verifiers of one process (`sharing_cache`), which verify on different tasks.
    cache: Arc<Mutex<SignatureCache>>,
    decoded_keys: HashMap<PublicKey, VerifyingKey>,
    signatures_verified: u64,
    rejected: BTreeMap<&'static str, u64>,
}

impl Verifier {
    pub fn new(membership: Membership, genesis_digest: Digest, log_window: u64, max_batch_size: usize) -> Verifier {
        let shared = SharedMembership::new(membership);
        Verifier {
            membership: shared.get(),
            epoch_started_at: 0,
            seen_generation: shared.generation(),
            shared,
            genesis_digest,
            log_window,
            max_batch_size,
            cache: Arc::default(),
            decoded_keys: HashMap::new(),
            signatures_verified: 0,
            rejected: BTreeMap::new(),
        }
    }

    /// A verifier for the same membership that shares this one's record of valid signatures. A process
    /// verifies its client submits and each peer's stream on separate tasks, in parallel; sharing the record
    /// means a backup verifies a transfer once, not again in the PRE-PREPARE that carries it.
    pub fn sharing_cache(&self) -> Verifier {
        let seen_generation = self.shared.generation();
        let (membership, epoch_started_at) = self.shared.get_with_epoch();
        Verifier {
            shared: self.shared.clone(),
            membership,
            epoch_started_at,
            seen_generation,
            genesis_digest: self.genesis_digest,
            log_window: self.log_window,
            max_batch_size: self.max_batch_size,
            cache: self.cache.clone(),
            decoded_keys: HashMap::new(),
            signatures_verified: 0,
            rejected: BTreeMap::new(),
        }
    }

    /// Signatures actually checked so far (those found in the cache are not counted).
    pub fn signatures_verified(&self) -> u64 {
        self.signatures_verified
    }

    const DECODED_KEYS_MAX: usize = 1 << 16;

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The sequence number after which the membership in force took effect (0 for the genesis's): the epoch proof
    /// of what a refused message shows is checked in (`Evidence::verify`).
    pub fn epoch_started_at(&self) -> Seq {
        self.epoch_started_at
    }

    /// The last sequence number the replica executed, as its host last said (`SharedMembership::executed_up_to`).
    pub fn executed(&self) -> Seq {
        self.shared.executed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The handle through which a new epoch's membership reaches this verifier and those sharing its cache.
    pub fn shared_membership(&self) -> SharedMembership {
        self.shared.clone()
    }

    fn refresh_membership(&mut self) {
        let generation = self.shared.generation();
        if generation != self.seen_generation {
            (self.membership, self.epoch_started_at) = self.shared.get_with_epoch();
            self.seen_generation = generation;
        }
    }

    /// A client's request: the payer's signature must verify.
    pub fn request(&mut self, tx: SignedTransfer) -> Result<Verified<SignedTransfer>, Rejection> {
        let mut checks = Checks::new();
        checks.push(
            tx.transfer.from,
            tx.transfer.signing_bytes(),
            tx.signature,
            Signer::Client,
        );
        self.run(checks).map_err(|_| Rejection::BadTransferSignature)?;
        Ok(Verified(tx))
    }

    /// Many clients' requests at once, verified in batches; each gets its own answer.
    pub fn requests(&mut self, txs: Vec<SignedTransfer>) -> Vec<Result<Verified<SignedTransfer>, Rejection>> {
        const BATCH: usize = 64;
        let mut results = Vec::with_capacity(txs.len());
        for chunk in txs.chunks(BATCH) {
            let mut checks = Checks::new();
            for tx in chunk {
                checks.push(
                    tx.transfer.from,
                    tx.transfer.signing_bytes(),
                    tx.signature,
                    Signer::Client,
                );
            }
            if self.run(checks).is_ok() {
                results.extend(chunk.iter().map(|tx| Ok(Verified(*tx))));
            } else {
                // Some signature in the chunk is bad: find which, one by one.
                results.extend(chunk.iter().map(|tx| self.request(*tx)));
            }
        }
        results
    }

    /// A message from another member. Every rejection is counted in `rejected()`.
    pub fn message(&mut self, message: Message) -> Result<Verified<Message>, Rejection> {
        self.message_or_back(message).map_err(|refused| refused.0)
    }

    /// As `message`, handing a refused message back: it may be evidence against its sender.
    pub fn message_or_back(&mut self, message: Message) -> Result<Verified<Message>, Box<(Rejection, Message)>> {
        match self.check_message(&message) {
            Ok(()) => Ok(Verified(message)),
            Err(rejection) => {
                // Who signed stays as found; only the kind of message it came in is filled in here.
                let rejection = match rejection {
                    Rejection::BadSignature { from, .. } => Rejection::BadSignature {
                        kind: message.kind(),
                        from,
                    },
                    Rejection::BadRelayedSignature { inner, signer, .. } => Rejection::BadRelayedSignature {
                        kind: message.kind(),
                        inner,
                        signer,
                    },
                    other => other,
                };
                *self.rejected.entry(rejection.label()).or_default() += 1;
                Err(Box::new((rejection, message)))
            }
        }
    }

    /// A prepared certificate on its own (as it would stand in a VIEW-CHANGE), for whoever checks what a replica
    /// formed.
    pub fn prepared_certificate(&mut self, cert: &PreparedCert) -> Result<(), Rejection> {
        self.refresh_membership();
        let mut checks = Checks::new();
        self.prepared_cert(&mut checks, cert)?;
        self.run(checks)
    }

    /// Rejections so far, by reason.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    fn check_message(&mut self, message: &Message) -> Result<(), Rejection> {
        self.refresh_membership();
        let mut checks = Checks::new();
        match message {
            // Who may propose is the core's to check: above a checkpoint boundary it depends on a membership
            // this replica may not know yet (`check_proposer`). The sender's signature is checked before what it
            // proposes, so a proposal refused for its content is one its sender signed: proof, never a frame-up.
            Message::PrePrepare(m) => {
                batch_shape(&m.body, self.max_batch_size)?;
                self.own(&mut checks, m)?;
                self.run(checks)?;
                spends_once(&m.body)?;
                return self.transfers(&m.body.batch);
            }
            Message::Prepare(m) => self.own(&mut checks, m)?,
            Message::Commit(m) => self.own(&mut checks, m)?,
            Message::Checkpoint(m) => self.own(&mut checks, m)?,
            Message::Status(m) => self.own(&mut checks, m)?,
            Message::Rejoin(m) => self.own(&mut checks, m)?,
            Message::RejoinAck(m) => self.own(&mut checks, m)?,
            Message::ViewChange(m) => self.view_change(&mut checks, m, true)?,
            Message::NewView(m) => return self.new_view_of_either_epoch(m),
            // The manifest must be the certified one; the chunk is checked against it by the core.
            Message::StateTransfer(m) => {
                self.own(&mut checks, m)?;
                if m.body.manifest.digest() != m.body.checkpoint.state_digest {
                    return Err(Rejection::DigestMismatch);
                }
                self.state_transfer_cert(&mut checks, &m.body.checkpoint, &m.body.manifest.head)?;
            }
            Message::Committed(cert) => self.committed_cert(&mut checks, cert)?,
            // An operation carries its own authority, which the protocol checks against the replicated state.
            Message::Operation { from, .. } => {
                if !self.membership.contains(*from) {
                    return Err(Rejection::NotAMember(*from));
                }
            }
            // Only a header (the signature covers it), so a peer cannot make this replica hold a batch for it.
            Message::Proposal { from, proposal } => {
                if !self.membership.contains(*from) {
                    return Err(Rejection::NotAMember(*from));
                }
                if !proposal.body.batch.is_empty() || !proposal.body.ops.is_empty() {
                    return Err(Rejection::BatchTooLarge(
                        proposal.body.batch.len() + proposal.body.ops.len(),
                    ));
                }
                self.signed(&mut checks, proposal)?;
            }
            Message::Request { from, tx } => {
                if !self.membership.contains(*from) {
                    return Err(Rejection::NotAMember(*from));
                }
                return self.transfers(std::slice::from_ref(tx));
            }
        }
        self.run(checks)
    }

    fn run(&mut self, checks: Checks) -> Result<(), Rejection> {
        // Named by who signed, not by who sent: `message_or_back` fills in the kind.
        let refusal = |signer: Signer| match signer {
            Signer::Sender(from) => Rejection::BadSignature { kind: "message", from },
            Signer::Relayed { member, what } => Rejection::BadRelayedSignature {
                kind: "message",
                inner: what,
                signer: member,
            },
            Signer::Client => Rejection::BadTransferSignature,
        };
        let mut keys = Vec::with_capacity(checks.keys.len());
        for (key, signer) in checks.keys.iter().zip(&checks.signers) {
            keys.push(self.decoded_key(key).ok_or(refusal(*signer))?);
        }
        let unchecked: Vec<(SignedItem<'_>, Digest)> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let item = SignedItem {
                    key,
                    message: &checks.messages[i],
                    signature: &checks.signatures[i],
                };
                let cache_key = SignatureCache::key(&checks.keys[i], &item);
                (item, cache_key)
            })
            .collect();
        // The lock is held for the look-up only, not the verification.
        let (items, (cache_keys, signers)): (Vec<SignedItem<'_>>, (Vec<Digest>, Vec<Signer>)) = {
            let cache = self.cache.lock().expect("no panic while holding the lock");
            unchecked
                .into_iter()
                .zip(&checks.signers)
                .filter(|((_, key), _)| !cache.contains(key))
                .map(|((item, key), signer)| (item, (key, *signer)))
                .unzip()
        };
        self.signatures_verified += items.len() as u64;
        let results = verify_many(&items);
        if let Some(bad) = results.iter().position(|ok| !ok) {
            return Err(refusal(signers[bad]));
        }
        let mut cache = self.cache.lock().expect("no panic while holding the lock");
        for key in cache_keys {
            cache.insert(key);
        }
        Ok(())
    }

    /// Keys are decoded once and remembered: decoding costs a square root, a tenth of a verification.
    fn decoded_key(&mut self, key: &PublicKey) -> Option<VerifyingKey> {
        if let Some(decoded) = self.decoded_keys.get(key) {
            return Some(*decoded);
        }
        let decoded = key.decompress().ok()?;
        if self.decoded_keys.len() >= Self::DECODED_KEYS_MAX {
            self.decoded_keys.clear();
        }
        self.decoded_keys.insert(*key, decoded);
        Some(decoded)
    }

    /// A member's signature inside what the sender relayed.
    fn signed<T: Signable>(&self, checks: &mut Checks, m: &Signed<T>) -> Result<(), Rejection> {
        let signer = Signer::Relayed {
            member: m.from,
            what: T::DOMAIN,
        };
        self.signed_by(checks, m, signer)
    }

    /// The sender's own signature on the message it sent.
    fn own<T: Signable>(&self, checks: &mut Checks, m: &Signed<T>) -> Result<(), Rejection> {
        self.signed_by(checks, m, Signer::Sender(m.from))
    }

    fn signed_by<T: Signable>(&self, checks: &mut Checks, m: &Signed<T>, signer: Signer) -> Result<(), Rejection> {
        let key = *self.membership.key(m.from).ok_or(Rejection::NotAMember(m.from))?;
        checks.push(key, m.signing_bytes(), m.signature, signer);
        Ok(())
    }

    /// Client signatures inside a proposed batch, checked as one batch so every replica checks the same set.
    fn transfers(&mut self, batch: &[SignedTransfer]) -> Result<(), Rejection> {
        let mut checks = Checks::new();
        for tx in batch {
            checks.push(
                tx.transfer.from,
                tx.transfer.signing_bytes(),
                tx.signature,
                Signer::Client,
            );
        }
        self.run(checks).map_err(|_| Rejection::BadTransferSignature)
    }

    /// A proposal inside a certificate, by the rules the core applies to one that arrives alone (`check_proposer`,
    /// `batch_shape`, `spends_once`): a certificate can hold only what an honest replica would have accepted, or a
    /// replica may accept a state it cannot prove in a view change (one backup's proposal halted a cluster so).
    /// Its signatures are checked after this, with the rest of the certificate: a content refusal here blames no
    /// one, since the relay may have made the content up.
    fn proposal(&self, checks: &mut Checks, pp: &Signed<PrePrepare>) -> Result<(), Rejection> {
        check_proposer(&self.membership, pp)?;
        batch_shape(&pp.body, self.max_batch_size)?;
        spends_once(&pp.body).map_err(|_| Rejection::BadCertificate("a proposal spending funds twice"))?;
        self.signed(checks, pp)
    }

    /// `votes` must hold at least `needed` distinct members other than `excluded`, all voting for `matches`.
    fn votes<T: Signable>(
        &self,
        checks: &mut Checks,
        votes: &[Signed<T>],
        needed: usize,
        excluded: Option<ReplicaId>,
        matches: impl Fn(&T) -> bool,
        what: &'static str,
    ) -> Result<(), Rejection> {
        if votes.len() > self.membership.n() {
            return Err(Rejection::BadCertificate(what));
        }
        let mut signers = BTreeSet::new();
        for vote in votes {
            if Some(vote.from) == excluded || !matches(&vote.body) || !signers.insert(vote.from) {
                return Err(Rejection::BadCertificate(what));
            }
            // A certificate made across a reconfiguration may hold a removed member's vote: it does not count.
            if !self.membership.contains(vote.from) {
                signers.remove(&vote.from);
                continue;
            }
            self.signed(checks, vote)?;
        }
        if signers.len() < needed {
            return Err(Rejection::BadCertificate(what));
        }
        Ok(())
    }

    fn checkpoint_cert(&self, checks: &mut Checks, cert: &CheckpointCert) -> Result<(), Rejection> {
        if cert.seq == 0 {
            if cert.state_digest != self.genesis_digest || !cert.proof.is_empty() {
                return Err(Rejection::BadCertificate("genesis checkpoint"));
            }
            return Ok(());
        }
        let wanted = Checkpoint {
            seq: cert.seq,
            state_digest: cert.state_digest,
        };
        self.votes(
            checks,
            &cert.proof,
            self.membership.quorum(),
            None,
            |c| *c == wanted,
            "checkpoint",
        )
    }

    /// The certificate of a state sent to a replica that is behind. Usually the membership in force signed it;
    /// across an epoch the replica does not know yet, the membership the state itself holds must have (a quorum
    /// of it), and F+1 members this replica knows (so at least one honest one) must be among the signers: an
    /// honest member signs only a state it executed, membership included. The membership is read from the state's
    /// head (its governance), which every chunk carries and the state digest covers.
    fn state_transfer_cert(&self, checks: &mut Checks, cert: &CheckpointCert, head: &[u8]) -> Result<(), Rejection> {
        let mut usual = Checks::new();
        if self.checkpoint_cert(&mut usual, cert).is_ok() {
            checks.append(usual);
            return Ok(());
        }
        let bad = Rejection::BadCertificate("state transfer");
        let next = crate::governance::head_membership(head).ok_or(bad.clone())?;
        if next == *self.membership || cert.proof.len() > next.n() {
            return Err(bad);
        }
        let wanted = Checkpoint {
            seq: cert.seq,
            state_digest: cert.state_digest,
        };
        let (mut signers, mut known) = (BTreeSet::new(), 0);
        for vote in &cert.proof {
            if vote.body != wanted || !signers.insert(vote.from) {
                return Err(bad);
            }
            let key = *next.key(vote.from).ok_or(Rejection::NotAMember(vote.from))?;
            if self.membership.key(vote.from) == Some(&key) {
                known += 1;
            }
            let signer = Signer::Relayed {
                member: vote.from,
                what: Checkpoint::DOMAIN,
            };
            checks.push(key, vote.signing_bytes(), vote.signature, signer);
        }
        if signers.len() < next.quorum() || known <= self.membership.f() {
            return Err(bad);
        }
        Ok(())
    }

    fn prepared_cert(&self, checks: &mut Checks, cert: &PreparedCert) -> Result<(), Rejection> {
        let pp = &cert.pre_prepare;
        self.proposal(checks, pp)?;
        let wanted = Prepare {
            view: pp.body.view,
            seq: pp.body.seq,
            digest: pp.body.digest,
        };
        let primary = Some(pp.from);
        self.votes(
            checks,
            &cert.prepares,
            self.membership.quorum() - 1,
            primary,
            |p| *p == wanted,
            "prepared",
        )
    }

    fn committed_cert(&self, checks: &mut Checks, cert: &CommittedCert) -> Result<(), Rejection> {
        let pp = &cert.pre_prepare;
        self.proposal(checks, pp)?;
        let wanted = Commit {
            view: pp.body.view,
            seq: pp.body.seq,
            digest: pp.body.digest,
        };
        self.votes(
            checks,
            &cert.commits,
            self.membership.quorum(),
            None,
            |c| *c == wanted,
            "committed",
        )
    }

    /// `own`: the VIEW-CHANGE is the message itself, not one embedded in a NEW-VIEW.
    fn view_change(&self, checks: &mut Checks, m: &Signed<ViewChange>, own: bool) -> Result<(), Rejection> {
        if own {
            self.own(checks, m)?;
        } else {
            self.signed(checks, m)?;
        }
        let vc = &m.body;
        self.checkpoint_cert(checks, &vc.checkpoint)?;
        let low = vc.checkpoint.seq;
        let high = low.saturating_add(self.log_window);
        let mut seqs = BTreeSet::new();
        for cert in &vc.prepared {
            let seq = cert.seq();
            if seq <= low || seq > high || !seqs.insert(seq) {
                return Err(Rejection::BadCertificate("prepared sequence"));
            }
            if cert.view() >= vc.new_view {
                return Err(Rejection::BadCertificate("prepared view"));
            }
            self.prepared_cert(checks, cert)?;
        }
        Ok(())
    }

    /// A NEW-VIEW made by the membership in force, or by the one before it. The view a member added by a
    /// reconfiguration must join may have been installed before the epoch began: only the previous membership can
    /// vouch for it then. Nothing it re-proposes lies above the epoch's first checkpoint (nothing is prepared there
    /// before the epoch begins), so it only tells a new member which view the cluster works in.
    fn new_view_of_either_epoch(&mut self, m: &Signed<NewView>) -> Result<(), Rejection> {
        let mut checks = Checks::new();
        let current = self.new_view(&mut checks, m).and_then(|()| self.run(checks));
        let Err(refusal) = current else {
            return Ok(());
        };
        let Some(previous) = self.shared.previous() else {
            return Err(refusal);
        };
        let in_force = std::mem::replace(&mut self.membership, previous);
        let mut checks = Checks::new();
        let before = self.new_view(&mut checks, m).and_then(|()| self.run(checks));
        self.membership = in_force;
        before.map_err(|_| refusal)
    }

    fn new_view(&self, checks: &mut Checks, m: &Signed<NewView>) -> Result<(), Rejection> {
        let nv = &m.body;
        if m.from != self.membership.primary(nv.view) {
            return Err(Rejection::NotFromPrimary("new-view"));
        }
        self.own(checks, m)?;
        if nv.view_changes.len() > self.membership.n() {
            return Err(Rejection::BadCertificate("new-view"));
        }
        let mut senders = BTreeSet::new();
        for vc in &nv.view_changes {
            if vc.body.new_view != nv.view || !senders.insert(vc.from) {
                return Err(Rejection::BadCertificate("new-view"));
            }
            self.view_change(checks, vc, false)?;
        }
        if senders.len() < self.membership.quorum() {
            return Err(Rejection::BadCertificate("new-view quorum"));
        }
        // The PRE-PREPAREs must be exactly those the VIEW-CHANGEs determine.
        let (_, derived) = derive_new_view(&nv.view_changes);
        if derived.len() != nv.pre_prepares.len() {
            return Err(Rejection::BadCertificate("new-view pre-prepares"));
        }
        for (derived, pp) in derived.iter().zip(&nv.pre_prepares) {
            let header_ok = pp.body.view == nv.view && pp.body.seq == derived.seq && pp.body.digest == derived.digest;
            if !header_ok || pp.from != m.from || !pp.body.matches_digest() {
                return Err(Rejection::BadCertificate("new-view pre-prepares"));
            }
            self.signed(checks, pp)?;
        }
        Ok(())
    }
}

/// Only the primary of a proposal's view proposes: the one rule for a PRE-PREPARE that arrives alone (checked by the
/// core, once it knows the membership of the sequence number) and for one inside a certificate (checked here).
pub fn check_proposer(membership: &Membership, pp: &Signed<PrePrepare>) -> Result<(), Rejection> {
    if pp.from != membership.primary(pp.body.view) {
        return Err(Rejection::NotFromPrimary("pre-prepare"));
    }
    Ok(())
}

/// The batch must fit the size limits and match its digest.
fn batch_shape(pp: &PrePrepare, max_batch_size: usize) -> Result<(), Rejection> {
    if pp.batch.len() > max_batch_size {
        return Err(Rejection::BatchTooLarge(pp.batch.len()));
    }
    if pp.ops.len() > crate::governance::MAX_OPS_PER_BATCH {
        return Err(Rejection::BatchTooLarge(pp.ops.len()));
    }
    if !pp.matches_digest() {
        return Err(Rejection::DigestMismatch);
    }
    Ok(())
}

/// No batch spends the same funds twice.
fn spends_once(pp: &PrePrepare) -> Result<(), Rejection> {
    let mut spends = HashSet::with_capacity(pp.batch.len());
    if !pp.batch.iter().all(|tx| spends.insert(tx.spend_key())) {
        return Err(Rejection::ConflictingTransfers);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KeyPair, crafted};
    use crate::evidence::FaultType;
    use crate::history::{MessageSummary, Observation};
    use crate::ledger::Transfer;
    use crate::messages::Member;

    fn members(n: u8) -> (Vec<KeyPair>, Membership) {
        let keys: Vec<KeyPair> = (1..=n).map(|i| KeyPair::from_secret([i; 32])).collect();
        let members = keys
            .iter()
            .zip(1..)
            .map(|(k, id)| Member {
                id,
                public_key: k.public(),
            })
            .collect();
        (keys, Membership::new(members).unwrap())
    }

    fn transfer(from: PublicKey, nonce: u64) -> Transfer {
        Transfer {
            from,
            to: KeyPair::from_secret([99; 32]).public(),
            amount: 1,
            nonce,
        }
    }

    /// Client transfers with crafted signatures, named, each as it would arrive.
    fn crafted_transfers() -> Vec<(String, SignedTransfer)> {
        let mut txs = Vec::new();
        // Orders 8 and 2; the crypto tests go through all the kinds.
        for t in [1, 4] {
            let secret = [120 + t as u8; 32];
            let tx = transfer(KeyPair::from_secret(secret).public(), 1);
            let signature = crafted::torsion_in_r(secret, &tx.signing_bytes(), t);
            txs.push((
                format!("torsion {t} in R"),
                SignedTransfer {
                    transfer: tx,
                    signature,
                },
            ));
            // The key is part of what is signed, so the transfer is built for the key before it is signed.
            let (key, _) = crafted::torsion_in_key(secret, b"", t);
            let tx = transfer(key, 1);
            let (_, signature) = crafted::torsion_in_key(secret, &tx.signing_bytes(), t);
            txs.push((
                format!("torsion {t} in the key"),
                SignedTransfer {
                    transfer: tx,
                    signature,
                },
            ));
            let honest = transfer(KeyPair::from_secret(secret).public(), 2).sign(&KeyPair::from_secret(secret));
            let signature = crafted::shifted_r(&honest.signature, t);
            txs.push((
                format!("R shifted by torsion {t}"),
                SignedTransfer { signature, ..honest },
            ));
        }
        txs
    }

    /// Through the verifier, with some signatures already in its cache and some not, a crafted client signature
    /// gets the verdict of its single check whatever it is batched with and wherever it stands, both as a
    /// request and inside a proposal.
    #[test]
    fn verdicts_do_not_depend_on_the_batch_or_the_cache() {
        let (keys, membership) = members(4);
        let primary = membership.primary(0);
        let payers: Vec<KeyPair> = (0..16).map(|i| KeyPair::from_secret([60 + i; 32])).collect();
        let honest: Vec<SignedTransfer> = payers.iter().map(|p| transfer(p.public(), 1).sign(p)).collect();
        for (what, crafted) in crafted_transfers() {
            let alone = crafted.verify();
            for n in 1..=16 {
                for position in 0..n {
                    let mut batch = honest[..n - 1].to_vec();
                    batch.insert(position, crafted);
                    let mut verifier = Verifier::new(membership.clone(), Digest::default(), 100, 64);
                    for tx in honest.iter().step_by(3) {
                        verifier.request(*tx).unwrap();
                    }
                    let verdicts: Vec<bool> = verifier.requests(batch.clone()).iter().map(Result::is_ok).collect();
                    let singles: Vec<bool> = batch.iter().map(SignedTransfer::verify).collect();
                    assert_eq!(verdicts, singles, "{what} at {position} of {n} requests");

                    let mut verifier = Verifier::new(membership.clone(), Digest::default(), 100, 64);
                    for tx in honest.iter().skip(1).step_by(2) {
                        verifier.request(*tx).unwrap();
                    }
                    let proposal = PrePrepare {
                        view: 0,
                        seq: 1,
                        digest: batch_digest(&batch),
                        batch,
                        ops: Vec::new(),
                        at_ms: 0,
                    };
                    let proposal = Signed::new(primary, proposal, &keys[primary as usize - 1]);
                    let verdict = verifier.message(Message::PrePrepare(proposal));
                    let expected = if alone {
                        Ok(())
                    } else {
                        Err(Rejection::BadTransferSignature)
                    };
                    assert_eq!(
                        verdict.map(|_| ()),
                        expected,
                        "{what} at {position} of {n} in a proposal"
                    );
                }
            }
        }
    }

    fn view_change(
        keys: &[KeyPair],
        from: ReplicaId,
        checkpoint: CheckpointCert,
        prepared: Vec<PreparedCert>,
    ) -> Signed<ViewChange> {
        let body = ViewChange {
            new_view: 1,
            checkpoint,
            prepared,
            revision: 0,
        };
        Signed::new(from, body, &keys[from as usize - 1])
    }

    fn genesis() -> CheckpointCert {
        CheckpointCert {
            seq: 0,
            state_digest: Digest::default(),
            proof: Vec::new(),
        }
    }

    /// Refuses `message` and says what the accusation policy makes of it.
    fn refuse(verifier: &mut Verifier, message: Message) -> (Rejection, Option<Observation>) {
        let summary = MessageSummary::of(&message);
        let rejection = verifier.message(message.clone()).unwrap_err();
        let carrier = message.sender();
        let refusal = crate::detection::Refusal::Verification {
            message,
            carrier,
            membership: verifier.membership(),
            epoch_started_at: verifier.epoch_started_at(),
            executed: verifier.executed(),
        };
        let observation = crate::detection::observation_of_refusal(&summary, &rejection, refusal);
        (rejection, observation)
    }

    /// A NEW-VIEW that carries a VIEW-CHANGE with a spoiled signature is refused, naming the VIEW-CHANGE's signer,
    /// and never accuses that signer. The primary signed the NEW-VIEW over it (its signature covers the VIEW-CHANGEs
    /// whole, so no relay can spoil one under it): with fewer than a quorum of valid ones left, that is proof against
    /// the primary. A relay that spoils one after the primary signed breaks the primary's own signature, and proves
    /// nothing; the primary's own signature spoiled on its own stream is the primary's.
    #[test]
    fn a_bad_signature_inside_a_new_view_is_not_the_primarys() {
        let (keys, membership) = members(4);
        let primary = membership.primary(1);
        let senders: Vec<ReplicaId> = membership.ids().filter(|id| *id != primary).collect();
        let clean: Vec<_> = senders
            .iter()
            .map(|id| view_change(&keys, *id, genesis(), Vec::new()))
            .collect();
        let new_view = |view_changes: Vec<Signed<ViewChange>>| {
            let body = NewView {
                view: 1,
                view_changes,
                pre_prepares: Vec::new(),
            };
            Signed::new(primary, body, &keys[primary as usize - 1])
        };
        let mut verifier = Verifier::new(membership.clone(), Digest::default(), 100, 64);
        // Unspoiled it is valid, so what is refused below is the signature alone.
        verifier.message(Message::NewView(new_view(clean.clone()))).unwrap();

        let mut spoiled = clean.clone();
        spoiled[1].signature = spoiled[1].signature.corrupted();
        let (rejection, proof) = refuse(&mut verifier, Message::NewView(new_view(spoiled.clone())));
        let expected = Rejection::BadRelayedSignature {
            kind: "new_view",
            inner: ViewChange::DOMAIN,
            signer: senders[1],
        };
        assert_eq!(rejection, expected);
        let proof = proof.expect("the primary signed a NEW-VIEW on two valid VIEW-CHANGEs of three");
        assert_eq!(
            (proof.member, proof.fault, proof.proof.is_some()),
            (primary, FaultType::ProtocolViolation, true)
        );
        // Spoiled after the primary signed: its signature no longer covers what arrives, so nobody is proven.
        let mut relayed = new_view(clean.clone());
        relayed.body.view_changes = spoiled;
        let message = Message::NewView(relayed);
        let summary = MessageSummary::of(&message);
        let rejection = verifier.message(message.clone()).unwrap_err();
        assert!(matches!(rejection, Rejection::BadSignature { from, .. } if from == primary));
        let refusal = crate::detection::Refusal::Verification {
            message,
            carrier: senders[0],
            membership: verifier.membership(),
            epoch_started_at: 0,
            executed: 0,
        };
        let observation = crate::detection::observation_of_refusal(&summary, &rejection, refusal);
        assert_eq!(
            observation, None,
            "carried by another member: the relay may have spoiled it"
        );

        let mut own = new_view(clean);
        own.signature = own.signature.corrupted();
        let (rejection, accusation) = refuse(&mut verifier, Message::NewView(own));
        assert_eq!(
            rejection,
            Rejection::BadSignature {
                kind: "new_view",
                from: primary
            }
        );
        let accusation = accusation.expect("a bad signature of the sender's own is an accusation");
        assert_eq!(
            (accusation.member, accusation.fault),
            (primary, FaultType::SignatureMismatch)
        );
    }

    /// A relay that forwards a forged committed batch (junk signatures, a batch spending one nonce twice, named as
    /// the honest primary's) gets nobody blamed: content is judged only once its signatures are checked, and what
    /// a certificate holds is never its proposer's proof. Once every honest replica logged the primary so. In a
    /// VIEW-CHANGE the same certificate proves its signer wrong, never the proposer named in it.
    #[test]
    fn a_forged_double_spend_relayed_in_a_certificate_blames_nobody() {
        let (keys, membership) = members(4);
        let primary = membership.primary(0);
        let payer = KeyPair::from_secret([70; 32]);
        let batch: Vec<SignedTransfer> = [1, 2]
            .iter()
            .map(|amount| {
                Transfer {
                    amount: *amount,
                    ..transfer(payer.public(), 1)
                }
                .sign(&payer)
            })
            .collect();
        let proposal = PrePrepare {
            view: 0,
            seq: 1,
            digest: proposal_digest(&batch, &[], 0),
            batch,
            ops: Vec::new(),
            at_ms: 0,
        };
        let mut forged = Signed::new(primary, proposal.clone(), &keys[0]);
        forged.signature = forged.signature.corrupted();
        let vote = Commit {
            view: 0,
            seq: 1,
            digest: proposal.digest,
        };
        let commits = (1..=3).map(|id| {
            let mut c = Signed::new(id, vote, &keys[id as usize - 1]);
            c.signature = c.signature.corrupted();
            c
        });
        let cert = CommittedCert {
            pre_prepare: forged.clone(),
            commits: commits.collect(),
        };
        let mut verifier = Verifier::new(membership.clone(), Digest::default(), 100, 64);
        let (rejection, observation) = refuse(&mut verifier, Message::Committed(cert));
        assert_eq!(observation, None, "{rejection}");
        assert_ne!(rejection, Rejection::ConflictingTransfers);

        // Inside a VIEW-CHANGE's prepared certificate, from the member that signed the VIEW-CHANGE: still nothing
        // against the primary. The VIEW-CHANGE's signer signed over a proposal whose signature does not verify, so
        // it is proven (`Evidence::InvalidViewChange`).
        let prepares = (2..=3)
            .map(|id| {
                let body = Prepare {
                    view: 0,
                    seq: 1,
                    digest: proposal.digest,
                };
                Signed::new(id, body, &keys[id as usize - 1])
            })
            .collect();
        let cert = PreparedCert {
            pre_prepare: forged,
            prepares,
        };
        let vc = view_change(&keys, 3, genesis(), vec![cert]);
        let (rejection, observation) = refuse(&mut verifier, Message::ViewChange(vc));
        let observation = observation.expect("proof against the VIEW-CHANGE's signer");
        assert_eq!(
            (observation.member, observation.fault, observation.proof.is_some()),
            (3, FaultType::ProtocolViolation, true),
            "{rejection}"
        );

        // Sent alone on its own stream, correctly signed, the same proposal is the primary's proof.
        let signed = Signed::new(primary, proposal, &keys[0]);
        let (rejection, observation) = refuse(&mut verifier, Message::PrePrepare(signed));
        assert_eq!(rejection, Rejection::ConflictingTransfers);
        let observation = observation.expect("proof");
        assert!(observation.proof.is_some());
        assert_eq!(
            (observation.member, observation.fault),
            (primary, FaultType::DoubleSpend)
        );
    }

    /// A VIEW-CHANGE whose checkpoint proof or prepared certificate holds a spoiled vote is refused naming the vote's
    /// signer, and never accuses that voter: anyone may have spoiled the vote before the sender took it in. The
    /// sender's own signature covers the certificates it carries, though, and an honest sender carries only votes it
    /// verified: a spoiled vote in a prepared certificate is proof against the sender (`Evidence::InvalidViewChange`).
    /// A checkpoint certificate proves nothing either way (across an epoch an honest one may rest on votes the
    /// membership in force cannot check), so the spoiled checkpoint vote accuses no one.
    #[test]
    fn a_bad_vote_inside_a_view_change_never_blames_the_voter_and_proves_the_sender_only_by_a_prepared_certificate() {
        let (keys, membership) = members(4);
        let sender = 3;
        let mut verifier = Verifier::new(membership.clone(), Digest::default(), 100, 64);

        let wanted = Checkpoint {
            seq: 10,
            state_digest: Digest([7; 32]),
        };
        let mut proof: Vec<_> = [1, 2, 4]
            .iter()
            .map(|id| Signed::new(*id, wanted, &keys[*id as usize - 1]))
            .collect();
        let checkpoint = |proof| CheckpointCert {
            seq: 10,
            state_digest: wanted.state_digest,
            proof,
        };
        verifier
            .message(Message::ViewChange(view_change(
                &keys,
                sender,
                checkpoint(proof.clone()),
                Vec::new(),
            )))
            .unwrap();
        proof[2].signature = proof[2].signature.corrupted();
        let message = Message::ViewChange(view_change(&keys, sender, checkpoint(proof), Vec::new()));
        let (rejection, accusation) = refuse(&mut verifier, message);
        let expected = Rejection::BadRelayedSignature {
            kind: "view_change",
            inner: Checkpoint::DOMAIN,
            signer: 4,
        };
        assert_eq!((rejection, accusation), (expected, None));

        let old_primary = membership.primary(0);
        let proposal = PrePrepare {
            view: 0,
            seq: 1,
            digest: batch_digest(&[]),
            batch: Vec::new(),
            ops: Vec::new(),
            at_ms: 0,
        };
        let pre_prepare = Signed::new(old_primary, proposal.clone(), &keys[old_primary as usize - 1]);
        let vote = Prepare {
            view: 0,
            seq: 1,
            digest: proposal.digest,
        };
        let voters: Vec<ReplicaId> = membership.ids().filter(|id| *id != old_primary).take(2).collect();
        let mut prepares: Vec<_> = voters
            .iter()
            .map(|id| Signed::new(*id, vote, &keys[*id as usize - 1]))
            .collect();
        let cert = |prepares| PreparedCert {
            pre_prepare: pre_prepare.clone(),
            prepares,
        };
        verifier
            .message(Message::ViewChange(view_change(
                &keys,
                sender,
                genesis(),
                vec![cert(prepares.clone())],
            )))
            .unwrap();
        prepares[0].signature = prepares[0].signature.corrupted();
        let message = Message::ViewChange(view_change(&keys, sender, genesis(), vec![cert(prepares)]));
        let (rejection, proof) = refuse(&mut verifier, message);
        let expected = Rejection::BadRelayedSignature {
            kind: "view_change",
            inner: Prepare::DOMAIN,
            signer: voters[0],
        };
        assert_eq!(rejection, expected);
        let proof = proof.expect("the sender signed over a vote that does not verify");
        assert_eq!(
            (proof.member, proof.fault, proof.proof.is_some()),
            (sender, FaultType::ProtocolViolation, true)
        );
    }

    /// A NEW-VIEW carrying a VIEW-CHANGE with a made-up prepared certificate (a proposal by a backup, votes in others'
    /// names that do not verify) is refused, and proves the VIEW-CHANGE's signer wrong, whoever relays the NEW-VIEW:
    /// not the primary, which signed a quorum of VIEW-CHANGEs and derived its proposals from them, nor the members
    /// named inside. With that VIEW-CHANGE's own signature spoiled, nobody is proven.
    #[test]
    fn a_made_up_certificate_inside_a_new_view_proves_the_view_changes_signer_only() {
        let (keys, membership) = members(4);
        let primary = membership.primary(1);
        let byzantine = 4;
        let proposal = PrePrepare {
            view: 0,
            seq: 1,
            digest: proposal_digest(&[], &[], 0),
            batch: Vec::new(),
            ops: Vec::new(),
            at_ms: 0,
        };
        let vote = Prepare {
            view: 0,
            seq: 1,
            digest: proposal.digest,
        };
        let own_key = &keys[byzantine as usize - 1];
        let made_up = PreparedCert {
            pre_prepare: Signed::new(byzantine, proposal, own_key),
            prepares: [1, 2, 3].iter().map(|id| Signed::new(*id, vote, own_key)).collect(),
        };
        let mut view_changes: Vec<_> = [1, 2, 3]
            .iter()
            .map(|id| view_change(&keys, *id, genesis(), Vec::new()))
            .collect();
        view_changes.push(view_change(&keys, byzantine, genesis(), vec![made_up]));
        let new_view = |view_changes: Vec<Signed<ViewChange>>| {
            let (_, derived) = derive_new_view(&view_changes);
            let pre_prepares = derived
                .into_iter()
                .map(|r| Signed::new(primary, r.in_view(1), &keys[primary as usize - 1]))
                .collect();
            let body = NewView {
                view: 1,
                view_changes,
                pre_prepares,
            };
            Signed::new(primary, body, &keys[primary as usize - 1])
        };
        let mut verifier = Verifier::new(membership.clone(), Digest::default(), 100, 64);
        let message = Message::NewView(new_view(view_changes.clone()));
        let summary = MessageSummary::of(&message);
        let rejection = verifier.message(message.clone()).unwrap_err();
        assert_eq!(rejection, Rejection::NotFromPrimary("pre-prepare"));
        let relayed_by = |message: Message, rejection: &Rejection, carrier| {
            let refusal = crate::detection::Refusal::Verification {
                message,
                carrier,
                membership: &membership,
                epoch_started_at: 0,
                executed: 0,
            };
            crate::detection::observation_of_refusal(&summary, rejection, refusal)
                .map(|o| (o.member, o.fault, o.proof.is_some()))
        };
        for carrier in [primary, 3] {
            assert_eq!(
                relayed_by(message.clone(), &rejection, carrier),
                Some((byzantine, FaultType::ProtocolViolation, true)),
                "carried by {carrier}"
            );
        }
        view_changes[3].signature = view_changes[3].signature.corrupted();
        let message = Message::NewView(new_view(view_changes));
        let rejection = verifier.message(message.clone()).unwrap_err();
        assert_eq!(relayed_by(message, &rejection, 3), None, "{rejection}");
    }
}
