//! What a replica must not forget across a crash, and how it is folded together.
//!
//! The replica emits `Output::Persist(Entry)`; a host appends entries to durable storage before it sends
//! anything that follows them, and on restart folds them into a `Durable` with `apply` (which also drops
//! what a newer stable checkpoint made obsolete) and hands it to `Replica::recover`. What is kept:
//! - every protocol message the replica signed, so that after a restart it never signs a conflicting one;
//! - its prepared certificates, which a later VIEW-CHANGE must carry for safety;
//! - its view, and the NEW-VIEW that installed it;
//! - the latest stable checkpoint with the ledger snapshot it certifies;
//! - the VIEW-CHANGEs members withdrew (its own included), which it promised to count for nothing.
//!
//! Executed batches above the checkpoint are not kept: after a restart they are executed again from the
//! proofs peers send, which yields the same state because execution is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use crate::crypto::Digest;

use serde::{Deserialize, Serialize};

use crate::messages::*;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    Sent(Message),
    Prepared(PreparedCert),
    NewView(Signed<NewView>),
    Checkpoint {
        cert: CheckpointCert,
        snapshot: Vec<u8>,
    },
    /// A member's withdrawal of its VIEW-CHANGEs, held before acknowledging it (or, for this replica's own, before
    /// voting again).
    Rejoin(Signed<Rejoin>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    pub view: View,
    pub view_active: bool,
    pub new_view: Option<Signed<NewView>>,
    pub view_change: Option<Signed<ViewChange>>,
    pub checkpoint: Option<(CheckpointCert, Vec<u8>)>,
    pub prepared: BTreeMap<Seq, PreparedCert>,
    /// Signed PRE-PREPAREs, PREPAREs and COMMITs above the stable checkpoint.
    pub sent: Vec<Message>,
    /// Every VIEW-CHANGE this replica signed for a view above the last one it installed, by view and
    /// `view_change_id` (withdrawn or not; see `withdrawn`): what it takes back to vote again in that view.
    pub view_changes_signed: Vec<(View, Digest)>,
    /// Each member's withdrawn VIEW-CHANGEs (view, `view_change_id`) for the view active here and later ones.
    pub withdrawn: BTreeMap<ReplicaId, BTreeSet<(View, Digest)>>,
    /// This replica's own withdrawal, sent and not yet held by a quorum: members that hold it refuse what it
    /// withdraws, so after a restart this replica must not stand on that either (it sends it again instead).
    pub rejoin_under_way: Option<Signed<Rejoin>>,
}

impl Default for Durable {
    /// A replica that has persisted nothing: in view 0, at the genesis.
    fn default() -> Durable {
        Durable {
            view: 0,
            view_active: true,
            new_view: None,
            view_change: None,
            checkpoint: None,
            prepared: BTreeMap::new(),
            sent: Vec::new(),
            view_changes_signed: Vec::new(),
            withdrawn: BTreeMap::new(),
            rejoin_under_way: None,
        }
    }
}

impl Durable {
    pub fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Sent(Message::ViewChange(vc)) => {
                self.view_changes_signed.push((vc.body.new_view, view_change_id(&vc)));
                if vc.body.new_view > self.view || (vc.body.new_view == self.view && !self.view_active) {
                    self.view = vc.body.new_view;
                    self.view_active = false;
                    self.view_change = Some(vc);
                }
            }
            Entry::Sent(Message::NewView(nv)) | Entry::NewView(nv) => self.enter_new_view(nv),
            // Sent once it went back to the view it withdraws from.
            Entry::Sent(Message::Rejoin(rejoin)) => {
                self.view = rejoin.body.view;
                self.view_active = true;
                self.rejoin_under_way = Some(rejoin);
            }
            Entry::Sent(message) => {
                if matches!(
                    message,
                    Message::PrePrepare(_) | Message::Prepare(_) | Message::Commit(_)
                ) {
                    self.sent.push(message);
                }
            }
            Entry::Prepared(cert) => {
                let seq = cert.seq();
                if self.checkpoint_seq() < seq && self.prepared.get(&seq).is_none_or(|c| c.view() <= cert.view()) {
                    self.prepared.insert(seq, cert);
                }
            }
            Entry::Rejoin(rejoin) => {
                let member = rejoin.from;
                let withdrawn = &rejoin.body.withdrawn;
                self.withdrawn
                    .entry(member)
                    .or_default()
                    .extend(withdrawn.iter().copied());
                // This replica's own (persisted once a quorum holds it): it is back in the view it left, and what it
                // withdrew is no longer its word.
                if let Some(vc) = &self.view_change
                    && vc.from == member
                    && withdrawn.contains(&(vc.body.new_view, view_change_id(vc)))
                {
                    self.view_change = None;
                    self.view = rejoin.body.view;
                    self.view_active = true;
                }
                if self.rejoin_under_way.as_ref().is_some_and(|own| own.from == member) {
                    self.rejoin_under_way = None;
                }
            }
            Entry::Checkpoint { cert, snapshot } => {
                if cert.seq > self.checkpoint_seq() {
                    let seq = cert.seq;
                    self.checkpoint = Some((cert, snapshot));
                    self.prepared = self.prepared.split_off(&(seq + 1));
                    self.sent.retain(|m| message_seq(m).is_none_or(|s| s > seq));
                }
            }
        }
    }

    fn enter_new_view(&mut self, nv: Signed<NewView>) {
        let view = nv.body.view;
        if view > self.view || (view == self.view && !self.view_active) {
            self.view = view;
            self.view_active = true;
            self.new_view = Some(nv);
            // Votes of earlier views can no longer conflict with anything this replica will sign.
            self.sent.retain(|m| message_view(m).is_none_or(|v| v >= view));
            self.view_changes_signed.retain(|(v, _)| *v > view);
            // A NEW-VIEW for an earlier view is never installed again.
            for withdrawn in self.withdrawn.values_mut() {
                withdrawn.retain(|(v, _)| *v >= view);
            }
            self.withdrawn.retain(|_, withdrawn| !withdrawn.is_empty());
        }
    }

    pub fn checkpoint_seq(&self) -> Seq {
        self.checkpoint.as_ref().map_or(0, |(cert, _)| cert.seq)
    }
}

fn message_seq(message: &Message) -> Option<Seq> {
    match message {
        Message::PrePrepare(m) => Some(m.body.seq),
        Message::Prepare(m) => Some(m.body.seq),
        Message::Commit(m) => Some(m.body.seq),
        _ => None,
    }
}

fn message_view(message: &Message) -> Option<View> {
    match message {
        Message::PrePrepare(m) => Some(m.body.view),
        Message::Prepare(m) => Some(m.body.view),
        Message::Commit(m) => Some(m.body.view),
        _ => None,
    }
}
