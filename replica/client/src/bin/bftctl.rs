//! The client and admin command line: keys, a local testnet, status and a load generator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bft_client::client::Client;
use bft_client::report;
use bft_client::testnet::{self, Layout};
use bft_core::config::Params;
use bft_core::crypto::{KeyPair, PublicKey};
use bft_core::faults::{Fault, FaultDrill};
use bft_core::ledger::{Transfer, TxOutcome};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bftctl", version, about = "Client and admin CLI for bft-replica clusters")]
struct Args {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Generate an Ed25519 keypair: the private key as PKCS#8 PEM (mode 0600), the public key printed.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a cluster of replica processes on this machine.
    Testnet {
        #[command(subcommand)]
        command: TestnetCommand,
    },
    /// Each replica's id, role, view, last executed sequence and public key.
    Status {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The membership in force: epoch, and each member's id, state (active, quarantined, removed), address and
    /// public key, as F+1 replicas report it.
    Members {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Change the membership through the protocol: remove members, add others, signed with the administrator
    /// key. Waits until the new epoch is in force and the added members take part; prints the event (JSON).
    Reconfigure {
        #[arg(long)]
        cluster: PathBuf,
        /// Member ids to remove, comma-separated.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<u32>,
        /// Members to add, comma-separated: ID (a testnet member made with `bftctl testnet add`) or
        /// ID=HOST:PORT=PUBLIC_KEY_HEX.
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// The administrator's private key (PKCS#8 PEM); by default the testnet's DIR/admin.key.
        #[arg(long)]
        admin_key: Option<PathBuf>,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// A drill: every replica leaves the view the cluster is in now, so the cluster moves one view; prints the
    /// view-change event (JSON). Signed with the administrator key.
    ViewChange {
        #[arg(long)]
        cluster: PathBuf,
        /// Required: this replaces the primary.
        #[arg(long)]
        force: bool,
        /// The administrator's private key (PKCS#8 PEM); by default the testnet's DIR/admin.key.
        #[arg(long)]
        admin_key: Option<PathBuf>,
    },
    /// Submit signed transfers: AMOUNT from one account to another, COUNT times (nonces follow the cluster's).
    Submit {
        #[arg(long)]
        cluster: PathBuf,
        /// The paying account: its index among the cluster's accounts, or a PKCS#8 PEM key file.
        #[arg(long)]
        from: String,
        /// The payee: an index among the cluster's accounts, or a public key (hex).
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// The first nonce to use (default: the next one the cluster expects).
        #[arg(long)]
        nonce: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// The consensus-health report: quorum, healthy and detected members, transactions, integrity.
    Health {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The detection log: misbehaving members with evidence, merged over every replica, oldest first.
    Detections {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The view-change history each replica kept.
    ViewChanges {
        #[arg(long)]
        cluster: PathBuf,
        /// Only this member's history.
        #[arg(long)]
        member: Option<u32>,
        /// Only the latest view change of each member shown.
        #[arg(long)]
        last: bool,
        #[arg(long)]
        json: bool,
    },
    /// A drill: make one member misbehave (refused unless it allows fault injection), or stop it with --clear.
    /// Signed with the administrator key.
    InjectFault {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        member: u32,
        /// signature-corruption, double-spend, censorship, equivocation, silence, backup-proposal, depose,
        /// forged-relay, accusation-flood, equivocating-new-primary, fabricated-certificate or round-mutation (in a
        /// share of rounds given by the probability, messages nudged by one field for some peers).
        #[arg(long, required_unless_present = "clear")]
        fault: Option<Fault>,
        /// The chance, in [0, 1], that the fault acts on each message (for censorship, each request).
        #[arg(long, default_value_t = 1.0)]
        probability: f64,
        #[arg(long, conflicts_with = "fault")]
        clear: bool,
        /// The administrator's private key (PKCS#8 PEM); by default the testnet's DIR/admin.key.
        #[arg(long)]
        admin_key: Option<PathBuf>,
    },
    /// Load: CLIENTS clients submit transfers, each one after another (closed loop) or at a given total rate
    /// (open loop), until COUNT were sent or for SECS; prints tx/s and latency percentiles.
    Bench {
        #[arg(long)]
        cluster: PathBuf,
        /// How many transfers to send (the default, 1000, unless --duration is given).
        #[arg(long, conflicts_with = "duration")]
        count: Option<usize>,
        /// Send for this many seconds instead of a count.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Open loop: transfers due at this rate over all clients; latency counts from when each was due.
        #[arg(long, value_name = "TX_PER_SEC")]
        rate: Option<f64>,
        /// Concurrent clients (each pays from its own account; at most the testnet's accounts).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Kill the primary (SIGKILL) this many seconds in, and report the view change: how long from the kill,
        /// and from the first view-change timer firing, to the first commit in the new view.
        #[arg(long, value_name = "SECS")]
        kill_primary_after: Option<f64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TestnetCommand {
    /// Generate keys, membership and genesis into DIR, start the replicas, and return once all answer.
    Up {
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        #[arg(long)]
        dir: PathBuf,
        /// Genesis accounts, whose keys go to DIR/accounts.json for clients.
        #[arg(long, default_value_t = 256)]
        accounts: usize,
        /// First port; replicas listen on consecutive ports from here, and serve metrics 100 ports higher.
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// A backup that waits this long for a request to commit suspects the primary.
        #[arg(long, default_value_t = Params::default().view_change_timeout_ms)]
        view_change_timeout_ms: u64,
        #[arg(long, default_value_t = Params::default().checkpoint_interval)]
        checkpoint_interval: u64,
        /// Client requests each replica holds pending at most (back-pressure beyond). High by default so that
        /// `bftctl bench` measures the protocol, not the admission limit.
        #[arg(long, default_value_t = 20_000)]
        max_concurrent_requests: usize,
    },
    /// Make a new member's key and configuration in DIR and start it. It is not a member until a
    /// reconfiguration adds it (`bftctl reconfigure --add ID`); meanwhile it waits for the cluster.
    Add {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u32,
    },
    /// Stop the replicas started in DIR.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bftctl: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Commands) -> Result<(), String> {
    match command {
        Commands::Keygen { out } => {
            let key = KeyPair::generate();
            write_private(&out, key.to_pkcs8_pem().as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("{}", key.public().to_hex());
            Ok(())
        }
        Commands::Testnet {
            command:
                TestnetCommand::Up {
                    replicas,
                    dir,
                    accounts,
                    base_port,
                    view_change_timeout_ms,
                    checkpoint_interval,
                    max_concurrent_requests,
                },
        } => {
            let params = Params {
                view_change_timeout_ms,
                checkpoint_interval,
                max_concurrent_requests,
                ..Params::default()
            };
            params.validate().map_err(|e| e.to_string())?;
            testnet_up(replicas, &dir, accounts, base_port, params).await
        }
        Commands::Testnet {
            command: TestnetCommand::Down { dir },
        } => {
            let stopped =
                testnet::stop_all(&dir, Duration::from_secs(5)).map_err(|e| format!("{}: {e}", dir.display()))?;
            println!("stopped {stopped} replicas");
            Ok(())
        }
        Commands::Status { cluster, json } => status(&cluster, json).await,
        Commands::Members { cluster, json } => members(&cluster, json).await,
        Commands::Testnet {
            command: TestnetCommand::Add { dir, id },
        } => testnet_add(&dir, id).await,
        Commands::Reconfigure {
            cluster,
            remove,
            add,
            admin_key,
            timeout_secs,
        } => reconfigure(&cluster, remove, &add, admin_key, Duration::from_secs(timeout_secs)).await,
        Commands::ViewChange {
            cluster,
            force,
            admin_key,
        } => {
            if !force {
                return Err("a view change replaces the primary: say --force".into());
            }
            let admin = read_admin_key(&cluster, admin_key)?;
            let (client, _, _) = connect(&cluster)?;
            let event = client.force_view_change(&admin).await.map_err(|e| e.to_string())?;
            let agent = report::agent;
            let report = serde_json::json!({
                "event": "view_change",
                "view": event.view,
                "old_primary": agent(event.old_primary),
                "new_primary": agent(event.new_primary),
                "duration_ms": event.duration_ms,
                "triggered_by": event.triggered_by.iter().map(|id| agent(*id)).collect::<Vec<_>>(),
                "quorum_met": event.quorum_met,
                "batches_recovered": event.batches_recovered,
                "transactions_recovered": event.transfers_recovered,
            });
            println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
            Ok(())
        }
        Commands::Submit {
            cluster,
            from,
            to,
            amount,
            count,
            nonce,
            json,
        } => submit(&cluster, &from, &to, amount, count, nonce, json).await,
        Commands::Health { cluster, json } => {
            let (client, _, _) = connect(&cluster)?;
            let report = report::health(&client.statuses().await, &client.detections().await);
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
            } else {
                let value = serde_json::to_value(&report).expect("serialisable");
                for (field, value) in value.as_object().expect("an object") {
                    println!("{field:<24} {value}");
                }
            }
            Ok(())
        }
        Commands::Detections { cluster, json } => {
            let (client, _, n) = connect(&cluster)?;
            let log = report::detection_log(n, &client.detections().await);
            if json {
                println!("{}", serde_json::to_string_pretty(&log).expect("serialisable"));
            } else if log.is_empty() {
                println!("no detections");
            } else {
                for e in &log {
                    let seq = e
                        .evidence
                        .sequence
                        .map_or(String::new(), |s| format!(" at sequence {s}"));
                    println!(
                        "{} {} {} ({}): {} in a {}{seq}; expected {}, received {}; seen by {} ({} times){}",
                        e.timestamp,
                        e.agent_id,
                        e.fault_type,
                        e.detection_method,
                        if e.confirmed { "confirmed" } else { "unconfirmed" },
                        e.evidence.message,
                        e.evidence.expected,
                        e.evidence.received,
                        e.voted_by.join(", "),
                        e.occurrences,
                        if e.action == "logged" {
                            String::new()
                        } else {
                            format!("; {}", e.action)
                        },
                    );
                }
            }
            Ok(())
        }
        Commands::ViewChanges {
            cluster,
            member,
            last,
            json,
        } => view_changes(&cluster, member, last, json).await,
        Commands::InjectFault {
            cluster,
            member,
            fault,
            probability,
            clear,
            admin_key,
        } => {
            let drill = match (fault, clear) {
                (_, true) => None,
                (Some(fault), false) => Some(FaultDrill::new(fault, probability)?),
                (None, false) => return Err("say --fault KIND, or --clear".into()),
            };
            let admin = read_admin_key(&cluster, admin_key)?;
            let (client, _, _) = connect(&cluster)?;
            let active = client
                .inject_fault(&admin, member, drill)
                .await
                .map_err(|e| e.to_string())?;
            match active.as_str() {
                "" => println!("bft-agent-{member}: no fault drill"),
                active => println!("bft-agent-{member}: {active}"),
            }
            Ok(())
        }
        Commands::Bench {
            cluster,
            count,
            duration,
            rate,
            clients,
            kill_primary_after,
            json,
        } => {
            let duration = duration
                .map(|s| Duration::try_from_secs_f64(s).map_err(|e| format!("--duration: {e}")))
                .transpose()?;
            let options = bft_client::bench::BenchOptions {
                clients,
                count: count.or(if duration.is_none() { Some(1000) } else { None }),
                duration,
                rate,
                progress: !json,
                kill_primary_after: kill_primary_after.map(Duration::from_secs_f64),
            };
            let report = bft_client::bench::run(&cluster, &options)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.to_json()).expect("serialisable")
                );
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}

/// An account named on the command line: an index among the cluster's accounts, or (for a payer) a PEM key file
/// or (for a payee) a public key in hex.
fn payer(name: &str, accounts: &[KeyPair]) -> Result<KeyPair, String> {
    if let Ok(index) = name.parse::<usize>() {
        return accounts.get(index).cloned().ok_or(format!(
            "the cluster has {} accounts; {index} is not one",
            accounts.len()
        ));
    }
    let pem = std::fs::read_to_string(name).map_err(|e| format!("{name}: {e}"))?;
    KeyPair::from_pkcs8_pem(&pem).map_err(|e| format!("{name}: {e}"))
}

fn payee(name: &str, accounts: &[KeyPair]) -> Result<PublicKey, String> {
    if let Ok(index) = name.parse::<usize>() {
        return accounts.get(index).map(|k| k.public()).ok_or(format!(
            "the cluster has {} accounts; {index} is not one",
            accounts.len()
        ));
    }
    PublicKey::from_hex(name).map_err(|e| format!("payee {name}: {e}"))
}

async fn submit(
    dir: &Path,
    from: &str,
    to: &str,
    amount: u64,
    count: u64,
    nonce: Option<u64>,
    json: bool,
) -> Result<(), String> {
    let (client, accounts, _) = connect(dir)?;
    let payer = payer(from, &accounts)?;
    let to = payee(to, &accounts)?;
    let first = match nonce {
        Some(nonce) => nonce,
        None => client.account_nonce(&payer.public()).await.unwrap_or(0) + 1,
    };
    let mut refused = 0;
    let mut rows = Vec::new();
    for nonce in first..first + count {
        let tx = Transfer {
            from: payer.public(),
            to,
            amount,
            nonce,
        }
        .sign(&payer);
        let digest = tx.digest().to_hex();
        let outcome = match client.submit(tx).await {
            Ok(TxOutcome::Applied) => "applied".to_string(),
            Ok(TxOutcome::Rejected(reason)) => {
                refused += 1;
                format!("rejected: {reason}")
            }
            Err(error) => {
                refused += 1;
                format!("refused: {error}")
            }
        };
        if json {
            rows.push(
                serde_json::json!({ "transaction": digest, "nonce": nonce, "amount": amount, "outcome": outcome }),
            );
        } else {
            println!("{} nonce {nonce}: {outcome}", &digest[..16]);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("serialisable"));
    }
    match refused {
        0 => Ok(()),
        n => Err(format!("{n} of {count} transfers were not applied")),
    }
}

async fn view_changes(dir: &Path, member: Option<u32>, last: bool, json: bool) -> Result<(), String> {
    let (client, _, _) = connect(dir)?;
    let mut answers = client.view_changes().await;
    answers.retain(|(id, _)| member.is_none_or(|m| m == *id));
    if answers.is_empty() {
        return Err(format!("{} is not a member", report::agent(member.unwrap_or(0))));
    }
    if last {
        for answer in answers.iter_mut().filter_map(|(_, a)| a.as_mut()) {
            let keep = answer.view_changes.len().saturating_sub(1);
            answer.view_changes.drain(..keep);
        }
    }
    if json {
        let rows: Vec<serde_json::Value> = answers
            .iter()
            .map(|(id, answer)| {
                let changes: Vec<serde_json::Value> = answer
                    .iter()
                    .flat_map(|a| &a.view_changes)
                    .map(|r| {
                        serde_json::json!({
                            "view": r.view,
                            "old_primary": report::agent(r.old_primary),
                            "new_primary": report::agent(r.new_primary),
                            "start": r.started_unix_ms.map(report::rfc3339),
                            "end": report::rfc3339(r.installed_unix_ms),
                            "duration_ms": r.started_unix_ms.map(|s| r.installed_unix_ms.saturating_sub(s)),
                            "reason": r.reason,
                            "triggered_by": r.triggered_by.iter().map(|id| report::agent(*id)).collect::<Vec<_>>(),
                            "quorum_met": r.quorum_met,
                            "batches_recovered": r.batches_recovered,
                            "transactions_recovered": r.transfers_recovered,
                        })
                    })
                    .collect();
                serde_json::json!({ "id": report::agent(*id), "reachable": answer.is_some(), "view_changes": changes })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("serialisable"));
        return Ok(());
    }
    for (id, answer) in answers {
        let Some(answer) = answer else {
            println!("{}: unreachable", report::agent(id));
            continue;
        };
        println!("{}: {} view changes", report::agent(id), answer.view_changes.len());
        for r in &answer.view_changes {
            let took = r.started_unix_ms.map_or("joined".to_string(), |s| {
                format!("{} ms", r.installed_unix_ms.saturating_sub(s))
            });
            println!(
                "  view {:>4}: {} -> {} at {} ({took}, {}), quorum {}",
                r.view,
                report::agent(r.old_primary),
                report::agent(r.new_primary),
                report::rfc3339(r.installed_unix_ms),
                if r.reason.is_empty() { "joined" } else { &r.reason },
                if r.quorum_met { "met" } else { "not met" },
            );
        }
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

fn connect(dir: &Path) -> Result<(Client, Vec<KeyPair>, usize), String> {
    let (configs, accounts) = testnet::load(dir)?;
    let client = Client::new(testnet::client_replicas(&configs)).map_err(|e| e.to_string())?;
    Ok((client, accounts, configs.len()))
}

async fn testnet_up(
    replicas: usize,
    dir: &Path,
    accounts: usize,
    base_port: u16,
    params: Params,
) -> Result<(), String> {
    if replicas < 4 {
        return Err("a cluster needs at least 4 replicas".into());
    }
    if dir.join("replica-1.json").exists() {
        return Err(format!(
            "{} already holds a testnet: `bftctl testnet down --dir` it, or pick another",
            dir.display()
        ));
    }
    let ports: Vec<u16> = (0..replicas as u16).map(|i| base_port + i).collect();
    let metrics_ports: Vec<u16> = ports.iter().map(|p| p + 100).collect();
    Layout::generate(dir, &ports, &metrics_ports, accounts, 1_000_000_000, params)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let binary = replica_binary()?;
    for id in 1..=replicas as u32 {
        testnet::spawn(&binary, dir, id).map_err(|e| format!("starting replica {id}: {e}"))?;
    }
    let (client, _, _) = connect(dir)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = client.statuses().await.iter().filter(|(_, s)| s.is_some()).count();
        if up == replicas {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {up} of {replicas} replicas answer; see {}/replica-*.log",
                dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{replicas} replicas up: bft-agent-1 … bft-agent-{replicas}, gRPC on 127.0.0.1:{base_port}…, metrics 100 ports higher; --cluster {}",
        dir.display()
    );
    Ok(())
}

async fn members(dir: &Path, json: bool) -> Result<(), String> {
    let (client, _, _) = connect(dir)?;
    let statuses = client.statuses().await;
    let epoch = client.epoch().await;
    // The membership as the replicas in that epoch report it (one that answers is enough for a listing).
    let status = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .find(|s| s.epoch == epoch)
        .ok_or("no replica answers")?;
    let (configs, _) = testnet::load(dir)?;
    let address = |id: u32, added: &str| {
        if !added.is_empty() {
            return added.to_string();
        }
        configs
            .iter()
            .find(|c| c.id == id)
            .map_or(String::new(), |c| c.listen.to_string())
    };
    let role = |id: u32| if status.primary == id { "primary" } else { "replica" };
    if json {
        let rows: Vec<serde_json::Value> = status
            .member_states
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": report::agent(m.id), "state": m.state, "role": if m.state == "removed" { "" } else { role(m.id) },
                    "address": address(m.id, &m.address), "public_key": m.public_key,
                    "quarantined_until": m.quarantined_until_unix_ms.map(report::rfc3339),
                })
            })
            .collect();
        let listing = serde_json::json!({
            "epoch": epoch, "members": status.members, "quorum_size": status.quorum_size,
            "max_failures": status.max_failures, "members_detail": rows,
        });
        println!("{}", serde_json::to_string_pretty(&listing).expect("serialisable"));
    } else {
        println!(
            "epoch {epoch}: {} members, quorum {}, F = {}",
            status.members, status.quorum_size, status.max_failures
        );
        println!(
            "{:<12} {:<12} {:<8} {:<22} public key",
            "id", "state", "role", "address"
        );
        for m in &status.member_states {
            let role = if m.state == "removed" { "" } else { role(m.id) };
            let key = m.public_key.get(..16).map_or(String::new(), |k| format!("{k}…"));
            println!(
                "{:<12} {:<12} {:<8} {:<22} {key}",
                report::agent(m.id),
                m.state,
                role,
                address(m.id, &m.address)
            );
        }
    }
    Ok(())
}

async fn testnet_add(dir: &Path, id: u32) -> Result<(), String> {
    let ports = testnet::free_ports(2).map_err(|e| e.to_string())?;
    testnet::add_member(dir, id, ports[0], ports[1])?;
    let binary = replica_binary()?;
    testnet::spawn(&binary, dir, id).map_err(|e| format!("starting replica {id}: {e}"))?;
    println!(
        "{} started on 127.0.0.1:{} (metrics :{}); not a member until `bftctl reconfigure --cluster {} --add {id}`",
        report::agent(id),
        ports[0],
        ports[1],
        dir.display()
    );
    Ok(())
}

/// The administrator key: from `path`, or the testnet's (or the operator's local mode's) `DIR/admin.key`.
fn read_admin_key(dir: &Path, path: Option<PathBuf>) -> Result<KeyPair, String> {
    match path {
        Some(path) => {
            let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            KeyPair::from_pkcs8_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => testnet::admin_key(dir),
    }
}

async fn reconfigure(
    dir: &Path,
    remove: Vec<u32>,
    add: &[String],
    admin_key: Option<PathBuf>,
    timeout: Duration,
) -> Result<(), String> {
    let admin = read_admin_key(dir, admin_key)?;
    let add = add
        .iter()
        .map(|item| new_member(dir, item))
        .collect::<Result<Vec<_>, String>>()?;
    let (client, _, _) = connect(dir)?;
    let from_epoch = client.epoch().await;
    let added: Vec<String> = add.iter().map(|m| report::agent(m.id)).collect();
    let removed: Vec<String> = remove.iter().map(|id| report::agent(*id)).collect();
    let done = client
        .reconfigure(&admin, remove, add, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let report = serde_json::json!({
        "event": "reconfiguration",
        "from_epoch": from_epoch,
        "epoch": done.epoch,
        "removed": removed,
        "added": added,
        "duration_ms": done.took.as_millis() as u64,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
    Ok(())
}

/// ID (a testnet member's files) or ID=HOST:PORT=PUBLIC_KEY_HEX.
fn new_member(dir: &Path, item: &str) -> Result<bft_core::governance::NewMember, String> {
    let parts: Vec<&str> = item.split('=').collect();
    let id: u32 = parts[0]
        .parse()
        .map_err(|_| format!("{item:?}: a member to add is ID or ID=HOST:PORT=PUBLIC_KEY_HEX"))?;
    match parts[..] {
        [_] => testnet::new_member(dir, id),
        [_, address, key] => Ok(bft_core::governance::NewMember {
            id,
            address: address.to_string(),
            public_key: PublicKey::from_hex(key).map_err(|e| format!("{item:?}: {e}"))?,
        }),
        _ => Err(format!(
            "{item:?}: a member to add is ID or ID=HOST:PORT=PUBLIC_KEY_HEX"
        )),
    }
}

fn replica_binary() -> Result<PathBuf, String> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bft-replica")))
        .filter(|p| p.exists())
        .ok_or_else(|| "bft-replica is not next to bftctl: build both (cargo build --release)".to_string())
}

async fn status(dir: &Path, json: bool) -> Result<(), String> {
    let (client, _, _) = connect(dir)?;
    let statuses = client.statuses().await;
    if json {
        let rows: Vec<serde_json::Value> = statuses
            .iter()
            .map(|(id, s)| match s {
                Some(s) => serde_json::json!({
                    "id": report::agent(*id), "status": "active",
                    "role": if s.primary == *id { "primary" } else { "replica" },
                    "view": s.view, "last_executed": s.last_executed, "public_key": s.public_key,
                }),
                None => serde_json::json!({ "id": report::agent(*id), "status": "unreachable" }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("serialisable"));
        return Ok(());
    }
    println!(
        "{:<12} {:<11} {:<8} {:>6} {:>14}  public key",
        "id", "status", "role", "view", "last executed"
    );
    for (id, s) in statuses {
        match s {
            Some(s) => {
                let role = if s.primary == id { "primary" } else { "replica" };
                let key = s.public_key.get(..8).unwrap_or("");
                println!(
                    "{:<12} {:<11} {:<8} {:>6} {:>14}  {key}…",
                    report::agent(id),
                    "active",
                    role,
                    s.view,
                    s.last_executed
                );
            }
            None => println!("{:<12} unreachable", report::agent(id)),
        }
    }
    Ok(())
}
