//! Fault drills: what a Byzantine member does to what it sends, shared by the simulator and the replica process
//! (where it is refused unless the replica allows fault injection).
//!
//! A `Saboteur` stands between a member's honest core and the network. Each fault acts on a message with its
//! probability; everything it sends that is not corrupted on purpose is correctly signed with the member's own
//! key, so the other members see exactly what a compromised replica could send.

use std::collections::{HashSet, VecDeque};

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, KeyPair, PublicKey};
use crate::ledger::{RejectReason, SignedTransfer, Transfer, TxOutcome};
use crate::messages::{
    Checkpoint, CheckpointCert, Commit, Message, NewView, PrePrepare, Prepare, PreparedCert, ReplicaId, Reply, Seq,
    Signed, Status, View, ViewChange, proposal_digest,
};

/// A fault a member can be made to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// What it sends carries a signature that does not verify.
    SignatureCorruption,
    /// As primary, proposes batches that spend funds already spent (and, with an accomplice's key, two transfers
    /// spending the same funds); as any member, signs checkpoints and replies of a state the quorum does not have.
    DoubleSpend,
    /// Does not admit client requests, so as primary it proposes nothing.
    Censorship,
    /// Sends, for a slot (at the drill's probability), conflicting PRE-PREPAREs to two halves of its peers, and
    /// backs each side's version with its PREPAREs and COMMITs for that slot (other votes conflict at random).
    Equivocation,
    /// Sends nothing.
    Silence,
    /// As a backup, also signs and sends proposals of its own, for the sequence number after the last it voted on
    /// (an empty batch: what matters is who signed it). Only the view's primary proposes.
    BackupProposal,
    /// Tries to depose the primary without cause: says in every STATUS that it suspects the primary, and sends
    /// VIEW-CHANGEs for the next view and for far views. Alone, with any clients, it must move no one.
    Depose,
    /// Passes on committed batches it made up: named as another member's proposal, spending funds twice, with
    /// signatures that do not verify. Nobody may be blamed for them but on proof.
    ForgedRelay,
    /// Signs accusations of every other member, over and over (each new in time and count).
    AccusationFlood,
    /// As the primary of a view being installed, sends different valid NEW-VIEWs to different peers (its own
    /// VIEW-CHANGE signed again without its prepared certificates, the VIEW-CHANGEs in another order), and to
    /// others one on fewer than a quorum of VIEW-CHANGEs, re-proposing what that smaller set determines.
    EquivocatingNewPrimary,
    /// Whenever it sends its VIEW-CHANGE, signs one carrying a prepared certificate it made up, for the sequence
    /// number after its checkpoint: a PRE-PREPARE it signs itself in the view before, and PREPAREs in every other
    /// member's name whose signatures do not verify. Its signature over the VIEW-CHANGE is proof against it.
    FabricatedCertificate,
    /// ByzzFuzz's small-scope mutations, scheduled by round: in some protocol rounds (the sequence number a vote
    /// or proposal is for, the view a VIEW-CHANGE is for), drawn with the probability, what it sends for that round
    /// goes to some peers with one field nudged (the sequence number or view one off, a digest it signed for
    /// another round, the prepared certificates left out), signed again with its own key; the others get it
    /// unchanged.
    RoundMutation,
}

