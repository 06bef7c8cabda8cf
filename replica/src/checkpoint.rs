//! Checkpoints, garbage collection, and how a replica that fell behind catches up.
//!
//! Every `checkpoint_interval` sequence numbers a replica signs the digest of its ledger. A quorum of
//! matching CHECKPOINTs makes it stable: the log at and below it is dropped and the watermarks advance.
//!
//! Catching up is driven by STATUS messages: each replica periodically says how far it is, and a peer that
//! is ahead answers with what it lacks: the NEW-VIEW of a later view, proofs of committed batches, its own
//! votes for batches not yet committed, or the ledger at its stable checkpoint (state transfer, verified
//! against the checkpoint's quorum of signatures). This also retransmits whatever the network lost.
//!
//! State transfer goes in chunks, because a ledger of a few hundred thousand accounts is larger than any one
//! message may be. The state digest a checkpoint signs is that of the snapshot's `Manifest`: the small head (the
//! governance), the body's length and the digest of each `STATE_CHUNK_BYTES` chunk of the body (the accounts).
//! Each StateTransfer message carries the certificate, the manifest and one chunk: the verifier checks the
//! signatures and that the manifest is the certified one; the core checks the chunk against the manifest before
//! keeping it, so a wrong chunk is refused and changes nothing. The lagging member drives it: its STATUS names the
//! first chunk it lacks and which of the `STATE_CHUNK_WINDOW` chunks from there it holds; the peers that are ahead
//! split the chunks it lacks in that window among them, each peer a different share of `STATE_CHUNKS_PER_ANSWER`
//! (by its rank, shifted by the STATUS's `round`), so a round of STATUS brings up to (N-1) x that many, none twice
//! and none it holds. Up to F peers may be down or lie: when the first chunk it lacks did not come within a status
//! interval, the member moves `round` on, and the share that peer served goes to another (a down lowest-ranked
//! peer used to stop the transfer for good); a chunk that does not match the certified manifest is refused, and,
//! signed by its sender, is proof against it (`Evidence::BadStateChunk`). What one STATUS can draw is bounded: at
//! most `STATE_CHUNKS_PER_ANSWER` chunks from each peer, only chunks it says it lacks within the window, each from
//! one peer, and a peer answers one member at most once per half status interval. It keeps one transfer under
//! way, for one certified checkpoint, in one buffer of that state's size: a peer cannot make it hold anything a
//! quorum did not certify (a later certified checkpoint replaces it). Once every chunk is in, the assembled
//! snapshot is adopted exactly as a whole one was: the cross-epoch rules below, then `make_stable`.
//! The manifest is a flat list rather than a Merkle tree, because 32 bytes per MiB of state fits every message
//! whole (see `ledger::Manifest`), and then a chunk needs no proof of its own.

use crate::crypto::Digest;
use crate::durable::Entry;
use crate::governance::{Governance, Operation};
use crate::ledger::{Ledger, Manifest};
use crate::messages::*;
use crate::replica::{Event, Output, Replica, Timer};
use crate::verify::Rejection;

/// The most committed batches sent to one lagging peer per STATUS, so one answer stays bounded.
const CATCH_UP_BATCHES_MAX: u64 = 64;

/// The most state-transfer chunks (each one message of at most `STATE_CHUNK_BYTES` of state) one peer sends a
/// lagging one per STATUS: 4 MiB an answer, so an answer never crowds out the protocol's other messages for long.
pub const STATE_CHUNKS_PER_ANSWER: usize = 4;

/// How far past its first missing chunk a member says which chunks it holds (the bits of `ChunksWanted::held`): one
/// STATUS draws at most this many chunks from the whole cluster, whatever its size.
pub const STATE_CHUNK_WINDOW: usize = 64;

// A chunk, its manifest and certificate always fit in a message every member accepts: the manifest takes 32 bytes
// per MiB of state, so even a TiB of state leaves room.
const _: () = assert!(crate::ledger::STATE_CHUNK_BYTES * 4 <= MAX_MESSAGE_BYTES);

/// The membership a state's head (its governance) holds, if it decodes and is a valid one.
pub(crate) fn head_membership(head: &[u8]) -> Option<crate::config::Membership> {
    let governance: Governance = postcard::from_bytes(head).ok()?;
    crate::config::Membership::new(governance.members).ok()
}

