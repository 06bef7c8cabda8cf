//! The consensus core of a PBFT-style validator: a pure state machine that orders signed transfers on a replicated
//! ledger. No I/O: no network, no files, no clock of its own, no tokio; the host (`bft-replica`) and the simulator
//! (`bft-sim`) drive the same code, and this crate's dependencies keep it so.
//!
//! The protocol is `replica` (the normal case), with its phases as submodules (`replica::view_change`,
//! `replica::checkpoint`, `replica::status`, `replica::state_transfer`), fed with inputs `verify` checked; `new_view`
//! is the rule a NEW-VIEW follows. `detection` and `evidence` turn what peers send into proof of their faults,
//! `governance` orders membership changes, and `faults` is what a Byzantine member does to what it sends (drills and
//! the simulator). `messages` holds every type that goes on the wire; the modules form no import cycle.

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
pub mod new_view;
pub mod replica;
pub mod verify;

pub use config::{Config, Membership, Params};
pub use replica::{Event, Input, Output, Replica, Timer};