impl Fault {
    pub const ALL: [Fault; 12] = [
        Fault::SignatureCorruption,
        Fault::DoubleSpend,
        Fault::Censorship,
        Fault::Equivocation,
        Fault::Silence,
        Fault::BackupProposal,
        Fault::Depose,
        Fault::ForgedRelay,
        Fault::AccusationFlood,
        Fault::EquivocatingNewPrimary,
        Fault::FabricatedCertificate,
        Fault::RoundMutation,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Fault::SignatureCorruption => "signature-corruption",
            Fault::DoubleSpend => "double-spend",
            Fault::Censorship => "censorship",
            Fault::Equivocation => "equivocation",
            Fault::Silence => "silence",
            Fault::BackupProposal => "backup-proposal",
            Fault::Depose => "depose",
            Fault::ForgedRelay => "forged-relay",
            Fault::AccusationFlood => "accusation-flood",
            Fault::EquivocatingNewPrimary => "equivocating-new-primary",
            Fault::FabricatedCertificate => "fabricated-certificate",
            Fault::RoundMutation => "round-mutation",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(name: &str) -> Result<Fault, String> {
        Fault::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            format!(
                "unknown fault {name:?}; one of {}",
                Fault::ALL.map(|f| f.name()).join(", ")
            )
        })
    }
}

/// A fault and how often it acts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultDrill {
    pub fault: Fault,
    /// In [0, 1]: the chance that the fault acts on each message (for censorship, on each request).
    pub probability: f64,
}

impl FaultDrill {
    pub fn new(fault: Fault, probability: f64) -> Result<FaultDrill, String> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!("probability {probability} is not between 0 and 1"));
        }
        Ok(FaultDrill { fault, probability })
    }
}

impl std::fmt::Display for FaultDrill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} p={}", self.fault, self.probability)
    }
}

/// Two transfers spending the same funds need the payer's key: a member that has one (in the simulator, an
/// accomplice's account) proposes them; one that has not can still propose funds spent before.
pub struct Accomplice {
    pub key: KeyPair,
    pub payee: PublicKey,
}

pub struct Saboteur {
    drill: FaultDrill,
    id: ReplicaId,
    key: KeyPair,
    rng: ChaCha8Rng,
    max_batch_size: usize,
    accomplice: Option<Accomplice>,
    proposed_before: Vec<SignedTransfer>,
    /// Transfers this saboteur signed with the accomplice's key, for whoever keeps track of signed transfers.
    pub forged: Vec<SignedTransfer>,
    /// Messages of its own making, beyond what the honest core sends: the host sends each to every peer.
    pub extra: Vec<Message>,
    /// The genesis state's digest: the checkpoint a VIEW-CHANGE made from nothing rests on.
    genesis_digest: Digest,
    /// The host's clock, set before each call: accusations carry a time peers check.
    pub now_ms: u64,
    /// The members, as far as this saboteur has heard of them (the senders of what it sends and is told).
    members: u32,
    /// How many times this saboteur sent its own NEW-VIEWs: which peer gets which version turns with it.
    new_view_sends: usize,
    /// Which rounds a round mutation acts in: drawn from this salt and the round, so no state grows with rounds.
    round_salt: u64,
    /// The digest of the last vote or proposal it sent: a round mutation puts it in another round's message.
    last_digest: Digest,
    /// The last slots it proposed two versions of, each with which peers (by position) got the other version, and
    /// that version: a retransmission goes to each side as before, and its PREPAREs and COMMITs for such a slot
    /// back, to each peer, the version that peer got, so that each side may gather a quorum of its own.
    equivocated: VecDeque<Equivocated>,
}

/// A slot a saboteur proposed two versions of (`Saboteur::equivocated`).
struct Equivocated {
    slot: (View, Seq),
    other_to: Vec<bool>,
    other: Signed<PrePrepare>,
}

/// How many equivocated slots a saboteur remembers: more than a log window's worth of proposals.
const EQUIVOCATED_KEPT: usize = 64;

impl Saboteur {
    pub fn new(drill: FaultDrill, id: ReplicaId, key: KeyPair, seed: u64, max_batch_size: usize) -> Saboteur {
        Saboteur {
            drill,
            id,
            key,
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_batch_size,
            accomplice: None,
            proposed_before: Vec::new(),
            forged: Vec::new(),
            extra: Vec::new(),
            genesis_digest: Digest::default(),
            now_ms: 0,
            members: 4,
            new_view_sends: 0,
            round_salt: seed,
            last_digest: Digest::default(),
            equivocated: VecDeque::new(),
        }
    }

