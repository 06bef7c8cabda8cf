//! Membership and protocol parameters, with their bounds.

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::messages::{Member, ReplicaId, View};

/// The number of faulty members `n` members tolerate: floor((N-1)/3).
pub fn max_failures(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// ceil((N+F+1)/2): any two quorums share at least F+1 members, so an honest one. It is 2F+1 when N = 3F+1.
pub fn quorum_size(n: usize) -> usize {
    (n + max_failures(n) + 1).div_ceil(2)
}

/// The members in their fixed order; the primary of view `v` is the member at position `v mod N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("a cluster needs at least 4 members to tolerate one fault, got {0}")]
    TooFewMembers(usize),
    #[error("member id {0} appears twice")]
    DuplicateId(ReplicaId),
    #[error("public key {0:?} is used by two members")]
    DuplicateKey(PublicKey),
    #[error("{name} must be between {min} and {max}, got {value}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error(
        "log_window x max_batch_size = {log_window} x {max_batch_size} = {transfers} transfers, more than the log may hold \
         ({max}: about 864 MiB of memory at 432 bytes a transfer); lower log_window (and checkpoint_interval) or max_batch_size"
    )]
    LogTooLarge {
        log_window: u64,
        max_batch_size: u64,
        transfers: u64,
        max: u64,
    },
    #[error("this replica's id {0} is not a member")]
    NotAMember(ReplicaId),
    #[error("this replica's key does not match the public key of member {0} in the membership")]
    KeyMismatch(ReplicaId),
    #[error("invalid genesis: {0}")]
    Genesis(crate::ledger::GenesisError),
    #[error("the stored checkpoint at sequence {seq} is unusable: {error}")]
    StoredCheckpoint {
        seq: u64,
        error: crate::ledger::SnapshotError,
    },
}

impl Membership {
    pub fn new(members: Vec<Member>) -> Result<Membership, ConfigError> {
        if members.len() < 4 {
            return Err(ConfigError::TooFewMembers(members.len()));
        }
        for (i, m) in members.iter().enumerate() {
            if members[..i].iter().any(|o| o.id == m.id) {
                return Err(ConfigError::DuplicateId(m.id));
            }
            if members[..i].iter().any(|o| o.public_key == m.public_key) {
                return Err(ConfigError::DuplicateKey(m.public_key));
            }
        }
        Ok(Membership { members })
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn n(&self) -> usize {
        self.members.len()
    }

    pub fn f(&self) -> usize {
        max_failures(self.n())
    }

    pub fn quorum(&self) -> usize {
        quorum_size(self.n())
    }

    pub fn primary(&self, view: View) -> ReplicaId {
        self.members[(view % self.n() as u64) as usize].id
    }

    pub fn key(&self, id: ReplicaId) -> Option<&PublicKey> {
        self.members.iter().find(|m| m.id == id).map(|m| &m.public_key)
    }

    pub fn contains(&self, id: ReplicaId) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.members.iter().map(|m| m.id)
    }
}

/// The largest checkpoint interval: the log holds up to two intervals of slots above the stable checkpoint.
pub const CHECKPOINT_INTERVAL_MAX: u64 = 2_048;
/// The largest log window (PBFT's L): how many sequence numbers above the stable checkpoint a replica holds.
pub const LOG_WINDOW_MAX: u64 = 4_096;
/// The most transfers the log may hold, `log_window` × `max_batch_size`: at `LOG_BYTES_PER_TRANSFER` each, about
/// 864 MiB (906 MB) of a replica's memory, the votes aside (at most 4N signed votes of 120 bytes a slot: 126 MB
/// more for 4,096 slots at N = 64). The defaults (window 200, batches of 512) hold 102,400 transfers: 44 MB.
pub const LOG_TRANSFERS_MAX: u64 = 2_097_152;
/// What one batched transfer costs in the log: a `SignedTransfer` is 144 bytes, and a slot holds its batch up to
/// three times (the PRE-PREPARE, and copies in its prepared and its committed certificates).
pub const LOG_BYTES_PER_TRANSFER: u64 = 3 * 144;

