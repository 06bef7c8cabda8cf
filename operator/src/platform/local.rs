//! The local platform: the same control loop over `bft-replica` processes on this machine. DIR holds what a
//! `bftctl testnet` directory holds (so `bftctl --cluster DIR` works on it) and the resource's status:
//!
//! - `replica-<id>.key` (PKCS#8 PEM, mode 0600; created once, deleted when the member is fenced),
//!   `replica-<id>.json` (its configuration), `replica-<id>/` (its data), `replica-<id>.log`, `replica-<id>.pid`;
//! - `accounts.json` (generated genesis accounts' keys: test material), `admin.key` (signs reconfigurations);
//! - `status.json` (the ByzantineCluster's status, written whenever it changes), `events.jsonl`, `handled.json`;
//! - `spec.json` (the spec in force: what the API server stores on Kubernetes; an edit of FILE that changes what
//!   is fixed at creation is refused against it, also across restarts of the operator).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bft_client::node_config::{GenesisAccount, MemberConfig, NodeConfig};
use bft_client::testnet;
use bft_core::crypto::KeyPair;

use super::{ClusterObjects, Platform, PlatformError};
use crate::crd::{ByzantineClusterSpec, ByzantineClusterStatus};
use crate::plan::{MemberId, PlanEvent};

/// A member that exits is started again at most this often (a member that cannot start does not spin).
pub const RESTART_BACKOFF: Duration = Duration::from_secs(3);

pub struct LocalPlatform {
    dir: PathBuf,
    binary: PathBuf,
    spec: ByzantineClusterSpec,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    children: BTreeMap<MemberId, Child>,
    last_spawn: BTreeMap<MemberId, Instant>,
    /// The genesis membership: every member's configuration names it, whatever the epoch (membership changes
    /// are ordered by the replicas, not configured).
    members: Vec<MemberConfig>,
    genesis: Vec<GenesisAccount>,
    admin_key: Option<String>,
    last_status: Option<String>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PlatformError {
    let what = what.into();
    move |error| PlatformError::Io { what, error }
}

impl LocalPlatform {
    pub fn new(dir: &Path, binary: &Path, spec: ByzantineClusterSpec) -> Result<LocalPlatform, PlatformError> {
        std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
        Ok(LocalPlatform {
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            spec,
            state: Mutex::new(State::default()),
        })
    }

    pub fn set_spec(&mut self, spec: ByzantineClusterSpec) {
        self.spec = spec;
    }

    fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }

    fn key_path(&self, id: MemberId) -> PathBuf {
        self.path(format!("replica-{id}.key"))
    }

    fn config_path(&self, id: MemberId) -> PathBuf {
        self.path(format!("replica-{id}.json"))
    }

    /// The status recorded by an earlier run, so a restart resumes where it stopped.
    pub fn recorded_status(&self) -> Result<ByzantineClusterStatus, PlatformError> {
        let path = self.path("status.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| PlatformError::Other(format!("{}: not a ByzantineCluster status: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ByzantineClusterStatus::default()),
            Err(e) => Err(io(path.display().to_string())(e)),
        }
    }

    pub fn handled(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.path("handled.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The member's configuration, its ports chosen once and kept.
    fn config(&self, id: MemberId, state: &State) -> Result<NodeConfig, PlatformError> {
        let path = self.config_path(id);
        let (listen, metrics_listen) = match NodeConfig::load(&path) {
            Ok(old) => (old.listen, old.metrics_listen),
            Err(_) => {
                let ports = testnet::free_ports(2).map_err(io("choosing ports"))?;
                let at = |p: u16| format!("127.0.0.1:{p}").parse().expect("a valid address");
                (at(ports[0]), Some(at(ports[1])))
            }
        };
        let params = self.spec.params();
        Ok(NodeConfig {
            id,
            key_file: self.key_path(id),
            members: state.members.clone(),
            genesis: state.genesis.clone(),
            params,
            data_dir: self.path(format!("replica-{id}")),
            listen,
            metrics_listen,
            allow_fault_injection: self.spec.fault_drills.allowed,
            max_message_bytes: bft_core::messages::MAX_MESSAGE_BYTES,
            admin_key: state.admin_key.clone(),
        })
    }

    fn write_config(&self, config: &NodeConfig) -> Result<(), PlatformError> {
        let path = self.config_path(config.id);
        let text = serde_json::to_vec_pretty(config).expect("serialisable");
        if std::fs::read(&path).ok().as_deref() != Some(text.as_slice()) {
            write_atomic(&path, &text)?;
        }
        Ok(())
    }

    /// Whether the member's process runs: one this operator started, or one an earlier run started (pid file).
    fn running(&self, id: MemberId, state: &mut State) -> bool {
        if let Some(child) = state.children.get_mut(&id) {
            if matches!(child.try_wait(), Ok(None)) {
                return true;
            }
            state.children.remove(&id);
        }
        pid_alive(&self.path(format!("replica-{id}.pid")))
    }

    fn stop(&self, id: MemberId, state: &mut State) -> Result<(), PlatformError> {
        if let Some(mut child) = state.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        } else if pid_alive(&self.path(format!("replica-{id}.pid"))) {
            testnet::kill(&self.dir, id).map_err(io(format!("stopping replica {id}")))?;
        }
        match std::fs::remove_file(self.path(format!("replica-{id}.pid"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("pid file")(e)),
            _ => Ok(()),
        }
    }

    /// Stops every member (SIGTERM, then SIGKILL after `grace`).
    pub fn stop_all(&self, grace: Duration) -> Result<usize, PlatformError> {
        let mut state = self.state.lock().expect("not poisoned");
        let stopped = testnet::stop_all(&self.dir, grace).map_err(io("stopping replicas"))?;
        for (_, mut child) in std::mem::take(&mut state.children) {
            let _ = child.wait();
        }
        Ok(stopped)
    }
}

fn pid_alive(path: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return false;
    };
    // A zombie or a reused pid is not a replica: its command line must name bft-replica.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("bft-replica"))
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PlatformError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(tmp.display().to_string()))?;
    std::fs::rename(&tmp, path).map_err(io(path.display().to_string()))
}