    /// How many members the cluster has (ids 1..=n): whom a forger names and a flooder accuses.
    pub fn with_members(mut self, n: u32) -> Saboteur {
        self.members = n.max(2);
        self
    }

    /// A member that deposes needs the genesis digest to make valid VIEW-CHANGEs of its own.
    pub fn with_genesis(mut self, genesis_digest: Digest) -> Saboteur {
        self.genesis_digest = genesis_digest;
        self
    }

    pub fn with_accomplice(mut self, accomplice: Accomplice) -> Saboteur {
        self.accomplice = Some(accomplice);
        self
    }

    pub fn drill(&self) -> FaultDrill {
        self.drill
    }

    fn acts(&mut self) -> bool {
        self.rng.random_bool(self.drill.probability)
    }

    /// Whether a client request is admitted (censorship refuses it silently).
    pub fn admits_request(&mut self) -> bool {
        !(self.drill.fault == Fault::Censorship && self.acts())
    }

    /// What each of `peers` peers receives instead of `message`, in order (`None`: nothing).
    pub fn outgoing(&mut self, message: &Message, peers: usize) -> Vec<Option<Message>> {
        match self.drill.fault {
            Fault::Censorship => vec![Some(message.clone()); peers],
            Fault::ForgedRelay => {
                if let Message::Commit(vote) = message
                    && self.acts()
                {
                    let forged = self.forged_commit(vote.body.view, vote.body.seq);
                    self.extra.push(forged);
                }
                vec![Some(message.clone()); peers]
            }
            Fault::AccusationFlood => {
                if let Message::Status(_) = message
                    && self.acts()
                {
                    // Several of each member at once, as a flood arrives: only one may wait to be ordered.
                    let accused_each = (1..=self.members).filter(|m| *m != self.id).flat_map(|m| [m; 4]);
                    for accused in accused_each {
                        let body = crate::governance::Accusation {
                            accused,
                            fault: crate::evidence::FaultType::SignatureMismatch,
                            observed: self.rng.random_range(1..1_000_000),
                            at_ms: self.now_ms,
                        };
                        let op = crate::governance::Operation::Accuse(Signed::new(self.id, body, &self.key));
                        self.extra.push(Message::Operation {
                            from: self.id,
                            op: Box::new(op),
                        });
                    }
                }
                vec![Some(message.clone()); peers]
            }
            Fault::Depose => {
                let Message::Status(status) = message else {
                    return vec![Some(message.clone()); peers];
                };
                if !self.acts() {
                    return vec![Some(message.clone()); peers];
                }
                let checkpoint = CheckpointCert {
                    seq: 0,
                    state_digest: self.genesis_digest,
                    proof: Vec::new(),
                };
                let far = [
                    status.body.view + 1,
                    status.body.view + 1 + self.rng.random_range(1..100),
                    View::MAX,
                ];
                for new_view in far {
                    let body = ViewChange {
                        new_view,
                        checkpoint: checkpoint.clone(),
                        prepared: Vec::new(),
                        revision: 0,
                    };
                    self.extra
                        .push(Message::ViewChange(Signed::new(self.id, body, &self.key)));
                }
                let body = Status {
                    suspects: true,
                    ..status.body
                };
                vec![Some(Message::Status(Signed::new(self.id, body, &self.key))); peers]
            }
            Fault::EquivocatingNewPrimary => {
                let Message::NewView(nv) = message else {
                    return vec![Some(message.clone()); peers];
                };
                if nv.from != self.id || !self.acts() {
                    return vec![Some(message.clone()); peers];
                }
                // Peers in turn get the honest NEW-VIEW, another valid one, and one short of a quorum; a later send
                // (an answer to one peer's STATUS) takes the next in turn.
                let versions = [
                    Some(message.clone()),
                    self.other_new_view(nv).map(Message::NewView),
                    self.new_view_short_of_quorum(nv).map(Message::NewView),
                ];
                let turn = self.new_view_sends;
                self.new_view_sends += 1;
                (0..peers)
                    .map(|i| {
                        versions[(i + turn) % versions.len()]
                            .clone()
                            .or_else(|| Some(message.clone()))
                    })
                    .collect()
            }
            Fault::RoundMutation => self.round_mutation(message, peers),
            Fault::FabricatedCertificate => {
                let copy = match message {
                    Message::ViewChange(vc) if vc.from == self.id && self.acts() => {
                        Message::ViewChange(self.with_fabricated_certificate(vc))
                    }
                    _ => message.clone(),
                };
                vec![Some(copy); peers]
            }
            Fault::BackupProposal => {
                if let Message::Prepare(vote) = message
                    && self.acts()
                {
                    let body = empty_proposal(vote.body.view, vote.body.seq + 1);
                    self.extra
                        .push(Message::PrePrepare(Signed::new(self.id, body, &self.key)));
                }
                vec![Some(message.clone()); peers]
            }
            Fault::Silence => (0..peers).map(|_| (!self.acts()).then(|| message.clone())).collect(),
            Fault::SignatureCorruption => (0..peers)
                .map(|_| {
                    let mut m = message.clone();
                    if self.acts() {
                        m.corrupt_signature();
                    }
                    Some(m)
                })
                .collect(),
            Fault::Equivocation => self.equivocate(message, peers),
            // One version for every peer: the lie is about the ledger, not about who hears what.
            Fault::DoubleSpend => {
                let m = if self.acts() {
                    self.double_spend(message)
                } else {
                    message.clone()
                };
                vec![Some(m); peers]
            }
        }
    }

