//! One validator replica: `bft-replica --config replica.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use bft_replica::node::{self, NodeConfig};
use clap::Parser;

/// A PBFT validator replica.
#[derive(Parser)]
#[command(name = "bft-replica", version)]
struct Args {
    /// The replica's configuration file (JSON).
    #[arg(long, env = "BFT_REPLICA_CONFIG")]
    config: PathBuf,
    /// Log as JSON lines.
    #[arg(long, env = "BFT_LOG_JSON")]
    log_json: bool,
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
    let config = match NodeConfig::load(&args.config) {
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
