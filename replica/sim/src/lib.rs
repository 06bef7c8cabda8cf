//! The deterministic simulator: whole clusters of real replica cores, real signatures, a simulated network
//! and Byzantine members, all driven by one seed.
//!
//! Time is simulated and every choice (delays, losses, crashes, partitions, what a Byzantine member does)
//! comes from a ChaCha generator seeded with the run's seed, so a seed replays exactly. After every event
//! the invariants are checked: agreement (no two honest replicas execute different batches at one
//! sequence), validity (only transfers signed by their payer execute), no double spend (a spend key applies
//! at most once) and conservation of money. The network is hostile until `chaos_ms` and then heals; from
//! then on every honest client's transfers must commit, and every honest replica reach their state, within
//! `liveness_bound_ms`, with at most F Byzantine members still misbehaving.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use bft_core::config::{Config, Membership, Params};
use bft_core::crypto::{Digest, KeyPair, PublicKey};
use bft_core::detection::{Detector, Refusal, may_carry, observation_of_refusal};
use bft_core::durable::Durable;
use bft_core::evidence::Evidence;
use bft_core::faults::{Accomplice, Fault, FaultDrill, Saboteur};
use bft_core::governance::Operation;
use bft_core::history::{History, MessageSummary, Observation};
use bft_core::ledger::{RejectReason, SignedTransfer, Transfer, TxOutcome};
use bft_core::messages::*;
use bft_core::replica::{Event, Input, Output, Replica, Timer};
use bft_core::verify::Verifier;

/// What a Byzantine member does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Sends different PRE-PREPAREs for one slot to different peers, each side's votes backing its version.
    Equivocate,
    /// Half of what it sends carries a signature that does not verify.
    CorruptSignatures,
    /// Proposes batches that spend the same funds twice, and signs checkpoints and replies of a state
    /// that differs from the quorum's.
    DoubleSpend,
    /// Never admits client requests, so as primary it proposes nothing.
    Censor,
    /// Sends old messages again, to random peers.
    Replay,
    /// Sends nothing.
    Silent,
    /// As a backup, signs proposals of its own for the next sequence number (only the primary proposes).
    BackupProposal,
    /// Claims to suspect every primary and sends VIEW-CHANGEs for the next and for far views, without cause.
    Depose,
    /// Passes on made-up committed batches in the primary's name (double spends, signatures that do not verify).
    ForgedRelay,
    /// Signs accusations of every other member, over and over.
    AccusationFlood,
    /// Serves state-transfer chunks whose bytes are not the certified ones, under its own valid signature (and
    /// is otherwise honest): a lagging replica must refuse them, catch up from the others, and hold the proof.
    CorruptChunks,
    /// As the primary of a view being installed, sends different valid NEW-VIEWs to different peers, and to others
    /// one on fewer than a quorum of VIEW-CHANGEs (otherwise honest).
    EquivocatingNewPrimary,
    /// Signs VIEW-CHANGEs carrying a prepared certificate it made up (otherwise honest).
    FabricatedCertificate,
    /// ByzzFuzz's small-scope mutations by round: in some rounds, what it sends goes to some peers with one field
    /// nudged (a sequence number or view one off, another round's digest, a VIEW-CHANGE's certificates left out).
    ByzzFuzz,
    /// Twins (Bano et al.): the member runs as two instances of the honest core under its one key, each meeting a
    /// different part of the cluster (`Sim::plan_twin_splits`), so each acts honestly on what it sees and together
    /// they sign conflicting proposals, votes and VIEW-CHANGEs.
    Twins,
}

impl std::str::FromStr for Behaviour {
    type Err = String;
    fn from_str(name: &str) -> Result<Behaviour, String> {
        Behaviour::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
            format!(
                "unknown behaviour {name:?}: one of {:?}",
                Behaviour::ALL.map(|b| b.name())
            )
        })
    }
}

impl Behaviour {
    /// The fault drill a member with this behaviour runs (a replaying member needs none: the simulator replays).
    fn drill(&self) -> Option<FaultDrill> {
        let (fault, probability) = match self {
            Behaviour::Equivocate => (Fault::Equivocation, 0.5),
            Behaviour::CorruptSignatures => (Fault::SignatureCorruption, 0.5),
            Behaviour::DoubleSpend => (Fault::DoubleSpend, 1.0),
            Behaviour::Censor => (Fault::Censorship, 1.0),
            Behaviour::Silent => (Fault::Silence, 1.0),
            Behaviour::BackupProposal => (Fault::BackupProposal, 0.3),
            Behaviour::Depose => (Fault::Depose, 1.0),
            Behaviour::ForgedRelay => (Fault::ForgedRelay, 0.5),
            Behaviour::AccusationFlood => (Fault::AccusationFlood, 1.0),
            Behaviour::EquivocatingNewPrimary => (Fault::EquivocatingNewPrimary, 1.0),
            Behaviour::FabricatedCertificate => (Fault::FabricatedCertificate, 1.0),
            // The share of rounds drawn for mutation.
            Behaviour::ByzzFuzz => (Fault::RoundMutation, 0.2),
            // The simulator corrupts the chunks itself (`send_from`) and runs the twins.
            Behaviour::Replay | Behaviour::CorruptChunks | Behaviour::Twins => return None,
        };
        Some(FaultDrill { fault, probability })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Equivocate => "equivocate",
            Behaviour::CorruptSignatures => "corrupt-signatures",
            Behaviour::DoubleSpend => "double-spend",
            Behaviour::Censor => "censor",
            Behaviour::Replay => "replay",
            Behaviour::Silent => "silent",
            Behaviour::BackupProposal => "backup-proposal",
            Behaviour::Depose => "depose",
            Behaviour::ForgedRelay => "forged-relay",
            Behaviour::AccusationFlood => "accusation-flood",
            Behaviour::CorruptChunks => "corrupt-chunks",
            Behaviour::EquivocatingNewPrimary => "equivocating-new-primary",
            Behaviour::FabricatedCertificate => "fabricated-certificate",
            Behaviour::ByzzFuzz => "byzzfuzz",
            Behaviour::Twins => "twins",
        }
    }

    pub const ALL: [Behaviour; 15] = [
        Behaviour::Equivocate,
        Behaviour::CorruptSignatures,
        Behaviour::DoubleSpend,
        Behaviour::Censor,
        Behaviour::Replay,
        Behaviour::Silent,
        Behaviour::BackupProposal,
        Behaviour::Depose,
        Behaviour::ForgedRelay,
        Behaviour::AccusationFlood,
        Behaviour::CorruptChunks,
        Behaviour::EquivocatingNewPrimary,
        Behaviour::FabricatedCertificate,
        Behaviour::ByzzFuzz,
        Behaviour::Twins,
    ];

    /// The behaviours random Byzantine members are drawn from: all but byzzfuzz and twins (the last two), so that every
    /// seed recorded before they existed (the suite's seeds that once failed, the sweeps' ranges) still draws what it
    /// drew then. They run with `--member ID=byzzfuzz` or `--member ID=twins` among random faults, and as scenarios.
    pub const DRAWN: &'static [Behaviour] = Behaviour::ALL.split_at(Behaviour::ALL.len() - 2).0;
}

/// Adversarial schedules, built to reach situations random delays and losses almost never do. Each runs on a
/// calm network during the chaos window, with its own drops on top; delays (and Byzantine members, if any) are
/// still drawn from the seed, and after the window the network is whole again and every transfer must complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Two different batches prepared for one sequence number in two views, then another view change: the
    /// situation that exposes a NEW-VIEW re-proposing the wrong prepared certificate (the classic PBFT bug). In
    /// view 0 only the primary of view 2 (the target) receives the PREPAREs, so it alone prepares, and no COMMIT
    /// of view 0 arrives anywhere. While the others change to view 1 the target is cut off, so the new view knows
    /// nothing of its certificates and its primary proposes other batches at the same numbers. Once a quorum
    /// commits one of them, the primary of view 1 is cut off and the target let back: the view change to view 2
    /// holds both certificates, and the target itself builds the NEW-VIEW.
    CompetingCertificates,
    /// One Byzantine backup that claims to suspect every primary and sends VIEW-CHANGEs for the next and for far
    /// views, with clients that give each transfer to one replica only at first: on a calm network the honest
    /// primary of view 0 orders everything, so an honest replica that starts a view change at all is a violation
    /// (a backup that timed a request the primary never got, with the Byzantine member's support, once made F+1).
    Depose,
    /// One Byzantine backup that signs proposals of its own for the next sequence number (once, one such
    /// proposal halted a 4-replica cluster for good: the view change refused what the normal case accepted). The
    /// cluster must stay live, and the backup be proven by its signature.
    BackupProposal,
    /// The primary of view 0 sends, for every slot, one proposal to a random half of the backups and a conflicting
    /// one to the other half, and its COMMITs back each side's version, so that each side gathers as many votes as
    /// one Byzantine member can give it: no one replica receives both proposals, yet no two honest replicas may
    /// decide apart, the primary must be proven, and the cluster stay live.
    EquivocatingPrimary,
    /// One Byzantine backup passes on made-up committed batches in the primary's name (spending funds twice, with
    /// signatures that do not verify): no honest replica may log anyone for them, nor leave view 0.
    ForgedRelay,
    /// One Byzantine backup signs accusations of every other member, over and over: at most one of its accusations
    /// of each member waits to be ordered, nobody honest is quarantined, and no honest replica leaves view 0.
    AccusationFlood,
    /// A lagging replica catches up by state transfer while the F peers that serve the first chunks fail. The last
    /// member is down from the start; once the others made a checkpoint stable it restarts, far behind, and at that
    /// moment the peers of lowest rank fail: of members 1..=F, the last B (`--byzantine`) serve corrupted chunks
    /// (`corrupt-chunks`), the others crash until the schedule ends. With F members out, the cluster can commit
    /// again only once the lagging one caught up, and it must do so before the schedule ends. `SimConfig::accounts`
    /// sizes the state: a state of more than 4(N-2) chunks (1 MiB each) stalled for good when the lowest-ranked peer
    /// failed, before a member could ask others for what it lacks (`--accounts 300000` at N = 4).
    FaultyChunkServers,
    /// One honest backup (member 2) suspects the primary alone: its path to the primary is cut for the whole chaos
    /// window, so the requests clients give it never get ordered there; F Byzantine members (3..=F+2) say in every
    /// STATUS that they suspect the primary too, so member 2 leaves view 0 with F+1 suspicions while the rest stay.
    /// Their VIEW-CHANGEs for the next views are dropped (with a suspecting honest member's they would be F+1, which
    /// rightly moves everyone; the depose scenario plays those), but those for far views arrive: a VIEW-CHANGE for
    /// a view beyond the window is no support, so it must not join member 2's into F+1 (once one for a far view
    /// stood as its signer's support for leaving every view until then). Once the path heals, member 2 must vote
    /// in view 0 again within two view-change timeouts (it once sent no COMMIT until the next view change, so with
    /// F real faults the cluster stalled until then), and no honest replica may install another view. Prints
    /// votes_again_ms with --json (0: it was voting again before the heal), in the seeds where member 2 left view 0
    /// at all (in some, the requests it timed commit through the others first).
    LoneSuspicion,
    /// The primary of view 1 is Byzantine and the primary of view 0 is cut off until an honest member installs
    /// view 1 (the cluster must change to it; then the old primary is back, so that at N = 4 a quorum of honest
    /// members remains once the Byzantine one is quarantined): the primary of view 1 sends different valid NEW-VIEWs to different replicas and to others
    /// one on fewer than a quorum of VIEW-CHANGEs. No violation, the cluster commits again by view 2 at the latest
    /// (an honest replica that installs a later view is a violation), and the primary must be proven by what it
    /// signed. Prints new_view_proof_ms with --json: simulated time from its first NEW-VIEW to the first proof.
    EquivocatingNewPrimary,
    /// A Byzantine backup (member 3) signs VIEW-CHANGEs carrying a prepared certificate it made up, and the cluster
    /// must change views: the proposals of the primary of view 0 are dropped until an honest member installs view 1
    /// (its other messages pass, so it joins the view change, and a quorum of honest VIEW-CHANGEs forms without the
    /// Byzantine member's). No violation, the cluster commits again in view 1 (an honest replica that installs a
    /// later view is a violation), and the member must be proven by the VIEW-CHANGE it signed. Prints
    /// certificate_proof_ms with --json: simulated time from its first VIEW-CHANGE to the first proof.
    FabricatedCertificate,
    /// The primary of view 0 runs ByzzFuzz's small-scope mutations by round (`Behaviour::ByzzFuzz`): proposals,
    /// votes, checkpoints and VIEW-CHANGEs of some rounds reach some replicas with a sequence number or view one off,
    /// another round's digest, or the certificates left out. No violation, no honest member blamed, and every
    /// transfer completes.
    ByzzFuzz,
    /// Twins (Bano et al., "Twins: BFT Systems Made Robust"): one member, drawn from the seed (so the primary of
    /// view 0 in a quarter of the seeds at N = 4), runs as two instances of the honest core under its one key
    /// (`Behaviour::Twins`), each meeting a different part of the cluster (`Sim::plan_twin_splits`), so that each
    /// may meet a different quorum and sign, honestly, what conflicts with its twin. No violation (agreement, no
    /// double spend), no honest member observed, accused or proven, and once the schedule ends (both twins still
    /// running, seeing everyone) every transfer commits. Wherever an honest replica receives two conflicting messages
    /// the twins signed, it proves the member; `Outcome::twin_conflicts` counts the slots they signed apart.
    Twins,
}