    /// A committed batch made up in another member's name: a proposal spending one nonce twice (signed by a payer
    /// made up too, so the transfers themselves verify) and a quorum of COMMITs, none of whose signatures verify.
    fn forged_commit(&mut self, view: crate::messages::View, seq: crate::messages::Seq) -> Message {
        let payer = KeyPair::from_secret(self.rng.random());
        let batch: Vec<SignedTransfer> = [1, 2]
            .into_iter()
            .map(|amount| {
                let to = KeyPair::from_secret(self.rng.random()).public();
                Transfer {
                    from: payer.public(),
                    to,
                    amount,
                    nonce: 1,
                }
                .sign(&payer)
            })
            .collect();
        // The primary of the view, if ids run 1..=n as at the genesis: the member whose proposals count.
        let named = (view % u64::from(self.members)) as u32 + 1;
        let body = PrePrepare {
            view,
            seq,
            digest: proposal_digest(&batch, &[], 0),
            batch,
            ops: Vec::new(),
            at_ms: 0,
        };
        // Signed with this member's key in another's name: the signature cannot verify.
        let pre_prepare = Signed::new(named, body.clone(), &self.key);
        let vote = Commit {
            view,
            seq,
            digest: body.digest,
        };
        let commits = (1..=self.members).map(|id| Signed::new(id, vote, &self.key)).collect();
        Message::Committed(crate::messages::CommittedCert { pre_prepare, commits })
    }

    /// A NEW-VIEW for the view of `nv` on `view_changes`, with the PRE-PREPAREs they determine, signed by this
    /// member: valid wherever `view_changes` are a quorum.
    fn new_view_on(&self, view: View, view_changes: Vec<Signed<ViewChange>>) -> Signed<NewView> {
        let (_, entries) = crate::new_view::derive_new_view(&view_changes);
        let pre_prepares = entries
            .into_iter()
            .map(|r| Signed::new(self.id, r.in_view(view), &self.key))
            .collect();
        let body = NewView {
            view,
            view_changes,
            pre_prepares,
        };
        Signed::new(self.id, body, &self.key)
    }

