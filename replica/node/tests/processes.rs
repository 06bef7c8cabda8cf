//! Real `bft-replica` processes on loopback gRPC, with real files: commits, kill -9 and restart, and a real
//! network partition (iptables).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bft_client::client::{Client, ClientError};
use bft_client::report;
use bft_client::testnet::{Layout, free_ports};
use bft_core::config::Params;
use bft_core::faults::{Fault, FaultDrill};
use bft_core::ledger::{RejectReason, Transfer, TxOutcome};
use tonic_health::pb::health_check_response::ServingStatus;

struct Cluster {
    layout: Layout,
    children: Vec<Option<Child>>,
    /// When set, replica `i` (1-based) runs with group id `base + i`, so iptables can tell its traffic apart
    /// (`-m owner --gid-owner`) from the other replicas' and from this test's clients (group 0).
    group_base: Option<u32>,
}

impl Cluster {
    fn start(n: usize, name: &str) -> Cluster {
        Cluster::start_with(n, name, |_| {})
    }

    /// A cluster whose configurations `adjust` changed before the replicas start.
    fn start_with(n: usize, name: &str, adjust: impl Fn(&mut bft_client::node_config::NodeConfig)) -> Cluster {
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
        Cluster::launch(layout, None)
    }

    fn launch(layout: Layout, group_base: Option<u32>) -> Cluster {
        let mut cluster = Cluster {
            layout,
            children: Vec::new(),
            group_base,
        };
        for i in 0..cluster.layout.configs.len() {
            let child = cluster.spawn(i);
            cluster.children.push(Some(child));
        }
        cluster
    }