/// Protocol parameters. The defaults are those of the reference drill; a configuration names only what it changes.
/// A configuration that leaves out `log_window` gets `Params::log_window_for` its checkpoint interval, so raising
/// the interval alone never makes a configuration invalid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "GivenParams")]
pub struct Params {
    /// A stable checkpoint every this many sequence numbers; the log below it is garbage-collected.
    pub checkpoint_interval: u64,
    /// How far above the stable checkpoint a sequence number may be assigned (PBFT's L): the high watermark.
    pub log_window: u64,
    /// A backup that waits this long for a pending request to execute suspects the primary.
    pub view_change_timeout_ms: u64,
    /// Consecutive failed view changes double the timeout, at most this many times.
    pub view_change_backoff_max: u32,
    /// How often a member tells its peers how far it is, so they resend what it lost.
    pub status_interval_ms: u64,
    /// The most transfers the primary puts in one batch.
    pub max_batch_size: usize,
    /// The most batches the primary has proposed but not yet executed (the pipeline depth).
    pub max_inflight_batches: u64,
    /// The most client requests a member holds pending; beyond it, new requests are refused (back-pressure).
    pub max_concurrent_requests: usize,
    /// How long a member proven malicious stays quarantined (its messages ignored), unless removed before.
    pub quarantine_duration_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            checkpoint_interval: 100,
            log_window: 200,
            view_change_timeout_ms: 5000,
            view_change_backoff_max: 6,
            status_interval_ms: 500,
            max_batch_size: 512,
            max_inflight_batches: 4,
            max_concurrent_requests: 50,
            quarantine_duration_ms: 3_600_000,
        }
    }
}

/// `Params` as a configuration gives them: every field optional, the log window following the checkpoint interval.
#[derive(Deserialize)]
#[serde(default)]
struct GivenParams {
    checkpoint_interval: u64,
    log_window: Option<u64>,
    view_change_timeout_ms: u64,
    view_change_backoff_max: u32,
    status_interval_ms: u64,
    max_batch_size: usize,
    max_inflight_batches: u64,
    max_concurrent_requests: usize,
    quarantine_duration_ms: u64,
}

impl Default for GivenParams {
    fn default() -> Self {
        let p = Params::default();
        GivenParams {
            checkpoint_interval: p.checkpoint_interval,
            log_window: None,
            view_change_timeout_ms: p.view_change_timeout_ms,
            view_change_backoff_max: p.view_change_backoff_max,
            status_interval_ms: p.status_interval_ms,
            max_batch_size: p.max_batch_size,
            max_inflight_batches: p.max_inflight_batches,
            max_concurrent_requests: p.max_concurrent_requests,
            quarantine_duration_ms: p.quarantine_duration_ms,
        }
    }
}

impl From<GivenParams> for Params {
    fn from(g: GivenParams) -> Params {
        Params {
            checkpoint_interval: g.checkpoint_interval,
            log_window: g
                .log_window
                .unwrap_or_else(|| Params::log_window_for(g.checkpoint_interval, g.max_inflight_batches)),
            view_change_timeout_ms: g.view_change_timeout_ms,
            view_change_backoff_max: g.view_change_backoff_max,
            status_interval_ms: g.status_interval_ms,
            max_batch_size: g.max_batch_size,
            max_inflight_batches: g.max_inflight_batches,
            max_concurrent_requests: g.max_concurrent_requests,
            quarantine_duration_ms: g.quarantine_duration_ms,
        }
    }
}

impl Params {
    /// The log window when none is given: two checkpoint intervals (the least `validate` accepts: the log must
    /// hold a whole interval above the stable checkpoint while the next one becomes stable), and never less
    /// than the pipeline depth.
    pub fn log_window_for(checkpoint_interval: u64, max_inflight_batches: u64) -> u64 {
        checkpoint_interval.saturating_mul(2).max(max_inflight_batches)
    }