/// The state-transfer side of a replica: the one transfer it is fetching, and the manifest of the state it serves.
#[derive(Default)]
pub(crate) struct StateTransfers {
    fetching: Option<Fetch>,
    /// The manifest of the stable checkpoint's snapshot, computed once per checkpoint, not per answer.
    serving: Option<(Seq, Digest, Manifest)>,
    /// How the peers' shares are shifted (`ChunksWanted::round`), and what the last STATUS asked for (checkpoint and
    /// first missing chunk): the same request a status interval later means the peer serving the first chunk failed.
    /// Kept outside the transfer, because before its first chunk arrives there is none, and that chunk may be the
    /// one a silent peer should have sent.
    round: u32,
    asked: Option<(Seq, u32)>,
    /// The last chunk refused as not the certified one, kept (one message) for the detection policy to take as
    /// proof against its signer (`refused_state_chunk`); cleared by the next state transfer and each status timer.
    refused: Option<Signed<StateTransfer>>,
}

/// A state transfer under way: a certified checkpoint and its snapshot as far as it arrived.
struct Fetch {
    checkpoint: CheckpointCert,
    manifest: Manifest,
    /// Length prefix and head in place; each chunk is written where it belongs in the body.
    snapshot: Vec<u8>,
    held: Vec<bool>,
    missing: usize,
}

impl Fetch {
    fn first_missing(&self) -> usize {
        self.held.iter().position(|held| !held).unwrap_or(0)
    }

    /// What to ask for: the first missing chunk, and which chunks of the window from there are held.
    fn wanted(&self, round: u32) -> ChunksWanted {
        let first = self.first_missing();
        let held = (0..STATE_CHUNK_WINDOW)
            .filter(|i| self.held.get(first + i) == Some(&true))
            .fold(0u64, |bits, i| bits | 1 << i);
        ChunksWanted {
            seq: self.checkpoint.seq,
            first: first as u32,
            held,
            round,
        }
    }
}

impl Replica {
    /// The state transfer under way: the checkpoint it is for, and how many of its chunks arrived of how many.
    pub fn state_transfer_progress(&self) -> Option<(Seq, usize, usize)> {
        let f = self.state_transfers.fetching.as_ref()?;
        Some((f.checkpoint.seq, f.held.len() - f.missing, f.held.len()))
    }

    /// The state-transfer message the core refused last because its chunk is not the one its certified manifest
    /// names: signed by its sender, it is proof against it (`Evidence::BadStateChunk`).
    pub fn refused_state_chunk(&self) -> Option<&Signed<StateTransfer>> {
        self.state_transfers.refused.as_ref()
    }

    pub(crate) fn take_checkpoint(&mut self, seq: Seq) {
        let snapshot = crate::governance::state_snapshot(&self.ledger, &self.governance);
        let state_digest = Ledger::snapshot_digest(&snapshot);
        self.own_checkpoints.insert(seq, (state_digest, snapshot));
        let vote = self.sign(Checkpoint { seq, state_digest });
        self.checkpoint_votes
            .entry(seq)
            .or_default()
            .insert(self.id, vote.clone());
        self.out.push(Output::Broadcast(Message::Checkpoint(vote)));
        self.check_stable(seq);
    }

    pub(crate) fn on_checkpoint(&mut self, c: Signed<Checkpoint>) -> Result<(), Rejection> {
        let seq = c.body.seq;
        if seq == self.stable.seq && seq > 0 && c.body.state_digest != self.stable.state_digest {
            // Signed, and contradicting the quorum's certificate: proof that the member executed differently.
            self.out.push(Output::Event(Event::DivergentCheckpoint {
                checkpoint: c,
                certificate: self.stable.clone(),
            }));
            return Ok(());
        }
        if seq <= self.stable.seq {
            return Err(Rejection::Duplicate);
        }
        self.check_watermarks(seq)?;
        if seq % self.params.checkpoint_interval != 0 {
            return Err(Rejection::OutsideWatermarks {
                seq,
                low: self.stable.seq,
                high: self.high_watermark(),
            });
        }
        let votes = self.checkpoint_votes.entry(seq).or_default();
        if let Some(existing) = votes.get(&c.from) {
            return Err(if existing.body == c.body {
                Rejection::Duplicate
            } else {
                Rejection::Equivocation
            });
        }
        votes.insert(c.from, c);
        self.check_stable(seq);
        // A new stable checkpoint raises the high watermark: the primary may propose again.
        self.try_propose();
        Ok(())
    }

