//! The operator's own metrics (/metrics, Prometheus text format), its /healthz and /readyz, and logging.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::plan::Plan;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_seconds: Histogram,
    healthy: Family<Labels, Gauge>,
    quorum_met: Family<Labels, Gauge>,
    replacing: Family<Labels, Gauge>,
    stalled: Family<Labels, Gauge>,
    /// Whether this instance holds the leader lease (and so acts).
    pub leader: AtomicBool,
    leader_gauge: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bft_operator");
        let reconciles = Family::<Labels, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let healthy = Family::<Labels, Gauge>::default();
        let quorum_met = Family::<Labels, Gauge>::default();
        let replacing = Family::<Labels, Gauge>::default();
        let stalled = Family::<Labels, Gauge>::default();
        let leader_gauge = Gauge::default();
        registry.register("reconciles", "Reconcile passes by result", reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile pass",
            reconcile_seconds.clone(),
        );
        registry.register(
            "cluster_healthy_members",
            "Healthy voting members per cluster",
            healthy.clone(),
        );
        registry.register(
            "cluster_quorum_met",
            "1 while a cluster has a healthy quorum",
            quorum_met.clone(),
        );
        registry.register(
            "cluster_replacement_in_progress",
            "1 while a cluster replaces members",
            replacing.clone(),
        );
        registry.register(
            "cluster_replacement_stalled",
            "1 while a cluster's replacement has made no progress for longer than its limit",
            stalled.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance holds the leader lease",
            leader_gauge.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            healthy,
            quorum_met,
            replacing,
            stalled,
            leader: AtomicBool::new(false),
            leader_gauge,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn observe(&self, cluster: &str, plan: &Plan) {
        let labels = vec![("cluster".to_string(), cluster.to_string())];
        self.healthy
            .get_or_create(&labels)
            .set(plan.status.healthy_replicas.into());
        self.quorum_met
            .get_or_create(&labels)
            .set(plan.status.quorum_met.into());
        self.replacing
            .get_or_create(&labels)
            .set(plan.status.replacement.is_some().into());
        let stalled = plan
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconfiguring" && c.reason == crate::plan::STALLED);
        self.stalled.get_or_create(&labels).set(stalled.into());
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
        self.leader_gauge.set(leader.into());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Serves /metrics, /healthz (the process is up) and /readyz (up, as leader or standby) on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use axum::routing::get;
    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move { m.render() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        // Ready as leader or as standby: a standby serves its metrics and takes over when the lease is free, and a
        // Deployment of two must see both pods ready to roll them one at a time. Who leads is
        // `bft_operator_leader` (and this body).
        .route(
            "/readyz",
            get(move || {
                let leader = metrics.leader.load(Ordering::SeqCst);
                async move { if leader { "leader" } else { "standby" } }
            }),
        );
    axum::serve(listener, app).await
}

pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(3), true);
        m.set_leader(true);
        let text = m.render();
        assert!(
            text.contains("bft_operator_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("bft_operator_leader 1"), "{text}");
        assert!(
            text.contains("bft_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn a_stalled_replacement_shows_in_its_gauge() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let m = Metrics::default();
        let condition = |reason: &str| Condition {
            type_: "Reconfiguring".into(),
            status: "True".into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        let mut plan = Plan {
            actions: vec![],
            status: Default::default(),
            events: vec![],
            requeue_soon: false,
        };
        plan.status.conditions = vec![condition("ReplacementInProgress")];
        m.observe("drill", &plan);
        let gauge = "bft_operator_cluster_replacement_stalled{cluster=\"drill\"}";
        assert!(m.render().contains(&format!("{gauge} 0")), "{}", m.render());
        plan.status.conditions = vec![condition(crate::plan::STALLED)];
        m.observe("drill", &plan);
        assert!(m.render().contains(&format!("{gauge} 1")), "{}", m.render());
    }
}