    /// Another valid NEW-VIEW for the same view: the same members' VIEW-CHANGEs in reverse order, this member's own
    /// signed again without its prepared certificates (a VIEW-CHANGE nobody can prove incomplete; the quorum still
    /// carries whatever committed). Where this member prepared what the others did not, it re-proposes other batches.
    fn other_new_view(&self, nv: &Signed<NewView>) -> Option<Signed<NewView>> {
        let mut view_changes = nv.body.view_changes.clone();
        if view_changes.len() < 2 {
            return None;
        }
        view_changes.reverse();
        for vc in view_changes
            .iter_mut()
            .filter(|vc| vc.from == self.id && !vc.body.prepared.is_empty())
        {
            let body = ViewChange {
                prepared: Vec::new(),
                ..vc.body.clone()
            };
            *vc = Signed::new(self.id, body, &self.key);
        }
        Some(self.new_view_on(nv.body.view, view_changes))
    }

    /// A NEW-VIEW on one VIEW-CHANGE fewer than the quorum the honest one holds (its own kept), with what that smaller
    /// set determines: no honest primary sends one, and its signature over it is proof.
    fn new_view_short_of_quorum(&self, nv: &Signed<NewView>) -> Option<Signed<NewView>> {
        let mut view_changes = nv.body.view_changes.clone();
        let position = view_changes.iter().rposition(|vc| vc.from != self.id)?;
        view_changes.remove(position);
        Some(self.new_view_on(nv.body.view, view_changes))
    }

    /// `vc` signed again with a prepared certificate made up for the sequence number after its checkpoint (in place
    /// of the one it held there, if any): a PRE-PREPARE this member signs in the view before the VIEW-CHANGE's, and
    /// PREPAREs for it in every other member's name, signed with this member's key, so that none verifies.
    fn with_fabricated_certificate(&self, vc: &Signed<ViewChange>) -> Signed<ViewChange> {
        let seq = vc.body.checkpoint.seq + 1;
        let view = vc.body.new_view.saturating_sub(1);
        let body = empty_proposal(view, seq);
        let vote = Prepare {
            view,
            seq,
            digest: body.digest,
        };
        let prepares = (1..=self.members)
            .filter(|member| *member != self.id)
            .map(|member| Signed::new(member, vote, &self.key))
            .collect();
        let made_up = PreparedCert {
            pre_prepare: Signed::new(self.id, body, &self.key),
            prepares,
        };
        let mut prepared: Vec<PreparedCert> = vc.body.prepared.iter().filter(|c| c.seq() != seq).cloned().collect();
        prepared.insert(0, made_up);
        let body = ViewChange {
            prepared,
            ..vc.body.clone()
        };
        Signed::new(self.id, body, &self.key)
    }

    /// ByzzFuzz: in a round drawn for it, some peers get `message` with one field nudged, signed again; the rest,
    /// and every peer outside such rounds, get it unchanged.
    fn round_mutation(&mut self, message: &Message, peers: usize) -> Vec<Option<Message>> {
        let (round, digest) = match message {
            Message::PrePrepare(m) => (m.body.seq, Some(m.body.digest)),
            Message::Prepare(m) => (m.body.seq, Some(m.body.digest)),
            Message::Commit(m) => (m.body.seq, Some(m.body.digest)),
            Message::Checkpoint(m) => (m.body.seq, None),
            Message::ViewChange(m) => (m.body.new_view, None),
            _ => return vec![Some(message.clone()); peers],
        };
        let kind = message.kind().as_bytes();
        let drawn = Digest::of(
            "round-mutation",
            &[&self.round_salt.to_le_bytes(), kind, &round.to_le_bytes()],
        );
        let faulty = f64::from(drawn.0[0]) / 256.0 < self.drill.probability;
        let other_digest = self.last_digest;
        self.last_digest = digest.unwrap_or(other_digest);
        if !faulty || message.sender() != self.id {
            return vec![Some(message.clone()); peers];
        }
        let mutation = self.rng.random_range(0..3u8);
        let mutated = self.nudged(message, mutation, other_digest);
        (0..peers)
            .map(|_| {
                Some(if self.rng.random_bool(0.5) {
                    mutated.clone()
                } else {
                    message.clone()
                })
            })
            .collect()
    }