impl Scenario {
    pub const ALL: [Scenario; 12] = [
        Scenario::CompetingCertificates,
        Scenario::Depose,
        Scenario::BackupProposal,
        Scenario::EquivocatingPrimary,
        Scenario::ForgedRelay,
        Scenario::AccusationFlood,
        Scenario::FaultyChunkServers,
        Scenario::LoneSuspicion,
        Scenario::EquivocatingNewPrimary,
        Scenario::FabricatedCertificate,
        Scenario::ByzzFuzz,
        Scenario::Twins,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::CompetingCertificates => "competing-certificates",
            Scenario::Depose => "depose",
            Scenario::BackupProposal => "backup-proposal",
            Scenario::EquivocatingPrimary => "equivocating-primary",
            Scenario::ForgedRelay => "forged-relay",
            Scenario::AccusationFlood => "accusation-flood",
            Scenario::FaultyChunkServers => "faulty-chunk-servers",
            Scenario::LoneSuspicion => "lone-suspicion",
            Scenario::EquivocatingNewPrimary => "equivocating-new-primary",
            Scenario::FabricatedCertificate => "fabricated-certificate",
            Scenario::ByzzFuzz => "byzzfuzz",
            Scenario::Twins => "twins",
        }
    }

    /// The Byzantine member a scenario plays, unless the run pins its own: a backup of view 0 (twins: any member,
    /// by the seed).
    fn byzantine_member(&self, seed: u64, replicas: usize) -> Option<(ReplicaId, Behaviour)> {
        match self {
            Scenario::CompetingCertificates => None,
            Scenario::Depose => Some((2, Behaviour::Depose)),
            Scenario::BackupProposal => Some((2, Behaviour::BackupProposal)),
            Scenario::EquivocatingPrimary => Some((1, Behaviour::Equivocate)),
            Scenario::ForgedRelay => Some((2, Behaviour::ForgedRelay)),
            Scenario::AccusationFlood => Some((2, Behaviour::AccusationFlood)),
            Scenario::FaultyChunkServers => None,
            // The first of its F suspecters (`Sim::new` pins the others).
            Scenario::LoneSuspicion => Some((LONE_SUSPECTER + 1, Behaviour::Depose)),
            // The primary of view 1 at the genesis (ids 1..=N in order).
            Scenario::EquivocatingNewPrimary => Some((2, Behaviour::EquivocatingNewPrimary)),
            // A backup of views 0 and 1, so that view 1 has an honest primary.
            Scenario::FabricatedCertificate => Some((3, Behaviour::FabricatedCertificate)),
            // The primary of view 0: its mutated proposals reach the most.
            Scenario::ByzzFuzz => Some((1, Behaviour::ByzzFuzz)),
            // As the primary of view 0 the twins propose apart; as a backup they vote and change views apart.
            Scenario::Twins => Some((1 + (seed % replicas as u64) as ReplicaId, Behaviour::Twins)),
        }
    }

    /// Whether the primary of view 0 is honest and nothing justifies leaving its view: then an honest replica
    /// that starts a view change is a violation.
    fn keeps_view_0(&self) -> bool {
        matches!(
            self,
            Scenario::Depose | Scenario::BackupProposal | Scenario::ForgedRelay | Scenario::AccusationFlood
        )
    }

    /// Whether what the scenario's Byzantine member does is provable, so an honest replica must prove it.
    fn must_prove(&self) -> bool {
        matches!(
            self,
            Scenario::BackupProposal
                | Scenario::EquivocatingPrimary
                | Scenario::EquivocatingNewPrimary
                | Scenario::FabricatedCertificate
        )
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(name: &str) -> Result<Scenario, String> {
        Scenario::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            format!(
                "unknown scenario {name:?} (known: {:?})",
                Scenario::ALL.map(|s| s.name())
            )
        })
    }
}

/// The member `Scenario::LoneSuspicion` cuts off from the primary of view 0.
const LONE_SUSPECTER: ReplicaId = 2;

/// Where a scenario's schedule is (`Scenario::CompetingCertificates`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    TargetPreparesAlone,
    TargetCutOff,
    FirstPrimaryCutOff,
    /// `Scenario::FaultyChunkServers`: the last member is down while the others run ahead, then catches up.
    LaggardDown,
    LaggardCatchingUp,
    /// `Scenario::LoneSuspicion`: the path between the primary of view 0 and the suspecter is cut.
    SuspecterCutOff,
    /// `Scenario::EquivocatingNewPrimary`: the primary of view 0 is cut off until an honest member installs view 1.
    OldPrimaryCutOff,
    /// `Scenario::FabricatedCertificate`: the proposals of the primary of view 0 are dropped until an honest member
    /// installs view 1.
    ProposalsDropped,
    Over,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub replicas: usize,
    pub byzantine: usize,
    pub clients: usize,
    pub transfers_per_client: usize,
    /// Until this time the network loses, duplicates and partitions messages, and honest replicas crash.
    pub chaos_ms: u64,
    /// After the network heals, every honest transfer must commit within this.
    pub liveness_bound_ms: u64,
    pub loss: f64,
    pub duplication: f64,
    pub max_delay_ms: u64,
    pub crashes: bool,
    pub partitions: bool,
    pub params: Params,
    /// Byzantine members chosen by hand; when empty, `byzantine` members are drawn at random.
    pub pinned: Vec<(ReplicaId, Behaviour)>,
    /// Print every replica event to standard error (for replaying a failing seed).
    pub verbose: bool,
    /// In the middle of the load, the administrator replaces one member (a Byzantine one if any) by a new member
    /// N+1, through the protocol; the run is done only once the new member takes part.
    pub reconfigure: bool,
    /// An adversarial schedule instead of random losses, partitions and crashes.
    pub scenario: Option<Scenario>,
    /// Accounts in the genesis besides the clients' (1 unit each), to make the state larger: a million make a state
    /// of some 40 chunks.
    pub accounts: usize,
}

impl SimConfig {
    pub fn new(seed: u64, replicas: usize, byzantine: usize) -> SimConfig {
        SimConfig {
            seed,
            replicas,
            byzantine,
            clients: 4,
            transfers_per_client: 6,
            chaos_ms: 3_000,
            liveness_bound_ms: 60_000,
            loss: 0.05,
            duplication: 0.05,
            max_delay_ms: 30,
            crashes: true,
            partitions: true,
            params: Params {
                checkpoint_interval: 4,
                log_window: 8,
                view_change_timeout_ms: 600,
                status_interval_ms: 150,
                max_batch_size: 8,
                max_inflight_batches: 2,
                max_concurrent_requests: 1000,
                ..Params::default()
            },
            pinned: Vec::new(),
            verbose: false,
            reconfigure: false,
            scenario: None,
            accounts: 0,
        }
    }
}

/// What one seeded run did.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub seed: u64,
    /// Transfers whose outcome a client accepted (F+1 matching signed replies).
    pub committed: u64,
    pub applied: u64,
    pub rejected: u64,
    /// The highest view an honest replica reached: how many view changes the cluster went through.
    pub view_changes: u64,
    pub byzantine: Vec<(ReplicaId, Behaviour)>,
    pub violations: Vec<String>,
    pub liveness_failure: Option<String>,
    /// Messages honest replicas dropped, by reason.
    pub rejections: BTreeMap<&'static str, u64>,
    pub sim_time_ms: u64,
    /// A digest of everything honest replicas executed, in order: equal for equal seeds.
    pub trace: String,
    /// Pieces of evidence honest replicas produced against each member (all verified, none against the honest).
    pub proven: BTreeMap<ReplicaId, u64>,
    /// Signed accusations honest replicas' detection policy put to consensus, by accused member.
    pub accused: BTreeMap<ReplicaId, u64>,
    /// Members quarantined (by the replicated state of honest replicas) and when it was first executed.
    pub quarantined: BTreeMap<ReplicaId, u64>,
    /// The epoch honest replicas reached, and when the first of them started it.
    pub epoch: u64,
    pub reconfigured_at_ms: Option<u64>,
    /// The adversarial schedule this seed ran, if any, and how far it got.
    pub scenario: Option<Scenario>,
    pub scenario_reached: Option<String>,
    /// `Scenario::FaultyChunkServers`: simulated time from the lagging member's restart to its adopting the state.
    pub catch_up_ms: Option<u64>,
    /// `Scenario::LoneSuspicion`: simulated time from the end of the cut until the suspecter is active in the
    /// cluster's view and sends its COMMITs there; none when it never left view 0.
    pub votes_again_ms: Option<u64>,
    /// `Scenario::EquivocatingNewPrimary`: simulated time from the Byzantine primary's first NEW-VIEW to the first
    /// proof an honest member holds of what it signed in NEW-VIEWs.
    pub new_view_proof_ms: Option<u64>,
    /// `Scenario::FabricatedCertificate`: simulated time from the Byzantine member's first VIEW-CHANGE to the first
    /// proof an honest member holds of the certificate it made up.
    pub certificate_proof_ms: Option<u64>,
    /// `Behaviour::Twins`: slots (kind, view, sequence) in which a twinned member's two instances signed different
    /// PRE-PREPAREs, PREPAREs, COMMITs or CHECKPOINTs, each a proof of equivocation for a replica that gets both.
    pub twin_conflicts: u64,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.liveness_failure.is_none()
    }
}

#[derive(Clone, Debug)]
enum Payload {
    Message(Message),
    Request(SignedTransfer),
}

#[derive(Clone, Debug)]
enum SimEvent {
    Deliver {
        /// The sending instance (0 for a client) and the receiving one, by address (`Sim::member_at`): the network
        /// is the authenticated channel of the member that runs there.
        from: ReplicaId,
        to: ReplicaId,
        payload: Payload,
    },
    Reply {
        client: usize,
        reply: Signed<Reply>,
    },
    Timer {
        /// The instance's address, as for `Observed`.
        replica: ReplicaId,
        incarnation: u64,
        timer: Timer,
    },
    Crash(ReplicaId),
    Restart(ReplicaId),
    ClientRetry {
        client: usize,
        attempt: u64,
    },
    Replay(ReplicaId),
    /// What a replica's detector made of an event, handed back to it on a later turn, as a process does.
    Observed {
        replica: ReplicaId,
        incarnation: u64,
        observation: Box<Observation>,
    },
    Partition(Vec<ReplicaId>),
    Heal,
    /// The administrator replaces member `remove` with the new member `add`.
    Reconfigure {
        remove: ReplicaId,
        add: ReplicaId,
    },
}

