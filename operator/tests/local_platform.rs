//! The local platform end to end: `bft-operator local` runs a ByzantineCluster as real `bft-replica` processes,
//! writes its status to DIR/status.json, leaves DIR usable as `bftctl --cluster DIR`, and fences a member the
//! replicas catch misbehaving.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bft_client::client::Client;
use bft_client::testnet;
use bft_core::ledger::{Transfer, TxOutcome};
use serde_json::Value;

/// bft-replica, built if it is not there yet (`cargo test -p bft-operator` builds only this package's binaries).
fn replica_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let binary = profile_dir.join("bft-replica");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "bft-replica", "--bin", "bft-replica"])
            .status()
            .unwrap();
        assert!(status.success(), "building bft-replica failed");
    }
    assert!(binary.exists(), "{} not found after building it", binary.display());
    binary
}

struct Operator {
    child: Child,
    dir: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = testnet::stop_all(&self.dir, Duration::from_secs(2));
    }
}

fn status(dir: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).ok()?).ok()
}

/// Polls status.json until `done` holds (the operator writes it on every change), or fails after `limit`.
fn wait_for(dir: &Path, limit: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = status(dir)
            && done(&s)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}; status: {}\noperator log:\n{}",
            status(dir).map(|s| s.to_string()).unwrap_or_default(),
            std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const CLUSTER: &str = "apiVersion: bft.dev/v1alpha1
kind: ByzantineCluster
metadata:
  name: local-e2e
ANNOTATIONS
spec:
  replicas: 4
  image: unused-locally
  protocol:
    viewChangeTimeoutMs: 1000
    checkpointInterval: 10
  genesis:
    generatedAccounts:
      count: 4
      balance: 1000000
  faultDrills:
    allowed: true
";