    /// `message` with one field nudged (which, by `mutation`), signed again with this member's key.
    fn nudged(&self, message: &Message, mutation: u8, other_digest: Digest) -> Message {
        let off_by_one = |n: u64| if mutation == 0 { n + 1 } else { n.saturating_sub(1) };
        match message {
            Message::PrePrepare(m) => {
                let mut body = m.body.clone();
                match mutation {
                    0 | 1 => body.seq = off_by_one(body.seq),
                    _ => body.view += 1,
                }
                Message::PrePrepare(Signed::new(self.id, body, &self.key))
            }
            Message::Prepare(m) => {
                let mut body = m.body;
                match mutation {
                    0 | 1 => body.seq = off_by_one(body.seq),
                    _ => body.digest = other_digest,
                }
                Message::Prepare(Signed::new(self.id, body, &self.key))
            }
            Message::Commit(m) => {
                let mut body = m.body;
                match mutation {
                    0 | 1 => body.seq = off_by_one(body.seq),
                    _ => body.digest = other_digest,
                }
                Message::Commit(Signed::new(self.id, body, &self.key))
            }
            Message::Checkpoint(m) => {
                let mut body = m.body;
                match mutation {
                    0 | 1 => body.seq = off_by_one(body.seq),
                    _ => body.state_digest = other_digest,
                }
                Message::Checkpoint(Signed::new(self.id, body, &self.key))
            }
            Message::ViewChange(m) => {
                let mut body = m.body.clone();
                match mutation {
                    0 | 1 => body.new_view = off_by_one(body.new_view),
                    _ => body.prepared.clear(),
                }
                Message::ViewChange(Signed::new(self.id, body, &self.key))
            }
            other => other.clone(),
        }
    }

    /// The reply sent to a client: a double spender signs outcomes the quorum did not reach.
    pub fn reply(&mut self, reply: Signed<Reply>) -> Signed<Reply> {
        if self.drill.fault != Fault::DoubleSpend || !self.acts() {
            return reply;
        }
        let mut body = reply.body;
        for (_, outcome) in body.outcomes.iter_mut() {
            *outcome = match outcome {
                TxOutcome::Applied => TxOutcome::Rejected(RejectReason::ZeroAmount),
                TxOutcome::Rejected(_) => TxOutcome::Applied,
            };
        }
        Signed::new(self.id, body, &self.key)
    }