    /// These parameters with another checkpoint interval, and the log window that follows from it.
    pub fn with_checkpoint_interval(self, checkpoint_interval: u64) -> Params {
        Params {
            checkpoint_interval,
            log_window: Params::log_window_for(checkpoint_interval, self.max_inflight_batches),
            ..self
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
            if value < min || value > max {
                return Err(ConfigError::OutOfRange { name, value, min, max });
            }
            Ok(())
        }
        // Bounded by what memory holds: see `LOG_TRANSFERS_MAX`.
        range(
            "checkpoint_interval",
            self.checkpoint_interval,
            1,
            CHECKPOINT_INTERVAL_MAX,
        )?;
        range(
            "log_window",
            self.log_window,
            self.checkpoint_interval.max(1) * 2,
            LOG_WINDOW_MAX,
        )?;
        range("view_change_timeout_ms", self.view_change_timeout_ms, 10, 3_600_000)?;
        range("view_change_backoff_max", self.view_change_backoff_max as u64, 0, 20)?;
        range("status_interval_ms", self.status_interval_ms, 1, 3_600_000)?;
        range("max_batch_size", self.max_batch_size as u64, 1, 65_536)?;
        let transfers = self.log_window.saturating_mul(self.max_batch_size as u64);
        if transfers > LOG_TRANSFERS_MAX {
            return Err(ConfigError::LogTooLarge {
                log_window: self.log_window,
                max_batch_size: self.max_batch_size as u64,
                transfers,
                max: LOG_TRANSFERS_MAX,
            });
        }
        range("max_inflight_batches", self.max_inflight_batches, 1, self.log_window)?;
        range(
            "max_concurrent_requests",
            self.max_concurrent_requests as u64,
            1,
            10_000_000,
        )?;
        range(
            "quarantine_duration_ms",
            self.quarantine_duration_ms,
            1_000,
            30 * 24 * 3_600_000,
        )?;
        Ok(())
    }
}

