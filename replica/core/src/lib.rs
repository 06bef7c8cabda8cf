//! The consensus core of a PBFT-style validator: a pure state machine that orders signed transfers on a replicated
//! ledger. No I/O: no network, no files, no clock of its own, no tokio; the host (`bft-replica`) and the simulator
//! (`bft-sim`) drive the same code, and this crate's dependencies keep it so.
//!
//! The protocol is `replica` (the normal case), `view_change`, `checkpoint`, `status` and `state_transfer`, fed with
//! inputs `verify` checked; `detection` and `evidence` turn what peers send into proof of their faults, `governance`
//! orders membership changes, and `faults` is what a Byzantine member does to what it sends (drills and the
//! simulator).

pub mod checkpoint;
pub mod config;
pub mod crypto;
pub mod detection;
pub mod durable;
pub mod evidence;
pub mod faults;
pub mod governance;
pub mod history;
pub mod ledger;
pub mod messages;
pub mod replica;
pub mod state_transfer;
pub mod status;
pub mod verify;
pub mod view_change;

pub use config::{Config, Membership, Params};
pub use replica::{Event, Input, Output, Replica, Timer};