    /// Conflicting versions of `message` to different peers. A proposal's other version goes to a drawn half of the
    /// peers, and its votes for that slot follow the same split, each side's backing what that side was proposed: so
    /// that two sides each gather a quorum wherever quorums are too small to intersect in an honest member. Votes
    /// for slots it did not propose two versions of conflict at random.
    fn equivocate(&mut self, message: &Message, peers: usize) -> Vec<Option<Message>> {
        let slot = match message {
            Message::PrePrepare(m) => (m.body.view, m.body.seq),
            Message::Prepare(m) => (m.body.view, m.body.seq),
            Message::Commit(m) => (m.body.view, m.body.seq),
            _ => return vec![Some(message.clone()); peers],
        };
        let known = self
            .equivocated
            .iter()
            .find(|e| e.slot == slot)
            .map(|e| (e.other_to.clone(), e.other.clone()));
        let (other_to, other) = match (known, message) {
            // One peer asks again for what it lacks of a split slot: which side it is on is not known here, and either
            // version could show it both, so it gets nothing (a Byzantine member may stay silent).
            (Some(_), _) if peers < 2 => return vec![None; peers],
            // The peers changed since the split (a reconfiguration): the split no longer says who is on which side.
            (Some((other_to, _)), _) if other_to.len() != peers => return vec![Some(message.clone()); peers],
            // A proposal sent again (a retransmission), or a vote: each side gets what it was proposed.
            (Some((other_to, other)), Message::PrePrepare(_)) => (other_to, Message::PrePrepare(other)),
            (Some((other_to, other)), _) => (other_to, self.vote_for(message, other.body.digest)),
            // An answer to one peer has no sides, and a slot is split at the fault's probability. The split itself
            // is even, so that at a probability of 1 (a scenario's member) the two sides still differ.
            (None, Message::PrePrepare(_)) if peers < 2 || !self.acts() => return vec![Some(message.clone()); peers],
            (None, Message::PrePrepare(pp)) => {
                let other = self.other_proposal(pp);
                let other_to = self.halves(peers);
                if self.equivocated.len() == EQUIVOCATED_KEPT {
                    self.equivocated.pop_front();
                }
                self.equivocated.push_back(Equivocated {
                    slot,
                    other_to: other_to.clone(),
                    other: other.clone(),
                });
                (other_to, Message::PrePrepare(other))
            }
            // A vote for a slot it did not split: a random digest, to a random set of peers.
            (None, _) => {
                let other_to = (0..peers).map(|_| self.acts()).collect();
                let other = Digest(self.rng.random());
                (other_to, self.vote_for(message, other))
            }
        };
        other_to
            .into_iter()
            .map(|to_other| Some(if to_other { other.clone() } else { message.clone() }))
            .collect()
    }

    /// A random half of `peers` (by position), the larger half when they are odd: `true` for those in it.
    fn halves(&mut self, peers: usize) -> Vec<bool> {
        let mut order: Vec<usize> = (0..peers).collect();
        order.shuffle(&mut self.rng);
        let mut in_half = vec![false; peers];
        for &i in &order[..peers.div_ceil(2)] {
            in_half[i] = true;
        }
        in_half
    }

    /// `message`, a PREPARE or COMMIT, for `digest` instead, correctly signed.
    fn vote_for(&self, message: &Message, digest: Digest) -> Message {
        match message {
            Message::Prepare(p) => Message::Prepare(Signed::new(self.id, Prepare { digest, ..p.body }, &self.key)),
            Message::Commit(c) => Message::Commit(Signed::new(self.id, Commit { digest, ..c.body }, &self.key)),
            other => other.clone(),
        }
    }

    /// Another proposal for the slot of `pp` (its batch without the last transfer), correctly signed.
    fn other_proposal(&self, pp: &Signed<PrePrepare>) -> Signed<PrePrepare> {
        let mut batch = pp.body.batch.clone();
        batch.pop();
        let body = PrePrepare {
            digest: proposal_digest(&batch, &pp.body.ops, pp.body.at_ms),
            batch,
            ..pp.body.clone()
        };
        Signed::new(self.id, body, &self.key)
    }

    /// Adds spends of spent funds to proposals, and lies about the state in checkpoints.
    fn double_spend(&mut self, message: &Message) -> Message {
        match message {
            Message::PrePrepare(pp) => {
                let mut batch = pp.body.batch.clone();
                let earlier = std::mem::replace(&mut self.proposed_before, batch.clone());
                // Spend again what an earlier proposal spent: a valid batch whose transfers were ordered before,
                // which must execute once and then be refused as reused nonces.
                if !earlier.is_empty() && (self.accomplice.is_none() || self.rng.random_bool(0.5)) {
                    batch.extend(earlier.into_iter().filter(|tx| !pp.body.batch.contains(tx)));
                    batch.truncate(self.max_batch_size);
                    let mut spends = HashSet::new();
                    batch.retain(|tx| spends.insert(tx.spend_key()));
                } else if let Some(accomplice) = &self.accomplice {
                    // Two transfers that spend the same funds, correctly signed by the accomplice.
                    for amount in [1, 2] {
                        let tx = Transfer {
                            from: accomplice.key.public(),
                            to: accomplice.payee,
                            amount,
                            nonce: pp.body.seq,
                        }
                        .sign(&accomplice.key);
                        self.forged.push(tx);
                        batch.push(tx);
                    }
                } else {
                    return message.clone();
                }
                let body = PrePrepare {
                    digest: proposal_digest(&batch, &pp.body.ops, pp.body.at_ms),
                    batch,
                    ..pp.body.clone()
                };
                Message::PrePrepare(Signed::new(self.id, body, &self.key))
            }
            Message::Checkpoint(c) => {
                let body = Checkpoint {
                    state_digest: Digest(self.rng.random()),
                    ..c.body
                };
                Message::Checkpoint(Signed::new(self.id, body, &self.key))
            }
            other => other.clone(),
        }
    }
}

