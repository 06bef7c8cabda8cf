//! A PBFT-style validator replica that orders signed financial transfers on a replicated ledger.
//!
//! The protocol is a pure state machine (`replica`, `checkpoint`, `view_change`) fed with verified inputs
//! (`verify`); `sim` runs many of them over a simulated network with Byzantine members.

pub mod bench;
pub mod client;
pub mod config;
pub mod crypto;
pub mod detection;
pub mod drill;
pub mod durable;
pub mod evidence;
pub mod faults;
pub mod governance;
pub mod history;
pub mod ledger;
pub mod messages;
pub mod metrics;
pub mod net;
pub mod node;
pub mod replica;
pub mod report;
pub mod sim;
pub mod storage;
pub mod testnet;
pub mod verify;

pub mod checkpoint;
pub mod state_transfer;
pub mod status;
pub mod view_change;

pub use config::{Config, Membership, Params};
pub use replica::{Event, Input, Output, Replica, Timer};
