//! Lays out a cluster on one machine: keys, configuration files and genesis accounts in one directory.
//!
//! `DIR/replica-<id>.key` (PKCS#8 PEM, mode 0600) and `DIR/replica-<id>.json` for each member, and
//! `DIR/accounts.json` with the genesis accounts' keys, so a client can sign transfers from them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client;
use crate::config::Params;
use crate::crypto::{KeyPair, PublicKey};
use crate::messages::ReplicaId;
use crate::node::{GenesisAccount, MemberConfig, NodeConfig};

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
    /// Generates a cluster of `n` members `bft-agent-1` … `bft-agent-n` listening on `ports`.
    pub fn generate(
        dir: &Path,
        ports: &[u16],
        accounts: usize,
        balance: u64,
        params: Params,
    ) -> std::io::Result<Layout> {
        std::fs::create_dir_all(dir)?;
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
        for ((key, port), id) in keys.iter().zip(ports).zip(1..) {
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
                max_message_bytes: 16 << 20,
            };
            let path = dir.join(format!("replica-{id}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
            configs.push((id, path, config));
        }
        let secrets = account_keys
            .iter()
            .map(|k| crate::crypto::hex(&k.secret_bytes()))
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
        self.configs[0]
            .2
            .members
            .iter()
            .map(|m| client::Replica {
                id: m.id,
                address: m.address.clone(),
                public_key: PublicKey::from_hex(&m.public_key).expect("generated key"),
            })
            .collect()
    }
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