/// Creates `path` with mode 0600 holding `bytes`, unless it exists: never overwritten.
fn create_secret_once(path: &Path, bytes: &[u8]) -> Result<bool, PlatformError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(bytes).map_err(io(path.display().to_string()))?;
            file.sync_all().map_err(io(path.display().to_string()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path.display().to_string())(e)),
    }
}

fn read_key(path: &Path) -> Result<KeyPair, PlatformError> {
    let pem = std::fs::read_to_string(path).map_err(io(path.display().to_string()))?;
    KeyPair::from_pkcs8_pem(&pem)
        .map_err(|_| PlatformError::Other(format!("{}: not a PKCS#8 Ed25519 key", path.display())))
}

impl Platform for LocalPlatform {
    async fn keys(&self) -> Result<BTreeMap<MemberId, String>, PlatformError> {
        let mut keys = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(self.dir.display().to_string()))? {
            let name = entry.map_err(io("listing"))?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_prefix("replica-").and_then(|r| r.strip_suffix(".key")) {
                if let Ok(id) = id.parse::<MemberId>() {
                    keys.insert(id, read_key(&self.key_path(id))?.public().to_hex());
                }
            }
        }
        Ok(keys)
    }

    async fn ensure_key(&self, id: MemberId) -> Result<String, PlatformError> {
        let path = self.key_path(id);
        let fresh = KeyPair::generate();
        create_secret_once(&path, fresh.to_pkcs8_pem().as_bytes())?;
        Ok(read_key(&path)?.public().to_hex())
    }

    async fn admin_key(&self) -> Result<KeyPair, PlatformError> {
        let path = self.path("admin.key");
        create_secret_once(&path, KeyPair::generate().to_pkcs8_pem().as_bytes())?;
        read_key(&path)
    }

    async fn genesis(&self) -> Result<Vec<(String, u64)>, PlatformError> {
        let mut accounts: Vec<(String, u64)> = self
            .spec
            .genesis
            .accounts
            .iter()
            .map(|a| (a.account.clone(), a.balance))
            .collect();
        let path = self.path("accounts.json");
        let (count, balance) = self
            .spec
            .genesis
            .generated_accounts
            .as_ref()
            .map_or((0, 0), |g| (g.count, g.balance));
        if !path.exists() {
            let keys: Vec<KeyPair> = (0..count).map(|_| KeyPair::generate()).collect();
            let file = testnet::Accounts {
                secrets: keys.iter().map(|k| bft_core::crypto::hex(&k.secret_bytes())).collect(),
                balance,
            };
            create_secret_once(&path, &serde_json::to_vec_pretty(&file).expect("serialisable"))?;
        }
        let text = std::fs::read_to_string(&path).map_err(io(path.display().to_string()))?;
        let file: testnet::Accounts =
            serde_json::from_str(&text).map_err(|e| PlatformError::Other(format!("{}: {e}", path.display())))?;
        for secret in &file.secrets {
            let key = bft_core::crypto::decode_hex32(secret)
                .map(KeyPair::from_secret)
                .ok_or_else(|| PlatformError::Other(format!("{}: a secret is not 64 hex digits", path.display())))?;
            accounts.push((key.public().to_hex(), file.balance));
        }
        Ok(accounts)
    }

    async fn apply_cluster(&self, objects: &ClusterObjects<'_>) -> Result<(), PlatformError> {
        let mut state = self.state.lock().expect("not poisoned");
        state.genesis = objects
            .genesis
            .iter()
            .map(|(account, balance)| GenesisAccount {
                account: account.clone(),
                balance: *balance,
            })
            .collect();
        state.admin_key = Some(objects.admin_key.to_string());
        // The genesis membership is the one an earlier run wrote, or this one's voters when there is none.
        if state.members.is_empty()
            && let Some(existing) = std::fs::read_dir(&self.dir)
                .map_err(io(self.dir.display().to_string()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .find_map(|e| NodeConfig::load(&e.path()).ok())
        {
            state.members = existing.members;
        }
        if !state.members.is_empty() {
            for id in objects.voters.iter().chain(objects.learners) {
                let config = self.config(*id, &state)?;
                self.write_config(&config)?;
            }
            return Ok(());
        }
        let mut members = Vec::new();
        for id in objects.voters {
            let config = self.config(*id, &state)?;
            // Its ports are chosen once: written now, before anyone is told the address.
            self.write_config(&config)?;
            members.push(MemberConfig {
                id: *id,
                address: config.listen.to_string(),
                public_key: objects.keys.get(id).cloned().unwrap_or_default(),
            });
        }
        state.members = members;
        Ok(())
    }

    async fn run(
        &self,
        id: MemberId,
        _learner: bool,
        _placement_group: u32,
        _admin_key: &str,
    ) -> Result<(), PlatformError> {
        let mut state = self.state.lock().expect("not poisoned");
        let config = self.config(id, &state)?;
        self.write_config(&config)?;
        if self.running(id, &mut state) {
            return Ok(());
        }
        if state.last_spawn.get(&id).is_some_and(|t| t.elapsed() < RESTART_BACKOFF) {
            return Ok(());
        }
        let child = testnet::spawn(&self.binary, &self.dir, id)
            .map_err(io(format!("starting {} for replica {id}", self.binary.display())))?;
        tracing::info!(member = id, pid = child.id(), "started");
        state.children.insert(id, child);
        state.last_spawn.insert(id, Instant::now());
        Ok(())
    }

    async fn fence(&self, id: MemberId, _admin_key: &str) -> Result<(), PlatformError> {
        let mut state = self.state.lock().expect("not poisoned");
        self.stop(id, &mut state)
    }

    async fn withdraw_key(&self, id: MemberId) -> Result<(), PlatformError> {
        match std::fs::remove_file(self.key_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("withdrawing the key")(e)),
            _ => Ok(()),
        }
    }

    async fn retire(&self, id: MemberId) -> Result<(), PlatformError> {
        let mut state = self.state.lock().expect("not poisoned");
        self.stop(id, &mut state)
    }

    fn address(&self, id: MemberId) -> String {
        NodeConfig::load(&self.config_path(id)).map_or_else(|_| String::new(), |c| c.listen.to_string())
    }

    async fn mark_handled(&self, request: &str) -> Result<(), PlatformError> {
        let mut handled = self.handled();
        handled.insert(request.to_string());
        write_atomic(
            &self.path("handled.json"),
            &serde_json::to_vec_pretty(&handled).expect("serialisable"),
        )
    }

    async fn record(&self, status: &ByzantineClusterStatus, events: &[PlanEvent]) -> Result<(), PlatformError> {
        // The events first, then the status: an operator killed between the two repeats the pass (and may say
        // again what it did), but never loses an event of a step the status shows done.
        if !events.is_empty() {
            use std::io::Write;
            let path = self.path("events.jsonl");
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(path.display().to_string()))?;
            for e in events {
                let line = serde_json::json!({
                    "time": bft_client::report::rfc3339(bft_client::unix_ms()),
                    "type": if e.warning { "Warning" } else { "Normal" },
                    "reason": e.reason,
                    "note": e.note,
                });
                if e.warning {
                    tracing::warn!(reason = e.reason, "{}", e.note);
                } else {
                    tracing::info!(reason = e.reason, "{}", e.note);
                }
                writeln!(file, "{line}").map_err(io(path.display().to_string()))?;
            }
        }
        // Conditions' times aside, an unchanged status is not written again.
        let text = serde_json::to_string_pretty(status).expect("serialisable");
        let mut state = self.state.lock().expect("not poisoned");
        if state.last_status.as_deref() != Some(text.as_str()) {
            write_atomic(&self.path("status.json"), text.as_bytes())?;
            state.last_status = Some(text);
        }
        Ok(())
    }
}