/// An empty batch proposed for `(view, seq)`: what a member that proposes out of turn signs (what matters is who
/// signed it, not what it holds).
fn empty_proposal(view: View, seq: Seq) -> PrePrepare {
    PrePrepare {
        view,
        seq,
        digest: proposal_digest(&[], &[], 0),
        batch: Vec::new(),
        ops: Vec::new(),
        at_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(nonce: u64) -> SignedTransfer {
        let payer = KeyPair::from_secret([9; 32]);
        Transfer {
            from: payer.public(),
            to: KeyPair::from_secret([8; 32]).public(),
            amount: 1,
            nonce,
        }
        .sign(&payer)
    }

    /// The equivocating-primary scenario once never split a slot: at the probability of 1 its member plays, every
    /// backup got the same other version. The split is now two halves, followed by the slot's votes and resends.
    #[test]
    fn an_equivocating_member_splits_each_slot_into_halves_its_votes_follow() {
        let key = KeyPair::from_secret([1; 32]);
        let drill = FaultDrill::new(Fault::Equivocation, 1.0).unwrap();
        let mut saboteur = Saboteur::new(drill, 1, key.clone(), 7, 8);
        let batch = vec![transfer(1), transfer(2)];
        let body = PrePrepare {
            view: 0,
            seq: 1,
            digest: proposal_digest(&batch, &[], 5),
            batch,
            ops: Vec::new(),
            at_ms: 5,
        };
        let original = Message::PrePrepare(Signed::new(1, body.clone(), &key));
        let digest_of = |m: &Option<Message>| match m {
            Some(Message::PrePrepare(pp)) => pp.body.digest,
            Some(Message::Commit(c)) => c.body.digest,
            other => panic!("unexpected {other:?}"),
        };
        let copies = saboteur.outgoing(&original, 6);
        let other_side: Vec<bool> = copies.iter().map(|m| digest_of(m) != body.digest).collect();
        assert_eq!(other_side.iter().filter(|o| **o).count(), 3, "{other_side:?}");
        let other_digest = copies.iter().map(&digest_of).find(|d| *d != body.digest).unwrap();

        // A resend to everyone goes to each side as before; each side gets COMMITs for its own version.
        let resent: Vec<Digest> = saboteur.outgoing(&original, 6).iter().map(&digest_of).collect();
        assert_eq!(resent, copies.iter().map(&digest_of).collect::<Vec<_>>());
        let commit = Message::Commit(Signed::new(
            1,
            Commit {
                view: 0,
                seq: 1,
                digest: body.digest,
            },
            &key,
        ));
        let votes: Vec<Digest> = saboteur.outgoing(&commit, 6).iter().map(&digest_of).collect();
        let expected: Vec<Digest> = other_side
            .iter()
            .map(|&o| if o { other_digest } else { body.digest })
            .collect();
        assert_eq!(votes, expected);

        // One peer asking again about the split slot gets nothing: either version could show it both.
        assert_eq!(saboteur.outgoing(&original, 1), vec![None]);
    }
}
