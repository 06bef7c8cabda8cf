//! Durable storage for a replica: its `Entry`s in an embedded redb database.
//!
//! redb commits are atomic and fsynced, so a replica killed at any moment restarts with exactly what it had
//! committed. Entries are appended in one transaction per group of protocol steps; when a stable checkpoint
//! arrives, the folded state (`Durable`) is written in its place and the entries it covers are dropped, so
//! the store stays about the size of one checkpoint window. The replica's `History` (detections, view changes)
//! is written whole beside them, in the same transaction, whenever it changed.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use bft_core::durable::{Durable, Entry};
use bft_core::history::History;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const FOLDED: &str = "durable";
const HISTORY: &str = "history";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Database(String),
    #[error("storage holds a record that does not decode: {0}")]
    Corrupt(String),
}

fn db_error(error: impl std::fmt::Display) -> StorageError {
    StorageError::Database(error.to_string())
}

pub struct Store {
    db: Database,
    /// What the entries on disk fold to.
    durable: Durable,
    history: History,
    next_index: u64,
}

impl Store {
    /// Opens (or creates) the store and returns what it holds.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        let db = Database::create(path).map_err(db_error)?;
        let mut durable = Durable::default();
        let mut history = History::default();
        let mut next_index = 0;
        {
            let read = db.begin_read().map_err(db_error)?;
            if let Ok(state) = read.open_table(STATE)
                && let Some(bytes) = state.get(FOLDED).map_err(db_error)?
            {
                durable = postcard::from_bytes(bytes.value()).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            }
            if let Ok(state) = read.open_table(STATE)
                && let Some(bytes) = state.get(HISTORY).map_err(db_error)?
            {
                history = postcard::from_bytes(bytes.value()).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            }
            if let Ok(entries) = read.open_table(ENTRIES) {
                for row in entries.iter().map_err(db_error)? {
                    let (index, bytes) = row.map_err(db_error)?;
                    let entry: Entry =
                        postcard::from_bytes(bytes.value()).map_err(|e| StorageError::Corrupt(e.to_string()))?;
                    durable.apply(entry);
                    next_index = index.value() + 1;
                }
            }
        }
        Ok(Store {
            db,
            durable,
            history,
            next_index,
        })
    }

    /// What the replica recovers from.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// The detections and view changes recorded so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Makes `entries`, and `history` when given, durable: when this returns, they survive any crash.
    pub fn append(&mut self, entries: Vec<Entry>, history: Option<&History>) -> Result<(), StorageError> {
        if entries.is_empty() && history.is_none() {
            return Ok(());
        }
        let checkpoint = entries.iter().any(|e| matches!(e, Entry::Checkpoint { .. }));
        let write = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = write.open_table(ENTRIES).map_err(db_error)?;
            for entry in &entries {
                let bytes = postcard::to_allocvec(entry).expect("encoding to memory cannot fail");
                table.insert(self.next_index, bytes.as_slice()).map_err(db_error)?;
                self.next_index += 1;
            }
        }
        for entry in entries {
            self.durable.apply(entry);
        }
        if let Some(history) = history {
            let bytes = postcard::to_allocvec(history).expect("encoding to memory cannot fail");
            write
                .open_table(STATE)
                .map_err(db_error)?
                .insert(HISTORY, bytes.as_slice())
                .map_err(db_error)?;
            self.history = history.clone();
        }
        if checkpoint {
            // Replace the log with its fold: a checkpoint made most of it obsolete.
            let folded = postcard::to_allocvec(&self.durable).expect("encoding to memory cannot fail");
            write
                .open_table(STATE)
                .map_err(db_error)?
                .insert(FOLDED, folded.as_slice())
                .map_err(db_error)?;
            write
                .open_table(ENTRIES)
                .map_err(db_error)?
                .retain(|_, _| false)
                .map_err(db_error)?;
        }
        write.commit().map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_core::crypto::{Digest, KeyPair};
    use bft_core::messages::*;

    fn prepare(seq: Seq) -> Entry {
        let key = KeyPair::from_secret([1; 32]);
        Entry::Sent(Message::Prepare(Signed::new(
            1,
            Prepare {
                view: 0,
                seq,
                digest: Digest([7; 32]),
            },
            &key,
        )))
    }

    #[test]
    fn entries_survive_reopening_and_checkpoints_compact_them() {
        let dir = std::env::temp_dir().join(format!("bft-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replica.redb");
        let _ = std::fs::remove_file(&path);
        {
            let mut store = Store::open(&path).unwrap();
            store.append(vec![prepare(1), prepare(2)], None).unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.durable().sent.len(), 2);
        assert_eq!(store.history(), &History::default());
        let mut history = History::default();
        history.observe(
            bft_core::history::Observation {
                member: 5,
                fault: bft_core::evidence::FaultType::SignatureMismatch,
                message: "prepare".into(),
                sequence: Some(3),
                transaction: None,
                proof: None,
                expected: "a valid signature".into(),
                received: "one that does not verify".into(),
            },
            1_000,
        );
        let cert = CheckpointCert {
            seq: 1,
            state_digest: Digest([3; 32]),
            proof: Vec::new(),
        };
        store
            .append(
                vec![
                    Entry::Checkpoint {
                        cert: cert.clone(),
                        snapshot: vec![1, 2, 3],
                    },
                    prepare(3),
                ],
                Some(&history),
            )
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.history(), &history, "the history is kept beside the entries");
        assert_eq!(store.durable().checkpoint, Some((cert, vec![1, 2, 3])));
        let seqs: Vec<Seq> = store
            .durable()
            .sent
            .iter()
            .map(|m| match m {
                Message::Prepare(p) => p.body.seq,
                _ => 0,
            })
            .collect();
        assert_eq!(seqs, vec![2, 3], "the checkpoint at 1 dropped the vote for 1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