struct Scheduled {
    at: u64,
    id: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

struct SimReplica {
    id: ReplicaId,
    key: KeyPair,
    core: Option<Replica>,
    durable: Durable,
    verifier: Verifier,
    incarnation: u64,
    behaviour: Option<Behaviour>,
    /// What a replaying member has seen, to send again.
    seen: Vec<Message>,
    /// What a Byzantine member (other than a replaying one) does to what it sends.
    saboteur: Option<Saboteur>,
    /// The detection policy the process runs (honest members only), with the history it keeps across restarts.
    detector: Detector,
    /// Not started until a reconfiguration adds it.
    spare: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientKind {
    Honest,
    /// Signs two transfers with one nonce and sends each to half the replicas.
    DoubleSpender,
    /// Gives each transfer to one replica at first (a backup must pass it on to the primary), to all on a retry.
    OneReplicaFirst,
}

struct Client {
    key: KeyPair,
    kind: ClientKind,
    /// The nonce of the payer's last applied transfer.
    nonce: u64,
    done: usize,
    attempt: u64,
    /// The transfers of the current attempt (two for a double spend) and the replies so far.
    current: Vec<SignedTransfer>,
    /// Whether the current transfer was sent before.
    retried: bool,
    replies: BTreeMap<Digest, BTreeMap<ReplicaId, TxOutcome>>,
}

pub struct Sim {
    config: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    next_id: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    membership: Membership,
    genesis: Vec<(PublicKey, u64)>,
    replicas: Vec<SimReplica>,
    clients: Vec<Client>,
    /// Transfers clients signed validly, by digest.
    signed: HashMap<Digest, Transfer>,
    /// Who submitted which transfer.
    owner: HashMap<Digest, usize>,
    /// The first batch an honest replica executed at each sequence.
    executed: BTreeMap<Seq, (Digest, ReplicaId)>,
    /// Where each spend key was applied, and every sequence's outcomes, as honest replicas reported them.
    applied: HashMap<(PublicKey, u64), Seq>,
    outcomes: BTreeMap<Seq, Vec<(Digest, TxOutcome)>>,
    partition: Option<BTreeSet<ReplicaId>>,
    healed: bool,
    /// `Scenario::LoneSuspicion`: whether the suspecter left view 0 at all (in some seeds the requests it timed
    /// commit through the others before its timer fires, and it never does).
    suspecter_left: bool,
    /// When a member running `Behaviour::EquivocatingNewPrimary` first sent a NEW-VIEW of its own.
    new_view_sent_ms: Option<u64>,
    /// When a member running `Behaviour::FabricatedCertificate` first sent a VIEW-CHANGE of its own.
    view_change_sent_ms: Option<u64>,
    /// Since when each honest member has been outside the view most honest members are active in, once healed.
    lagging: BTreeMap<ReplicaId, u64>,
    /// Every COMMIT any member signed and sent (honest or not, delivered or not), by view, sequence and digest:
    /// once a quorum of them exists, a commit certificate can be formed, whoever collects it.
    commit_votes: HashMap<(View, Seq, Digest), BTreeSet<ReplicaId>>,
    /// The digest and view of the first commit certificate that could be formed at each sequence.
    certified: BTreeMap<Seq, (Digest, View)>,
    /// VIEW-CHANGEs (member, view, `view_change_id`) that an honest member withdrew with effect: a quorum held the
    /// withdrawal before it voted again (`view_change.rs`, REJOIN).
    withdrawn_with_effect: BTreeSet<(ReplicaId, View, Digest)>,
    /// How far the scenario's schedule got.
    phase: Phase,
    /// The member the reconfiguration removes: it no longer follows the cluster once the others moved on.
    removed: Option<ReplicaId>,
    /// The epoch in which each proven member was last proven. A quarantine is owed for proof of the epoch in force:
    /// proof about a NEW-VIEW or certificate of an earlier membership proves nothing under the next one, and is
    /// refused where it would execute.
    proven_in_epoch: BTreeMap<ReplicaId, u64>,
    /// What each instance of a twinned member signed, by member and slot (kind, view, sequence): the digest by
    /// instance index; and the slots where they differ.
    twin_signed: HashMap<TwinSlot, BTreeMap<usize, Digest>>,
    twin_conflicts: HashSet<TwinSlot>,
    outcome: Outcome,
    trace: sha2::Sha256,
}

/// A twinned member and a slot it signs in: kind (0 PRE-PREPARE, 1 PREPARE, 2 COMMIT, 3 CHECKPOINT), view, sequence.
type TwinSlot = (ReplicaId, (u8, View, Seq));

fn key_for(seed: u64, role: u8, index: u64) -> KeyPair {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[8] = role;
    secret[9..17].copy_from_slice(&index.to_le_bytes());
    KeyPair::from_secret(Digest::of("sim-key", &[&secret]).0)
}

/// The key that signs the simulation's reconfigurations.
fn admin_key(seed: u64) -> KeyPair {
    key_for(seed, 9, 0)
}

const INITIAL_BALANCE: u64 = 1_000;

impl Sim {
    pub fn new(mut config: SimConfig) -> Sim {
        assert!(config.replicas >= 4, "the simulator needs at least 4 replicas");
        // A scenario's own drops are the only faults of the network.
        if config.scenario.is_some() {
            (config.loss, config.duplication, config.crashes, config.partitions) = (0.0, 0.0, false, false);
        }
        let phase = match config.scenario {
            Some(Scenario::CompetingCertificates) => Phase::TargetPreparesAlone,
            Some(Scenario::FaultyChunkServers) => Phase::LaggardDown,
            Some(Scenario::LoneSuspicion) => Phase::SuspecterCutOff,
            Some(Scenario::EquivocatingNewPrimary) => Phase::OldPrimaryCutOff,
            Some(Scenario::FabricatedCertificate) => Phase::ProposalsDropped,
            Some(_) | None => Phase::Over,
        };
        // A scenario's Byzantine member is the only one, unless the run names its own.
        let mut scenario_member = None;
        if let Some(member) = config
            .scenario
            .and_then(|s| s.byzantine_member(config.seed, config.replicas))
            && config.pinned.is_empty()
        {
            config.pinned.push(member);
            config.byzantine = 1;
            scenario_member = Some(member.0);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let spares = usize::from(config.reconfigure);
        let keys: Vec<KeyPair> = (1..=(config.replicas + spares) as u64)
            .map(|i| key_for(config.seed, 1, i))
            .collect();
        let members = keys.iter().take(config.replicas).enumerate().map(|(i, k)| Member {
            id: i as ReplicaId + 1,
            public_key: k.public(),
        });
        let membership = Membership::new(members.collect()).expect("valid membership");
        if config.scenario == Some(Scenario::LoneSuspicion) && scenario_member.is_some() {
            // F suspecters, so that with the cut-off member's own suspicion they are F+1 at every size.
            let suspecters = LONE_SUSPECTER + 1..=LONE_SUSPECTER + membership.f() as ReplicaId;
            config.pinned = suspecters.map(|id| (id, Behaviour::Depose)).collect();
            config.byzantine = config.pinned.len();
        }
        if config.scenario == Some(Scenario::FaultyChunkServers) {
            // The last B of the lowest-ranked F members serve corrupted chunks; the others will crash.
            let f = membership.f() as ReplicaId;
            let b = (config.byzantine as ReplicaId).min(f);
            config.pinned = (f - b + 1..=f).map(|id| (id, Behaviour::CorruptChunks)).collect();
        }
        let byzantine_count = config.byzantine.max(config.pinned.len());
        assert!(
            byzantine_count <= membership.f(),
            "at most F = {} Byzantine replicas",
            membership.f()
        );

        let clients: Vec<Client> = (0..config.clients)
            .map(|i| Client {
                key: key_for(config.seed, 2, i as u64),
                // The last client double-spends when there are Byzantine members to try it with.
                kind: if config.scenario.is_some_and(|s| s.keeps_view_0()) || i == 1 {
                    ClientKind::OneReplicaFirst
                } else if config.byzantine > 0 && i + 1 == config.clients {
                    ClientKind::DoubleSpender
                } else {
                    ClientKind::Honest
                },
                nonce: 0,
                done: 0,
                attempt: 0,
                current: Vec::new(),
                retried: false,
                replies: BTreeMap::new(),
            })
            .collect();
        // A spare account that only Byzantine members spend from: their double spends are correctly signed.
        let accomplice = key_for(config.seed, 3, 0);
        let mut genesis: Vec<(PublicKey, u64)> = clients.iter().map(|c| (c.key.public(), INITIAL_BALANCE)).collect();
        genesis.push((accomplice.public(), INITIAL_BALANCE));
        // Filler accounts: distinct keys as bytes only (never used to verify), as a large ledger has.
        genesis.extend((0..config.accounts as u64).map(|i| {
            let mut bytes = [0xA5u8; 32];
            bytes[..8].copy_from_slice(&i.to_le_bytes());
            (postcard::from_bytes(&bytes).expect("32 bytes are a key"), 1)
        }));

        // Byzantine members: those pinned, or a random subset, each with a random behaviour.
        let mut ids: Vec<ReplicaId> = membership.ids().collect();
        let mut byzantine: BTreeMap<ReplicaId, Behaviour> = config.pinned.iter().copied().collect();
        for _ in 0..config.byzantine.saturating_sub(byzantine.len()) {
            let id = ids.remove(rng.random_range(0..ids.len()));
            byzantine.insert(id, Behaviour::DRAWN[rng.random_range(0..Behaviour::DRAWN.len())]);
        }

        let genesis_digest = Config {
            id: 1,
            membership: membership.clone(),
            genesis: genesis.clone(),
            params: config.params.clone(),
            admin: Some(admin_key(config.seed).public()),
        }
        .genesis_digest()
        .expect("valid genesis");
        let mut replicas: Vec<SimReplica> = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let id = i as ReplicaId + 1;
                let verifier = Verifier::new(
                    membership.clone(),
                    genesis_digest,
                    config.params.log_window,
                    config.params.max_batch_size,
                );
                SimReplica {
                    id,
                    key: key.clone(),
                    core: None,
                    durable: Durable::default(),
                    verifier,
                    incarnation: 0,
                    behaviour: byzantine.get(&id).copied(),
                    seen: Vec::new(),
                    saboteur: byzantine.get(&id).and_then(|b| b.drill()).map(|mut drill| {
                        // The member a scenario plays acts at every chance: the scenario is there to play its move
                        // (once in 200 seeds a backup-proposal member's few proposals all came too late to prove it).
                        if scenario_member == Some(id) {
                            drill.probability = 1.0;
                        }
                        let accomplice = Accomplice {
                            key: accomplice.clone(),
                            payee: clients[0].key.public(),
                        };
                        Saboteur::new(
                            drill,
                            id,
                            key.clone(),
                            config.seed ^ u64::from(id),
                            config.params.max_batch_size,
                        )
                        .with_accomplice(accomplice)
                        .with_genesis(genesis_digest)
                        .with_members(config.replicas as u32)
                    }),
                    detector: Detector::new(History::default()),
                    spare: id as usize > config.replicas,
                }
            })
            .collect();
        // A twinned member's second instance: its id and key, a core, log and verifier of its own, at an address
        // after the members and spares (events address instances, messages name members: `Sim::addresses_of`).
        let second_twins: Vec<SimReplica> = replicas
            .iter()
            .filter(|r| r.behaviour == Some(Behaviour::Twins))
            .map(|r| SimReplica {
                id: r.id,
                key: r.key.clone(),
                core: None,
                durable: Durable::default(),
                verifier: Verifier::new(
                    membership.clone(),
                    genesis_digest,
                    config.params.log_window,
                    config.params.max_batch_size,
                ),
                incarnation: 0,
                behaviour: r.behaviour,
                seen: Vec::new(),
                saboteur: None,
                detector: Detector::new(History::default()),
                spare: false,
            })
            .collect();
        replicas.extend(second_twins);
        let outcome = Outcome {
            seed: config.seed,
            committed: 0,
            applied: 0,
            rejected: 0,
            view_changes: 0,
            byzantine: byzantine.into_iter().collect(),
            violations: Vec::new(),
            liveness_failure: None,
            rejections: BTreeMap::new(),
            sim_time_ms: 0,
            trace: String::new(),
            proven: BTreeMap::new(),
            accused: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            epoch: 0,
            reconfigured_at_ms: None,
            scenario: config.scenario,
            scenario_reached: config.scenario.map(|_| format!("{phase:?}")),
            catch_up_ms: None,
            votes_again_ms: None,
            new_view_proof_ms: None,
            certificate_proof_ms: None,
            twin_conflicts: 0,
        };
        Sim {
            config,
            rng,
            now: 0,
            next_id: 0,
            queue: BinaryHeap::new(),
            membership,
            genesis,
            replicas,
            clients,
            signed: HashMap::new(),
            owner: HashMap::new(),
            executed: BTreeMap::new(),
            applied: HashMap::new(),
            outcomes: BTreeMap::new(),
            partition: None,
            healed: false,
            suspecter_left: false,
            new_view_sent_ms: None,
            view_change_sent_ms: None,
            lagging: BTreeMap::new(),
            commit_votes: HashMap::new(),
            certified: BTreeMap::new(),
            withdrawn_with_effect: BTreeSet::new(),
            phase,
            removed: None,
            proven_in_epoch: BTreeMap::new(),
            twin_signed: HashMap::new(),
            twin_conflicts: HashSet::new(),
            outcome,
            trace: sha2::Sha256::default(),
        }
    }