    /// A checkpoint is stable once a quorum signed the same state digest for it.
    fn check_stable(&mut self, seq: Seq) {
        let Some(votes) = self.checkpoint_votes.get(&seq) else {
            return;
        };
        let quorum = self.membership.quorum();
        let mut by_digest: std::collections::BTreeMap<_, Vec<Signed<Checkpoint>>> = Default::default();
        // Only the members in force certify: a member removed at this boundary still takes the checkpoint and
        // votes for it, but a certificate counting its vote is one the new epoch refuses (in VIEW-CHANGEs, and
        // in state transfers to the members that would then hold it).
        for vote in votes.values().filter(|vote| self.membership.contains(vote.from)) {
            by_digest.entry(vote.body.state_digest).or_default().push(vote.clone());
        }
        let Some(state_digest) = by_digest.iter().find(|(_, v)| v.len() >= quorum).map(|(d, _)| *d) else {
            return;
        };
        let mut proof = Vec::new();
        let mut divergent = Vec::new();
        for (digest, votes) in by_digest {
            if digest == state_digest {
                proof = votes;
            } else {
                divergent.extend(votes);
            }
        }
        let cert = CheckpointCert {
            seq,
            state_digest,
            proof,
        };
        match self.own_checkpoints.get(&seq) {
            Some((own, snapshot)) if *own == state_digest => {
                let snapshot = snapshot.clone();
                // Reported once, as the checkpoint becomes stable (until then this may run again for each vote).
                self.out.extend(divergent.into_iter().map(|checkpoint| {
                    Output::Event(Event::DivergentCheckpoint {
                        checkpoint,
                        certificate: cert.clone(),
                    })
                }));
                self.make_stable(cert, snapshot);
            }
            Some(_) => {
                // This replica's state differs from the quorum's. It stops here and takes theirs; the STATUS
                // exchange brings a state transfer because peers see it is behind their stable checkpoint.
                self.out.push(Output::Event(Event::StateDiverged { seq }));
                self.own_checkpoints.remove(&seq);
            }
            None => {} // Not executed this far yet: peers send state or batches when they see its STATUS.
        }
    }

