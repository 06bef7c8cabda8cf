//! The configuration file of `bft-replica` (JSON): what the operator and the local testnet write and a replica
//! reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bft_core::config::{ConfigError, Membership, Params};
use bft_core::crypto::{KeyError, KeyFileError, KeyPair, PublicKey};
use bft_core::messages::{MAX_MESSAGE_BYTES, Member, ReplicaId};
use serde::{Deserialize, Serialize};

/// A member as the configuration file lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberConfig {
    pub id: ReplicaId,
    /// host:port of its gRPC service.
    pub address: String,
    /// Hex.
    pub public_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenesisAccount {
    /// The account's public key, hex.
    pub account: String,
    pub balance: u64,
}

/// The configuration file of `bft-replica` (JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeConfig {
    pub id: ReplicaId,
    /// The replica's Ed25519 private key, PKCS#8 PEM.
    pub key_file: PathBuf,
    pub members: Vec<MemberConfig>,
    pub genesis: Vec<GenesisAccount>,
    #[serde(default)]
    pub params: Params,
    pub data_dir: PathBuf,
    /// Where the gRPC service listens.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (HTTP); none when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Whether fault drills (a forced view change, injected faults) are accepted. Off in production.
    #[serde(default)]
    pub allow_fault_injection: bool,
    /// The largest message accepted from a peer: at least `messages::MAX_MESSAGE_BYTES`, the largest one sends.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// The administrator's public key (hex) that signs membership changes; part of the genesis, so every member
    /// must name the same one. Without it the membership never changes.
    #[serde(default)]
    pub admin_key: Option<String>,
}

fn default_max_message_bytes() -> usize {
    MAX_MESSAGE_BYTES
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("configuration {path} is invalid: {error}")]
    Parse { path: PathBuf, error: serde_json::Error },
    #[error("key file {path}: {error}")]
    Key { path: PathBuf, error: KeyFileError },
    #[error("member {id}: {error}")]
    MemberKey { id: ReplicaId, error: KeyError },
    #[error("administrator key: {0}")]
    AdminKey(KeyError),
    #[error("genesis account {account}: {error}")]
    GenesisKey { account: String, error: KeyError },
    #[error(transparent)]
    Membership(#[from] ConfigError),
}

/// A file's text, or an error naming the file.
pub fn read_file(path: &Path) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(path).map_err(|error| ConfigFileError::Read {
        path: path.into(),
        error,
    })
}

/// A JSON file, or an error naming the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    serde_json::from_str(&read_file(path)?).map_err(|error| ConfigFileError::Parse {
        path: path.into(),
        error,
    })
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigFileError> {
        read_json(path)
    }

    pub fn membership(&self) -> Result<Membership, ConfigFileError> {
        let members = self
            .members
            .iter()
            .map(|m| {
                let public_key = PublicKey::from_hex(&m.public_key)
                    .map_err(|error| ConfigFileError::MemberKey { id: m.id, error })?;
                Ok(Member { id: m.id, public_key })
            })
            .collect::<Result<Vec<_>, ConfigFileError>>()?;
        Ok(Membership::new(members)?)
    }

    pub fn genesis(&self) -> Result<Vec<(PublicKey, u64)>, ConfigFileError> {
        self.genesis
            .iter()
            .map(|g| {
                let key = PublicKey::from_hex(&g.account).map_err(|error| ConfigFileError::GenesisKey {
                    account: g.account.clone(),
                    error,
                })?;
                Ok((key, g.balance))
            })
            .collect()
    }

    pub fn admin(&self) -> Result<Option<PublicKey>, ConfigFileError> {
        self.admin_key
            .as_deref()
            .map(|hex| PublicKey::from_hex(hex).map_err(ConfigFileError::AdminKey))
            .transpose()
    }

    /// The replica's own key pair, from `key_file`.
    pub fn key(&self) -> Result<KeyPair, ConfigFileError> {
        let path = &self.key_file;
        KeyPair::from_pkcs8_pem(&read_file(path)?).map_err(|error| ConfigFileError::Key {
            path: path.clone(),
            error,
        })
    }
}
