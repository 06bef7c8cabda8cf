//! Real `bft-replica` processes on loopback gRPC, with real files: commits, kill -9 and restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bft_replica::client::{Client, ClientError};
use bft_replica::config::Params;
use bft_replica::ledger::{RejectReason, Transfer, TxOutcome};
use bft_replica::testnet::{Layout, free_ports};

struct Cluster {
    layout: Layout,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn start(n: usize, name: &str) -> Cluster {
        Cluster::start_with(n, name, |_| {})
    }

    /// A cluster whose configurations `adjust` changed before the replicas start.
    fn start_with(n: usize, name: &str, adjust: impl Fn(&mut bft_replica::node::NodeConfig)) -> Cluster {
        let dir = std::env::temp_dir().join(format!("bft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let params = Params {
            view_change_timeout_ms: 1000,
            status_interval_ms: 100,
            ..Params::default()
        };
        let ports = free_ports(2 * n).unwrap();
        let mut layout = Layout::generate(&dir, &ports[..n], &ports[n..], 8, 1_000_000, params).unwrap();
        for (_, path, config) in layout.configs.iter_mut() {
            adjust(config);
            std::fs::write(path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        }
        let mut cluster = Cluster {
            layout,
            children: Vec::new(),
        };
        for i in 0..n {
            let child = cluster.spawn(i);
            cluster.children.push(Some(child));
        }
        cluster
    }

    fn spawn(&self, index: usize) -> Child {
        let (_, config, _) = &self.layout.configs[index];
        let log = std::fs::File::create(self.layout.dir.join(format!("replica-{}.log", index + 1))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_bft-replica"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bft-replica")
    }

    /// SIGKILL: no chance to flush or say goodbye.
    fn kill(&mut self, index: usize) {
        let mut child = self.children[index].take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn restart(&mut self, index: usize) {
        self.children[index] = Some(self.spawn(index));
    }

    fn client(&self) -> Client {
        Client::new(self.layout.client_replicas()).unwrap()
    }

    fn log(&self, index: usize) -> PathBuf {
        self.layout.dir.join(format!("replica-{}.log", index + 1))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.layout.dir);
        }
    }
}

type StatusResponse = bft_replica::net::proto::StatusResponse;

/// A plain HTTP/1.0 GET: (status code, body).
async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: replica\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Polls until every replica in `which` answers and satisfies `ready` (a client returns once F+1 replicas
/// executed its transfer, so the others may still be a step behind).
async fn wait_until(client: &Client, which: &[u32], ready: impl Fn(&StatusResponse) -> bool) -> Vec<StatusResponse> {
    let mut last = Vec::new();
    for _ in 0..300 {
        last = client
            .statuses()
            .await
            .into_iter()
            .filter(|(id, _)| which.contains(id))
            .collect();
        let good: Vec<StatusResponse> = last.iter().filter_map(|(_, s)| s.clone().filter(&ready)).collect();
        if good.len() == which.len() {
            return good;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replicas {which:?} did not get there within 30 s: {last:?}");
}

async fn wait_executed(client: &Client, which: &[u32], seq: u64) -> Vec<StatusResponse> {
    wait_until(client, which, |s| s.last_executed >= seq).await
}

fn transfer(layout: &Layout, from: usize, to: usize, amount: u64, nonce: u64) -> bft_replica::ledger::SignedTransfer {
    let (payer, payee) = (&layout.accounts[from], &layout.accounts[to]);
    Transfer {
        from: payer.public(),
        to: payee.public(),
        amount,
        nonce,
    }
    .sign(payer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_commit_and_a_killed_replica_catches_up() {
    let mut cluster = Cluster::start(4, "four");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    // Every account pays the next one, ten times.
    let mut executed = 0;
    for nonce in 1..=10 {
        let mut round = tokio::task::JoinSet::new();
        for from in 0..8 {
            let tx = transfer(&cluster.layout, from, (from + 1) % 8, 5, nonce);
            let client = client.clone();
            round.spawn(async move { client.submit(tx).await });
        }
        while let Some(result) = round.join_next().await {
            assert_eq!(result.unwrap().unwrap(), TxOutcome::Applied);
            executed += 1;
        }
    }
    assert_eq!(executed, 80);
    wait_until(&client, &[1, 2, 3, 4], |s| s.transfers_applied == 80).await;

    // What Prometheus and Kubernetes probes see.
    let metrics_address = cluster.layout.configs[1].2.metrics_listen.unwrap();
    let (code, metrics) = http_get(metrics_address, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "bft_transfers_total{outcome=\"applied\"} 80",
        "bft_quorum_healthy 1",
        "bft_members 4",
        "bft_quorum_size 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("bft_commit_latency_seconds_count")
            && metrics.contains("bft_messages_sent_total{kind=\"commit\"}")
    );
    assert_eq!(http_get(metrics_address, "/healthz").await.0, 200);
    assert_eq!(http_get(metrics_address, "/readyz").await.0, 200);

    // A bad signature, an overdraft and a reused nonce each get a clear answer.
    let mut forged = transfer(&cluster.layout, 0, 1, 5, 11);
    forged.transfer.amount = 6;
    assert!(matches!(client.submit(forged).await, Err(ClientError::Refused(m)) if m.contains("signature")));
    let overdraft = transfer(&cluster.layout, 0, 1, 10_000_000, 11);
    let reason = RejectReason::InsufficientFunds {
        balance: 1_000_000,
        amount: 10_000_000,
    };
    assert_eq!(client.submit(overdraft).await.unwrap(), TxOutcome::Rejected(reason));
    let reused = transfer(&cluster.layout, 0, 1, 7, 3);
    assert!(matches!(client.submit(reused).await, Err(ClientError::Refused(m)) if m.contains("already used")));

    // Kill replica 4 with SIGKILL; the other three (a quorum) go on.
    cluster.kill(3);
    for from in 0..8 {
        let nonce = if from == 0 { 12 } else { 11 };
        let tx = transfer(&cluster.layout, from, (from + 1) % 8, 1, nonce);
        assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    }
    let ahead = wait_until(&client, &[1, 2, 3], |s| s.transfers_applied == 88).await;
    let target = ahead.iter().map(|s| s.last_executed).max().unwrap();

    // Restarted from its files, it catches up from its peers.
    cluster.restart(3);
    let caught_up = wait_until(&client, &[4], |s| {
        s.last_executed >= target && s.transfers_applied == 88
    })
    .await;
    assert_eq!(caught_up[0].id, 4);
    let log = std::fs::read_to_string(cluster.log(3)).unwrap();
    assert!(!log.contains("PRIVATE KEY"), "the key never reaches the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_leads_to_a_view_change_and_commits_resume() {
    let mut cluster = Cluster::start(4, "primary");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    assert_eq!(
        client.submit(transfer(&cluster.layout, 0, 1, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
    cluster.kill(0);
    // The backups time out on this request (1 s here), elect replica 2 and commit it.
    let started = std::time::Instant::now();
    assert_eq!(
        client.submit(transfer(&cluster.layout, 1, 2, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
    let statuses = wait_executed(&client, &[2, 3, 4], 2).await;
    assert!(statuses.iter().all(|s| s.view >= 1 && s.primary == 2), "{statuses:?}");
    eprintln!("primary killed: committed again after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_view_change_elects_the_next_primary_and_reports_it() {
    let cluster = Cluster::start(4, "forced");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    assert_eq!(
        client.submit(transfer(&cluster.layout, 0, 1, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
    let event = client.force_view_change().await.unwrap();
    assert_eq!((event.view, event.old_primary, event.new_primary), (1, 1, 2));
    assert!(event.quorum_met && event.triggered_by.len() >= 3, "{event:?}");
    assert_eq!(
        client.submit(transfer(&cluster.layout, 1, 2, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
    wait_until(&client, &[1, 2, 3, 4], |s| {
        s.view == 1 && s.primary == 2 && s.transfers_applied == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_drills_are_refused_unless_allowed() {
    let cluster = Cluster::start_with(4, "nodrills", |config| config.allow_fault_injection = false);
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let refused = client.force_view_change().await.unwrap_err().to_string();
    assert!(refused.contains("fault drills are not allowed"), "{refused}");
    let statuses = wait_executed(&client, &[1, 2, 3, 4], 0).await;
    assert!(statuses.iter().all(|s| s.view == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_network_is_refused_and_the_replica_carries_on() {
    use bft_replica::crypto::{Digest, KeyPair};
    use bft_replica::messages::{Message, Prepare, Signed};
    use bft_replica::net::proto::{PeerMessage, replica_client::ReplicaClient};

    let cluster = Cluster::start(4, "garbage");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let address = format!("http://{}", cluster.layout.configs[1].2.listen);
    let mut raw = ReplicaClient::connect(address).await.unwrap();
    let member_3 =
        KeyPair::from_pkcs8_pem(&std::fs::read_to_string(&cluster.layout.configs[2].2.key_file).unwrap()).unwrap();
    let vote = Prepare {
        view: 0,
        seq: 1,
        digest: Digest([9; 32]),
    };
    let good = Message::Prepare(Signed::new(3, vote, &member_3)).encode();
    let mut badly_signed = Message::Prepare(Signed::new(3, vote, &member_3));
    badly_signed.corrupt_signature();
    let stranger = Message::Prepare(Signed::new(9, vote, &KeyPair::generate())).encode();
    let messages = vec![
        vec![0xff; 3],         // malformed
        badly_signed.encode(), // bad signature
        stranger,              // not a member
        good.clone(),          // valid...
        good,                  // ...and replayed: the protocol drops it as a duplicate
    ];
    let stream = tokio_stream::iter(messages.into_iter().map(|message| PeerMessage { message }));
    let summary = raw.deliver(stream).await.unwrap().into_inner();
    assert_eq!((summary.received, summary.refused), (5, 3));
    let (_, metrics) = http_get(cluster.layout.configs[1].2.metrics_listen.unwrap(), "/metrics").await;
    for reason in ["malformed", "bad_signature", "not_a_member"] {
        let line = format!("bft_messages_refused_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert!(metrics.lines().any(|l| l == "bft_signature_failures_total 1"));
    // An oversized message ends the stream at the transport.
    let oversized = tokio_stream::iter([PeerMessage {
        message: vec![0; 20 << 20],
    }]);
    assert!(raw.deliver(oversized).await.is_err());
    // The replica is alive and still commits.
    assert_eq!(
        client.submit(transfer(&cluster.layout, 0, 1, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
    wait_until(&client, &[2], |s| s.transfers_applied == 1).await;
}

#[tokio::test]
async fn a_replica_with_a_bad_configuration_exits_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("bft-badconfig-{}", std::process::id()));
    let ports = free_ports(8).unwrap();
    let layout = Layout::generate(&dir, &ports[..4], &ports[4..], 1, 10, Params::default()).unwrap();
    let (_, path, config) = &layout.configs[0];
    // Starts replica 1 with a changed configuration; it must fail, and say why on standard error.
    let start_with = |change: &dyn Fn(&mut bft_replica::node::NodeConfig)| -> String {
        let mut wrong = config.clone();
        change(&mut wrong);
        std::fs::write(path, serde_json::to_vec(&wrong).unwrap()).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_bft-replica"))
            .arg("--config")
            .arg(path)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let other_key = layout.configs[1].2.key_file.clone();
    let stderr = start_with(&|c| c.key_file = other_key.clone());
    assert!(stderr.contains("does not match the public key of member 1"), "{stderr}");
    let stderr = start_with(&|c| c.key_file = dir.join("missing.key"));
    assert!(stderr.contains("missing.key"), "{stderr}");
    let stderr = start_with(&|c| c.params.checkpoint_interval = 0);
    assert!(stderr.contains("checkpoint_interval"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_on_a_session_stream_get_f_plus_1_matching_replies_and_clear_refusals() {
    let cluster = Cluster::start(4, "session");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let session = client.session();
    // Many transfers in flight on one stream per replica; batch replies answer several at once.
    let mut round = tokio::task::JoinSet::new();
    for from in 0..8 {
        let (session, tx) = (session.clone(), transfer(&cluster.layout, from, (from + 1) % 8, 5, 1));
        round.spawn(async move { session.submit(tx).await });
    }
    while let Some(result) = round.join_next().await {
        assert_eq!(result.unwrap().unwrap(), TxOutcome::Applied);
    }
    wait_until(&client, &[1, 2, 3, 4], |s| s.transfers_applied == 8).await;

    // A bad signature and a reused nonce are refused with the reason, as a unary submit is.
    let mut forged = transfer(&cluster.layout, 0, 1, 5, 2);
    forged.transfer.amount = 6;
    let refused = session.submit(forged).await;
    assert!(
        matches!(&refused, Err(ClientError::Refused(m)) if m.contains("signature")),
        "{refused:?}"
    );
    // (A different amount: the very same transfer again would get its reply again.)
    let reused = session.submit(transfer(&cluster.layout, 1, 2, 7, 1)).await;
    assert!(
        matches!(&reused, Err(ClientError::Refused(m)) if m.contains("already used")),
        "{reused:?}"
    );
    // The session goes on after refusals.
    assert_eq!(
        session.submit(transfer(&cluster.layout, 0, 1, 5, 2)).await.unwrap(),
        TxOutcome::Applied
    );
}