#[test]
fn the_local_platform_runs_a_cluster_reports_status_and_fences_a_member_caught_misbehaving() {
    let binary = replica_binary();
    let dir = std::env::temp_dir().join(format!("bft-operator-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, CLUSTER.replace("ANNOTATIONS\n", "")).unwrap();
    let log = std::fs::File::create(dir.join("operator.log")).unwrap();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_bft-operator"))
        .arg("local")
        .arg(&file)
        .arg("--dir")
        .arg(&dir)
        .arg("--replica-binary")
        .arg(&binary)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut operator = Operator {
        child,
        dir: dir.clone(),
    };

    // 1. Created and running: every member healthy, a quorum of 3, the primary known.
    let s = wait_for(&dir, Duration::from_secs(60), "4 healthy members", |s| {
        s["phase"] == "Running" && s["healthyReplicas"] == 4
    });
    println!(
        "reconcile time, new 4-member cluster to Running: {:?}",
        started.elapsed()
    );
    assert_eq!(s["quorumSize"], 3);
    assert_eq!(s["maxFailures"], 1);
    assert_eq!(s["primary"], "bft-agent-1");
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 4);
    assert!(members.iter().all(|m| m["state"] == "Active" && m["reachable"] == true));
    assert_eq!(members[0]["role"], "Primary");
    let ready = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    // Private keys stay in their files: never in status.
    let key = std::fs::read_to_string(dir.join("replica-1.key")).unwrap();
    let status_text = std::fs::read_to_string(dir.join("status.json")).unwrap();
    assert!(!status_text.contains("PRIVATE KEY") && !status_text.contains(key.lines().nth(1).unwrap()));

    // 2. DIR is a bftctl cluster directory: a client signs and commits a transfer with its accounts.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = runtime.enter();
    let (configs, accounts) = testnet::load(&dir).expect("DIR loads as a testnet");
    let client = Client::new(testnet::client_replicas(&configs)).unwrap();
    let transfer = |nonce| {
        Transfer {
            from: accounts[0].public(),
            to: accounts[1].public(),
            amount: 1,
            nonce,
        }
        .sign(&accounts[0])
    };
    let outcome = runtime.block_on(client.submit(transfer(1))).unwrap();
    assert_eq!(outcome, TxOutcome::Applied);
    wait_for(&dir, Duration::from_secs(20), "the commit counted", |s| {
        s["transactionsCommitted"] == 1
    });

    // 3. A fault drill asked for in the file: member 4 corrupts every signature. The others detect it, F+1 of
    //    them report it, and the operator stops it and withdraws its key, and reserves member 5 to replace it.
    std::fs::write(
        &file,
        CLUSTER.replace(
            "ANNOTATIONS",
            "  annotations:\n    bft.dev/inject-fault: \"4:signature-corruption:1.0\"",
        ),
    )
    .unwrap();
    let handled = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(dir.join("handled.json"))
        .unwrap_or_default()
        .contains("inject-fault=4")
    {
        assert!(Instant::now() < handled, "the drill was not carried out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let quarantined_at = Instant::now();
    for nonce in 2..=11 {
        let _ = runtime.block_on(client.submit(transfer(nonce)));
    }
    let s = wait_for(
        &dir,
        Duration::from_secs(60),
        "member 4 fenced and member 5 created",
        |s| {
            let members = s["members"].as_array().unwrap();
            members.iter().any(|m| m["id"] == 4 && m["fenced"] == true) && members.iter().any(|m| m["id"] == 5)
        },
    );
    println!(
        "quarantine to fenced and replacement under way: {:?}",
        quarantined_at.elapsed()
    );
    assert_eq!(s["replacement"]["remove"], serde_json::json!([4]));
    assert_eq!(s["replacement"]["add"], serde_json::json!([5]));
    assert!(
        !dir.join("replica-4.key").exists(),
        "the fenced member's key is withdrawn"
    );
    assert!(dir.join("replica-4").exists(), "its data stays for forensics");
    assert!(!dir.join("replica-4.pid").exists(), "its process is stopped");
    assert!(dir.join("replica-5.key").exists(), "the new member has a fresh key");
    assert!(s["detections"].as_array().unwrap().iter().any(|d| d["member"] == 4));
    assert_eq!(s["quorumMet"], true, "three healthy members are still a quorum");
    let five = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 5)
        .unwrap()
        .clone();
    assert_eq!(
        (five["state"].as_str(), five["role"].as_str()),
        (Some("Joining"), Some("Learner"))
    );
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(
        events.contains("ReplacementStarted") && events.contains("Fenced"),
        "{events}"
    );

    // 4. The replacement carried through by the replicas: member 5 is caught up and added, member 4 removed, in
    //    epoch 1; then member 4's workload is retired and its data kept.
    let s = wait_for(&dir, Duration::from_secs(90), "the replacement done in epoch 1", |s| {
        s["epoch"] == 1 && s["replacement"].is_null() && s["healthyReplicas"] == 4
    });
    println!(
        "quarantine to the replacement member taking part (epoch 1): {:?}",
        quarantined_at.elapsed()
    );
    let state = |id: u64| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| {
                (
                    m["state"].as_str().unwrap().to_string(),
                    m["role"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    assert_eq!(state(4).0, "Removed");
    assert_eq!(state(5).0, "Active");
    assert_ne!(state(5).1, "Learner");
    assert!(
        dir.join("replica-4").exists(),
        "the removed member's data stays for forensics"
    );
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(
        events.contains("Reconfigured") && events.contains("ReplacementDone"),
        "{events}"
    );
    // Every member's configuration still names the genesis membership (1 to 4): the new epoch is the replicas'.
    let (configs, _) = testnet::load(&dir).expect("DIR loads as a testnet");
    for config in &configs {
        let ids: Vec<u32> = config.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4], "replica {}", config.id);
    }
    // The new membership commits, with the new member executing too.
    let client = Client::new(
        testnet::client_replicas(&configs)
            .into_iter()
            .filter(|r| r.id != 4)
            .collect(),
    )
    .unwrap();
    // From an account not used yet: the transfers above may or may not all have committed around the fencing.
    let fresh = Transfer {
        from: accounts[2].public(),
        to: accounts[3].public(),
        amount: 1,
        nonce: 1,
    }
    .sign(&accounts[2]);
    assert_eq!(runtime.block_on(client.submit(fresh)).unwrap(), TxOutcome::Applied);
    wait_for(
        &dir,
        Duration::from_secs(20),
        "member 5 executing the new transfer",
        |s| {
            let committed = s["transactionsCommitted"].as_u64().unwrap_or(0);
            committed >= 2
                && s["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == 5 && m["reachable"] == true && m["lastExecuted"].as_u64().unwrap_or(0) > 0)
        },
    );

    // 5. Stopping the operator stops its members.
    let pid = operator.child.id();
    Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    let exit = operator.child.wait().unwrap();
    assert!(exit.success(), "the operator exits cleanly on SIGTERM: {exit:?}");
    for id in 1..=3 {
        assert!(
            !dir.join(format!("replica-{id}.pid")).exists(),
            "replica {id} still has a pid file"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cluster of the restart test: 4 members, replacements not capped (one per step is tried).
const RESTART_CLUSTER: &str = "apiVersion: bft.dev/v1alpha1
kind: ByzantineCluster
metadata:
  name: local-restart
ANNOTATIONS
spec:
  replicas: 4
  image: unused-locally
  protocol:
    viewChangeTimeoutMs: 1000
    checkpointInterval: 10
  genesis:
    generatedAccounts:
      count: 4
      balance: 1000000
  faultDrills:
    allowed: true
  replacement:
    maxPerHour: 64
";

fn start_operator(dir: &Path, file: &Path, binary: &Path) -> Child {
    // Appended to: the log of every run of the operator stays.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("operator.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_bft-operator"))
        .arg("local")
        .arg(file)
        .arg("--dir")
        .arg(dir)
        .arg("--replica-binary")
        .arg(binary)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Member ids of the live bft-replica processes started on `dir` (by their configuration file), one entry per
/// process: a member running twice shows twice.
fn member_processes(dir: &Path) -> Vec<u32> {
    let prefix = format!("{}/replica-", dir.display());
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with("bft-replica")) {
            continue;
        }
        if let Some(id) = args
            .iter()
            .find_map(|a| a.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids
}

fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn members_in(s: &Value, state: &str) -> Vec<u64> {
    s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == state)
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

/// Where in a replacement the operator is killed: as soon as status.json records `step`, or, with `ordered`,
/// once F+1 replicas are in the new epoch while status.json still records `step` (the reconfiguration ordered
/// and in force, the operator not yet told).
#[derive(Clone, Copy, Debug)]
struct KillPoint {
    step: &'static str,
    ordered: bool,
}

const fn at(step: &'static str) -> KillPoint {
    KillPoint { step, ordered: false }
}

/// Transfers submitted one after another from account 0 until `stop`: the commits the test expects to continue.
/// Returns the longest time between two commits.
fn light_load(dir: PathBuf, committed: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _in_runtime = runtime.enter();
        let (_, accounts) = testnet::load(&dir).unwrap();
        // The members as status.json has them now (members come and go).
        let client = || {
            let live = status(&dir).map(|s| members_in(&s, "Active")).unwrap_or_default();
            let (configs, _) = testnet::load(&dir).unwrap();
            let replicas = testnet::client_replicas(&configs)
                .into_iter()
                .filter(|r| live.contains(&u64::from(r.id)))
                .collect();
            Client::new(replicas).unwrap()
        };
        let mut current = client();
        let mut nonce = 1;
        let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
        while !stop.load(Ordering::SeqCst) {
            let transfer = Transfer {
                from: accounts[0].public(),
                to: accounts[1].public(),
                amount: 1,
                nonce,
            }
            .sign(&accounts[0]);
            // The same signed transfer until it commits: a retransmission is answered, never applied twice.
            match runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), current.submit(transfer)).await })
            {
                Ok(Ok(TxOutcome::Applied)) => {
                    nonce += 1;
                    committed.fetch_add(1, Ordering::SeqCst);
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                Ok(Ok(outcome)) => panic!("transfer {nonce} not applied: {outcome:?}"),
                _ => current = client(),
            }
        }
        longest
    })
}

/// The operator SIGKILLed at each step of a replacement (timed by the status.json it writes, or by the replicas
/// for the reconfiguration they ordered) and started again on the same directory, then once killed twice in one
/// replacement. One cluster, one replacement per kill point: the faulty member is replaced each time. Each must
/// end with exactly one ReplacementDone, one epoch change, the right members, no member process left over, and
/// commits continuing.
#[test]
fn an_operator_killed_at_any_step_of_a_replacement_finishes_it_once_after_a_restart() {
    let binary = replica_binary();
    let dir = std::env::temp_dir().join(format!("bft-operator-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, RESTART_CLUSTER.replace("ANNOTATIONS\n", "")).unwrap();
    let mut operator = Operator {
        child: start_operator(&dir, &file, &binary),
        dir: dir.clone(),
    };
    wait_for(&dir, Duration::from_secs(60), "4 healthy members", |s| {
        s["phase"] == "Running" && s["healthyReplicas"] == 4
    });
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = light_load(dir.clone(), committed.clone(), stop.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = runtime.enter();

    let plans: Vec<Vec<KillPoint>> = vec![
        vec![at("Fencing")],
        vec![at("CreatingMembers")],
        vec![at("CatchingUp")],
        vec![at("Reconfiguring")],
        vec![at("AwaitingEpoch")],
        vec![KillPoint {
            step: "AwaitingEpoch",
            ordered: true,
        }],
        vec![at("Retiring")],
        vec![
            at("CatchingUp"),
            KillPoint {
                step: "AwaitingEpoch",
                ordered: true,
            },
        ],
    ];
    let mut timings = Vec::new();
    for kills in plans {
        let before = status(&dir).unwrap();
        let epoch = before["epoch"].as_u64().unwrap();
        let primary = before["primary"].as_str().unwrap().to_string();
        // The newest active member that is not the primary misbehaves.
        let bad = *members_in(&before, "Active")
            .iter()
            .filter(|id| format!("bft-agent-{id}") != primary)
            .max()
            .unwrap();
        let new = before["nextMemberId"].as_u64().unwrap();
        let name = format!("r-{new}");
        let seen = events(&dir).len();
        let annotation = format!("  annotations:\n    bft.dev/inject-fault: \"{bad}:signature-corruption:1.0\"");
        std::fs::write(&file, RESTART_CLUSTER.replace("ANNOTATIONS", &annotation)).unwrap();

        let mut restarted = Instant::now();
        for kill in &kills {
            let deadline = Instant::now() + Duration::from_secs(60);
            // Every member but the faulty one, to ask which epoch the replicas are in.
            let replicas = {
                let (configs, _) = testnet::load(&dir).unwrap();
                Client::new(
                    testnet::client_replicas(&configs)
                        .into_iter()
                        .filter(|r| u64::from(r.id) != bad)
                        .collect(),
                )
                .unwrap()
            };
            loop {
                let s = status(&dir).unwrap_or_default();
                let step = s["replacement"]["step"].as_str().unwrap_or_default();
                let ours = s["replacement"]["name"] == name.as_str();
                if ours && step == kill.step {
                    if !kill.ordered {
                        break;
                    }
                    // F+1 (F = 1) replicas in the new epoch.
                    let statuses = runtime.block_on(replicas.statuses());
                    let in_new = statuses
                        .iter()
                        .filter(|(_, s)| s.as_ref().is_some_and(|s| s.epoch > epoch))
                        .count();
                    if in_new >= 2 && status(&dir).unwrap()["replacement"]["step"] == kill.step {
                        break;
                    }
                }
                let done = events(&dir)
                    .iter()
                    .any(|e| e["reason"] == "ReplacementDone" && e["note"].as_str().unwrap().starts_with(&name));
                assert!(
                    !done && Instant::now() < deadline,
                    "{name}: step {kill:?} missed (status {s})"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            operator.child.kill().unwrap();
            operator.child.wait().unwrap();
            restarted = Instant::now();
            operator.child = start_operator(&dir, &file, &binary);
        }

        let deadline = restarted + Duration::from_secs(60);
        let done = loop {
            let done: Vec<Value> = events(&dir)
                .into_iter()
                .filter(|e| e["reason"] == "ReplacementDone" && e["note"].as_str().unwrap().starts_with(&name))
                .collect();
            if !done.is_empty() {
                break done;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no ReplacementDone 60 s after the restart at {kills:?}; status: {}\nevents: {:#?}",
                status(&dir).unwrap_or_default(),
                events(&dir)
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = restarted.elapsed();
        timings.push((kills.clone(), took));
        let said: Vec<String> = events(&dir)[seen..]
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect();
        println!("{name}: killed at {kills:?}: restart to ReplacementDone {took:?}");
        println!("  its events: {said:?}");

        // Settled: the status no longer names the replacement, and the replicas' new epoch is the status's.
        let s = wait_for(&dir, Duration::from_secs(20), "the replacement settled", |s| {
            s["replacement"].is_null() && s["healthyReplicas"] == 4
        });
        assert_eq!(done.len(), 1, "{name}: one ReplacementDone");
        assert_eq!(s["epoch"], epoch + 1, "{name}: one epoch change");
        assert!(members_in(&s, "Removed").contains(&bad), "{name}: {s}");
        let active = members_in(&s, "Active");
        assert!(active.contains(&new) && !active.contains(&bad), "{name}: {s}");
        assert_eq!(active.len(), 4, "{name}: {s}");
        let statuses = runtime.block_on(
            Client::new({
                let (configs, _) = testnet::load(&dir).unwrap();
                testnet::client_replicas(&configs)
                    .into_iter()
                    .filter(|r| active.contains(&u64::from(r.id)))
                    .collect()
            })
            .unwrap()
            .statuses(),
        );
        for (id, replica) in &statuses {
            let replica = replica
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: member {id} does not answer"));
            assert_eq!(replica.epoch, epoch + 1, "{name}: member {id}'s epoch");
        }
        // Every live member runs once, the removed one not at all.
        let expected: Vec<u32> = active.iter().map(|id| *id as u32).collect();
        assert_eq!(member_processes(&dir), expected, "{name}: member processes");
        // Commits continue.
        let now = committed.load(Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(20);
        while committed.load(Ordering::SeqCst) < now + 5 {
            assert!(Instant::now() < until, "{name}: commits stopped at {now}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let longest = load.join().unwrap();
    println!(
        "{} transfers committed; the longest time between two commits: {longest:?}",
        committed.load(Ordering::SeqCst)
    );
    println!("restart to ReplacementDone, by kill point:");
    for (kills, took) in &timings {
        println!("  {kills:?}: {took:?}");
    }

    // Stopped, the operator leaves no member running.
    Command::new("kill")
        .arg("-TERM")
        .arg(operator.child.id().to_string())
        .status()
        .unwrap();
    assert!(operator.child.wait().unwrap().success());
    assert_eq!(
        member_processes(&dir),
        Vec::<u32>::new(),
        "no member process outlives the operator"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
