//! One validator replica: `bft-replica --config replica.json`, with any setting overridden by a flag or an
//! environment variable (for containers: the key, membership and genesis come from mounted files, the rest from
//! the pod's environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bft_client::node_config::{self, ConfigFileError, NodeConfig};
use bft_replica::node::{self, NodeError};
use clap::Parser;
use serde_json::{Value, json};

/// A PBFT validator replica.
#[derive(Parser)]
#[command(name = "bft-replica", version)]
struct Args {
    /// The replica's configuration file (JSON). Optional when the flags below give everything it would.
    #[arg(long, env = "BFT_REPLICA_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, env = "BFT_LOG_JSON")]
    log_json: bool,
    /// This replica's member id.
    #[arg(long, env = "BFT_ID")]
    id: Option<u32>,
    /// Its Ed25519 private key, PKCS#8 PEM.
    #[arg(long, env = "BFT_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// The members, a JSON array of {id, address, public_key}.
    #[arg(long, env = "BFT_MEMBERS_FILE")]
    members_file: Option<PathBuf>,
    /// The genesis accounts, a JSON array of {account, balance}.
    #[arg(long, env = "BFT_GENESIS_FILE")]
    genesis_file: Option<PathBuf>,
    #[arg(long, env = "BFT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// host:port of the gRPC service.
    #[arg(long, env = "BFT_LISTEN")]
    listen: Option<SocketAddr>,
    /// host:port of /metrics, /healthz and /readyz.
    #[arg(long, env = "BFT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Accept fault drills (a forced view change, injected faults). Never in production.
    #[arg(long, env = "BFT_ALLOW_FAULT_INJECTION")]
    allow_fault_injection: Option<bool>,
    #[arg(long, env = "BFT_VIEW_CHANGE_TIMEOUT_MS")]
    view_change_timeout_ms: Option<u64>,
    #[arg(long, env = "BFT_CHECKPOINT_INTERVAL")]
    checkpoint_interval: Option<u64>,
    /// How far above the stable checkpoint sequence numbers may be assigned; at least twice the checkpoint
    /// interval. Left out (here and in the file), it is twice the checkpoint interval.
    #[arg(long, env = "BFT_LOG_WINDOW")]
    log_window: Option<u64>,
    #[arg(long, env = "BFT_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: Option<u64>,
    #[arg(long, env = "BFT_MAX_BATCH_SIZE")]
    max_batch_size: Option<u64>,
    /// How long a member proven malicious is shut out (its messages ignored).
    #[arg(long, env = "BFT_QUARANTINE_DURATION_MS")]
    quarantine_duration_ms: Option<u64>,
    /// The administrator's Ed25519 public key (hex) that signs membership changes. Part of the genesis: every
    /// member must name the same one.
    #[arg(long, env = "BFT_ADMIN_KEY")]
    admin_key: Option<String>,
}

impl Args {
    /// The configuration file's settings with the flags' on top.
    fn config(&self) -> Result<NodeConfig, NodeError> {
        let config = self.config_value()?;
        let source = self.config.clone().unwrap_or_else(|| "flags and environment".into());
        serde_json::from_value(config).map_err(|error| ConfigFileError::Parse { path: source, error }.into())
    }

    /// The configuration as JSON, before it is read as a whole.
    fn config_value(&self) -> Result<Value, NodeError> {
        // The file as JSON, flags on top, then one check of the whole: a file may leave out what flags give.
        let mut config: Value = match &self.config {
            Some(path) => node_config::read_json(path)?,
            None => json!({}),
        };
        let read_json = |path: &PathBuf| node_config::read_json::<Value>(path);
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                config[key] = value;
            }
        };
        set("id", self.id.map(Value::from));
        set("key_file", self.key_file.as_ref().map(|p| json!(p)));
        set("members", self.members_file.as_ref().map(read_json).transpose()?);
        set("genesis", self.genesis_file.as_ref().map(read_json).transpose()?);
        set("data_dir", self.data_dir.as_ref().map(|p| json!(p)));
        set("listen", self.listen.map(|a| json!(a)));
        set("metrics_listen", self.metrics_listen.map(|a| json!(a)));
        set("allow_fault_injection", self.allow_fault_injection.map(Value::from));
        set("admin_key", self.admin_key.clone().map(Value::from));
        // Only what the file or a flag gives: whatever is left out takes its default when the whole is read, the log
        // window following the checkpoint interval (filling in the defaults here would pin it at the default's).
        if !config["params"].is_object() {
            config["params"] = json!({});
        }
        for (key, value) in [
            ("view_change_timeout_ms", self.view_change_timeout_ms),
            ("checkpoint_interval", self.checkpoint_interval),
            ("log_window", self.log_window),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_batch_size", self.max_batch_size),
            ("quarantine_duration_ms", self.quarantine_duration_ms),
        ] {
            if let Some(value) = value {
                config["params"][key] = value.into();
            }
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("bft-replica: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    match runtime.block_on(node::run(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bft-replica: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(flags: &[&str]) -> bft_core::Params {
        let base = [
            "bft-replica",
            "--id",
            "1",
            "--key-file",
            "k",
            "--data-dir",
            "d",
            "--listen",
            "127.0.0.1:1",
        ];
        let args = Args::try_parse_from(base.iter().chain(flags)).unwrap();
        let mut config = args.config_value().unwrap();
        // The membership and genesis come from files; the parameters are all this test is about.
        config["members"] = json!([]);
        config["genesis"] = json!([]);
        serde_json::from_value::<NodeConfig>(config).unwrap().params
    }

    #[test]
    fn a_checkpoint_interval_alone_gives_a_valid_log_window() {
        // Regression: the defaults filled in before the flags pinned the log window at 200, so any interval above
        // 100 made every replica refuse to start.
        let p = params(&["--checkpoint-interval", "2000"]);
        assert_eq!((p.checkpoint_interval, p.log_window), (2000, 4000));
        assert_eq!(p.validate(), Ok(()));
        let p = params(&["--checkpoint-interval", "1000", "--log-window", "4096"]);
        assert_eq!((p.log_window, p.validate()), (4096, Ok(())));
        assert_eq!(params(&[]), bft_core::Params::default());
    }
}
