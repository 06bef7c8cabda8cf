//! The Kubernetes controller: watches ByzantineClusters and the objects they own, and runs one control-loop
//! pass (`platform::reconcile`) per cluster under a finalizer, requeueing to keep polling the replicas' health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::crd::{ByzantineCluster, annotations};
use crate::plan::{PlanEvent, Requests};
use crate::platform::kube::{KubePlatform, handled};
use crate::platform::{self, PlatformError, Replicas};
use crate::telemetry::Metrics;

pub const FINALIZER: &str = "bft.dev/cleanup";
/// How often a healthy cluster is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// How soon the next step of a replacement runs.
pub const STEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<PlatformError>>),
}

pub struct Context<R> {
    pub client: Client,
    pub recorder: Recorder,
    pub replicas: R,
    pub metrics: Arc<Metrics>,
}

impl<R> Context<R> {
    pub fn new(client: Client, replicas: R, metrics: Arc<Metrics>) -> Context<R> {
        let reporter = Reporter {
            controller: "bft-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            replicas,
            metrics,
        }
    }
}

pub fn requests(object: &ByzantineCluster) -> Requests {
    let a = object.annotations();
    Requests {
        approved_replacement: a.get(annotations::APPROVE_REPLACEMENT).cloned(),
        force_view_change: a.get(annotations::FORCE_VIEW_CHANGE).cloned(),
        inject_fault: a.get(annotations::INJECT_FAULT).cloned(),
        handled: handled(object),
    }
}

pub async fn reconcile<R: Replicas + Send + Sync>(
    object: Arc<ByzantineCluster>,
    ctx: Arc<Context<R>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = object.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ByzantineCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer::finalizer(&api, FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(object) => apply(&object, &ctx).await,
            Finalizer::Cleanup(object) => {
                let platform = KubePlatform::new(ctx.client.clone(), &object, &ctx.recorder)?;
                platform.cleanup().await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(started.elapsed(), result.is_ok());
    result
}

async fn apply<R: Replicas + Send + Sync>(
    object: &ByzantineCluster,
    ctx: &Context<R>,
) -> Result<Action, PlatformError> {
    let platform = KubePlatform::new(ctx.client.clone(), object, &ctx.recorder)?;
    if let Err(invalid) = object.spec.validate() {
        // The schema refuses this at apply time; one that got past it (an older CRD) is reported, not acted on.
        platform
            .publish(&PlanEvent {
                warning: true,
                reason: "InvalidSpec",
                note: invalid.to_string(),
            })
            .await?;
        return Ok(Action::await_change());
    }
    let recorded = object.status.clone().unwrap_or_default();
    let plan = platform::reconcile(
        &platform,
        &ctx.replicas,
        &object.spec,
        object.metadata.generation,
        &recorded,
        &requests(object),
        bft_client::unix_ms(),
    )
    .await?;
    ctx.metrics.observe(&object.name_any(), &plan);
    Ok(Action::requeue(if plan.requeue_soon {
        STEP_INTERVAL
    } else {
        POLL_INTERVAL
    }))
}

fn error_policy<R>(_object: Arc<ByzantineCluster>, error: &Error, _ctx: Arc<Context<R>>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller until `shutdown` resolves, over the clusters of `namespace`, or of every namespace.
pub async fn run<R: Replicas + Send + Sync + 'static>(
    ctx: Arc<Context<R>>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let clusters: Api<ByzantineCluster> = api(&ctx.client, namespace.as_deref());
    if let Err(error) = clusters.list(&kube::api::ListParams::default().limit(1)).await {
        tracing::error!(%error, "cannot list ByzantineClusters: is the CRD installed (bft-operator crd | kubectl apply -f -)?");
        return;
    }
    // The StatefulSets are watched so that a member's pod going away is seen at once; the genesis ConfigMap and
    // the Secrets never change after they are made, so they are not watched.
    Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(
            api::<StatefulSet>(&ctx.client, namespace.as_deref()),
            watcher::Config::default(),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile");
            }
        })
        .await;
}