    fn spawn(&self, index: usize) -> Child {
        let (_, config, _) = &self.layout.configs[index];
        let log = std::fs::File::create(self.layout.dir.join(format!("replica-{}.log", index + 1))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_bft-replica"));
        if let Some(base) = self.group_base {
            use std::os::unix::process::CommandExt;
            command.gid(base + index as u32 + 1);
        }
        command
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

    /// The administrator key the testnet keeps: it signs reconfigurations and drills.
    fn admin(&self) -> bft_core::crypto::KeyPair {
        bft_client::testnet::admin_key(&self.layout.dir).unwrap()
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

type StatusResponse = bft_client::proto::StatusResponse;

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

/// The standard gRPC health check of a replica once it reports SERVING (its status is refreshed a few times a
/// second), or the last status after 10 s.
async fn grpc_health(address: std::net::SocketAddr) -> i32 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap();
    let mut health = HealthClient::new(channel.connect().await.unwrap());
    let mut status = 0;
    for _ in 0..100 {
        let request = HealthCheckRequest {
            service: "bft.v1.Replica".into(),
        };
        status = health.check(request).await.map_or(0, |r| r.into_inner().status);
        if status == ServingStatus::Serving as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

/// The merged detection log once some entry is confirmed by F+1 replicas (polled), or as it is after 30 s.
async fn confirmed_detections(client: &Client, n: usize) -> Vec<report::DetectionEntry> {
    let mut log = Vec::new();
    for _ in 0..300 {
        log = report::detection_log(n, &client.detections().await);
        if log.iter().any(|e| e.confirmed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log
}

fn transfer(layout: &Layout, from: usize, to: usize, amount: u64, nonce: u64) -> bft_core::ledger::SignedTransfer {
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
    for (_, _, config) in &cluster.layout.configs {
        assert_eq!(grpc_health(config.listen).await, ServingStatus::Serving as i32);
    }

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

/// Every account pays the next one once, concurrently, with `nonce`; all must apply.
async fn round(cluster: &Cluster, client: &Client, nonce: u64) {
    let accounts = cluster.layout.accounts.len();
    let mut round = tokio::task::JoinSet::new();
    for from in 0..accounts {
        let tx = transfer(&cluster.layout, from, (from + 1) % accounts, 5, nonce);
        let client = client.clone();
        round.spawn(async move { client.submit(tx).await });
    }
    while let Some(result) = round.join_next().await {
        assert_eq!(result.unwrap().unwrap(), TxOutcome::Applied);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_processes_lose_nothing_when_f_are_killed_and_catch_up_by_state_transfer() {
    // Checkpoints every 4 batches, so the log the killed replicas missed is garbage-collected before they return
    // and they must take the state from a stable checkpoint.
    let mut cluster = Cluster::start_with(7, "seven", |config| config.params.checkpoint_interval = 4);
    let client = cluster.client();
    let all = [1, 2, 3, 4, 5, 6, 7];
    wait_executed(&client, &all, 0).await;
    round(&cluster, &client, 1).await;
    // F = 2 replicas die without warning; the other five are a quorum and carry on.
    cluster.kill(5);
    cluster.kill(6);
    for nonce in 2..=6 {
        round(&cluster, &client, nonce).await;
    }
    let survivors = wait_until(&client, &[1, 2, 3, 4, 5], |s| s.transfers_applied == 48).await;
    assert!(survivors.iter().all(|s| s.stable_checkpoint >= 4), "{survivors:?}");
    cluster.restart(5);
    cluster.restart(6);
    round(&cluster, &client, 7).await;
    let statuses = wait_until(&client, &all, |s| s.transfers_applied == 56).await;
    let last = statuses[0].last_executed;
    assert!(statuses.iter().all(|s| s.last_executed == last), "{statuses:?}");
    for index in [5, 6] {
        let log = std::fs::read_to_string(cluster.log(index)).unwrap();
        assert!(
            log.contains("caught up by state transfer"),
            "replica {} log:\n{log}",
            index + 1
        );
    }
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
    let event = client.force_view_change(&cluster.admin()).await.unwrap();
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
    let refused = client
        .force_view_change(&cluster.admin())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("fault drills are not allowed"), "{refused}");
    let drill = FaultDrill::new(Fault::Equivocation, 1.0).unwrap();
    let refused = client
        .inject_fault(&cluster.admin(), 2, Some(drill))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("fault drills are not allowed"), "{refused}");
    assert!(
        client
            .statuses()
            .await
            .iter()
            .all(|(_, s)| s.as_ref().unwrap().fault_drill.is_empty())
    );
    let statuses = wait_executed(&client, &[1, 2, 3, 4], 0).await;
    assert!(statuses.iter().all(|s| s.view == 0));
}

/// A raw gRPC client of replica `id`, as any program that reaches its client port could use it.
async fn raw_client(
    cluster: &Cluster,
    id: u32,
) -> bft_client::proto::replica_client::ReplicaClient<tonic::transport::Channel> {
    let replica = cluster
        .layout
        .client_replicas()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    bft_client::proto::replica_client::ReplicaClient::connect(format!("http://{}", replica.address))
        .await
        .unwrap()
}

/// The refusal's message, after checking it is a PERMISSION_DENIED.
fn denied<T: std::fmt::Debug>(answer: Result<tonic::Response<T>, tonic::Status>) -> String {
    let status = answer.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    status.message().to_string()
}

/// Drills are administrative acts: a request not signed with the administrator key, signed for another replica
/// or another action, signed long ago, or replayed is refused with PERMISSION_DENIED and changes nothing; a fresh
/// signed one is carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_need_a_fresh_signature_by_the_administrator_and_are_not_replayed() {
    use bft_client::drill::{Action, Order};
    use bft_client::proto::{ForceViewChangeRequest, InjectFaultRequest};
    use bft_core::crypto::KeyPair;
    let cluster = Cluster::start(4, "drillauth");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let admin = cluster.admin();
    let stranger = KeyPair::generate();
    let leave_0 = Action::ForceViewChange { leave_view: 0 };
    let force = |leave_view, authorization| ForceViewChangeRequest {
        leave_view,
        authorization,
    };

    // A forced view change at the primary.
    let mut primary = raw_client(&cluster, 1).await;
    let refused = denied(primary.force_view_change(force(0, None)).await);
    assert!(
        refused.contains("must be signed with the administrator key"),
        "{refused}"
    );
    let forged = Order::new(1, leave_0).sign(&stranger);
    let refused = denied(primary.force_view_change(force(0, Some(forged))).await);
    assert!(refused.contains("not signed by the administrator key"), "{refused}");
    let for_2 = Order::new(2, leave_0).sign(&admin);
    let refused = denied(primary.force_view_change(force(0, Some(for_2))).await);
    assert!(refused.contains("addressed to replica 2"), "{refused}");
    let for_view_0 = Order::new(1, leave_0).sign(&admin);
    let refused = denied(primary.force_view_change(force(5, Some(for_view_0))).await);
    assert!(refused.contains("not signed by the administrator key"), "{refused}");
    let mut old = Order::new(1, leave_0);
    old.unix_ms -= 120_000;
    let refused = denied(primary.force_view_change(force(0, Some(old.sign(&admin)))).await);
    assert!(refused.contains("from this replica's clock"), "{refused}");

    // An injected fault at member 4.
    let mut member_4 = raw_client(&cluster, 4).await;
    let silence = FaultDrill::new(Fault::Silence, 1.0).unwrap();
    let inject = |drill: Option<FaultDrill>, authorization| InjectFaultRequest {
        fault: drill.map_or(String::new(), |d| d.fault.name().to_string()),
        probability: drill.map_or(0.0, |d| d.probability),
        clear: drill.is_none(),
        authorization,
    };
    let refused = denied(member_4.inject_fault(inject(Some(silence), None)).await);
    assert!(
        refused.contains("must be signed with the administrator key"),
        "{refused}"
    );
    let forged = Order::new(4, Action::InjectFault(Some(silence))).sign(&stranger);
    let refused = denied(member_4.inject_fault(inject(Some(silence), Some(forged))).await);
    assert!(refused.contains("not signed by the administrator key"), "{refused}");
    let gentler = FaultDrill::new(Fault::Silence, 0.1).unwrap();
    let for_gentler = Order::new(4, Action::InjectFault(Some(gentler))).sign(&admin);
    let refused = denied(member_4.inject_fault(inject(Some(silence), Some(for_gentler))).await);
    assert!(refused.contains("not signed by the administrator key"), "{refused}");

    // Nothing changed: no drill runs or ran, nobody left view 0.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let statuses = wait_executed(&client, &[1, 2, 3, 4], 0).await;
    for s in &statuses {
        assert_eq!((s.view, s.view_active, s.drilled), (0, true, false), "{s:?}");
        assert!(s.fault_drill.is_empty(), "{s:?}");
    }
    assert!(
        client
            .view_changes()
            .await
            .iter()
            .all(|(_, v)| v.as_ref().unwrap().view_changes.is_empty())
    );

    // Signed: carried out, once.
    let start_silence = inject(
        Some(silence),
        Some(Order::new(4, Action::InjectFault(Some(silence))).sign(&admin)),
    );
    let active = member_4
        .inject_fault(start_silence.clone())
        .await
        .unwrap()
        .into_inner()
        .active;
    assert_eq!(active, "silence p=1");
    let clear = inject(None, Some(Order::new(4, Action::InjectFault(None)).sign(&admin)));
    assert_eq!(
        member_4.inject_fault(clear.clone()).await.unwrap().into_inner().active,
        ""
    );
    let refused = denied(member_4.inject_fault(start_silence).await);
    assert!(refused.contains("used before"), "{refused}");
    let refused = denied(member_4.inject_fault(clear).await);
    assert!(refused.contains("used before"), "{refused}");
    let statuses = wait_executed(&client, &[4], 0).await;
    assert!(statuses[0].fault_drill.is_empty(), "{:?}", statuses[0]);

    // A signed forced view change at every replica at once moves the cluster to view 1; a replayed one is refused.
    let started = std::time::Instant::now();
    let mut requests = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    for id in 1..=4 {
        let request = force(0, Some(Order::new(id, leave_0).sign(&admin)));
        requests.push(request.clone());
        let mut raw = raw_client(&cluster, id).await;
        calls.spawn(async move { raw.force_view_change(request).await.map(|e| e.into_inner()) });
    }
    while let Some(answer) = calls.join_next().await {
        let event = answer.unwrap().unwrap();
        assert_eq!((event.view, event.new_primary), (1, 2), "{event:?}");
    }
    println!(
        "signed forced view change: every replica answered after {} ms",
        started.elapsed().as_millis()
    );
    let refused = denied(primary.force_view_change(requests[0].clone()).await);
    assert!(refused.contains("used before"), "{refused}");
    let statuses = wait_until(&client, &[1, 2, 3, 4], |s| s.view == 1 && s.view_active).await;
    assert!(statuses.iter().all(|s| s.primary == 2), "{statuses:?}");
}

/// `bftctl view-change` asks every replica at once; one that already joined view 1 on its peers' VIEW-CHANGEs
/// when its own request arrives must not move on to view 2 alone (that left the new primary outside its own
/// view for a view-change timeout). A drill moves the cluster exactly one view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_forcing_every_replica_at_once_moves_the_cluster_exactly_one_view() {
    let cluster = Cluster::start(4, "drillonce");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    assert_eq!(
        client.submit(transfer(&cluster.layout, 0, 1, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
    let admin = cluster.admin();
    let started = std::time::Instant::now();
    let event = client.force_view_change(&admin).await.unwrap();
    let first = started.elapsed();
    assert_eq!(
        (event.view, event.old_primary, event.new_primary),
        (1, 1, 2),
        "{event:?}"
    );
    wait_until(&client, &[1, 2, 3, 4], |s| s.view == 1 && s.view_active).await;
    println!(
        "forced view change: first report after {} ms ({} ms at that replica), all in view 1 after {} ms",
        first.as_millis(),
        event.duration_ms,
        started.elapsed().as_millis()
    );
    // The requests of that drill arriving late, after their replica is in view 1: each answers at once with
    // the view it is in, and nobody moves.
    for replica in cluster.layout.client_replicas() {
        let id = replica.id;
        let one = Client::new(vec![replica]).unwrap();
        let asked = std::time::Instant::now();
        let event = one.force_view_change_leaving(&admin, 0).await.unwrap();
        assert_eq!((event.view, event.new_primary), (1, 2), "replica {id}: {event:?}");
        assert!(asked.elapsed() < Duration::from_secs(1), "replica {id} waited");
    }
    // Two view-change timeouts later, still everyone in view 1, each having changed views once; and it commits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let statuses = wait_until(&client, &[1, 2, 3, 4], |s| s.view_active).await;
    for s in &statuses {
        assert_eq!((s.id, s.view, s.view_active, s.primary), (s.id, 1, true, 2), "{s:?}");
    }
    for (id, history) in client.view_changes().await {
        let views: Vec<u64> = history.unwrap().view_changes.iter().map(|v| v.view).collect();
        assert_eq!(views, [1], "replica {id}");
    }
    assert_eq!(
        client.submit(transfer(&cluster.layout, 1, 2, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupting_member_is_detected_by_the_others_and_the_log_survives_a_restart() {
    let mut cluster = Cluster::start(4, "detect");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let drill = FaultDrill::new(Fault::SignatureCorruption, 1.0).unwrap();
    assert_eq!(
        client.inject_fault(&cluster.admin(), 4, Some(drill)).await.unwrap(),
        "signature-corruption p=1"
    );
    // With F = 1 the three others still form a quorum: transfers commit while member 4's votes are refused.
    for nonce in 1..=3 {
        let tx = transfer(&cluster.layout, 0, 1, 5, nonce);
        assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    }
    let log = confirmed_detections(&client, 4).await;
    assert_eq!(log.len(), 1, "only member 4 is detected: {log:?}");
    let entry = &log[0];
    assert_eq!(
        (entry.agent_id.as_str(), entry.fault_type.as_str()),
        ("bft-agent-4", "signature_mismatch")
    );
    assert!(entry.confirmed && entry.voted_by.len() >= 2, "{entry:?}");
    assert!(
        !entry.proven,
        "a bad signature is the receiver's word, not proof: {entry:?}"
    );
    let health = report::health(&client.statuses().await, &client.detections().await);
    assert_eq!(health.status, "healthy", "{health:?}");
    assert_eq!((health.malicious_detected, health.healthy_agents), (1, 3));
    assert_eq!(health.false_positive_rate, 0.0);
    assert_eq!(health.transactions_committed, 3);
    assert_eq!(client.inject_fault(&cluster.admin(), 4, None).await.unwrap(), "");

    // The detection log is durable: a replica killed and restarted still has it.
    let voter: u32 = entry.voted_by[0].trim_start_matches("bft-agent-").parse().unwrap();
    cluster.kill(voter as usize - 1);
    cluster.restart(voter as usize - 1);
    wait_executed(&client, &[voter], 0).await;
    let after = client.detections().await;
    let (_, answer) = after.iter().find(|(id, _)| *id == voter).unwrap();
    let kept = &answer.as_ref().unwrap().detections;
    assert!(
        kept.iter()
            .any(|d| d.member == 4 && d.fault_type == "signature_mismatch"),
        "{kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_signing_false_replies_is_proven_wrong_by_them() {
    let cluster = Cluster::start(4, "liar");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let drill = FaultDrill::new(Fault::DoubleSpend, 1.0).unwrap();
    client.inject_fault(&cluster.admin(), 4, Some(drill)).await.unwrap();
    // Member 4 signs the opposite outcome in every reply; clients still decide with F+1 = 2 matching replies,
    // and hand the contradiction to the replicas.
    let session = client.session();
    for nonce in 1..=5 {
        let tx = transfer(&cluster.layout, 0, 1, 5, nonce);
        assert_eq!(session.submit(tx).await.unwrap(), TxOutcome::Applied);
    }
    let log = confirmed_detections(&client, 4).await;
    assert_eq!(log.len(), 1, "{log:?}");
    let entry = &log[0];
    assert_eq!(
        (
            entry.agent_id.as_str(),
            entry.fault_type.as_str(),
            entry.detection_method.as_str()
        ),
        ("bft-agent-4", "divergent_execution", "signed_reply_comparison")
    );
    assert!(
        entry.confirmed && entry.proven && entry.evidence.transaction.is_some(),
        "{entry:?}"
    );
    assert!(
        !entry.voted_by.contains(&"bft-agent-4".to_string()),
        "a member does not log itself"
    );
    let health = report::health(&client.statuses().await, &client.detections().await);
    assert_eq!((health.malicious_detected, health.false_positive_rate), (1, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_network_is_refused_and_the_replica_carries_on() {
    use bft_client::proto::{PeerMessage, replica_client::ReplicaClient};
    use bft_core::crypto::{Digest, KeyPair};
    use bft_core::messages::{Message, Prepare, Signed};
    use bft_replica::net::Hello;

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
        stranger,              // in a non-member's name, on member 3's stream
        good.clone(),          // valid...
        good.clone(),          // ...and replayed: the protocol drops it as a duplicate
    ];
    // A stream opens with a hello signed by the sending member, addressed to the receiver.
    let hello = |to: u32| {
        let body = Hello {
            to,
            nonce: rand::random(),
            unix_ms: bft_client::unix_ms(),
        };
        postcard::to_allocvec(&Signed::new(3, body, &member_3)).unwrap()
    };
    let frame = |message: Vec<u8>| PeerMessage {
        message,
        hello: Vec::new(),
    };
    let opening = |hello: Vec<u8>| PeerMessage {
        message: Vec::new(),
        hello,
    };
    for refused_opening in [vec![], hello(3), vec![0xff; 3]] {
        let stream = tokio_stream::iter([opening(refused_opening), frame(good.clone())]);
        let status = raw.deliver(stream).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    let in_member_4s_name = Message::Prepare(Signed::new(4, vote, &member_3)).encode();
    let frames = messages.into_iter().chain([in_member_4s_name]).map(frame);
    let stream = tokio_stream::iter(std::iter::once(opening(hello(2))).chain(frames));
    let summary = raw.deliver(stream).await.unwrap().into_inner();
    assert_eq!((summary.received, summary.refused), (6, 4));
    let (_, metrics) = http_get(cluster.layout.configs[1].2.metrics_listen.unwrap(), "/metrics").await;
    for (reason, count) in [("malformed", 1), ("bad_signature", 1), ("impersonation", 2)] {
        let line = format!("bft_messages_refused_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert!(metrics.lines().any(|l| l == "bft_signature_failures_total 1"));
    // An oversized message ends the stream at the transport.
    let oversized = tokio_stream::iter([opening(hello(2)), frame(vec![0; 20 << 20])]);
    assert!(raw.deliver(oversized).await.is_err());
    // The replica is alive and still commits.
    assert_eq!(
        client.submit(transfer(&cluster.layout, 0, 1, 5, 1)).await.unwrap(),
        TxOutcome::Applied
    );
    wait_until(&client, &[2], |s| s.transfers_applied == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_runs_from_flags_and_environment_alone() {
    let mut cluster = Cluster::start(4, "env");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    cluster.kill(3);
    // Member 4 again, as a container would start it: mounted files and environment, no configuration file.
    let config = cluster.layout.configs[3].2.clone();
    let members = cluster.layout.dir.join("members.json");
    let genesis = cluster.layout.dir.join("genesis.json");
    std::fs::write(&members, serde_json::to_vec(&config.members).unwrap()).unwrap();
    std::fs::write(&genesis, serde_json::to_vec(&config.genesis).unwrap()).unwrap();
    let environment = [
        ("BFT_ID", "4".to_string()),
        ("BFT_KEY_FILE", config.key_file.display().to_string()),
        ("BFT_MEMBERS_FILE", members.display().to_string()),
        ("BFT_GENESIS_FILE", genesis.display().to_string()),
        ("BFT_DATA_DIR", config.data_dir.display().to_string()),
        ("BFT_LISTEN", config.listen.to_string()),
        ("BFT_VIEW_CHANGE_TIMEOUT_MS", "1000".to_string()),
        ("BFT_ADMIN_KEY", config.admin_key.clone().unwrap()),
    ];
    let without_key = Command::new(env!("CARGO_BIN_EXE_bft-replica"))
        .envs(environment.iter().filter(|(k, _)| *k != "BFT_KEY_FILE").cloned())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&without_key.stderr);
    assert!(!without_key.status.success() && stderr.contains("key_file"), "{stderr}");

    let log = std::fs::File::create(cluster.log(3)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_bft-replica"))
        .envs(environment)
        .arg("--metrics-listen")
        .arg(config.metrics_listen.unwrap().to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    cluster.children[3] = Some(child);
    let tx = transfer(&cluster.layout, 0, 1, 5, 1);
    assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    wait_executed(&client, &[4], 1).await;
    let (code, _) = http_get(config.metrics_listen.unwrap(), "/metrics").await;
    assert_eq!(code, 200);

    // SIGTERM stops it cleanly, although its peers' streams stay open.
    let mut child = cluster.children[3].take().unwrap();
    let term = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert!(term.unwrap().success());
    let mut exited = None;
    for _ in 0..100 {
        exited = child.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exited.is_some_and(|status| status.success()), "{exited:?}");
}

#[tokio::test]
async fn a_replica_with_a_bad_configuration_exits_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("bft-badconfig-{}", std::process::id()));
    let ports = free_ports(8).unwrap();
    let layout = Layout::generate(&dir, &ports[..4], &ports[4..], 1, 10, Params::default()).unwrap();
    let (_, path, config) = &layout.configs[0];
    // Starts replica 1 with a changed configuration; it must fail, and say why on standard error.
    let start_with = |change: &dyn Fn(&mut bft_client::node_config::NodeConfig)| -> String {
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

/// Every member's state as one replica reports it.
fn member_state(status: &StatusResponse, member: u32) -> String {
    status
        .member_states
        .iter()
        .find(|m| m.id == member)
        .map_or("none".into(), |m| m.state.clone())
}

/// The drill of SCENARIO.md on 7 replica processes: faults on agents 5 and 6 are detected with evidence and
/// quarantined through consensus, agents 8 and 9 replace them by reconfiguration, agent 1 then censors and the
/// replicas elect agent 2; 1,000 transfers commit and no honest member is ever quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_drill_detects_quarantines_replaces_and_changes_views() {
    use bft_client::bench::{BenchOptions, run};
    let mut cluster = Cluster::start(7, "drill");
    let dir = cluster.layout.dir.clone();
    let client = cluster.client();
    let honest = [1, 2, 3, 4, 7];
    wait_executed(&client, &[1, 2, 3, 4, 5, 6, 7], 0).await;
    let drill = |fault, probability| Some(FaultDrill { fault, probability });
    client
        .inject_fault(&cluster.admin(), 5, drill(Fault::SignatureCorruption, 0.5))
        .await
        .unwrap();
    client
        .inject_fault(&cluster.admin(), 6, drill(Fault::DoubleSpend, 0.3))
        .await
        .unwrap();
    let load = |count| BenchOptions {
        clients: 8,
        count: Some(count),
        duration: None,
        rate: None,
        progress: false,
        kill_primary_after: None,
    };
    let first = run(&dir, &load(500)).await.unwrap();
    assert_eq!(first.committed, 500);

    // Both are quarantined by every honest replica, and no honest member is.
    let statuses = wait_until(&client, &honest, |s| {
        member_state(s, 5) == "quarantined" && member_state(s, 6) == "quarantined"
    })
    .await;
    for status in &statuses {
        for member in honest {
            assert_eq!(member_state(status, member), "active", "{status:?}");
        }
    }
    let log = report::detection_log(7, &client.detections().await);
    for (member, action) in [("bft-agent-5", "quarantined"), ("bft-agent-6", "quarantined")] {
        let entry = log
            .iter()
            .find(|e| e.agent_id == member && e.confirmed)
            .expect("detected");
        assert_eq!(entry.action, action, "{entry:?}");
        assert!(entry.quarantine_expires.is_some() && entry.detection_latency_ms.is_some());
    }
    assert!(
        log.iter()
            .all(|e| e.agent_id == "bft-agent-5" || e.agent_id == "bft-agent-6"),
        "{log:?}"
    );
    let health = report::health(&client.statuses().await, &client.detections().await);
    assert_eq!(
        (health.status.as_str(), health.false_positive_rate),
        ("healthy", 0.0),
        "{health:?}"
    );

    // Agents 8 and 9, with fresh keys, replace 5 and 6 through the protocol.
    for id in [8, 9] {
        let ports = free_ports(2).unwrap();
        bft_client::testnet::add_member(&dir, id, ports[0], ports[1]).unwrap();
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_bft-replica"));
        // Stopped with the others when the cluster is dropped, whether the test passes or not.
        cluster
            .children
            .push(Some(bft_client::testnet::spawn(binary, &dir, id).unwrap()));
    }
    let (configs, _) = bft_client::testnet::load(&dir).unwrap();
    let client = Client::new(bft_client::testnet::client_replicas(&configs)).unwrap();
    let admin = bft_client::testnet::admin_key(&dir).unwrap();
    let add = [8, 9]
        .map(|id| bft_client::testnet::new_member(&dir, id).unwrap())
        .to_vec();
    let done = client
        .reconfigure(&admin, vec![5, 6], add, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.epoch, 1);
    let new_members = [1, 2, 3, 4, 7, 8, 9];
    wait_until(&client, &new_members, |s| {
        s.epoch == 1 && s.members == 7 && member_state(s, 5) == "removed" && member_state(s, 9) == "active"
    })
    .await;

    // The primary censors: the replicas elect agent 2 and the rest of the 1,000 transfers commit.
    client
        .inject_fault(&cluster.admin(), 1, drill(Fault::Censorship, 1.0))
        .await
        .unwrap();
    let second = run(&dir, &load(500)).await.unwrap();
    assert_eq!(second.committed, 500);
    let statuses = wait_until(&client, &new_members, |s| s.view >= 1 && s.transfers_applied >= 1000).await;
    assert!(statuses.iter().all(|s| s.primary != 1), "{statuses:?}");
    // Agent 2 records the view change away from the censoring agent 1 (a loaded machine may add later ones).
    let history = client.view_changes().await;
    let (_, agent_2) = history.iter().find(|(id, _)| *id == 2).unwrap();
    let changes = &agent_2.as_ref().unwrap().view_changes;
    let change = changes
        .iter()
        .find(|c| c.old_primary == 1)
        .expect("a view change from agent 1");
    assert_eq!((change.new_primary, change.quorum_met), (2, true), "{changes:?}");
    let health = report::health(&client.statuses().await, &client.detections().await);
    assert_eq!(health.status, "healthy", "{health:?}");
    assert_eq!(health.transactions_committed, 1000, "{health:?}");
    assert_eq!(health.false_positive_rate, 0.0, "{health:?}");
}

/// iptables rules that cut one replica off from its peers, in a chain named after this test process (parallel
/// runs do not collide), jumped to from OUTPUT: on loopback every packet is locally generated, so OUTPUT sees
/// both directions. Removed on drop, whether the test passes or not.
struct Partition {
    chain: String,
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Partition {
    /// An empty chain in force; an error says why iptables cannot be used here (not installed, not permitted,
    /// no owner match).
    fn new() -> Result<Partition, String> {
        let chain = format!("bft-partition-{}", std::process::id());
        iptables(&["-N", &chain])?;
        let partition = Partition { chain };
        let probe = [
            "-A",
            &partition.chain,
            "-m",
            "owner",
            "--gid-owner",
            "1",
            "-j",
            "RETURN",
        ];
        iptables(&probe)?;
        iptables(&["-F", &partition.chain])?;
        iptables(&["-I", "OUTPUT", "-j", &partition.chain])?;
        Ok(partition)
    }

    /// Cuts replica `isolated` off from every other replica, both ways, leaving this test's clients (group 0)
    /// able to reach every replica. Rejected with a TCP reset rather than dropped, so a link notices at once and
    /// a connection attempt fails fast, as to a crashed peer; messages sent meanwhile are lost either way.
    fn isolate(&self, cluster: &Cluster, isolated: usize) -> Result<(), String> {
        let base = cluster.group_base.expect("a cluster started with group ids");
        let port = |i: usize| cluster.layout.configs[i].2.listen.port().to_string();
        let n = cluster.layout.configs.len();
        let (own, replicas) = (
            (base + isolated as u32 + 1).to_string(),
            format!("{}-{}", base + 1, base + n as u32),
        );
        // Resets TCP connections that processes of the groups `gids` open to `port`.
        let reject = |gids: &str, port: &str| {
            let rule = [
                "-A",
                &self.chain,
                "-p",
                "tcp",
                "-m",
                "owner",
                "--gid-owner",
                gids,
                "--dport",
                port,
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ];
            iptables(&rule)
        };
        // Its own connections to every peer.
        for peer in (0..n).filter(|i| *i != isolated) {
            reject(&own, &port(peer))?;
        }
        // Every replica's connections to it (its own included, which it never makes).
        reject(&replicas, &port(isolated))
    }

    fn heal(&self) -> Result<(), String> {
        iptables(&["-F", &self.chain])
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Each step on its own: the jump may never have been added.
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.chain]);
        let removed = iptables(&["-F", &self.chain]).and_then(|()| iptables(&["-X", &self.chain]));
        if let Err(error) = removed {
            eprintln!("PARTITION RULES LEFT BEHIND in chain {}: {error}", self.chain);
        }
    }
}

/// One line per replica: its view, whether active, its primary and progress.
fn describe(statuses: &[(u32, Option<StatusResponse>)]) -> String {
    statuses
        .iter()
        .map(|(id, s)| match s {
            Some(s) => format!(
                "replica {id}: view {} {}, primary {}, executed {}, stable {}",
                s.view,
                if s.view_active { "active" } else { "CHANGING" },
                s.primary,
                s.last_executed,
                s.stable_checkpoint
            ),
            None => format!("replica {id}: no answer"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The view a quorum of replicas is active in, if there is one.
fn active_view(statuses: &[(u32, Option<StatusResponse>)], quorum: usize) -> Option<u64> {
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .filter(|s| s.view_active)
    {
        *counts.entry(s.view).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .find(|(_, count)| *count >= quorum)
        .map(|(view, _)| view)
}

/// A replica's balance and nonce of `account`, as its Account RPC reports them.
async fn account_at(address: std::net::SocketAddr, account: &bft_core::crypto::PublicKey) -> (u64, u64) {
    use bft_client::proto::{AccountRequest, replica_client::ReplicaClient};
    let mut replica = ReplicaClient::connect(format!("http://{address}")).await.unwrap();
    let request = AccountRequest {
        account: account.as_bytes().to_vec(),
    };
    let answer = replica.account(request).await.unwrap().into_inner();
    assert!(answer.exists);
    (answer.balance, answer.nonce)
}

/// Member 7 of 7 is cut off from its peers by a real network partition (iptables on loopback) for five view-change
/// timeouts while clients keep paying, and then reconnected. The six others (a quorum) go on committing; the
/// isolated one times out and changes views alone. After healing: every replica holds the same ledger at the same
/// sequence and stable checkpoint, money is conserved, every transfer acknowledged by F+1 replicas is applied
/// everywhere, and every replica is back in the cluster's active view within two view-change timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_rejoins_the_active_view_after_the_partition_heals() {
    const N: usize = 7;
    const TIMEOUT_MS: u64 = 1000;
    const ISOLATED: usize = 6; // member 7: a backup, and not the next primary
    const ACCOUNTS: usize = 8;
    const BALANCE: u64 = 1_000_000;
    let partition = match Partition::new() {
        Ok(partition) => partition,
        Err(error) => {
            let message = format!(
                "THE PARTITION TEST CANNOT RUN: iptables is missing or not permitted here ({error}); it needs root \
                 and iptables (scripts/test.sh installs it when missing)"
            );
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("SKIPPED: {message}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("bft-partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let params = Params {
        view_change_timeout_ms: TIMEOUT_MS,
        status_interval_ms: 100,
        // The isolated replica misses more than a log window: it must catch up from a stable checkpoint.
        checkpoint_interval: 4,
        ..Params::default()
    };
    let ports = free_ports(2 * N).unwrap();
    let layout = Layout::generate(&dir, &ports[..N], &ports[N..], ACCOUNTS, BALANCE, params).unwrap();
    // Group ids nobody uses, different for concurrent runs (the rules also name this run's ports).
    let cluster = Cluster::launch(layout, Some(3_000_000 + (std::process::id() % 100_000) * 16));
    let client = cluster.client();
    let all: Vec<u32> = (1..=N as u32).collect();
    wait_executed(&client, &all, 0).await;

    // Every account pays the next one, one transfer after another, until told to stop; each retries its current
    // transfer (the same signed bytes: it executes at most once) until F+1 replicas acknowledge it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for from in 0..ACCOUNTS {
        let (client, stop) = (client.clone(), stop.clone());
        let layout_txs: Vec<_> = (1..=10_000)
            .map(|nonce| transfer(&cluster.layout, from, (from + 1) % ACCOUNTS, 1, nonce))
            .collect();
        load.spawn(async move {
            let mut acknowledged = 0u64;
            for tx in layout_txs {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                loop {
                    match client.submit(tx).await {
                        Ok(outcome) => {
                            assert_eq!(
                                outcome,
                                TxOutcome::Applied,
                                "account {from} nonce {}",
                                tx.transfer.nonce
                            );
                            break;
                        }
                        Err(error) => {
                            eprintln!("account {from}: {error}; again");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                acknowledged += 1;
            }
            (from, acknowledged)
        });
    }
    wait_until(&client, &all, |s| s.last_executed >= 4).await;

    // The partition: several view-change timeouts long (the scenario's duration, not a synchronisation).
    partition.isolate(&cluster, ISOLATED).unwrap();
    let cut_at = client.statuses().await;
    tokio::time::sleep(Duration::from_millis(5 * TIMEOUT_MS)).await;
    let during = client.statuses().await;
    let majority: Vec<u32> = all.iter().copied().filter(|id| *id != ISOLATED as u32 + 1).collect();
    let progress = |statuses: &[(u32, Option<StatusResponse>)], id: u32| {
        statuses
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, s)| s.as_ref())
            .map_or(0, |s| s.last_executed)
    };
    eprintln!("cut off:  {}", describe(&cut_at));
    eprintln!("isolated: {}", describe(&during));
    // The six others went on committing; the isolated one did not execute anything meanwhile.
    assert!(
        majority
            .iter()
            .all(|id| progress(&during, *id) > progress(&cut_at, *id)),
        "the majority stalled during the partition: {}",
        describe(&during)
    );
    // The isolated one fell behind; its clients' pending transfers made it time out and suspect the primary, but
    // alone it must not leave the view (the convergence check below sees it if it did).
    let isolated_id = ISOLATED as u32 + 1;
    let slowest = majority.iter().map(|id| progress(&during, *id)).min().unwrap();
    let alone = during
        .iter()
        .find(|(id, _)| *id == isolated_id)
        .and_then(|(_, s)| s.clone());
    assert!(
        alone.is_some_and(|s| s.last_executed < slowest),
        "the partition did not cut replica {isolated_id} off: {}",
        describe(&during)
    );

    // Heal, with the load still running: the cluster's active view must include every replica within two
    // view-change timeouts.
    partition.heal().unwrap();
    let healed = std::time::Instant::now();
    let quorum = (N + (N - 1) / 3 + 1).div_ceil(2);
    let converged = loop {
        let statuses = client.statuses().await;
        let view = active_view(&statuses, quorum);
        let everyone_in = view.is_some_and(|view| {
            statuses
                .iter()
                .all(|(_, s)| s.as_ref().is_some_and(|s| s.view == view && s.view_active))
        });
        if everyone_in {
            eprintln!(
                "converged {:?} after healing: {}",
                healed.elapsed(),
                describe(&statuses)
            );
            break Ok(healed.elapsed());
        }
        if healed.elapsed() > Duration::from_millis(2 * TIMEOUT_MS) {
            break Err(format!(
                "{:?} after healing, the cluster's active view is {view:?} (held by a quorum of {quorum}) but not \
                 every replica is in it: {}",
                healed.elapsed(),
                describe(&statuses)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Safety, whatever the views: stop the load, then every replica holds the same ledger at the same point.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = [0u64; ACCOUNTS];
    while let Some(done) = load.join_next().await {
        let (from, acknowledged) = done.unwrap();
        sent[from] = acknowledged;
    }
    let total: u64 = sent.iter().sum();
    let mut last = Vec::new();
    let mut agreed = None;
    for _ in 0..300 {
        last = client.statuses().await;
        let answered: Vec<&StatusResponse> = last.iter().filter_map(|(_, s)| s.as_ref()).collect();
        let first = answered[0];
        if answered.len() == N
            && first.transfers_applied == total
            && answered.iter().all(|s| {
                (
                    s.last_executed,
                    s.stable_checkpoint,
                    &s.stable_state_digest,
                    s.transfers_applied,
                ) == (
                    first.last_executed,
                    first.stable_checkpoint,
                    &first.stable_state_digest,
                    total,
                )
            })
        {
            agreed = Some(first.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agreed = agreed.unwrap_or_else(|| {
        panic!(
            "30 s after the load stopped ({total} transfers acknowledged), the replicas do not agree; converged: \
             {converged:?}; now: {}",
            describe(&last)
        )
    });
    assert!(agreed.stable_checkpoint > 0, "{agreed:?}");
    // Every acknowledged transfer applied on every replica, nothing else: exact balances and nonces; their sum is
    // the genesis supply.
    for (_, _, config) in &cluster.layout.configs {
        let mut sum = 0;
        for (i, account) in cluster.layout.accounts.iter().enumerate() {
            let received = sent[(i + ACCOUNTS - 1) % ACCOUNTS];
            let (balance, nonce) = account_at(config.listen, &account.public()).await;
            assert_eq!(
                (balance, nonce),
                (BALANCE - sent[i] + received, sent[i]),
                "replica {} account {i}",
                config.id
            );
            sum += balance;
        }
        assert_eq!(sum, BALANCE * ACCOUNTS as u64, "replica {}", config.id);
    }
    eprintln!(
        "{total} transfers acknowledged and applied everywhere, up to sequence {}",
        agreed.last_executed
    );
    // Liveness of the view change: checked last, so that the safety checks above report on their own.
    if let Err(failure) = converged {
        panic!("VIEW CONVERGENCE: {failure}");
    }
    drop(partition);
}

/// A replica's count of refusals for `reason`, from its Prometheus metrics.
async fn refused(cluster: &Cluster, index: usize, reason: &str) -> u64 {
    let (_, metrics) = http_get(cluster.layout.configs[index].2.metrics_listen.unwrap(), "/metrics").await;
    let prefix = format!("bft_messages_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

/// The merged detection log once an entry for `member` and `fault` is confirmed (polled), or as it is after 30 s.
async fn detection_of(client: &Client, n: usize, member: &str, fault: &str) -> Vec<report::DetectionEntry> {
    let mut log = Vec::new();
    for _ in 0..300 {
        log = report::detection_log(n, &client.detections().await);
        if log
            .iter()
            .any(|e| e.confirmed && e.agent_id == member && e.fault_type == fault)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log
}

/// One Byzantine backup's signed proposal for the next sequence number once halted a 4-process cluster for good
/// (accepted by everyone, then refused as a certificate by every view change). Now it is refused with its own
/// reason, the backup is proven by its signature, and the cluster commits and changes views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backups_proposal_is_refused_with_proof_and_the_cluster_keeps_committing() {
    let cluster = Cluster::start(4, "usurp");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let drill = FaultDrill::new(Fault::BackupProposal, 1.0).unwrap();
    client.inject_fault(&cluster.admin(), 4, Some(drill)).await.unwrap();
    for nonce in 1..=3 {
        let tx = transfer(&cluster.layout, 0, 1, 5, nonce);
        assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    }
    let log = detection_of(&client, 4, "bft-agent-4", "protocol_violation").await;
    assert!(
        log.iter()
            .any(|e| e.agent_id == "bft-agent-4" && e.fault_type == "protocol_violation" && e.proven),
        "{log:?}"
    );
    assert!(
        log.iter().all(|e| e.agent_id == "bft-agent-4"),
        "only member 4: {log:?}"
    );
    let mut refusals = 0;
    for index in 0..3 {
        refusals += refused(&cluster, index, "not_from_primary").await;
    }
    assert!(refusals > 0, "no proposal of member 4 was refused as not the primary's");
    // Nothing it sent stands in anyone's way: a view change completes and the cluster commits in the new view.
    let event = client.force_view_change(&cluster.admin()).await.unwrap();
    assert_eq!(event.view, 1, "{event:?}");
    let tx = transfer(&cluster.layout, 1, 2, 5, 1);
    assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
}

/// A client that gives its transfers to one backup only, with a Byzantine member that claims to suspect every
/// primary and sends VIEW-CHANGEs for the next and the farthest view: the backup passes the transfers on to the
/// primary, they commit, and no honest replica leaves view 0 (each such transfer once deposed the primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_given_to_one_backup_commit_and_one_member_cannot_depose_the_primary() {
    let cluster = Cluster::start(4, "depose");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let drill = FaultDrill::new(Fault::Depose, 1.0).unwrap();
    client.inject_fault(&cluster.admin(), 4, Some(drill)).await.unwrap();
    let backup = cluster
        .layout
        .client_replicas()
        .into_iter()
        .find(|r| r.id == 2)
        .unwrap();
    let to_one_backup = Client::new(vec![backup]).unwrap();
    for nonce in 1..=3 {
        let tx = transfer(&cluster.layout, 0, 1, 5, nonce);
        assert_eq!(to_one_backup.submit(tx).await.unwrap(), TxOutcome::Applied);
    }
    // Long enough for a request timer (1 s here) to have run out, had the primary not ordered them.
    let statuses = wait_executed(&client, &[1, 2, 3], 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let statuses_after = wait_executed(&client, &[1, 2, 3], 3).await;
    for s in statuses.iter().chain(&statuses_after) {
        assert_eq!((s.view, s.view_active), (0, true), "replica {}", s.id);
    }
    for index in 0..3 {
        assert!(
            refused(&cluster, index, "wrong_view").await > 0,
            "far VIEW-CHANGEs are refused"
        );
    }
}

/// A primary that sends conflicting proposals for one slot to different backups: no backup receives both, but
/// backups whose votes differ show each other the proposal they hold, and the primary is proven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_primary_is_proven() {
    let cluster = Cluster::start(4, "equivocating");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let drill = FaultDrill::new(Fault::Equivocation, 0.5).unwrap();
    client.inject_fault(&cluster.admin(), 1, Some(drill)).await.unwrap();
    let started = std::time::Instant::now();
    let mut nonce = 0;
    let mut log = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        nonce += 1;
        let _ = client.submit(transfer(&cluster.layout, 0, 1, 1, nonce)).await;
        log = report::detection_log(4, &client.detections().await);
        if log
            .iter()
            .any(|e| e.agent_id == "bft-agent-1" && e.fault_type == "equivocation" && e.proven)
        {
            break;
        }
    }
    println!(
        "equivocating primary proven after {} ms ({nonce} transfers)",
        started.elapsed().as_millis()
    );
    assert!(
        log.iter()
            .any(|e| e.agent_id == "bft-agent-1" && e.fault_type == "equivocation" && e.proven),
        "{log:?}"
    );
    assert!(
        log.iter().all(|e| e.agent_id == "bft-agent-1"),
        "only the primary: {log:?}"
    );
}

/// A member that signs accusations of every other member over and over gets at most one of each waiting to be
/// ordered: the rest are refused before ordering, transfers commit throughout, nobody honest is quarantined and
/// the primary stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accusation_flood_is_refused_before_ordering_and_transfers_keep_committing() {
    let cluster = Cluster::start(4, "accusations");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    async fn measure(client: &Client, layout: &Layout, from: u64) -> f64 {
        let started = std::time::Instant::now();
        for nonce in from..from + 20 {
            let tx = transfer(layout, 2, 3, 1, nonce);
            assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
        }
        20.0 / started.elapsed().as_secs_f64()
    }
    let before = measure(&client, &cluster.layout, 1).await;
    let drill = FaultDrill::new(Fault::AccusationFlood, 1.0).unwrap();
    client.inject_fault(&cluster.admin(), 4, Some(drill)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = measure(&client, &cluster.layout, 21).await;
    println!("sequential commits per second: {before:.0} before the flood, {during:.0} during it");
    let mut refusals = 0;
    for index in 0..3 {
        refusals += refused(&cluster, index, "operation_refused").await;
    }
    assert!(refusals > 0, "no accusation was refused before ordering");
    let statuses = wait_executed(&client, &[1, 2, 3], 40).await;
    for s in &statuses {
        assert_eq!((s.view, s.view_active), (0, true), "replica {}", s.id);
        let quarantined: Vec<u32> = s
            .member_states
            .iter()
            .filter(|m| m.state == "quarantined")
            .map(|m| m.id)
            .collect();
        assert!(quarantined.is_empty(), "replica {} quarantines {quarantined:?}", s.id);
    }
}

/// A member that signs VIEW-CHANGEs carrying a prepared certificate it made up (a proposal it signed in view 0 and
/// votes in the others' names that do not verify): at the next view change the others refuse its VIEW-CHANGE with
/// proof, since its own signature covers the certificate. It is proven, nobody else is logged (least of all the
/// members named in the made-up votes), the view changes without it and transfers commit in the new view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_change_with_a_made_up_certificate_is_proof_against_its_signer() {
    let cluster = Cluster::start(4, "fabricated");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    for nonce in 1..=2 {
        let tx = transfer(&cluster.layout, 0, 1, 5, nonce);
        assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    }
    let drill = FaultDrill::new(Fault::FabricatedCertificate, 1.0).unwrap();
    client.inject_fault(&cluster.admin(), 4, Some(drill)).await.unwrap();
    let started = std::time::Instant::now();
    let event = client.force_view_change(&cluster.admin()).await.unwrap();
    assert_eq!((event.view, event.new_primary), (1, 2), "{event:?}");
    assert!(!event.triggered_by.contains(&4), "its VIEW-CHANGE counted: {event:?}");
    let log = detection_of(&client, 4, "bft-agent-4", "protocol_violation").await;
    println!(
        "made-up certificate proven {} ms after the forced view change",
        started.elapsed().as_millis()
    );
    assert!(
        log.iter()
            .any(|e| e.agent_id == "bft-agent-4" && e.fault_type == "protocol_violation" && e.proven && e.confirmed),
        "{log:?}"
    );
    assert!(
        log.iter().all(|e| e.agent_id == "bft-agent-4"),
        "only member 4: {log:?}"
    );
    for nonce in 1..=2 {
        let tx = transfer(&cluster.layout, 1, 2, 5, nonce);
        assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    }
    let statuses = wait_until(&client, &[1, 2, 3], |s| s.transfers_applied == 4).await;
    assert!(statuses.iter().all(|s| s.view >= 1), "{statuses:?}");
    let log = report::detection_log(4, &client.detections().await);
    assert!(
        log.iter().all(|e| e.agent_id == "bft-agent-4"),
        "only member 4, to the end: {log:?}"
    );
}

/// The primary of view 1 sends different valid NEW-VIEWs to different members and one on fewer than a quorum of
/// VIEW-CHANGEs to another: a forced view change to view 1 has it proven by what it signed (two NEW-VIEWs for one
/// view, or the short one), nobody else is logged, it is quarantined, and the cluster commits again in a later view.
/// Each proof may be held by one replica only (the one that got the short NEW-VIEW, or both of two different ones),
/// so the entry is proven but need not be confirmed by F+1: consensus acts on one replica's proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_new_primary_is_proven_and_the_cluster_commits_again() {
    let cluster = Cluster::start(4, "new-primary");
    let client = cluster.client();
    wait_executed(&client, &[1, 2, 3, 4], 0).await;
    let tx = transfer(&cluster.layout, 0, 1, 5, 1);
    assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    let drill = FaultDrill::new(Fault::EquivocatingNewPrimary, 1.0).unwrap();
    client.inject_fault(&cluster.admin(), 2, Some(drill)).await.unwrap();
    let started = std::time::Instant::now();
    let event = client.force_view_change(&cluster.admin()).await.unwrap();
    assert!(event.view >= 1, "{event:?}");
    let proven = |log: &[report::DetectionEntry]| {
        log.iter().any(|e| {
            e.agent_id == "bft-agent-2"
                && (e.fault_type == "equivocation" || e.fault_type == "protocol_violation")
                && e.proven
        })
    };
    let mut log = Vec::new();
    for _ in 0..300 {
        log = report::detection_log(4, &client.detections().await);
        if proven(&log) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "equivocating new primary proven {} ms after the forced view change",
        started.elapsed().as_millis()
    );
    assert!(proven(&log), "{log:?}");
    assert!(
        log.iter().all(|e| e.agent_id == "bft-agent-2"),
        "only member 2: {log:?}"
    );
    // The proof is ordered and the primary quarantined: the others leave its view and commit in the next.
    let tx = transfer(&cluster.layout, 1, 2, 5, 1);
    assert_eq!(client.submit(tx).await.unwrap(), TxOutcome::Applied);
    let statuses = wait_until(&client, &[1, 3, 4], |s| {
        s.transfers_applied == 2 && s.view >= 2 && s.view_active && member_state(s, 2) == "quarantined"
    })
    .await;
    println!(
        "committing again in views {:?}",
        statuses.iter().map(|s| (s.id, s.view)).collect::<Vec<_>>()
    );
    let log = report::detection_log(4, &client.detections().await);
    assert!(
        log.iter().all(|e| e.agent_id == "bft-agent-2"),
        "only member 2, to the end: {log:?}"
    );
}
