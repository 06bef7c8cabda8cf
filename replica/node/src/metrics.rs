//! Prometheus metrics and the health endpoints of a replica process.
//!
//! `/metrics` in the Prometheus text format, `/healthz` (the protocol loop is alive) and `/readyz` (in an
//! active view, with a quorum of members reachable). Every name starts with `bft_`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabel {
    pub fault_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Everything a replica exports. Cheap to clone; updated from the protocol loop and the gRPC handlers.
#[derive(Clone)]
pub struct Metrics {
    pub view: Gauge,
    pub primary: Gauge,
    pub last_executed: Gauge,
    pub stable_checkpoint: Gauge,
    pub pending_requests: Gauge,
    pub members: Gauge,
    pub quorum_size: Gauge,
    pub members_reachable: Gauge,
    pub quorum_healthy: Gauge,
    pub view_changes: Counter,
    pub transfers: Family<OutcomeLabel, Counter>,
    pub messages_in: Family<KindLabel, Counter>,
    pub messages_out: Family<KindLabel, Counter>,
    pub messages_refused: Family<ReasonLabel, Counter>,
    pub signature_failures: Counter,
    pub detections: Family<FaultLabel, Counter>,
    pub members_detected: Gauge,
    pub fault_drill_active: Gauge,
    pub epoch: Gauge,
    pub quarantines: Counter,
    pub members_quarantined: Gauge,
    pub commit_latency: Histogram,
    /// Milliseconds since the start of the process when the protocol loop last turned.
    pub loop_heartbeat_ms: Arc<AtomicU64>,
    pub ready: Arc<AtomicBool>,
    registry: Arc<Registry>,
    started: Instant,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bft");
        let latency_buckets = [
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
        ];
        let metrics = Metrics {
            view: Gauge::default(),
            primary: Gauge::default(),
            last_executed: Gauge::default(),
            stable_checkpoint: Gauge::default(),
            pending_requests: Gauge::default(),
            members: Gauge::default(),
            quorum_size: Gauge::default(),
            members_reachable: Gauge::default(),
            quorum_healthy: Gauge::default(),
            view_changes: Counter::default(),
            transfers: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            messages_refused: Family::default(),
            signature_failures: Counter::default(),
            detections: Family::default(),
            members_detected: Gauge::default(),
            fault_drill_active: Gauge::default(),
            epoch: Gauge::default(),
            quarantines: Counter::default(),
            members_quarantined: Gauge::default(),
            commit_latency: Histogram::new(latency_buckets),
            loop_heartbeat_ms: Arc::new(AtomicU64::new(0)),
            ready: Arc::new(AtomicBool::new(false)),
            registry: Arc::new(Registry::default()),
            started: Instant::now(),
        };
        let m = metrics.clone();
        registry.register("view", "The view this replica is in", m.view);
        registry.register("primary", "Member id of the primary of the current view", m.primary);
        registry.register(
            "last_executed_sequence",
            "Last sequence number executed",
            m.last_executed,
        );
        registry.register(
            "stable_checkpoint_sequence",
            "Sequence number of the stable checkpoint",
            m.stable_checkpoint,
        );
        registry.register(
            "pending_requests",
            "Client requests admitted and not yet executed",
            m.pending_requests,
        );
        registry.register("members", "Members of the cluster (N)", m.members);
        registry.register("quorum_size", "Members needed for a quorum", m.quorum_size);
        registry.register(
            "members_reachable",
            "Members this replica reaches, itself included",
            m.members_reachable,
        );
        registry.register(
            "quorum_healthy",
            "1 when a quorum of members is reachable",
            m.quorum_healthy,
        );
        registry.register("view_changes", "View changes this replica started", m.view_changes);
        registry.register(
            "transfers",
            "Executed transfers by outcome (applied or rejected)",
            m.transfers,
        );
        registry.register(
            "messages_received",
            "Protocol messages received, by kind",
            m.messages_in,
        );
        registry.register("messages_sent", "Protocol messages sent, by kind", m.messages_out);
        registry.register(
            "messages_refused",
            "Messages and requests refused, by reason",
            m.messages_refused,
        );
        registry.register(
            "signature_failures",
            "Messages and transfers whose signature did not verify",
            m.signature_failures,
        );
        registry.register(
            "detections",
            "Members newly detected misbehaving, by fault type (one per member and type)",
            m.detections,
        );
        registry.register(
            "members_detected",
            "Members this replica has detected misbehaving",
            m.members_detected,
        );
        registry.register(
            "fault_drill_active",
            "1 while this replica runs an injected fault drill",
            m.fault_drill_active,
        );
        registry.register("epoch", "The membership epoch (one more per reconfiguration)", m.epoch);
        registry.register(
            "quarantines",
            "Quarantine decisions this replica executed",
            m.quarantines,
        );
        registry.register(
            "members_quarantined",
            "Members quarantined now, as the replicated state has it",
            m.members_quarantined,
        );
        registry.register(
            "commit_latency_seconds",
            "From a client's submit to its execution here",
            m.commit_latency,
        );
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    pub fn refused(&self, reason: &str) {
        self.messages_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
        if reason.contains("signature") {
            self.signature_failures.inc();
        }
    }

    pub fn heartbeat(&self) {
        self.loop_heartbeat_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    fn alive(&self) -> bool {
        // The loop turns at least every STATUS interval; a loop silent for 30 s is stuck.
        let last = self.loop_heartbeat_ms.load(Ordering::Relaxed);
        self.started.elapsed() < Duration::from_millis(last + 30_000)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` until `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let text = metrics.clone();
    let live = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text.render(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                if live.alive() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "protocol loop stuck")
                }
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                if metrics.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not in an active view with a quorum reachable",
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
