//! `bft-operator`: `crd` prints the CustomResourceDefinition, `run` runs the controller against the cluster in
//! the kubeconfig (or in-cluster), `local` runs the same control loop over local processes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::{Duration, Instant};

use bft_operator::{controller, leader, platform, telemetry};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bft-operator", version, about = "The ByzantineCluster operator")]
struct Args {
    /// Log as JSON lines.
    #[arg(long, env = "BFT_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ByzantineCluster CustomResourceDefinition (YAML), as committed in crds/.
    Crd,
    /// Run the controller against the Kubernetes cluster of the kubeconfig (or the one it runs in).
    Run {
        /// host:port of /metrics, /healthz and /readyz.
        #[arg(long, env = "BFT_OPERATOR_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
        metrics_listen: std::net::SocketAddr,
        /// The namespace of the leader-election Lease.
        #[arg(long, env = "BFT_OPERATOR_NAMESPACE", default_value = "bft-system")]
        lease_namespace: String,
        /// Only the ByzantineClusters of this namespace (RBAC in that namespace is then enough); every
        /// namespace when absent or empty.
        #[arg(long, env = "BFT_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
    },
    /// Run a ByzantineCluster on this machine: its members as local processes, its status in DIR/status.json.
    Local {
        /// The ByzantineCluster YAML (the same file `kubectl apply` takes).
        file: PathBuf,
        /// Where keys, configurations, data, logs and status.json go; `bftctl --cluster DIR` works on it.
        #[arg(long)]
        dir: PathBuf,
        /// The bft-replica binary (default: next to this one).
        #[arg(long, env = "BFT_REPLICA_BINARY")]
        replica_binary: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Crd = args.command {
        print!("{}", bft_operator::crd::crd_yaml());
        return ExitCode::SUCCESS;
    }
    telemetry::init_logging(args.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match args.command {
            Command::Crd => unreachable!("handled above"),
            Command::Run {
                metrics_listen,
                lease_namespace,
                watch_namespace,
            } => {
                run(
                    metrics_listen,
                    lease_namespace,
                    watch_namespace.filter(|ns| !ns.is_empty()),
                )
                .await
            }
            Command::Local {
                file,
                dir,
                replica_binary,
            } => {
                let binary = match replica_binary {
                    Some(b) => b,
                    None => std::env::current_exe()
                        .ok()
                        .and_then(|p| p.parent().map(|d| d.join("bft-replica")))
                        .filter(|p| p.exists())
                        .ok_or("bft-replica is not next to bft-operator: build both, or give --replica-binary")?,
                };
                platform::local::run(&file, &dir, &binary, shutdown_signal()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bft-operator: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

async fn run(
    metrics_listen: std::net::SocketAddr,
    lease_namespace: String,
    watch_namespace: Option<String>,
) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client (kubeconfig or in-cluster): {e}"))?;
    let metrics = Arc::new(telemetry::Metrics::default());
    let listener = tokio::net::TcpListener::bind(metrics_listen)
        .await
        .map_err(|e| format!("{metrics_listen}: {e}"))?;
    tokio::spawn(telemetry::serve(listener, metrics.clone()));
    let ctx = Arc::new(controller::Context::new(
        client.clone(),
        platform::GrpcReplicas,
        metrics.clone(),
    ));
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("bft-operator-{}", std::process::id()));
    let elector = leader::Elector::new(
        kube::Api::namespaced(client.clone(), &lease_namespace),
        "bft-operator",
        &identity,
        Duration::from_secs(15),
    );
    // Standby until the lease is ours.
    loop {
        match elector.try_hold().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "leader election"),
        }
        tokio::select! {
            _ = shutdown_signal() => return Ok(()),
            _ = tokio::time::sleep(elector.renew_interval()) => {}
        }
    }
    tracing::info!(%identity, "leading");
    metrics.set_leader(true);
    let controller = tokio::spawn(controller::run(ctx, watch_namespace, shutdown_signal()));
    tokio::pin!(controller);
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = &mut controller => return Ok(()),
            _ = tokio::time::sleep(elector.renew_interval()) => {}
        }
        match elector.try_hold().await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => return Err("lost the leader lease to another instance; exiting to stand by".into()),
            Err(error) => tracing::warn!(%error, "renewing the leader lease"),
        }
        // Stop acting well before the lease could expire and another instance take over.
        if renewed.elapsed() > elector.renew_interval() * 2 {
            controller.abort();
            return Err("could not renew the leader lease in time; exiting to stand by".into());
        }
    }
}
