//! Lays out a cluster on one machine: keys, configuration files and genesis accounts in one directory.
//!
//! `DIR/replica-<id>.key` (PKCS#8 PEM, mode 0600) and `DIR/replica-<id>.json` for each member,
//! `DIR/accounts.json` with the genesis accounts' keys, so a client can sign transfers from them, and
//! `DIR/admin.key`, the administrator key that signs membership changes. Members added later (`add_member`)
//! get the same files; their configuration names the genesis members, and they learn the rest from the cluster.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client;
use crate::node_config::{GenesisAccount, MemberConfig, NodeConfig};
use bft_core::config::Params;
use bft_core::crypto::{KeyPair, PublicKey};
use bft_core::messages::ReplicaId;

/// The genesis accounts with their private keys: test material only, never for a real cluster.
#[derive(Serialize, Deserialize)]
pub struct Accounts {
    pub secrets: Vec<String>,
    pub balance: u64,
}

pub struct Layout {
    pub dir: PathBuf,
    pub configs: Vec<(ReplicaId, PathBuf, NodeConfig)>,
    pub accounts: Vec<KeyPair>,
}

impl Layout {
    /// Generates a cluster of members `bft-agent-1` … `bft-agent-n`, one per gRPC port in `ports`, each serving
    /// metrics on the port at the same place in `metrics_ports`.
    pub fn generate(
        dir: &Path,
        ports: &[u16],
        metrics_ports: &[u16],
        accounts: usize,
        balance: u64,
        params: Params,
    ) -> std::io::Result<Layout> {
        assert_eq!(ports.len(), metrics_ports.len(), "one metrics port per replica");
        std::fs::create_dir_all(dir)?;
        let admin = KeyPair::generate();
        write_secret(&dir.join(ADMIN_KEY_FILE), admin.to_pkcs8_pem().as_bytes())?;
        let keys: Vec<KeyPair> = ports.iter().map(|_| KeyPair::generate()).collect();
        let members: Vec<MemberConfig> = keys
            .iter()
            .zip(ports)
            .zip(1..)
            .map(|((key, port), id)| MemberConfig {
                id,
                address: format!("127.0.0.1:{port}"),
                public_key: key.public().to_hex(),
            })
            .collect();
        let account_keys: Vec<KeyPair> = (0..accounts).map(|_| KeyPair::generate()).collect();
        let genesis: Vec<GenesisAccount> = account_keys
            .iter()
            .map(|k| GenesisAccount {
                account: k.public().to_hex(),
                balance,
            })
            .collect();
        let mut configs = Vec::new();
        for (((key, port), metrics_port), id) in keys.iter().zip(ports).zip(metrics_ports).zip(1..) {
            let key_file = dir.join(format!("replica-{id}.key"));
            write_secret(&key_file, key.to_pkcs8_pem().as_bytes())?;
            let config = NodeConfig {
                id,
                key_file,
                members: members.clone(),
                genesis: genesis.clone(),
                params: params.clone(),
                data_dir: dir.join(format!("replica-{id}")),
                listen: format!("127.0.0.1:{port}").parse().expect("valid address"),
                metrics_listen: Some(format!("127.0.0.1:{metrics_port}").parse().expect("valid address")),
                // A testnet is where drills are run.
                allow_fault_injection: true,
                max_message_bytes: bft_core::messages::MAX_MESSAGE_BYTES,
                admin_key: Some(admin.public().to_hex()),
            };
            let path = dir.join(format!("replica-{id}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
            configs.push((id, path, config));
        }
        let secrets = account_keys
            .iter()
            .map(|k| bft_core::crypto::hex(&k.secret_bytes()))
            .collect();
        write_secret(
            &dir.join("accounts.json"),
            &serde_json::to_vec_pretty(&Accounts { secrets, balance })?,
        )?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            configs,
            accounts: account_keys,
        })
    }

    pub fn client_replicas(&self) -> Vec<client::Replica> {
        let configs: Vec<NodeConfig> = self.configs.iter().map(|(_, _, c)| c.clone()).collect();
        client_replicas(&configs)
    }
}

