//! The load generator behind `bftctl bench`: clients that each pay from their own testnet account, in a closed
//! loop (each client sends its next transfer once the last one is decided) or an open loop (transfers are due
//! at a fixed rate, and latency counts from when a transfer was due, so a slow cluster cannot hide its queue).
//!
//! A payer's nonces must execute in order, so each client has at most one transfer in flight; in an open loop
//! the rate a cluster can be offered is thus bounded by clients / latency.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::testnet;
use bft_core::ledger::{Transfer, TxOutcome};

/// What to run. Exactly one of `count` and `duration` bounds the run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Concurrent clients, at most the testnet's accounts.
    pub clients: usize,
    /// Stop once this many transfers were sent.
    pub count: Option<usize>,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Open loop: transfers due at this many per second over all clients. `None`: closed loop.
    pub rate: Option<f64>,
    /// Draw a progress bar on stderr (only if stderr is a terminal).
    pub progress: bool,
    /// Kill the primary (SIGKILL) this long after the start, and measure the view change that follows.
    pub kill_primary_after: Option<Duration>,
}

/// The view change after the primary was killed, as the replicas report it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ViewChangeReport {
    pub killed: String,
    pub view: u64,
    pub new_primary: String,
    /// From the kill to the first transfer executed in the new view.
    pub kill_to_first_commit_ms: f64,
    /// From the first replica's view-change timer firing to that first execution in the new view.
    pub timeout_to_first_commit_ms: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Cluster(String),
    #[error("the cluster does not answer")]
    NoAnswer,
    #[error("say how long to run: --count or --duration")]
    Unbounded,
    #[error("--rate must be positive")]
    BadRate,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub replicas: usize,
    pub clients: usize,
    pub committed: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub tx_per_sec: f64,
    /// The rate asked for in an open loop.
    pub rate: Option<f64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub view_change: Option<ViewChangeReport>,
}

impl BenchReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "replicas": self.replicas, "clients": self.clients, "committed": self.committed,
            "rejected": self.rejected, "seconds": self.seconds, "tx_per_sec": self.tx_per_sec,
            "rate": self.rate,
            "latency_ms": { "p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms },
            "view_change": self.view_change,
        })
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loop_kind = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} tx/s"),
            None => "closed loop".into(),
        };
        write!(
            f,
            "{} replicas, {} clients, {loop_kind}: {} committed, {} rejected in {:.2} s: {:.0} tx/s, \
             latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
            self.replicas,
            self.clients,
            self.committed,
            self.rejected,
            self.seconds,
            self.tx_per_sec,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms
        )?;
        if let Some(v) = &self.view_change {
            write!(
                f,
                "\n{} killed: {} primary of view {}; first commit in it {:.0} ms after the kill",
                v.killed, v.new_primary, v.view, v.kill_to_first_commit_ms
            )?;
            if let Some(ms) = v.timeout_to_first_commit_ms {
                write!(f, ", {ms:.0} ms after the first view-change timer fired")?;
            }
        }
        Ok(())
    }
}

/// Runs the load against the testnet in `dir` and reports what it measured.
pub async fn run(dir: &Path, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    if options.count.is_none() && options.duration.is_none() {
        return Err(BenchError::Unbounded);
    }
    if options.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(BenchError::BadRate);
    }
    let (configs, accounts) = testnet::load(dir).map_err(BenchError::Cluster)?;
    let client = Client::new(testnet::client_replicas(&configs)).map_err(|e| BenchError::Cluster(e.to_string()))?;
    let clients = options.clients.clamp(1, accounts.len());
    // Each client pays from its own account, continuing from the nonce the cluster holds.
    let mut nonces = Vec::with_capacity(clients);
    for account in &accounts[..clients] {
        nonces.push(
            client
                .account_nonce(&account.public())
                .await
                .ok_or(BenchError::NoAnswer)?,
        );
    }

    // One stream per replica for all the clients: each batch reply reaches the load generator once.
    let session = client.session();
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let count = options.count.unwrap_or(usize::MAX);
    // Transfers are handed out one at a time, so the clients share the count however fast each one is.
    let issued = Arc::new(AtomicUsize::new(0));
    let decided = Arc::new(AtomicU64::new(0));
    let rate = options.rate;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, nonce) in nonces.into_iter().enumerate() {
        let (session, issued, decided) = (session.clone(), issued.clone(), decided.clone());
        let payer = accounts[i].clone();
        let payee = accounts[(i + 1) % accounts.len()].public();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let (mut applied, mut rejected) = (0u64, 0u64);
            let mut nonce = nonce;
            loop {
                let ticket = issued.fetch_add(1, Ordering::Relaxed);
                if ticket >= count {
                    break;
                }
                // Open loop: ticket k is due at k intervals after the start, whoever sends it.
                let due = rate.map_or_else(Instant::now, |rate| {
                    started + Duration::from_secs_f64(ticket as f64 / rate)
                });
                if deadline.is_some_and(|d| due >= d) {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                nonce += 1;
                let tx = Transfer {
                    from: payer.public(),
                    to: payee,
                    amount: 1,
                    nonce,
                }
                .sign(&payer);
                match session.submit(tx).await {
                    Ok(TxOutcome::Applied) => applied += 1,
                    Ok(TxOutcome::Rejected(_)) | Err(_) => rejected += 1,
                }
                latencies.push(due.elapsed());
                decided.fetch_add(1, Ordering::Relaxed);
            }
            (latencies, applied, rejected)
        });
    }
    let view_change = options.kill_primary_after.map(|after| {
        let (client, dir) = (client.clone(), dir.to_path_buf());
        tokio::spawn(async move {
            tokio::time::sleep_until((started + after).into()).await;
            kill_primary(&client, &dir).await
        })
    });
    let bar = (options.progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(progress(started, options.count, options.duration, decided.clone())));

    let mut latencies = Vec::new();
    let (mut committed, mut rejected) = (0u64, 0u64);
    while let Some(result) = tasks.join_next().await {
        let (l, a, r) = result.map_err(|e| BenchError::Cluster(e.to_string()))?;
        latencies.extend(l);
        committed += a;
        rejected += r;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.abort();
        eprint!("\r\x1b[2K");
    }
    let view_change = match view_change {
        Some(task) => Some(task.await.map_err(|e| BenchError::Cluster(e.to_string()))??),
        None => None,
    };
    latencies.sort();
    let percentile = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(BenchReport {
        replicas: configs.len(),
        clients,
        committed,
        rejected,
        seconds,
        tx_per_sec: committed as f64 / seconds,
        rate: options.rate,
        p50_ms: percentile(0.5),
        p90_ms: percentile(0.9),
        p99_ms: percentile(0.99),
        view_change,
    })
}

