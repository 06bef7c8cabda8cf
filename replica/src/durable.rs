//! What a replica must not forget across a crash, and how it is folded together.
//!
//! The replica emits `Output::Persist(Entry)`; a host appends entries to durable storage before it sends
//! anything that follows them, and on restart folds them into a `Durable` with `apply` (which also drops
//! what a newer stable checkpoint made obsolete) and hands it to `Replica::recover`. What is kept:
//! - every protocol message the replica signed, so that after a restart it never signs a conflicting one;
//! - its prepared certificates, which a later VIEW-CHANGE must carry for safety;
//! - its view, and the NEW-VIEW that installed it;
//! - the latest stable checkpoint with the ledger snapshot it certifies.
//!
//! Executed batches above the checkpoint are not kept: after a restart they are executed again from the
//! proofs peers send, which yields the same state because execution is deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::messages::*;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    Sent(Message),
    Prepared(PreparedCert),
    NewView(Signed<NewView>),
    Checkpoint { cert: CheckpointCert, snapshot: Vec<u8> },
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
        }
    }
}

impl Durable {
    pub fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Sent(Message::ViewChange(vc)) => {
                if vc.body.new_view > self.view || (vc.body.new_view == self.view && !self.view_active) {
                    self.view = vc.body.new_view;
                    self.view_active = false;
                    self.view_change = Some(vc);
                }
            }
            Entry::Sent(Message::NewView(nv)) | Entry::NewView(nv) => self.enter_new_view(nv),
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