    /// Adopts a stable checkpoint: persists it, drops the log at and below it, and advances the watermarks.
    pub(crate) fn make_stable(&mut self, cert: CheckpointCert, snapshot: Vec<u8>) {
        let seq = cert.seq;
        self.out.push(Output::Persist(Entry::Checkpoint {
            cert: cert.clone(),
            snapshot: snapshot.clone(),
        }));
        self.stable = cert;
        self.stable_snapshot = snapshot;
        self.log = self.log.split_off(&seq.saturating_add(1));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&seq.saturating_add(1));
        self.own_checkpoints = self.own_checkpoints.split_off(&seq.saturating_add(1));
        self.out.push(Output::Event(Event::CheckpointStable { seq }));
    }

    /// Tells every peer how far this replica is, and whether it suspects the primary of its view.
    pub(crate) fn broadcast_status(&mut self) {
        let status = self.sign(Status {
            view: self.view,
            view_active: self.view_active,
            last_executed: self.last_executed,
            stable_seq: self.stable.seq,
            suspects: self.suspects(),
            fetching: Some(self.chunks_wanted()),
            new_view: self
                .new_view_id
                .filter(|_| self.view_active && self.new_view.as_ref().is_some_and(|nv| nv.body.view == self.view)),
        });
        self.out.push(Output::Broadcast(Message::Status(status)));
    }

    /// What this replica's STATUS asks of the state transfer: the transfer under way, or (seq 0) the start of one.
    fn chunks_wanted(&self) -> ChunksWanted {
        let round = self.state_transfers.round;
        match &self.state_transfers.fetching {
            Some(fetch) => fetch.wanted(round),
            None => ChunksWanted {
                seq: 0,
                first: 0,
                held: 0,
                round,
            },
        }
    }

    pub(crate) fn on_status_timer(&mut self) {
        // A transfer overtaken (the replica executed that far by other means) is dropped, and its memory with it.
        if self
            .state_transfers
            .fetching
            .as_ref()
            .is_some_and(|f| f.checkpoint.seq <= self.last_executed)
        {
            self.state_transfers.fetching = None;
        }
        self.state_transfers.refused = None;
        // The timeout of a state transfer: a status interval in which its first missing chunk did not come. The
        // peer whose share holds it is down, slow or lying; shifting the shares hands it to the next peer, so up
        // to F such peers cost up to F intervals. (Also shifted while no transfer is under way: harmless, since
        // only a member behind its peers' stable checkpoint is sent chunks, and needed before the first chunk.)
        let wanted = self.chunks_wanted();
        let asking = (wanted.seq, wanted.first);
        if self.state_transfers.asked == Some(asking) {
            self.state_transfers.round = self.state_transfers.round.wrapping_add(1);
        }
        self.state_transfers.asked = Some(asking);
        self.broadcast_status();
        // Operations still waiting to be ordered go out again: the primary may have lost them.
        let waiting: Vec<Operation> = self
            .pending_ops
            .iter()
            .filter(|(_, _, arrived_ms)| arrived_ms + self.params.status_interval_ms <= self.now_ms)
            .map(|(_, op, _)| op.clone())
            .collect();
        for op in waiting {
            let relay = Message::Operation {
                from: self.id,
                op: Box::new(op),
            };
            self.out.push(Output::Broadcast(relay));
        }
        self.relay_waiting_requests();
        self.try_rejoin();
        self.out.push(Output::SetTimer {
            timer: Timer::Status,
            after_ms: self.params.status_interval_ms,
        });
        // An idle primary still has a reason to propose when a quarantine has run out by its clock.
        self.try_propose();
    }

    /// Answers a peer's STATUS with what it is missing. At most one answer per peer per half status interval,
    /// so a peer that floods STATUS gets no more from this replica than an honest one.
    pub(crate) fn on_status(&mut self, s: Signed<Status>) -> Result<(), Rejection> {
        let peer = s.from;
        let s = s.body;
        // A suspicion counts whenever it arrives; what is served in answer is rate-limited below.
        let suspicion_changed = self.note_suspicion(peer, &s);
        match s.new_view.filter(|_| s.view_active && peer != self.id) {
            Some(id) => self.installed_by_peer.insert(peer, (s.view, id)),
            None => self.installed_by_peer.remove(&peer),
        };
        if suspicion_changed {
            self.check_suspicions();
        }
        let min_gap = self.params.status_interval_ms / 2;
        if let Some(last) = self.last_status_served.get(&peer)
            && self.now_ms < last + min_gap
        {
            return if suspicion_changed {
                Ok(())
            } else {
                Err(Rejection::Duplicate)
            };
        }
        self.last_status_served.insert(peer, self.now_ms);

        if !self.view_active {
            // Changing views: the peer needs this replica's VIEW-CHANGE if it is not past this view.
            if s.view <= self.view
                && let Some(vc) = self
                    .view_changes
                    .get(&self.id)
                    .filter(|vc| vc.body.new_view == self.view)
            {
                self.send(peer, Message::ViewChange(vc.clone()));
            }
        } else if s.view < self.view || !s.view_active {
            // Behind, or changing views (possibly past this one, having given up on its NEW-VIEW just before it
            // arrived): the NEW-VIEW of the view this replica works in.
            if let Some(nv) = self.new_view.clone().filter(|nv| nv.body.view == self.view) {
                self.send(peer, Message::NewView(nv));
            }
        }

        // Executed batches the peer lacks: the state at the stable checkpoint if the log no longer has them,
        // then proofs that the batches above it committed.
        if s.last_executed < self.last_executed {
            let mut from = s.last_executed;
            let mut state_complete = true;
            if s.last_executed < self.stable.seq {
                state_complete = self.send_state_chunks(peer, s.fetching);
                from = self.stable.seq;
            }
            // Proofs of the batches above the checkpoint are of use only once the peer has the state below them.
            let upto = if state_complete {
                self.last_executed.min(from + CATCH_UP_BATCHES_MAX)
            } else {
                from
            };
            for seq in from + 1..=upto {
                if let Some(cert) = self.log.get(&seq).and_then(|slot| slot.committed.clone()) {
                    self.send(peer, Message::Committed(cert));
                }
            }
        }

        // This replica's own votes for batches not yet executed, in case the peer lost them; only to a peer
        // that executed nothing since its last STATUS, so a cluster that makes progress does not pay for it.
        let stalled = self
            .peer_executed
            .insert(peer, s.last_executed)
            .is_some_and(|before| before >= s.last_executed);
        if stalled && self.view_active && s.view == self.view && s.view_active {
            let mut resend = Vec::new();
            let low = s.last_executed.max(self.last_executed);
            for (_, slot) in self.log.range(low.saturating_add(1)..) {
                if slot.view != self.view {
                    continue;
                }
                if let Some(pp) = slot.pre_prepare.as_ref().filter(|pp| pp.from == self.id) {
                    resend.push(Message::PrePrepare(pp.clone()));
                }
                if let Some(p) = slot.prepares.get(&self.id) {
                    resend.push(Message::Prepare(p.clone()));
                }
                if let Some(c) = slot.commits.get(&self.id) {
                    resend.push(Message::Commit(c.clone()));
                }
            }
            for message in resend {
                self.send(peer, message);
            }
        }

        // Checkpoints the peer has not seen become stable, in any view: the proof of this replica's stable
        // checkpoint, and its own votes above it. Without them a peer that executed far enough could not
        // advance its watermarks to accept the proofs of later batches.
        let mut votes: Vec<Signed<Checkpoint>> = Vec::new();
        if s.stable_seq < self.stable.seq {
            votes.extend(self.stable.proof.iter().filter(|vote| vote.from != peer).cloned());
        }
        if stalled {
            let above = s.stable_seq.max(self.stable.seq);
            let own = self
                .checkpoint_votes
                .range(above.saturating_add(1)..)
                .filter_map(|(_, v)| v.get(&self.id).cloned());
            votes.extend(own);
        }
        for vote in votes {
            self.send(peer, Message::Checkpoint(vote));
        }
        Ok(())
    }

    fn send(&mut self, to: ReplicaId, message: Message) {
        self.out.push(Output::Send { to, message });
    }

    /// Sends a lagging peer this replica's share of the chunks of the stable checkpoint's state it lacks: of the
    /// chunks it lacks within the window its STATUS names, the run of `STATE_CHUNKS_PER_ANSWER` at this replica's
    /// place among the peers (by rank, shifted by the STATUS's round). Whether the peer may then hold the whole state
    /// (this share ends with the last chunk it lacks).
    fn send_state_chunks(&mut self, peer: ReplicaId, wanted: Option<ChunksWanted>) -> bool {
        let (seq, digest) = (self.stable.seq, self.stable.state_digest);
        if self
            .state_transfers
            .serving
            .as_ref()
            .is_none_or(|(s, d, _)| (*s, *d) != (seq, digest))
        {
            // Every state snapshot has one (`governance::state_snapshot` makes them all).
            let Some(manifest) = Manifest::of(&self.stable_snapshot) else {
                return true;
            };
            self.state_transfers.serving = Some((seq, digest, manifest));
        }
        let Some((_, _, manifest)) = self.state_transfers.serving.as_ref() else {
            return true;
        };
        let count = manifest.chunks.len();
        // A request about another checkpoint (or none yet) starts from the beginning of this one.
        let (first, held, round) = match wanted {
            Some(w) if w.seq == seq => ((w.first as usize).min(count - 1), w.held, w.round),
            Some(w) => (0, 0, w.round),
            None => (0, 0, 0),
        };
        let lacking: Vec<usize> = (first..count.min(first + STATE_CHUNK_WINDOW))
            .filter(|index| held & (1 << (index - first)) == 0)
            .collect();
        // Peers other than the lagging one, in membership order: each sends a different share.
        let peers = self.membership.ids().filter(|id| *id != peer).count().max(1);
        let rank = self
            .membership
            .ids()
            .filter(|id| *id != peer)
            .position(|id| id == self.id)
            .unwrap_or(0);
        let place = (rank + round as usize) % peers;
        let share: Vec<usize> = lacking
            .iter()
            .copied()
            .skip(place * STATE_CHUNKS_PER_ANSWER)
            .take(STATE_CHUNKS_PER_ANSWER)
            .collect();
        let offset = manifest.body_offset();
        let transfers: Vec<StateTransfer> = share
            .iter()
            .map(|&index| {
                let range = manifest.chunk_range(index);
                StateTransfer {
                    checkpoint: self.stable.clone(),
                    manifest: manifest.clone(),
                    index: index as u32,
                    chunk: self.stable_snapshot[offset + range.start..offset + range.end].to_vec(),
                }
            })
            .collect();
        for transfer in transfers {
            let signed = self.sign(transfer);
            self.send(peer, Message::StateTransfer(signed));
        }
        first + STATE_CHUNK_WINDOW >= count && share.last().is_some_and(|last| Some(last) == lacking.last())
    }

    /// A chunk of the state at a stable checkpoint this replica has not reached. The verifier checked the
    /// signatures and that the manifest is the certified one; the chunk is checked here, against the manifest,
    /// before anything is kept. The last chunk in completes the snapshot, which is then adopted.
    pub(crate) fn on_state_transfer(&mut self, st: Signed<StateTransfer>) -> Result<(), Rejection> {
        self.state_transfers.refused = None;
        if st.body.checkpoint.seq <= self.last_executed {
            return Err(Rejection::Duplicate);
        }
        if let Err(reason) = st.body.manifest.check_chunk(st.body.index as usize, &st.body.chunk) {
            // Kept for the detection policy: its sender signed a chunk its own manifest contradicts.
            self.state_transfers.refused = Some(st);
            return Err(Rejection::StateChunk(reason));
        }
        let StateTransfer {
            checkpoint,
            manifest,
            index,
            chunk,
        } = st.body;
        let index = index as usize;
        let range = manifest.chunk_range(index);
        let governance: Governance =
            postcard::from_bytes(&manifest.head).map_err(|_| Rejection::BadCertificate("state transfer snapshot"))?;
        self.check_transfer_epoch(&checkpoint, &governance)?;
        match &self.state_transfers.fetching {
            Some(f) if f.checkpoint.seq == checkpoint.seq && f.checkpoint.state_digest == checkpoint.state_digest => {
                if f.held[index] {
                    return Err(Rejection::Duplicate);
                }
            }
            // One transfer at a time: an earlier checkpoint's chunks (or a contradicting one's) wait, a later
            // certified one replaces it (the cluster moved on; its state is the one to fetch).
            Some(f) if f.checkpoint.seq >= checkpoint.seq => {
                return Err(Rejection::StateChunk("a transfer of another checkpoint is under way"));
            }
            _ => {
                let count = manifest.chunks.len();
                self.state_transfers.fetching = Some(Fetch {
                    snapshot: manifest.empty_snapshot(),
                    checkpoint: checkpoint.clone(),
                    manifest,
                    held: vec![false; count],
                    missing: count,
                });
            }
        }
        let fetch = self.state_transfers.fetching.as_mut().expect("set above");
        let offset = fetch.manifest.body_offset();
        fetch.snapshot[offset + range.start..offset + range.end].copy_from_slice(&chunk);
        fetch.held[index] = true;
        fetch.missing -= 1;
        if fetch.missing > 0 {
            return Ok(());
        }
        let fetch = self.state_transfers.fetching.take().expect("complete");
        debug_assert_eq!(Ledger::snapshot_digest(&fetch.snapshot), fetch.checkpoint.state_digest);
        self.adopt_state(checkpoint, fetch.snapshot)
    }

    /// The certificate becomes this replica's stable checkpoint, which its VIEW-CHANGEs carry: across an epoch it
    /// must be one the new membership made. One the previous membership made (it verified against that) would make
    /// every VIEW-CHANGE of this replica refused; another peer sends a usable one.
    fn check_transfer_epoch(&self, checkpoint: &CheckpointCert, governance: &Governance) -> Result<(), Rejection> {
        if governance.epoch == self.governance.epoch {
            return Ok(());
        }
        let next = governance.membership();
        let signers: std::collections::BTreeSet<ReplicaId> = checkpoint
            .proof
            .iter()
            .map(|vote| vote.from)
            .filter(|id| next.contains(*id))
            .collect();
        if signers.len() < next.quorum() {
            return Err(Rejection::BadCertificate("state transfer from an earlier epoch"));
        }
        Ok(())
    }

    /// Takes the state of a certified checkpoint, assembled whole, as this replica's.
    fn adopt_state(&mut self, checkpoint: CheckpointCert, snapshot: Vec<u8>) -> Result<(), Rejection> {
        let (ledger, governance) = crate::governance::restore_state(&snapshot, self.supply)
            .map_err(|_| Rejection::BadCertificate("state transfer snapshot"))?;
        self.check_transfer_epoch(&checkpoint, &governance)?;
        let new_epoch = governance.epoch != self.governance.epoch;
        let seq = checkpoint.seq;
        self.ledger = ledger;
        let removed: Vec<ReplicaId> = self
            .membership
            .ids()
            .filter(|id| !governance.members.iter().any(|m| m.id == *id))
            .collect();
        self.governance = governance;
        if new_epoch {
            self.adopt_membership(seq, removed);
        }

        self.last_executed = seq;
        self.next_seq = self.next_seq.max(seq);
        self.stats.state_transfers += 1;
        self.prune_stale_pending();
        self.proposed.clear();
        self.out.push(Output::Event(Event::StateTransferred { seq }));
        self.make_stable(checkpoint, snapshot);
        let above: Vec<_> = self.log.values().filter_map(|slot| slot.pre_prepare.clone()).collect();
        for pp in above {
            self.note_proposed(&pp.body);
        }
        self.try_execute();
        self.try_propose();
        Ok(())
    }
}