    fn schedule(&mut self, after_ms: u64, event: SimEvent) {
        self.next_id += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + after_ms,
            id: self.next_id,
            event,
        }));
    }

    fn replica_config(&self, id: ReplicaId) -> Config {
        Config {
            id,
            membership: self.membership.clone(),
            genesis: self.genesis.clone(),
            params: self.config.params.clone(),
            admin: Some(admin_key(self.config.seed).public()),
        }
    }

    fn start_replica(&mut self, index: usize) {
        let r = &self.replicas[index];
        let config = self.replica_config(r.id);
        let mut core = Replica::recover(config, r.key.clone(), &r.durable).expect("valid replica config");
        let outputs = core.start(self.now);
        let r = &mut self.replicas[index];
        r.core = Some(core);
        r.incarnation += 1;
        // A process keeps its history on disk and forgets when it last reported.
        r.detector = Detector::new(r.detector.history().clone());
        self.follow_membership(index);
        self.carry_out(index, outputs);
    }

    /// A replica's verifier checks against the membership its core has in force, as a process's does.
    fn follow_membership(&mut self, index: usize) {
        let r = &self.replicas[index];
        if let Some(core) = &r.core {
            let epoch_started_at = core.governance().epoch_started_at.unwrap_or(0);
            r.verifier
                .shared_membership()
                .set(core.membership().clone(), epoch_started_at);
            r.verifier.shared_membership().executed_up_to(core.last_executed());
        }
    }

    fn is_honest(&self, index: usize) -> bool {
        self.replicas[index].behaviour.is_none()
    }

    /// The member that runs at an address. Events address instances, by their place in `replicas` plus one: a
    /// member's own id, but for a twinned member's second instance, which comes after the members and spares.
    fn member_at(&self, address: ReplicaId) -> ReplicaId {
        self.replicas[address as usize - 1].id
    }

    /// A member's id in traces, and for a twinned member's second instance its address too.
    fn who(&self, index: usize) -> String {
        match self.replicas[index].id {
            id if id as usize == index + 1 => id.to_string(),
            id => format!("{id} (second twin, at {})", index + 1),
        }
    }

    /// The addresses of member `id`'s instances: one, or two if it is twinned. What a core sends a member reaches
    /// every instance of it the network lets through.
    fn addresses_of(&self, id: ReplicaId) -> Vec<ReplicaId> {
        (1..=self.replicas.len() as ReplicaId)
            .filter(|&address| self.member_at(address) == id)
            .collect()
    }

    /// Every instance but those of the member that runs at `index`: a twin is the same member as its sibling, and a
    /// member does not send to itself.
    fn peers_of(&self, index: usize) -> Vec<ReplicaId> {
        let id = self.replicas[index].id;
        (1..=self.replicas.len() as ReplicaId)
            .filter(|&address| self.member_at(address) != id)
            .collect()
    }

    /// Runs the scenario to the end and reports.
    pub fn run(mut self) -> Outcome {
        for index in 0..self.replicas.len() {
            if !self.replicas[index].spare {
                self.start_replica(index);
            }
        }
        if self.config.reconfigure {
            // The spare, next after the members (a twin's second instance comes after it).
            let add = self.config.replicas as ReplicaId + 1;
            let remove = self
                .outcome
                .byzantine
                .first()
                .map_or(self.config.replicas as ReplicaId, |(id, _)| *id);
            let at = self.rng.random_range(100..self.config.chaos_ms.max(101));
            self.schedule(at, SimEvent::Reconfigure { remove, add });
        }
        if self.config.scenario == Some(Scenario::FaultyChunkServers) {
            self.handle(SimEvent::Crash(self.laggard()));
        }
        for index in 0..self.replicas.len() {
            if self.replicas[index].behaviour == Some(Behaviour::Replay) {
                self.schedule(50, SimEvent::Replay(self.replicas[index].id));
            }
        }
        for client in 0..self.clients.len() {
            let start = self.rng.random_range(0..50);
            self.next_transfer(client, start);
        }
        self.plan_chaos();
        self.schedule(self.config.chaos_ms, SimEvent::Heal);

        let deadline = self.config.chaos_ms + self.config.liveness_bound_ms;
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.at > deadline {
                break;
            }
            self.now = next.at;
            self.handle(next.event);
            self.check_invariants();
            if !self.outcome.violations.is_empty() {
                break;
            }
            if self.healed && self.all_done() {
                break;
            }
        }
        if self.outcome.violations.is_empty() && !self.all_done() {
            self.outcome.liveness_failure = Some(self.describe_lag(deadline));
        }
        self.finish()
    }

    fn plan_chaos(&mut self) {
        let chaos = self.config.chaos_ms;
        if self.config.crashes {
            let honest: Vec<ReplicaId> = (0..self.replicas.len())
                .filter(|&i| self.is_honest(i) && !self.replicas[i].spare)
                .map(|i| self.replicas[i].id)
                .collect();
            for _ in 0..self.rng.random_range(0..=2) {
                let id = honest[self.rng.random_range(0..honest.len())];
                let at = self.rng.random_range(0..chaos);
                self.schedule(at, SimEvent::Crash(id));
                let back = (at + self.rng.random_range(100..2_000)).min(chaos);
                self.schedule(back, SimEvent::Restart(id));
            }
        }
        // A twinned member's splits are the run's partitions (they are its behaviour, so they play even on a calm
        // network); a random partition on top would cut across them.
        let second_twins: Vec<ReplicaId> = (1..=self.replicas.len() as ReplicaId)
            .filter(|&address| self.member_at(address) != address)
            .collect();
        if !second_twins.is_empty() {
            self.plan_twin_splits(&second_twins);
        } else if self.config.partitions && self.rng.random_bool(0.5) {
            let mut side = BTreeSet::new();
            let n = self.config.replicas;
            let size = self.rng.random_range(1..=n / 2);
            while side.len() < size {
                side.insert(self.rng.random_range(1..=n as ReplicaId));
            }
            let at = self.rng.random_range(0..chaos);
            self.schedule(at, SimEvent::Partition(side.into_iter().collect()));
        }
    }

    /// `Behaviour::Twins`: the two instances of each twinned member meet different parts of the cluster. The chaos
    /// window is cut in four quarters; in one, drawn from the seed, nothing is split and both instances see everyone.
    /// In each other the members that are not twinned are split in two non-empty groups drawn from the seed, the
    /// first instances joining the first group and the second instances the second, and nothing crosses. So each
    /// instance acts on what its group does: at N = 4 one of them and the group of two make a quorum, and the next
    /// split lets the other meet a quorum that holds what its twin signed. The heal ends the splits: all instances
    /// then see everyone (twins never see each other: they are one member), and the honest members must commit.
    fn plan_twin_splits(&mut self, second_twins: &[ReplicaId]) {
        let chaos = self.config.chaos_ms;
        let twinned: Vec<ReplicaId> = second_twins.iter().map(|&address| self.member_at(address)).collect();
        let others: Vec<ReplicaId> = (1..=self.config.replicas as ReplicaId)
            .filter(|id| !twinned.contains(id))
            .collect();
        let whole = self.rng.random_range(0..4);
        for quarter in 0..4 {
            let mut side = Vec::new();
            if quarter != whole {
                let mut pool = others.clone();
                for _ in 0..self.rng.random_range(1..others.len()) {
                    side.push(pool.remove(self.rng.random_range(0..pool.len())));
                }
                // A member's first instance is at its own id.
                side.extend(&twinned);
            }
            self.schedule(quarter * chaos / 4, SimEvent::Partition(side));
        }
    }

    fn handle(&mut self, event: SimEvent) {
        if self.config.verbose
            && matches!(
                event,
                SimEvent::Crash(_) | SimEvent::Restart(_) | SimEvent::Partition(_) | SimEvent::Heal
            )
        {
            eprintln!("{:>6} ms network: {event:?}", self.now);
        }
        match event {
            SimEvent::Deliver { from, to, payload } => self.deliver(from, to, payload),
            SimEvent::Reconfigure { remove, add } => self.reconfigure(remove, add),
            SimEvent::Reply { client, reply } => self.client_reply(client, reply),
            SimEvent::Timer {
                replica,
                incarnation,
                timer,
            } => {
                let index = replica as usize - 1;
                if self.replicas[index].incarnation == incarnation {
                    self.step(index, Input::Timer(timer));
                }
            }
            SimEvent::Observed {
                replica,
                incarnation,
                observation,
            } => {
                let index = replica as usize - 1;
                if self.replicas[index].incarnation == incarnation {
                    self.act_on(index, *observation);
                }
            }
            SimEvent::Crash(id) => {
                let r = &mut self.replicas[id as usize - 1];
                r.core = None;
                r.incarnation += 1;
            }
            SimEvent::Restart(id) => {
                if self.replicas[id as usize - 1].core.is_none() && !self.replicas[id as usize - 1].spare {
                    self.start_replica(id as usize - 1);
                }
            }
            SimEvent::ClientRetry { client, attempt } => {
                let c = &self.clients[client];
                if c.attempt == attempt && !c.current.is_empty() {
                    self.send_current(client);
                    let retry = self.config.params.view_change_timeout_ms;
                    self.schedule(retry, SimEvent::ClientRetry { client, attempt });
                }
            }
            SimEvent::Replay(id) => {
                let index = id as usize - 1;
                if !self.replicas[index].seen.is_empty() {
                    let pick = self.rng.random_range(0..self.replicas[index].seen.len());
                    let message = self.replicas[index].seen[pick].clone();
                    let to = self.rng.random_range(1..=self.replicas.len() as ReplicaId);
                    if to != id {
                        self.network_send(id, to, Payload::Message(message));
                    }
                }
                self.schedule(20, SimEvent::Replay(id));
            }
            SimEvent::Partition(side) => self.partition = Some(side.into_iter().collect()),
            SimEvent::Heal => {
                if self.phase == Phase::LaggardCatchingUp {
                    let laggard = self.laggard();
                    let progress = self.replicas[laggard as usize - 1]
                        .core
                        .as_ref()
                        .and_then(|core| core.state_transfer_progress());
                    self.violation(format!(
                        "state transfer stalled: replica {laggard} has not caught up by the end of the schedule, \
                         with the F lowest-ranked peers failed (checkpoint, chunks held, of): {progress:?}"
                    ));
                    self.outcome.catch_up_ms = None;
                }
                self.healed = true;
                // The schedule ends with the chaos window, however far it got; the lone suspicion's cut ends there.
                if self.phase == Phase::SuspecterCutOff {
                    self.advance_phase(Phase::Over);
                }
                self.phase = Phase::Over;
                self.partition = None;
                for index in 0..self.replicas.len() {
                    if self.replicas[index].core.is_none() && !self.replicas[index].spare {
                        self.start_replica(index);
                    }
                }
            }
        }
    }

    /// Starts the new member and hands every running replica the administrator's signed reconfiguration.
    fn reconfigure(&mut self, remove: ReplicaId, add: ReplicaId) {
        self.removed = Some(remove);
        let index = add as usize - 1;
        self.replicas[index].spare = false;
        self.start_replica(index);
        let new = bft_core::governance::NewMember {
            id: add,
            public_key: self.replicas[index].key.public(),
            address: format!("sim-{add}"),
        };
        let body = bft_core::governance::Reconfiguration {
            epoch: 0,
            remove: vec![remove],
            add: vec![new],
            at_ms: self.now,
        };
        let op = Operation::Reconfigure(bft_core::governance::SignedReconfiguration::sign(
            body,
            &admin_key(self.config.seed),
        ));
        if self.config.verbose {
            eprintln!("{:>6} ms administrator: replace {remove} with {add}", self.now);
        }
        for i in 0..self.replicas.len() {
            self.step(i, Input::Operation(op.clone()));
        }
    }

    fn deliver(&mut self, from: ReplicaId, to: ReplicaId, payload: Payload) {
        let index = to as usize - 1;
        if self.replicas[index].core.is_none() {
            return;
        }
        let behaviour = self.replicas[index].behaviour;
        let input = match payload {
            Payload::Request(tx) => {
                if let Some(saboteur) = self.replicas[index].saboteur.as_mut()
                    && !saboteur.admits_request()
                {
                    return;
                }
                match self.replicas[index].verifier.request(tx) {
                    Ok(v) => Input::Request(v),
                    Err(rejection) => return self.count_rejection(index, &rejection),
                }
            }
            Payload::Message(message) => {
                // The channel is the sending member's, whichever of its instances sent.
                let from = self.member_at(from);
                if behaviour == Some(Behaviour::Replay) && self.replicas[index].seen.len() < 500 {
                    self.replicas[index].seen.push(message.clone());
                }
                // The network is the members' authenticated channel: as a process's stream, it carries only what
                // the sending member signed itself (or a committed batch).
                if !may_carry(from, &message) {
                    if self.is_honest(index) {
                        *self.outcome.rejections.entry("impersonation").or_default() += 1;
                    }
                    return;
                }
                // A censor ignores the requests other members pass on to it, as it ignores clients'.
                if let (Message::Request { .. }, Some(saboteur)) = (&message, self.replicas[index].saboteur.as_mut())
                    && !saboteur.admits_request()
                {
                    return;
                }
                let summary = MessageSummary::of(&message);
                match self.replicas[index].verifier.message_or_back(message) {
                    Ok(v) => Input::Message(v),
                    Err(refused) => {
                        let (rejection, message) = *refused;
                        let verifier = &self.replicas[index].verifier;
                        let refusal = Refusal::Verification {
                            message,
                            carrier: from,
                            membership: verifier.membership(),
                            epoch_started_at: verifier.epoch_started_at(),
                            executed: verifier.executed(),
                        };
                        if self.is_honest(index)
                            && let Some(observation) = observation_of_refusal(&summary, &rejection, refusal)
                        {
                            self.observed(index, observation);
                        }
                        return self.count_rejection(index, &rejection);
                    }
                }
            }
        };
        self.step(index, input);
    }

    fn count_rejection(&mut self, index: usize, rejection: &bft_core::verify::Rejection) {
        if self.config.verbose {
            eprintln!("{:>6} ms replica {}: rejected: {rejection}", self.now, self.who(index));
        }
        if self.is_honest(index) {
            *self.outcome.rejections.entry(rejection.label()).or_default() += 1;
        }
    }

    fn step(&mut self, index: usize, input: Input) {
        let Some(core) = self.replicas[index].core.as_mut() else {
            return;
        };
        // A peer's message the core refuses goes to the detection policy, as in a process.
        let refused = match &input {
            Input::Message(message) => Some((MessageSummary::of(message), Evidence::header(message))),
            _ => None,
        };
        match core.step(self.now, input) {
            Ok(outputs) => self.carry_out(index, outputs),
            Err(rejection) => {
                if let (Some((summary, header)), true) = (refused, self.is_honest(index)) {
                    let replica = self.replicas[index].core.as_ref().expect("stepped above");
                    let refusal = Refusal::Core { header, replica };
                    if let Some(observation) = observation_of_refusal(&summary, &rejection, refusal) {
                        self.observed(index, observation);
                    }
                }
                self.count_rejection(index, &rejection)
            }
        }
        self.follow_execution(index);
    }

    /// A replica's verifier knows how far its core executed, as a process's does.
    fn follow_execution(&mut self, index: usize) {
        let r = &self.replicas[index];
        if let Some(core) = &r.core {
            r.verifier.shared_membership().executed_up_to(core.last_executed());
        }
    }

    fn carry_out(&mut self, index: usize, outputs: Vec<Output>) {
        let id = self.replicas[index].id;
        // Where this instance runs: its timers come back here, not to its twin (`addresses_of`).
        let address = index as ReplicaId + 1;
        let incarnation = self.replicas[index].incarnation;
        let honest = self.is_honest(index);
        if honest {
            self.check_pending_accusations(index);
        }
        // Certificates of batches executed in the step that began an epoch were accepted under the membership
        // before it (a peer may have relayed them): only the membership they were checked by can judge them.
        let mut epoch_began = false;
        for output in outputs {
            epoch_began |= matches!(output, Output::Event(Event::EpochStarted { .. }));
            match output {
                Output::Persist(entry) => {
                    // Only certificates of the membership in force: a slot below the epoch's start may still
                    // prepare after its batch executed, on the previous membership's votes.
                    let epoch_started_at = self.replicas[index]
                        .core
                        .as_ref()
                        .map_or(0, |core| core.governance().epoch_started_at.unwrap_or(0));
                    if let (true, bft_core::durable::Entry::Prepared(cert)) = (honest, &entry)
                        && cert.seq() > epoch_started_at
                    {
                        self.check_certificate(index, "prepared", |v| v.prepared_certificate(cert));
                    }
                    // A member persists its own withdrawal once a quorum holds it, and only then votes again.
                    if let (true, bft_core::durable::Entry::Rejoin(rejoin)) = (honest, &entry)
                        && rejoin.from == id
                    {
                        self.withdrawn_with_effect
                            .extend(rejoin.body.withdrawn.iter().map(|(view, vc)| (id, *view, *vc)));
                    }
                    self.replicas[index].durable.apply(entry)
                }
                Output::Send { to, message } => {
                    let to = self.addresses_of(to);
                    self.send_from(index, to, message)
                }
                Output::Broadcast(message) => {
                    if self.config.verbose
                        && let Message::PrePrepare(pp) = &message
                    {
                        let (v, n, len) = (pp.body.view, pp.body.seq, pp.body.batch.len());
                        let txs: Vec<Digest> = pp.body.batch.iter().map(|t| t.digest()).collect();
                        eprintln!(
                            "{:>6} ms replica {}: proposes view {v} seq {n}: {len} transfers {txs:?}",
                            self.now,
                            self.who(index)
                        );
                    }
                    // Everyone the simulation runs: members ignore what a non-member sends, a member added later
                    // needs what the others send.
                    let peers = self.peers_of(index);
                    self.send_from(index, peers, message);
                }
                Output::SetTimer { timer, after_ms } => self.schedule(
                    after_ms,
                    SimEvent::Timer {
                        replica: address,
                        incarnation,
                        timer,
                    },
                ),
                Output::Reply(reply) => {
                    let reply = match self.replicas[index].saboteur.as_mut() {
                        Some(saboteur) => saboteur.reply(reply),
                        None => reply,
                    };
                    let clients: BTreeSet<usize> = reply
                        .body
                        .outcomes
                        .iter()
                        .filter_map(|(d, _)| self.owner.get(d).copied())
                        .collect();
                    for client in clients {
                        self.send_lossy(SimEvent::Reply {
                            client,
                            reply: reply.clone(),
                        });
                    }
                }
                Output::Event(Event::Executed {
                    seq,
                    batch_digest,
                    outcomes,
                }) if honest => {
                    let cert = self.replicas[index]
                        .core
                        .as_ref()
                        .and_then(|core| core.committed_certificate(seq).cloned());
                    if let (Some(cert), false) = (cert, epoch_began) {
                        self.check_certificate(index, &format!("committed (sequence {seq})"), |v| {
                            v.message(Message::Committed(cert)).map(|_| ())
                        });
                    }
                    self.check_agreement(id, seq, batch_digest);
                    self.check_outcomes(id, seq, outcomes);
                }
                Output::Event(event) => {
                    if self.config.verbose {
                        eprintln!("{:>6} ms replica {}: {event:?}", self.now, self.who(index));
                    }
                    if let (true, Event::NewViewInstalled { view, .. }) = (honest, &event) {
                        self.check_new_view(index);
                        if self.config.scenario == Some(Scenario::LoneSuspicion) {
                            self.violation(format!(
                                "replica {id} installed view {view}: one member's lone suspicion changed the primary"
                            ));
                        }
                        if self.config.scenario == Some(Scenario::EquivocatingNewPrimary) && *view > 2 {
                            self.violation(format!(
                                "replica {id} installed view {view}: the Byzantine primary of view 1 took more than \
                                 one view change past it"
                            ));
                        }
                        if self.config.scenario == Some(Scenario::FabricatedCertificate) && *view > 1 {
                            self.violation(format!(
                                "replica {id} installed view {view}: a made-up certificate took more than one view \
                                 change"
                            ));
                        }
                        if *view >= 1 && matches!(self.phase, Phase::OldPrimaryCutOff | Phase::ProposalsDropped) {
                            self.advance_phase(Phase::Over);
                        }
                        if *view >= 2 && self.phase == Phase::FirstPrimaryCutOff {
                            self.advance_phase(Phase::Over);
                        }
                    }
                    if let (true, true, Event::ViewChangeStarted { from_view, .. }) =
                        (honest, self.config.scenario.is_some_and(|s| s.keeps_view_0()), &event)
                    {
                        self.violation(format!(
                            "replica {id} left view {from_view}: its primary is honest and the network calm"
                        ));
                    }
                    self.chunk_scenario_event(id, &event);
                    if id == LONE_SUSPECTER && matches!(event, Event::ViewChangeStarted { .. }) {
                        self.suspecter_left = true;
                    }
                    if let Event::ViewChangeStarted { to_view: 1.., .. } = &event
                        && self.phase == Phase::TargetPreparesAlone
                        && id != self.membership.primary(2)
                    {
                        self.advance_phase(Phase::TargetCutOff);
                    }
                    if honest {
                        let now = self.now;
                        let r = &mut self.replicas[index];
                        let observed = match &r.core {
                            Some(core) => r.detector.on_event(core, &event, now),
                            None => None,
                        };
                        if let Some(observation) = observed {
                            // Checked as made: an epoch may begin before the policy acts on it.
                            self.check_observation(index, &observation);
                            let observation = Box::new(observation);
                            let replica = address;
                            self.schedule(
                                0,
                                SimEvent::Observed {
                                    replica,
                                    incarnation,
                                    observation,
                                },
                            );
                        }
                    }
                    if let (true, Event::Decided { decision, .. }) = (honest, &event)
                        && let bft_core::governance::Decision::Quarantined { member, .. } = decision
                    {
                        self.outcome.quarantined.entry(*member).or_insert(self.now);
                    }
                    if let Event::EpochStarted { .. } = &event {
                        self.follow_membership(index);
                    }
                    if let (true, Event::EpochStarted { epoch, .. }) = (honest, &event) {
                        self.outcome.epoch = self.outcome.epoch.max(*epoch);
                        self.outcome.reconfigured_at_ms.get_or_insert(self.now);
                    }
                }
            }
        }
    }

    /// A certificate an honest replica formed itself (the one it executes on, the one it would put in a
    /// VIEW-CHANGE) must pass the checks any peer applies to it: a quorum of distinct members' votes, all for this
    /// proposal in its view. So a commit one vote short, or counting votes for another digest or of another view,
    /// is seen where it happens, not only if it later costs liveness. Signatures it checks were mostly checked on
    /// arrival already (the verifier remembers them).
    fn check_certificate(
        &mut self,
        index: usize,
        what: &str,
        check: impl FnOnce(&mut Verifier) -> Result<(), bft_core::verify::Rejection>,
    ) {
        let id = self.replicas[index].id;
        // Only a member's, checked against the membership its core has in force (a member added by a
        // reconfiguration follows the cluster, voting, before it is one).
        let r = &self.replicas[index];
        let in_force = r.verifier.shared_membership().get();
        if !r
            .core
            .as_ref()
            .is_some_and(|core| core.membership().contains(id) && core.membership() == &*in_force)
        {
            return;
        }
        if let Err(rejection) = check(&mut self.replicas[index].verifier) {
            self.violation(format!(
                "replica {id} formed a {what} certificate its peers refuse: {rejection}"
            ));
        }
    }

    /// An honest replica's observation goes through the detection policy the process runs; what it puts to
    /// consensus is stepped into its core. The simulator checks on top that the observation frames no honest member.
    fn observed(&mut self, index: usize, observation: Observation) {
        self.check_observation(index, &observation);
        self.act_on(index, observation);
    }

    /// The detection policy acts on an observation already checked.
    fn act_on(&mut self, index: usize, observation: Observation) {
        let now = self.now;
        let SimReplica {
            core, detector, key, ..
        } = &mut self.replicas[index];
        let Some(core) = core.as_ref() else {
            return;
        };
        let detected = detector.observed(core, key, observation, now);
        if let Some(op) = detected.operation {
            if let Operation::Accuse(accusation) = &op {
                *self.outcome.accused.entry(accusation.body.accused).or_default() += 1;
            }
            if self.config.verbose {
                eprintln!("{:>6} ms replica {}: puts to consensus {}", now, index + 1, op.kind());
            }
            self.step(index, Input::Operation(op));
        }
    }

    /// What an honest replica observes about another member must be true of a Byzantine one: evidence must
    /// verify and prove a Byzantine member wrong (proof never frames the honest), and even an observation that is
    /// only the replica's word (a bad signature, logged and maybe an accusation) never names an honest member.
    fn check_observation(&mut self, index: usize, observation: &Observation) {
        let me = self.replicas[index].id;
        let Some((membership, epoch_started_at)) = self.replicas[index]
            .core
            .as_ref()
            .map(|c| (c.membership().clone(), c.governance().epoch_started_at.unwrap_or(0)))
        else {
            return;
        };
        let honest = |sim: &Sim, member: ReplicaId| {
            sim.replicas
                .get((member as usize).wrapping_sub(1))
                .is_some_and(|r| r.behaviour.is_none())
        };
        let Some(evidence) = &observation.proof else {
            let member = observation.member;
            if member != me && honest(self, member) {
                self.violation(format!(
                    "replica {me} observes honest member {member}: {} in a {}",
                    observation.fault.name(),
                    observation.message
                ));
            }
            return;
        };
        match evidence.verify(&membership, epoch_started_at) {
            Ok((member, _)) if honest(self, member) => {
                self.violation(format!("evidence accuses honest member {member}: {evidence:?}"))
            }
            // Proof held by a replica that is no member (one being added meets a peer's bad state chunks first)
            // is not put to consensus: it cannot reach a member (peers take streams from members only), so it is
            // not counted as proof the cluster must act on.
            Ok((_, _)) if !membership.contains(me) => {}
            Ok((member, fault)) => {
                *self.outcome.proven.entry(member).or_default() += 1;
                let epoch = self.replicas[index].core.as_ref().map_or(0, |core| core.epoch());
                self.proven_in_epoch.insert(member, epoch);
                if let (
                    Evidence::ConflictingNewViews { .. } | Evidence::NewViewWithoutQuorum { .. },
                    Some(sent),
                    None,
                ) = (evidence, self.new_view_sent_ms, self.outcome.new_view_proof_ms)
                {
                    self.outcome.new_view_proof_ms = Some(self.now - sent);
                }
                if let (Evidence::InvalidViewChange { .. }, Some(sent), None) =
                    (evidence, self.view_change_sent_ms, self.outcome.certificate_proof_ms)
                {
                    self.outcome.certificate_proof_ms = Some(self.now - sent);
                }
                if self.config.verbose {
                    eprintln!("{:>6} ms proof: member {member} {}", self.now, fault.name());
                }
            }
            // Evidence about what a member signed before a reconfiguration removed it proves nothing any more.
            Err(bft_core::evidence::EvidenceError::NotAMember(_)) => {}
            Err(error) => self.violation(format!("an honest replica's evidence does not verify: {error}")),
        }
    }

    /// Sends a member's message, through whatever its behaviour does to it.
    fn send_from(&mut self, index: usize, peers: Vec<ReplicaId>, message: Message) {
        let id = self.replicas[index].id;
        let message = match (self.replicas[index].behaviour, message) {
            (Some(Behaviour::CorruptChunks), Message::StateTransfer(st)) => {
                let mut body = st.body;
                match body.chunk.first_mut() {
                    Some(byte) => *byte ^= 0x01,
                    None => body.chunk.push(0),
                }
                Message::StateTransfer(Signed::new(id, body, &self.replicas[index].key))
            }
            (_, message) => message,
        };
        if self.replicas[index].behaviour == Some(Behaviour::Replay) && self.replicas[index].seen.len() < 500 {
            self.replicas[index].seen.push(message.clone());
        }
        if let (Some(Behaviour::EquivocatingNewPrimary), Message::NewView(nv)) =
            (self.replicas[index].behaviour, &message)
            && nv.from == id
        {
            self.new_view_sent_ms.get_or_insert(self.now);
        }
        if let (Some(Behaviour::FabricatedCertificate), Message::ViewChange(vc)) =
            (self.replicas[index].behaviour, &message)
            && vc.from == id
        {
            self.view_change_sent_ms.get_or_insert(self.now);
        }
        if self.replicas[index].behaviour == Some(Behaviour::Twins) {
            self.note_twin_signature(index, &message);
        }
        let mut extra = Vec::new();
        let copies = match self.replicas[index].saboteur.as_mut() {
            Some(saboteur) => {
                saboteur.now_ms = self.now;
                let copies = saboteur.outgoing(&message, peers.len());
                for tx in saboteur.forged.drain(..) {
                    self.signed.insert(tx.digest(), tx.transfer);
                }
                extra = std::mem::take(&mut saboteur.extra);
                copies
            }
            None => vec![Some(message); peers.len()],
        };
        let address = index as ReplicaId + 1;
        for message in extra {
            for to in self.peers_of(index) {
                self.network_send(address, to, Payload::Message(message.clone()));
            }
        }
        for (to, copy) in peers.into_iter().zip(copies) {
            if let Some(copy) = copy {
                if let Message::Commit(vote) = &copy {
                    self.count_commit_vote(index, vote);
                }
                self.network_send(address, to, Payload::Message(copy));
            }
        }
    }

    /// What the scenario's schedule drops at its current phase (`Scenario::CompetingCertificates`).
    fn scenario_drops(&self, from: ReplicaId, to: ReplicaId, message: &Message) -> bool {
        let target = self.membership.primary(2);
        let first_primary = self.membership.primary(1);
        // The lone suspicion's Byzantine supporters speak by STATUS and by VIEW-CHANGEs for far views alone: their
        // VIEW-CHANGEs for the next views and a suspecting honest member's would be F+1, which rightly moves everyone
        // (the depose scenario plays those). Beyond twice N every replica's window lies, wherever it is in the run.
        if self.config.scenario == Some(Scenario::LoneSuspicion)
            && let Message::ViewChange(vc) = message
            && self.config.pinned.iter().any(|(id, _)| *id == from)
            && vc.body.new_view <= 2 * self.config.replicas as View
        {
            return true;
        }

        match (self.phase, message) {
            (Phase::TargetPreparesAlone, Message::Prepare(vote)) => vote.body.view == 0 && to != target,
            (Phase::TargetPreparesAlone, Message::Commit(vote)) => vote.body.view == 0,
            // The target's VIEW-CHANGE would carry its certificates into view 1.
            (Phase::TargetPreparesAlone, Message::ViewChange(_)) => from == target,
            (Phase::TargetPreparesAlone, _) => false,
            (Phase::TargetCutOff, _) => from == target || to == target,
            (Phase::FirstPrimaryCutOff, _) => from == first_primary || to == first_primary,
            (Phase::OldPrimaryCutOff, _) => {
                let primary = self.membership.primary(0);
                from == primary || to == primary
            }
            // Everything else of the primary's passes: it must join the view change for a quorum to form.
            (Phase::ProposalsDropped, Message::PrePrepare(pp)) => {
                from == self.membership.primary(0) && pp.body.view == 0
            }
            (Phase::ProposalsDropped, _) => false,
            (Phase::SuspecterCutOff, _) => {
                let primary = self.membership.primary(0);
                (from, to) == (primary, LONE_SUSPECTER) || (from, to) == (LONE_SUSPECTER, primary)
            }
            // The faulty-chunk-servers schedule crashes members rather than dropping messages.
            (Phase::Over | Phase::LaggardDown | Phase::LaggardCatchingUp, _) => false,
        }
    }

    /// Moves the scenario's schedule on after what just happened.
    fn advance_phase(&mut self, next: Phase) {
        let order = |p: Phase| p as u8;
        if order(next) > order(self.phase) {
            if self.config.verbose {
                eprintln!("{:>6} ms scenario: {next:?}", self.now);
            }
            self.phase = next;
            self.outcome.scenario_reached = Some(format!("{next:?}"));
        }
    }

    /// The member `Scenario::FaultyChunkServers` leaves behind: the last one, whose peers of lowest rank are 1..=F.
    fn laggard(&self) -> ReplicaId {
        self.config.replicas as ReplicaId
    }

    /// Moves `Scenario::FaultyChunkServers` on: once an honest member made a checkpoint stable the lagging member
    /// restarts and the faulty servers that crash do; once it adopted a state by transfer, the schedule is over.
    fn chunk_scenario_event(&mut self, id: ReplicaId, event: &Event) {
        let interval = self.config.params.checkpoint_interval;
        match (self.phase, event) {
            (Phase::LaggardDown, Event::CheckpointStable { seq }) if *seq >= interval && id != self.laggard() => {
                self.advance_phase(Phase::LaggardCatchingUp);
                self.outcome.catch_up_ms = Some(self.now);
                let crashed = self.membership.f() - self.config.byzantine.min(self.membership.f());
                for member in 1..=crashed as ReplicaId {
                    self.schedule(0, SimEvent::Crash(member));
                }
                self.schedule(0, SimEvent::Restart(self.laggard()));
            }
            (Phase::LaggardCatchingUp, Event::StateTransferred { .. }) if id == self.laggard() => {
                self.advance_phase(Phase::Over);
                self.outcome.catch_up_ms = self.outcome.catch_up_ms.map(|since| self.now - since);
            }
            _ => {}
        }
    }

    /// Agreement of commit certificates across views, whenever made: no two quorums of COMMITs for different
    /// batches at one sequence. Stronger than agreement on execution, which needs the replicas to execute.
    fn count_commit_vote(&mut self, index: usize, vote: &Signed<Commit>) {
        let Some(membership) = self.replicas[index].core.as_ref().map(|core| core.membership()) else {
            return;
        };
        if !membership.contains(vote.from) {
            return;
        }
        let quorum = membership.quorum();
        let Commit { view, seq, digest } = vote.body;
        let voters = self.commit_votes.entry((view, seq, digest)).or_default();
        if !voters.insert(vote.from) || voters.len() != quorum {
            return;
        }
        if view == 1 && self.phase == Phase::TargetCutOff {
            self.advance_phase(Phase::FirstPrimaryCutOff);
        }
        match self.certified.get(&seq).copied() {
            None => {
                self.certified.insert(seq, (digest, view));
            }
            Some((first, first_view)) if first != digest => self.violation(format!(
                "agreement: commit certificates for {first:?} in view {first_view} and {digest:?} in view {view} \
                 at sequence {seq}"
            )),
            Some(_) => {}
        }
    }

    /// Counts the slots in which a twinned member's two instances signed different messages, of the kinds a pair of
    /// which proves equivocation (`Evidence::Equivocation`): what an honest replica could prove, if it got both.
    fn note_twin_signature(&mut self, index: usize, message: &Message) {
        let (from, slot, digest) = match message {
            Message::PrePrepare(m) => (m.from, (0, m.body.view, m.body.seq), m.body.digest),
            Message::Prepare(m) => (m.from, (1, m.body.view, m.body.seq), m.body.digest),
            Message::Commit(m) => (m.from, (2, m.body.view, m.body.seq), m.body.digest),
            Message::Checkpoint(m) => (m.from, (3, 0, m.body.seq), m.body.state_digest),
            _ => return,
        };
        // Only what the instance signed itself, not what it relays.
        let id = self.replicas[index].id;
        if from != id {
            return;
        }
        let signed = self.twin_signed.entry((id, slot)).or_default();
        signed.insert(index, digest);
        if signed.values().collect::<BTreeSet<_>>().len() > 1 && self.twin_conflicts.insert((id, slot)) {
            self.outcome.twin_conflicts += 1;
        }
    }

    /// A NEW-VIEW an honest replica installs re-proposes every batch that may have committed in an earlier view
    /// above its checkpoint, at the same sequence: the heart of the view change's safety.
    fn check_new_view(&mut self, index: usize) {
        let Some(nv) = self.replicas[index]
            .core
            .as_ref()
            .and_then(|core| core.installed_new_view().cloned())
        else {
            return;
        };
        // One built on a VIEW-CHANGE withdrawn with effect may leave out what its signer voted for since: the F+1
        // honest members among the quorum that held the withdrawal refuse it, so it never gathers a quorum (the
        // agreement invariant would see a batch commit there). An honest member that never heard of the withdrawal
        // may still install it (N = 4, twins seed 25: a twinned primary built it on the side that had not heard).
        if nv.body.view_changes.iter().any(|vc| {
            self.withdrawn_with_effect
                .contains(&(vc.from, vc.body.new_view, bft_core::messages::view_change_id(vc)))
        }) {
            return;
        }
        let (checkpoint, reproposals) = bft_core::new_view::derive_new_view(&nv.body.view_changes);
        let reproposed: BTreeMap<Seq, Digest> = reproposals.iter().map(|r| (r.seq, r.digest)).collect();
        let missing: Vec<String> = self
            .certified
            .range(checkpoint.seq + 1..)
            .filter(|(_, (_, view))| *view < nv.body.view)
            .filter(|(seq, (digest, _))| reproposed.get(seq) != Some(digest))
            .map(|(seq, (digest, view))| format!("{digest:?} committed in view {view} at sequence {seq}"))
            .collect();
        for what in missing {
            let id = self.replicas[index].id;
            self.violation(format!(
                "new view {} installed by replica {id} does not re-propose {what}",
                nv.body.view
            ));
        }
    }

    /// Between clients and replicas: lost with the configured probability until the network heals, else
    /// delivered after a random delay.
    fn send_lossy(&mut self, event: SimEvent) {
        if self.healed || !self.rng.random_bool(self.config.loss) {
            let delay = self.rng.random_range(1..=self.config.max_delay_ms);
            self.schedule(delay, event);
        }
    }

    /// From one instance to another (addresses: `addresses_of`); partitions cut between instances, a scenario's own
    /// drops between members.
    fn network_send(&mut self, from: ReplicaId, to: ReplicaId, payload: Payload) {
        if let Payload::Message(message) = &payload
            && self.scenario_drops(self.member_at(from), self.member_at(to), message)
        {
            return;
        }
        if let Some(side) = &self.partition
            && side.contains(&from) != side.contains(&to)
        {
            return;
        }
        let copies = if self.healed {
            1
        } else if self.rng.random_bool(self.config.loss) {
            0
        } else if self.rng.random_bool(self.config.duplication) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(1..=self.config.max_delay_ms);
            self.schedule(
                delay,
                SimEvent::Deliver {
                    from,
                    to,
                    payload: payload.clone(),
                },
            );
        }
    }

    // ----- clients -----

    fn next_transfer(&mut self, client: usize, after_ms: u64) {
        let c = &self.clients[client];
        if c.done >= self.config.transfers_per_client {
            return;
        }
        let nonce = c.nonce + 1;
        let payee = {
            let mut other = self.rng.random_range(0..self.clients.len() - 1);
            if other >= client {
                other += 1;
            }
            self.clients[other].key.public()
        };
        // Most transfers move a few units; the rest probe the ledger's edges, each of which every replica must
        // decide alike: all of the payer's balance as the most advanced honest replica knows it (and one unit more:
        // a ledger that overdraws by one applies it), the largest amount, an unknown payee, a far overdraft, a
        // nonce skipped (only as a client's last transfer: before, it could still become the next one and apply)
        // and, beside the transfer, the payer's last nonce again (refused; a ledger that takes it double-spends).
        let balance = self.known_balance(client);
        let last = c.done + 1 == self.config.transfers_per_client;
        let mut to = payee;
        let (amount, nonce) = match self.rng.random_range(0..16) {
            0 => (balance, nonce),
            1 | 2 => (balance.saturating_add(1), nonce),
            3 => (u64::MAX, nonce),
            4 => {
                to = key_for(self.config.seed, 4, client as u64).public();
                (1, nonce)
            }
            5 => (INITIAL_BALANCE * 100, nonce),
            6 if last => (1, nonce + 1),
            7 => {
                let c = &self.clients[client];
                let again = Transfer {
                    from: c.key.public(),
                    to: payee,
                    amount: 1,
                    nonce: c.nonce,
                }
                .sign(&c.key);
                self.signed.insert(again.digest(), again.transfer);
                for replica in 1..=self.replicas.len() as ReplicaId {
                    self.send_lossy(SimEvent::Deliver {
                        from: 0,
                        to: replica,
                        payload: Payload::Request(again),
                    });
                }
                (self.rng.random_range(1..=10), nonce)
            }
            _ => (self.rng.random_range(1..=10), nonce),
        };
        let c = &self.clients[client];
        let mut txs = vec![
            Transfer {
                from: c.key.public(),
                to,
                amount,
                nonce,
            }
            .sign(&c.key),
        ];
        if c.kind == ClientKind::DoubleSpender {
            let second = Transfer {
                from: c.key.public(),
                to,
                amount: if amount == u64::MAX { amount - 1 } else { amount + 1 },
                nonce,
            }
            .sign(&c.key);
            txs.push(second);
        }
        for tx in &txs {
            self.signed.insert(tx.digest(), tx.transfer);
            self.owner.insert(tx.digest(), client);
        }
        let c = &mut self.clients[client];
        c.attempt += 1;
        c.current = txs;
        c.retried = false;
        c.replies.clear();
        let attempt = c.attempt;
        self.schedule(after_ms, SimEvent::ClientRetry { client, attempt });
    }

    /// The client's balance as the honest replica that executed the most knows it (transfers to it may still
    /// execute before the client's own: its balance only grows meanwhile, as only the client spends from it).
    fn known_balance(&self, client: usize) -> u64 {
        let key = self.clients[client].key.public();
        self.replicas
            .iter()
            .filter(|r| r.behaviour.is_none())
            .filter_map(|r| r.core.as_ref())
            .max_by_key(|core| core.last_executed())
            .and_then(|core| core.ledger().account(&key))
            .map_or(0, |account| account.balance)
    }

    /// Sends the current transfer to every replica (a double spender sends each of its two to half).
    fn send_current(&mut self, client: usize) {
        let txs = self.clients[client].current.clone();
        if self.config.verbose {
            eprintln!(
                "{:>6} ms client {client}: sends {:?}",
                self.now,
                txs.iter().map(|t| t.digest()).collect::<Vec<_>>()
            );
        }
        // A double spender splits its two transfers between the replicas at first; when it retries it wants
        // to learn which one won, so it asks everyone about both.
        let first_try = self.clients[client].replies.is_empty() && !self.clients[client].retried;
        self.clients[client].retried = true;
        let only = (first_try && self.clients[client].kind == ClientKind::OneReplicaFirst)
            .then(|| self.rng.random_range(1..=self.config.replicas as ReplicaId));
        for to in 1..=self.replicas.len() as ReplicaId {
            if only.is_some_and(|only| only != to) {
                continue;
            }
            let mine: Vec<SignedTransfer> = if first_try {
                vec![txs[(to as usize) % txs.len()]]
            } else {
                txs.clone()
            };
            for tx in mine {
                self.send_lossy(SimEvent::Deliver {
                    from: 0,
                    to,
                    payload: Payload::Request(tx),
                });
            }
        }
    }

    fn client_reply(&mut self, client: usize, reply: Signed<Reply>) {
        let Some(key) = self
            .replicas
            .get((reply.from as usize).wrapping_sub(1))
            .map(|r| r.key.public())
        else {
            return;
        };
        if !key.verify(&reply.signing_bytes(), &reply.signature) {
            return;
        }
        let f = self.membership.f();
        let c = &mut self.clients[client];
        if c.current.is_empty() {
            return;
        }
        let current: Vec<Digest> = c.current.iter().map(|tx| tx.digest()).collect();
        for (digest, outcome) in &reply.body.outcomes {
            if current.contains(digest) {
                c.replies.entry(*digest).or_default().insert(reply.from, *outcome);
            }
        }
        // F+1 matching outcomes include an honest one. Done once one transfer used the nonce (applied, or
        // rejected for want of funds), or all were rejected without using it.
        let decided = |digest: &Digest, applied: bool| {
            c.replies.get(digest).is_some_and(|votes| {
                let mut counts: BTreeMap<TxOutcome, usize> = BTreeMap::new();
                for outcome in votes.values() {
                    *counts.entry(*outcome).or_default() += 1;
                }
                // A reused nonce is not an answer about this transfer: the same transfer may have been
                // ordered twice, and the first execution decided. Asking again gets that first outcome.
                let reused = |o: &TxOutcome| matches!(o, TxOutcome::Rejected(RejectReason::NonceReused { .. }));
                counts
                    .iter()
                    .any(|(o, n)| *n > f && !reused(o) && o.consumes_nonce() == applied)
            })
        };
        let applied = current.iter().any(|d| decided(d, true));
        if applied || current.iter().all(|d| decided(d, false)) {
            if applied {
                c.nonce += 1;
            }
            c.done += 1;
            c.current.clear();
            if self.config.verbose {
                eprintln!(
                    "{:>6} ms client {client}: transfer {} decided, applied {applied}",
                    self.now, c.done
                );
            }
            self.outcome.committed += 1;
            self.next_transfer(client, 0);
        }
    }

    // ----- invariants -----

    fn check_agreement(&mut self, id: ReplicaId, seq: Seq, digest: Digest) {
        use sha2::Digest as _;
        self.trace.update(id.to_le_bytes());
        self.trace.update(seq.to_le_bytes());
        self.trace.update(digest.0);
        match self.executed.get(&seq) {
            Some((first, by)) if *first != digest => {
                let by = *by;
                self.violation(format!(
                    "agreement: replica {id} executed batch {digest:?} at sequence {seq}, replica {by} executed {first:?}"
                ));
            }
            Some(_) => {}
            None => {
                self.executed.insert(seq, (digest, id));
            }
        }
    }

    /// Validity and no double spend, from the outcomes an honest replica reports for an executed batch. A replica that
    /// restarted executes batches again from its checkpoint: the same batch at the same sequence must then
    /// give the same outcomes, and a spend key may apply only at one sequence, ever.
    fn check_outcomes(&mut self, id: ReplicaId, seq: Seq, outcomes: Vec<(Digest, TxOutcome)>) {
        if let Some(first) = self.outcomes.get(&seq) {
            if *first != outcomes {
                self.violation(format!(
                    "agreement: replica {id} reports different outcomes at sequence {seq}"
                ));
            }
            return;
        }
        for (digest, outcome) in &outcomes {
            let Some(transfer) = self.signed.get(digest).copied() else {
                self.violation(format!(
                    "validity: replica {id} executed transfer {digest:?} that no payer signed"
                ));
                continue;
            };
            if *outcome == TxOutcome::Applied {
                if let Some(earlier) = self.applied.insert((transfer.from, transfer.nonce), seq) {
                    self.violation(format!(
                        "double spend: nonce {} of {:?} applied at sequences {earlier} and {seq}",
                        transfer.nonce, transfer.from
                    ));
                }
                self.outcome.applied += 1;
            } else {
                self.outcome.rejected += 1;
            }
        }
        self.outcomes.insert(seq, outcomes);
    }

    fn check_invariants(&mut self) {
        let mut problems = Vec::new();
        let honest: Vec<ReplicaId> = self
            .replicas
            .iter()
            .filter(|r| r.behaviour.is_none())
            .map(|r| r.id)
            .collect();
        for r in &self.replicas {
            if r.behaviour.is_some() {
                continue;
            }
            if let Some(core) = &r.core {
                let governance = core.governance();
                for member in &honest {
                    if governance.is_quarantined(*member) {
                        problems.push(format!("replica {} quarantines honest member {member}", r.id));
                    }
                }
                let quarantined = core.membership().ids().filter(|m| governance.is_quarantined(*m));
                if quarantined.count() > core.membership().f() {
                    problems.push(format!("replica {} quarantines more than F members", r.id));
                }
                let ledger = core.ledger();
                if ledger.total_balance() != ledger.supply() as u128 {
                    problems.push(format!(
                        "conservation: replica {} holds {} but the supply is {}",
                        r.id,
                        ledger.total_balance(),
                        ledger.supply()
                    ));
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
        self.check_views_converge();
        if self.config.scenario == Some(Scenario::LoneSuspicion)
            && self.healed
            && self.suspecter_left
            && self.outcome.votes_again_ms.is_none()
            && let Some(view) = self.cluster_view()
            && self.replicas[LONE_SUSPECTER as usize - 1]
                .core
                .as_ref()
                .is_some_and(|core| core.view() == view && core.view_active() && !core.left_for_a_later_view())
        {
            self.outcome.votes_again_ms = Some(self.now - self.config.chaos_ms);
        }
    }

    /// Honest members that run and are members of the membership they know, with their cores.
    fn voting_honest(&self) -> impl Iterator<Item = &Replica> {
        self.replicas
            .iter()
            .filter(|r| r.behaviour.is_none() && !r.spare && Some(r.id) != self.removed)
            .filter_map(|r| r.core.as_ref())
            .filter(|core| core.membership().contains(core.id()))
    }

    /// The view that most running honest members are active in, if there is one (none while views change).
    fn cluster_view(&self) -> Option<View> {
        let mut active: BTreeMap<View, usize> = BTreeMap::new();
        let mut running = 0;
        for core in self.voting_honest() {
            running += 1;
            if core.view_active() {
                *active.entry(core.view()).or_default() += 1;
            }
        }
        active
            .into_iter()
            .find(|(_, count)| 2 * count > running)
            .map(|(view, _)| view)
    }

    /// Once the network healed, every honest member is back in the view the cluster works in, and voting there,
    /// within two view-change timeouts: a member cut off must not have climbed views on its own, nor keep back its
    /// COMMITs for having left the view alone.
    fn check_views_converge(&mut self) {
        if !self.healed {
            return;
        }
        let Some(view) = self.cluster_view() else {
            self.lagging.clear();
            return;
        };
        let outside: BTreeSet<ReplicaId> = self
            .voting_honest()
            .filter(|core| core.view() != view || !core.view_active() || core.left_for_a_later_view())
            .map(|core| core.id())
            .collect();
        self.lagging.retain(|id, _| outside.contains(id));
        let bound_ms = 2 * self.config.params.view_change_timeout_ms;
        let mut late = Vec::new();
        for id in outside {
            let since = *self.lagging.entry(id).or_insert(self.now);
            if self.now > since + bound_ms {
                let core = self.replicas[id as usize - 1].core.as_ref().expect("running");
                late.push(format!(
                    "views do not converge: replica {id} is outside the cluster's view {view} since {since} ms: {}",
                    core.describe()
                ));
            }
        }
        for problem in late {
            self.violation(problem);
        }
    }

    /// An honest replica holds at most one accusation by one accuser of one member waiting to be ordered: a member
    /// that signs accusations over and over must not crowd the ordering (one once got 64 of 700 ordered in 2 s).
    fn check_pending_accusations(&mut self, index: usize) {
        let Some(core) = self.replicas[index].core.as_ref() else {
            return;
        };
        let mut waiting = BTreeSet::new();
        let repeated = core.pending_operations().find_map(|op| match op {
            bft_core::governance::Operation::Accuse(a) if !waiting.insert((a.from, a.body.accused)) => {
                Some((a.from, a.body.accused))
            }
            _ => None,
        });
        if let Some((accuser, accused)) = repeated {
            let id = self.replicas[index].id;
            self.violation(format!(
                "replica {id} holds two accusations by member {accuser} of member {accused} waiting to be ordered"
            ));
        }
    }

    fn violation(&mut self, what: String) {
        self.outcome.violations.push(format!("at {} ms: {what}", self.now));
    }

    /// Every client finished and every honest replica holds the state the clients were told; every member proven
    /// to misbehave is quarantined (or removed) by every honest member; a reconfiguration asked for is in force
    /// and the member it added has caught up.
    fn all_done(&self) -> bool {
        if self.clients.iter().any(|c| c.done < self.config.transfers_per_client) {
            return false;
        }
        let running_honest = || {
            self.replicas
                .iter()
                .filter(|r| r.behaviour.is_none() && !r.spare && Some(r.id) != self.removed)
                .filter_map(|r| r.core.as_ref())
                .filter(|core| core.membership().contains(core.id()))
        };
        let shut_out = |core: &Replica, member: ReplicaId| {
            core.governance().is_quarantined(member) || core.governance().retired.contains(&member)
        };
        if !self
            .proven_in_epoch
            .iter()
            .all(|(member, epoch)| running_honest().all(|core| core.epoch() > *epoch || shut_out(core, *member)))
        {
            return false;
        }
        if self.config.reconfigure {
            let added = self.config.replicas as ReplicaId + 1;
            let target = running_honest().map(|c| c.last_executed()).max().unwrap_or(0);
            let new_member = self.replicas[added as usize - 1].core.as_ref();
            if running_honest().any(|core| core.epoch() < 1)
                || !new_member.is_some_and(|core| core.epoch() == 1 && core.last_executed() >= target)
            {
                return false;
            }
        }
        // Every running honest member is active in the cluster's view, and votes there.
        match self.cluster_view() {
            Some(view)
                if self
                    .voting_honest()
                    .all(|core| core.view() == view && core.view_active() && !core.left_for_a_later_view()) => {}
            _ => return false,
        }
        // A member removed by the reconfiguration no longer follows the cluster.
        let removed = |r: &SimReplica| Some(r.id) == self.removed;
        self.replicas
            .iter()
            .filter(|r| r.behaviour.is_none() && !r.spare && !removed(r))
            .all(|r| {
                r.core.as_ref().is_some_and(|core| {
                    self.clients.iter().all(|c| {
                        core.ledger()
                            .account(&c.key.public())
                            .is_some_and(|a| a.nonce == c.nonce)
                    })
                })
            })
    }

    fn describe_lag(&self, deadline: u64) -> String {
        let clients: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.done < self.config.transfers_per_client)
            .map(|(i, c)| format!("client {i} finished {} of {}", c.done, self.config.transfers_per_client))
            .collect();
        let replicas: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.behaviour.is_none())
            .map(|r| match &r.core {
                Some(core) => format!(
                    "replica {} {} epoch {} quarantined {:?}",
                    r.id,
                    core.describe(),
                    core.epoch(),
                    core.governance().quarantined.keys().collect::<Vec<_>>()
                ),
                None => format!("replica {} down", r.id),
            })
            .collect();
        format!(
            "not done by {deadline} ms: {}; {}",
            clients.join(", "),
            replicas.join(", ")
        )
    }

    fn finish(mut self) -> Outcome {
        use sha2::Digest as _;
        self.outcome.sim_time_ms = self.now;
        self.outcome.view_changes = self
            .replicas
            .iter()
            .filter(|r| r.behaviour.is_none())
            .filter_map(|r| r.core.as_ref().map(|c| c.view()))
            .max()
            .unwrap_or(0);
        // Honest replicas at the same point must hold the same state.
        let mut states: BTreeMap<Seq, (Digest, ReplicaId)> = BTreeMap::new();
        let mut problems = Vec::new();
        for r in self.replicas.iter().filter(|r| r.behaviour.is_none()) {
            if let Some(core) = &r.core {
                let digest = core.ledger().digest();
                match states.get(&core.last_executed()) {
                    Some((d, other)) if *d != digest => problems.push(format!(
                        "agreement: replicas {} and {other} executed up to {} but hold different states",
                        r.id,
                        core.last_executed()
                    )),
                    _ => {
                        states.insert(core.last_executed(), (digest, r.id));
                    }
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
        // What the scenario's Byzantine member signed proves it: a run that ended well without that proof missed it.
        if let Some(scenario) = self.config.scenario.filter(|s| s.must_prove())
            && self.outcome.violations.is_empty()
            && self.outcome.liveness_failure.is_none()
        {
            for (member, behaviour) in self.outcome.byzantine.clone() {
                if !self.outcome.proven.contains_key(&member) {
                    self.violation(format!(
                        "scenario {}: member {member} ({}) was never proven",
                        scenario.name(),
                        behaviour.name()
                    ));
                }
            }
        }
        let trace: [u8; 32] = self.trace.finalize().into();
        self.outcome.trace = bft_core::crypto::hex(&trace[..16]);
        self.outcome
    }
}

/// Runs one seed.
pub fn run(config: SimConfig) -> Outcome {
    Sim::new(config).run()
}