/// Kills the primary, then watches the others (every 5 ms) until one executes a transfer in the next view.
async fn kill_primary(client: &Client, dir: &Path) -> Result<ViewChangeReport, BenchError> {
    let statuses = client.statuses().await;
    let primary = statuses
        .iter()
        .find_map(|(id, s)| s.as_ref().filter(|s| s.primary == *id).map(|s| (*id, s.view)));
    let Some((primary, view)) = primary else {
        return Err(BenchError::Cluster("no replica says it is the primary".into()));
    };
    let killed_at = Instant::now();
    testnet::kill(dir, primary).map_err(|e| BenchError::Cluster(e.to_string()))?;
    let killed_unix_ms = crate::unix_ms();
    // Each replica's last executed sequence when first seen active in a later view: executing past it is a
    // commit of the new view.
    let mut active_from: std::collections::HashMap<u32, u64> = Default::default();
    let (new_view, new_primary) = loop {
        if killed_at.elapsed() > Duration::from_secs(120) {
            return Err(BenchError::Cluster(
                "no commit in a new view within 120 s of the kill".into(),
            ));
        }
        let mut committed = None;
        for (id, status) in client.statuses().await {
            let Some(s) = status.filter(|s| s.view > view && s.view_active) else {
                continue;
            };
            let first = *active_from.entry(id).or_insert(s.last_executed);
            if s.last_executed > first {
                committed = Some((s.view, s.primary));
            }
        }
        if let Some(found) = committed {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let kill_to_first_commit_ms = killed_at.elapsed().as_secs_f64() * 1000.0;
    let committed_unix_ms = killed_unix_ms as f64 + kill_to_first_commit_ms;
    // When the first replica's timer fired: the start of the earliest view change the replicas recorded.
    let timer_fired = client
        .view_changes()
        .await
        .into_iter()
        .flat_map(|(_, answer)| answer.map(|a| a.view_changes).unwrap_or_default())
        .filter(|r| r.view == new_view)
        .filter_map(|r| r.started_unix_ms)
        .min();
    Ok(ViewChangeReport {
        killed: crate::report::agent(primary),
        view: new_view,
        new_primary: crate::report::agent(new_primary),
        kill_to_first_commit_ms,
        timeout_to_first_commit_ms: timer_fired.map(|t| committed_unix_ms - t as f64),
    })
}

/// Redraws one line on stderr a few times a second: how far the run is, and the rate so far.
async fn progress(started: Instant, count: Option<usize>, duration: Option<Duration>, decided: Arc<AtomicU64>) {
    const WIDTH: usize = 30;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = decided.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let by_count = count.map(|c| done as f64 / c.max(1) as f64);
        let by_time = duration.map(|d| elapsed / d.as_secs_f64());
        let fraction = by_count.into_iter().chain(by_time).fold(0.0, f64::max).min(1.0);
        let filled = (fraction * WIDTH as f64) as usize;
        eprint!(
            "\r[{}{}] {done} decided, {:.0} tx/s ",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            done as f64 / elapsed
        );
        let _ = std::io::stderr().flush();
    }
}