/// Everything a replica needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: ReplicaId,
    pub membership: Membership,
    pub genesis: Vec<(PublicKey, u64)>,
    pub params: Params,
    /// The administrator key that signs membership changes; without one the membership never changes.
    pub admin: Option<PublicKey>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;

    fn members(n: u32) -> Vec<Member> {
        (1..=n)
            .map(|id| Member {
                id,
                public_key: KeyPair::from_secret([id as u8; 32]).public(),
            })
            .collect()
    }

    #[test]
    fn fault_tolerance_and_quorum_follow_from_n() {
        let expected = [(4, 1, 3), (5, 1, 4), (6, 1, 4), (7, 2, 5), (10, 3, 7), (13, 4, 9)];
        for (n, f, q) in expected {
            let m = Membership::new(members(n)).unwrap();
            assert_eq!((m.f(), m.quorum()), (f, q), "N = {n}");
            // Two quorums always intersect in at least F+1 members, so in an honest one.
            assert!(2 * m.quorum() > m.n() + m.f(), "N = {n}");
        }
    }

    #[test]
    fn primary_rotates_over_the_membership() {
        let m = Membership::new(members(7)).unwrap();
        assert_eq!(m.primary(0), 1);
        assert_eq!(m.primary(1), 2);
        assert_eq!(m.primary(7), 1);
    }

    #[test]
    fn bad_memberships_are_refused() {
        assert_eq!(Membership::new(members(3)), Err(ConfigError::TooFewMembers(3)));
        let mut dup = members(4);
        dup[3].id = 1;
        assert_eq!(Membership::new(dup), Err(ConfigError::DuplicateId(1)));
        let mut dup_key = members(4);
        dup_key[3].public_key = dup_key[0].public_key;
        assert!(matches!(Membership::new(dup_key), Err(ConfigError::DuplicateKey(_))));
    }

    #[test]
    fn a_left_out_log_window_follows_the_checkpoint_interval() {
        let parse = |json: &str| serde_json::from_str::<Params>(json).unwrap();
        assert_eq!(parse("{}"), Params::default());
        let p = parse(r#"{"checkpoint_interval": 500}"#);
        assert_eq!((p.log_window, p.validate()), (1000, Ok(())));
        // The pipeline depth bounds it from below: an interval of 1 alone would give a window of 2 < 4 batches.
        let p = parse(r#"{"checkpoint_interval": 1}"#);
        assert_eq!((p.log_window, p.validate()), (4, Ok(())));
        let p = parse(r#"{"checkpoint_interval": 2048}"#);
        assert_eq!((p.log_window, p.validate()), (4_096, Ok(())));
        // Given, it is taken as given, and checked.
        let p = parse(r#"{"checkpoint_interval": 500, "log_window": 5000}"#);
        assert_eq!(p.log_window, 5000);
        let p = parse(r#"{"checkpoint_interval": 500, "log_window": 200}"#);
        assert!(matches!(
            p.validate(),
            Err(ConfigError::OutOfRange { name: "log_window", .. })
        ));
        // What a replica writes it reads back the same.
        let p = Params::default().with_checkpoint_interval(300);
        assert_eq!(parse(&serde_json::to_string(&p).unwrap()), p);
    }

    #[test]
    fn params_are_range_checked() {
        assert_eq!(Params::default().validate(), Ok(()));
        let bad = Params {
            checkpoint_interval: 0,
            ..Params::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::OutOfRange {
                name: "checkpoint_interval",
                ..
            })
        ));
    }

    #[test]
    fn what_the_log_may_hold_is_bounded_by_memory() {
        // The figure in `LOG_TRANSFERS_MAX` and the README: 144 bytes a transfer, 120 a signed vote.
        assert_eq!(std::mem::size_of::<crate::ledger::SignedTransfer>(), 144);
        assert_eq!(
            std::mem::size_of::<crate::messages::Signed<crate::messages::Prepare>>(),
            120
        );
        assert_eq!(LOG_TRANSFERS_MAX * LOG_BYTES_PER_TRANSFER, 864 << 20);
        let with = |checkpoint_interval: u64, log_window: u64, max_batch_size: usize| Params {
            checkpoint_interval,
            log_window,
            max_batch_size,
            ..Params::default()
        };
        // The largest of each, with the default batch, is just within the bound.
        assert_eq!(with(CHECKPOINT_INTERVAL_MAX, LOG_WINDOW_MAX, 512).validate(), Ok(()));
        assert_eq!(
            Params::default()
                .with_checkpoint_interval(CHECKPOINT_INTERVAL_MAX)
                .validate(),
            Ok(())
        );
        // An interval of 1,000,000 (2,000,000 slots) is refused, and so is one past the bound.
        for interval in [CHECKPOINT_INTERVAL_MAX + 1, 1_000_000] {
            let error = Params::default()
                .with_checkpoint_interval(interval)
                .validate()
                .unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("checkpoint_interval must be between 1 and 2048, got {interval}")
            );
        }
        let error = with(100, LOG_WINDOW_MAX + 1, 512).validate().unwrap_err();
        assert_eq!(error.to_string(), "log_window must be between 200 and 4096, got 4097");
        // A window within its bound still may not hold more transfers than memory does.
        let error = with(100, 4_096, 1_024).validate().unwrap_err();
        assert_eq!(
            error,
            ConfigError::LogTooLarge {
                log_window: 4_096,
                max_batch_size: 1_024,
                transfers: 4_194_304,
                max: LOG_TRANSFERS_MAX
            }
        );
        assert!(
            error.to_string().starts_with(
                "log_window x max_batch_size = 4096 x 1024 = 4194304 transfers, more than the log may hold (2097152"
            ),
            "{error}"
        );
        assert_eq!(with(100, 2_048, 1_024).validate(), Ok(()));
        assert_eq!(with(4, 32, 65_536).validate(), Ok(()));
        assert!(matches!(
            with(4, 33, 65_536).validate(),
            Err(ConfigError::LogTooLarge { .. })
        ));
    }
}