/// Where a testnet keeps its administrator key.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Reads a testnet's administrator key.
pub fn admin_key(dir: &Path) -> Result<KeyPair, String> {
    let path = dir.join(ADMIN_KEY_FILE);
    let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    KeyPair::from_pkcs8_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the files of a new member `id` with a fresh key, listening on `port` (metrics on `metrics_port`): the
/// same genesis as the others, so it can check what they send it. It is not a member until a reconfiguration
/// adds it; started before that, it waits, and then catches up by state transfer.
pub fn add_member(dir: &Path, id: ReplicaId, port: u16, metrics_port: u16) -> Result<NodeConfig, String> {
    let (configs, _) = load(dir)?;
    if configs.iter().any(|c| c.id == id) {
        return Err(format!("member {id} already has files in {}", dir.display()));
    }
    let key = KeyPair::generate();
    let key_file = dir.join(format!("replica-{id}.key"));
    write_secret(&key_file, key.to_pkcs8_pem().as_bytes()).map_err(|e| e.to_string())?;
    let config = NodeConfig {
        id,
        key_file,
        data_dir: dir.join(format!("replica-{id}")),
        listen: format!("127.0.0.1:{port}").parse().expect("valid address"),
        metrics_listen: Some(format!("127.0.0.1:{metrics_port}").parse().expect("valid address")),
        ..configs[0].clone()
    };
    let path = dir.join(format!("replica-{id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    Ok(config)
}

/// A testnet member as a reconfiguration adds it: id, address and public key, read from its files.
pub fn new_member(dir: &Path, id: ReplicaId) -> Result<bft_core::governance::NewMember, String> {
    let (configs, _) = load(dir)?;
    let config = configs
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| format!("member {id} has no files in {}: add it first", dir.display()))?;
    Ok(bft_core::governance::NewMember {
        id,
        public_key: own_public_key(config)?,
        address: config.listen.to_string(),
    })
}

fn own_public_key(config: &NodeConfig) -> Result<PublicKey, String> {
    let pem = std::fs::read_to_string(&config.key_file).map_err(|e| format!("{}: {e}", config.key_file.display()))?;
    KeyPair::from_pkcs8_pem(&pem)
        .map(|k| k.public())
        .map_err(|e| format!("{}: {e}", config.key_file.display()))
}

/// Reads a testnet directory written by `Layout::generate`.
pub fn load(dir: &Path) -> Result<(Vec<NodeConfig>, Vec<KeyPair>), String> {
    let mut configs = Vec::new();
    for id in 1.. {
        let path = dir.join(format!("replica-{id}.json"));
        if !path.exists() {
            break;
        }
        configs.push(NodeConfig::load(&path).map_err(|e| e.to_string())?);
    }
    if configs.is_empty() {
        return Err(format!(
            "{} holds no replica-<id>.json: create it with `bftctl testnet up`",
            dir.display()
        ));
    }
    let text = std::fs::read_to_string(dir.join("accounts.json")).map_err(|e| format!("accounts.json: {e}"))?;
    let accounts: Accounts = serde_json::from_str(&text).map_err(|e| format!("accounts.json: {e}"))?;
    let keys = accounts
        .secrets
        .iter()
        .map(|hex| bft_core::crypto::decode_hex32(hex).map(KeyPair::from_secret))
        .collect::<Option<Vec<_>>>()
        .ok_or("accounts.json: a secret is not 64 hex digits")?;
    Ok((configs, keys))
}

/// The client's view of a cluster's members: the genesis members, and those added since.
pub fn client_replicas(configs: &[NodeConfig]) -> Vec<client::Replica> {
    let mut replicas: Vec<client::Replica> = configs[0]
        .members
        .iter()
        .map(|m| client::Replica {
            id: m.id,
            address: m.address.clone(),
            public_key: PublicKey::from_hex(&m.public_key).expect("a key that loaded once"),
        })
        .collect();
    for config in configs {
        if replicas.iter().any(|r| r.id == config.id) {
            continue;
        }
        if let Ok(public_key) = own_public_key(config) {
            replicas.push(client::Replica {
                id: config.id,
                address: config.listen.to_string(),
                public_key,
            });
        }
    }
    replicas
}

/// Starts `bft-replica` for a configuration, logging to `DIR/replica-<id>.log`, and records its pid.
pub fn spawn(binary: &Path, dir: &Path, id: ReplicaId) -> std::io::Result<std::process::Child> {
    let log = std::fs::File::create(dir.join(format!("replica-{id}.log")))?;
    let child = std::process::Command::new(binary)
        .arg("--config")
        .arg(dir.join(format!("replica-{id}.json")))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?;
    std::fs::write(dir.join(format!("replica-{id}.pid")), child.id().to_string())?;
    Ok(child)
}

/// Stops every replica whose pid file is in `dir` (SIGTERM, then SIGKILL after `grace`).
pub fn stop_all(dir: &Path, grace: std::time::Duration) -> std::io::Result<usize> {
    // All are asked at once, then waited for together: a cluster stops in one grace period, not N.
    let mut stopping = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pid") {
            continue;
        }
        let pid: i32 = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
        if pid > 0 && signal(pid, "TERM") {
            stopping.push(pid);
        }
        std::fs::remove_file(&path)?;
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline && stopping.iter().any(|pid| signal(*pid, "0")) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for pid in &stopping {
        if signal(*pid, "0") {
            signal(*pid, "KILL");
        }
    }
    Ok(stopping.len())
}

/// Kills one replica of a testnet with SIGKILL (no chance to flush or say goodbye), as a crash would.
pub fn kill(dir: &Path, id: ReplicaId) -> std::io::Result<()> {
    let path = dir.join(format!("replica-{id}.pid"));
    let pid: i32 = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
    if pid <= 0 || !signal(pid, "KILL") {
        return Err(std::io::Error::other(format!(
            "replica {id} (pid {pid}) is not running"
        )));
    }
    std::fs::remove_file(&path)
}

/// Sends a signal with kill(1) (signal 0 asks whether the process exists).
fn signal(pid: i32, name: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Free loopback ports (the kernel picks them; they are released for the replicas to take).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}