/// Takes up `spec` for the cluster in `dir` unless it changes what the spec recorded there (`spec.json`) fixed at
/// creation, as the schema's transition rules do on Kubernetes; records it when taken up.
pub fn accept_spec(dir: &Path, spec: &ByzantineClusterSpec) -> Result<(), String> {
    let path = dir.join("spec.json");
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let text = serde_json::to_string_pretty(spec).expect("serialisable");
    if let Some(recorded) = &recorded {
        let old: ByzantineClusterSpec = serde_json::from_str(recorded)
            .map_err(|e| format!("{}: not a ByzantineCluster spec: {e}", path.display()))?;
        spec.validate_update(&old)
            .map_err(|e| format!("{e} (the cluster in {} runs with {})", dir.display(), path.display()))?;
        if *recorded == text {
            return Ok(());
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_atomic(&path, text.as_bytes()).map_err(|e| e.to_string())
}

/// How often the local loop polls the replicas when nothing is in progress.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How soon the next step runs when one is in progress.
pub const STEP_INTERVAL: Duration = Duration::from_millis(200);

/// `bft-operator local FILE --dir DIR`: the control loop over local processes until `shutdown`, re-reading FILE
/// each pass (annotations ask for drills, as on Kubernetes). The members are stopped on the way out.
pub async fn run(
    file: &Path,
    dir: &Path,
    binary: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let read = |path: &Path| -> Result<crate::crd::ByzantineCluster, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        crate::crd::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let first = read(file)?;
    // A change made while the operator was stopped is refused like one made while it runs.
    accept_spec(dir, &first.spec).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut platform = LocalPlatform::new(dir, binary, first.spec.clone()).map_err(|e| e.to_string())?;
    let mut status = platform.recorded_status().map_err(|e| e.to_string())?;
    tokio::pin!(shutdown);
    let outcome = loop {
        // An edited file is taken up, unless its change is one the schema would refuse.
        let next = match read(file) {
            Ok(cluster) => match accept_spec(dir, &cluster.spec) {
                Ok(()) => {
                    let a = cluster.metadata.annotations.clone().unwrap_or_default();
                    let requests = crate::plan::Requests {
                        approved_replacement: a.get(crate::crd::annotations::APPROVE_REPLACEMENT).cloned(),
                        force_view_change: a.get(crate::crd::annotations::FORCE_VIEW_CHANGE).cloned(),
                        inject_fault: a.get(crate::crd::annotations::INJECT_FAULT).cloned(),
                        handled: platform.handled(),
                    };
                    let spec = cluster.spec;
                    platform.set_spec(spec.clone());
                    let pass = super::reconcile(
                        &platform,
                        &super::GrpcReplicas,
                        &spec,
                        cluster.metadata.generation.or(Some(1)),
                        &status,
                        &requests,
                        bft_client::unix_ms(),
                    )
                    .await;
                    match pass {
                        Ok(plan) => {
                            let soon = plan.requeue_soon;
                            status = plan.status;
                            if soon { STEP_INTERVAL } else { POLL_INTERVAL }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "reconcile failed");
                            POLL_INTERVAL
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "{} changed in a way that is refused; keeping the previous spec", file.display());
                    POLL_INTERVAL
                }
            },
            Err(error) => {
                tracing::warn!(%error, "keeping the previous spec");
                POLL_INTERVAL
            }
        };
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tokio::time::sleep(next) => {}
        }
    };
    let stopped = platform.stop_all(Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tracing::info!(stopped, "members stopped");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ByzantineClusterSpec {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/drill.yaml")).unwrap();
        crate::crd::from_yaml(&text).unwrap().spec
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bft-local-spec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_recorded_spec_refuses_a_change_of_what_is_fixed_at_creation() {
        let dir = dir("fixed");
        let created = spec();
        assert_eq!(accept_spec(&dir, &created), Ok(()));
        assert!(dir.join("spec.json").exists());

        // What may change is taken up and recorded.
        let mut edited = created.clone();
        edited.protocol.view_change_timeout_ms = 8_000;
        edited.detection.enabled = false;
        assert_eq!(accept_spec(&dir, &edited), Ok(()));

        // What is part of the replicated state is refused against the recorded spec: as an operator restarted
        // with an edited file finds it.
        let mut interval = edited.clone();
        interval.protocol.checkpoint_interval += 1;
        let mut quarantine = edited.clone();
        quarantine.detection.quarantine_duration_ms += 1_000;
        for (changed, message) in [
            (&interval, crate::crd::fixed::CHECKPOINT_INTERVAL),
            (&quarantine, crate::crd::fixed::QUARANTINE_DURATION),
        ] {
            let error = accept_spec(&dir, changed).unwrap_err();
            assert!(error.contains(message), "{error}");
            assert!(error.contains("spec.json"), "{error}");
        }
        let recorded: ByzantineClusterSpec =
            serde_json::from_str(&std::fs::read_to_string(dir.join("spec.json")).unwrap()).unwrap();
        assert_eq!(recorded, edited);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
