//! The local platform end to end: `bft-operator local` runs a ByzantineCluster as real `bft-replica` processes,
//! writes its status to DIR/status.json, leaves DIR usable as `bftctl --cluster DIR`, and fences a member the
//! replicas catch misbehaving.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bft_replica::client::Client;
use bft_replica::ledger::{Transfer, TxOutcome};
use bft_replica::testnet;
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
