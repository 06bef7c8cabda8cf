//! State transfer: how a replica behind the stable checkpoint fetches the certified state, in chunks.
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
use crate::governance::Governance;
use crate::ledger::{Ledger, Manifest};
use crate::messages::*;
use crate::replica::{Event, Output, Replica};
use crate::verify::Rejection;

/// The most state-transfer chunks (each one message of at most `STATE_CHUNK_BYTES` of state) one peer sends a
/// lagging one per STATUS: 4 MiB an answer, so an answer never crowds out the protocol's other messages for long.
pub const STATE_CHUNKS_PER_ANSWER: usize = 4;

/// How far past its first missing chunk a member says which chunks it holds (the bits of `ChunksWanted::held`): one
/// STATUS draws at most this many chunks from the whole cluster, whatever its size.
pub const STATE_CHUNK_WINDOW: usize = 64;

// A chunk, its manifest and certificate always fit in a message every member accepts: the manifest takes 32 bytes
// per MiB of state, so even a TiB of state leaves room.
const _: () = assert!(crate::ledger::STATE_CHUNK_BYTES * 4 <= MAX_MESSAGE_BYTES);

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

    /// What this replica's STATUS asks of the state transfer: the transfer under way, or (seq 0) the start of one.
    pub(crate) fn chunks_wanted(&self) -> ChunksWanted {
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

    /// Each status interval: a transfer overtaken (the replica executed that far by other means) is dropped, and
    /// its memory with it; and the transfer's timeout.
    pub(crate) fn pace_state_transfer(&mut self) {
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
    }

    /// Sends a lagging peer this replica's share of the chunks of the stable checkpoint's state it lacks: of the
    /// chunks it lacks within the window its STATUS names, the run of `STATE_CHUNKS_PER_ANSWER` at this replica's
    /// place among the peers (by rank, shifted by the STATUS's round). Whether the peer may then hold the whole state
    /// (this share ends with the last chunk it lacks).
    pub(crate) fn send_state_chunks(&mut self, peer: ReplicaId, wanted: Option<ChunksWanted>) -> bool {
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
