//! The Kubernetes platform: members as StatefulSets, keys in Secrets, the genesis membership in a ConfigMap, the
//! rest applied server-side with one field manager; everything owned by its ByzantineCluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bft_core::crypto::KeyPair;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use super::{ClusterObjects, Platform, PlatformError};
use crate::crd::{ByzantineCluster, ByzantineClusterStatus, annotations};
use crate::plan::{MemberId, PlanEvent};
use crate::resources::{
    self, Cluster, FIELD_MANAGER, LABEL_CLUSTER, configmap, monitoring, networkpolicy, pdb, secret, services,
    statefulset,
};

/// A namespaced Kubernetes object the adapter reads and writes.
trait Object:
    Resource<Scope = k8s_openapi::NamespaceResourceScope>
    + Serialize
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
{
}
impl<K> Object for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
{
}

pub struct KubePlatform<'a> {
    client: Client,
    object: &'a ByzantineCluster,
    cluster: Cluster<'a>,
    recorder: &'a Recorder,
    handled: Mutex<BTreeSet<String>>,
}

/// The requests already carried out, from the `handled` annotation (one per line).
pub fn handled(object: &ByzantineCluster) -> BTreeSet<String> {
    object
        .annotations()
        .get(annotations::HANDLED)
        .map(|v| v.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

impl<'a> KubePlatform<'a> {
    /// `object` must have a name, a namespace and a uid (as any object read from the API server has).
    pub fn new(client: Client, object: &'a ByzantineCluster, recorder: &'a Recorder) -> Result<Self, PlatformError> {
        let missing = |what: &str| PlatformError::Other(format!("the ByzantineCluster has no {what}"));
        let cluster = Cluster {
            name: object.metadata.name.as_deref().ok_or_else(|| missing("name"))?,
            namespace: object
                .metadata
                .namespace
                .as_deref()
                .ok_or_else(|| missing("namespace"))?,
            uid: object.metadata.uid.as_deref().ok_or_else(|| missing("uid"))?,
            spec: &object.spec,
        };
        Ok(KubePlatform {
            client,
            object,
            cluster,
            recorder,
            handled: Mutex::new(handled(object)),
        })
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(&self) -> Api<K>
    where
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.cluster.namespace)
    }

    async fn apply<K>(&self, object: &K) -> Result<(), PlatformError>
    where
        K: Object,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api::<K>().patch(&name, &params, &Patch::Apply(object)).await?;
        Ok(())
    }

    /// The object `name`, created from `make` if it does not exist; never overwritten.
    async fn create_once<K>(&self, name: &str, make: impl FnOnce() -> K) -> Result<K, PlatformError>
    where
        K: Object,
        K::DynamicType: Default,
    {
        let api = self.api::<K>();
        if let Some(existing) = api.get_opt(name).await? {
            return Ok(existing);
        }
        match api.create(&PostParams::default(), &make()).await {
            Ok(created) => Ok(created),
            // Someone made it between our read and our create: theirs stands.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(name).await?),
            Err(e) => Err(e.into()),
        }
    }

    fn workload(
        &self,
        id: MemberId,
        learner: bool,
        placement_group: u32,
        fenced: bool,
        admin_key: &str,
    ) -> StatefulSet {
        statefulset::member(
            &self.cluster,
            &statefulset::MemberWorkload {
                id,
                learner,
                placement_group,
                fenced,
                admin_key,
            },
        )
    }

    fn placement_group(&self, id: MemberId) -> u32 {
        self.object
            .status
            .as_ref()
            .and_then(|s| s.members.iter().find(|m| m.id == id))
            .map_or(0, |m| m.placement_group)
    }

    /// A prometheus-operator object: applied when `wanted`, deleted when not. Without prometheus-operator's CRDs
    /// in the cluster the rest of the cluster still runs; a warning event says what is missing. Only a spec the
    /// operator has not recorded a pass of yet can have turned one off, so only then is the delete sent (not on
    /// every poll of every cluster, where monitoring is off by default).
    async fn monitoring(
        &self,
        kind: &str,
        plural: &str,
        name: &str,
        wanted: bool,
        make: impl FnOnce() -> serde_json::Value,
    ) -> Result<(), PlatformError> {
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind);
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            self.cluster.namespace,
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        let spec_changed =
            self.object.status.as_ref().and_then(|s| s.observed_generation) != self.object.metadata.generation;
        if !wanted && !spec_changed {
            return Ok(());
        }
        let result = if wanted {
            api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(make()))
                .await
                .map(|_| ())
        } else {
            return delete_ok(api.delete(name, &DeleteParams::default()).await);
        };
        match result {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.publish(&PlanEvent {
                    warning: true,
                    reason: "MonitoringUnavailable",
                    note: format!(
                        "no {kind} created: prometheus-operator's CRDs are not installed ({API})",
                        API = monitoring::API_VERSION
                    ),
                })
                .await
            }
            other => Ok(other?),
        }
    }

    /// What deleting the cluster leaves to the operator: its volumes (everything else has an owner reference).
    pub async fn cleanup(&self) -> Result<(), PlatformError> {
        let selector = format!("{LABEL_CLUSTER}={}", self.cluster.name);
        let claims = self.api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>();
        claims
            .delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
            .await?;
        self.publish(&PlanEvent {
            warning: false,
            reason: "Deleted",
            note: format!(
                "{}: volumes deleted; owned objects go with the cluster",
                self.cluster.name
            ),
        })
        .await
    }

    pub async fn publish(&self, event: &PlanEvent) -> Result<(), PlatformError> {
        let event = Event {
            type_: if event.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.reason.into(),
            note: Some(event.note.clone()),
            action: event.reason.into(),
            secondary: None,
        };
        self.recorder.publish(&event, &self.object.object_ref(&())).await?;
        Ok(())
    }
}

fn delete_ok(result: Result<impl Sized, kube::Error>) -> Result<(), PlatformError> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Platform for KubePlatform<'_> {
    async fn keys(&self) -> Result<BTreeMap<MemberId, String>, PlatformError> {
        let selector = format!("{LABEL_CLUSTER}={},{}", self.cluster.name, resources::LABEL_MEMBER);
        let secrets = self
            .api::<Secret>()
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(secrets
            .items
            .iter()
            .filter_map(|s| {
                let id = s.labels().get(resources::LABEL_MEMBER)?.parse().ok()?;
                Some((id, secret::public_key(s)?))
            })
            .collect())
    }

    async fn ensure_key(&self, id: MemberId) -> Result<String, PlatformError> {
        let name = self.cluster.key_secret_name(id);
        let s = self
            .create_once(&name, || secret::member_key(&self.cluster, id, &KeyPair::generate()))
            .await?;
        secret::public_key(&s).ok_or_else(|| PlatformError::Other(format!("Secret {name} holds no valid public-key")))
    }

    async fn admin_key(&self) -> Result<KeyPair, PlatformError> {
        let name = self.cluster.admin_secret_name();
        let s = self
            .create_once(&name, || secret::admin_key(&self.cluster, &KeyPair::generate()))
            .await?;
        let pem = s
            .data
            .as_ref()
            .and_then(|d| d.get(secret::PRIVATE_KEY))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| PlatformError::Other(format!("Secret {name} holds no {}", secret::PRIVATE_KEY)))?;
        KeyPair::from_pkcs8_pem(&pem)
            .map_err(|_| PlatformError::Other(format!("Secret {name}: not a PKCS#8 Ed25519 key")))
    }

    async fn genesis(&self) -> Result<Vec<(String, u64)>, PlatformError> {
        let spec = self.cluster.spec;
        let mut accounts: Vec<(String, u64)> = spec
            .genesis
            .accounts
            .iter()
            .map(|a| (a.account.clone(), a.balance))
            .collect();
        if let Some(generated) = &spec.genesis.generated_accounts {
            let name = self.cluster.accounts_secret_name();
            let s = self
                .create_once(&name, || {
                    let keys: Vec<KeyPair> = (0..generated.count).map(|_| KeyPair::generate()).collect();
                    secret::accounts(&self.cluster, &keys)
                })
                .await?;
            let keys =
                secret::account_keys(&s).ok_or_else(|| PlatformError::Other(format!("Secret {name} is malformed")))?;
            accounts.extend(keys.iter().map(|k| (k.public().to_hex(), generated.balance)));
        }
        Ok(accounts)
    }

    async fn apply_cluster(&self, objects: &ClusterObjects<'_>) -> Result<(), PlatformError> {
        let c = &self.cluster;
        // The genesis membership, written once: a replacement changes the membership through the replicas, never
        // here (a pod restarted later must start from the same genesis as the others). Once a reconfiguration has
        // happened the voters are no longer the genesis, so a ConfigMap deleted since is not made up again.
        let reconfigured = self.object.status.as_ref().is_some_and(|s| s.epoch > 0);
        let name = c.genesis_name();
        if reconfigured && self.api::<ConfigMap>().get_opt(&name).await?.is_none() {
            self.publish(&PlanEvent {
                warning: true,
                reason: "GenesisMissing",
                note: format!(
                    "ConfigMap {name} was deleted after epoch 0 and cannot be rebuilt from the current members: \
                     restore it from a backup before any member pod restarts"
                ),
            })
            .await?;
        } else {
            self.create_once(&name, || {
                configmap::genesis(c, objects.voters, objects.keys, objects.genesis, objects.admin_key)
            })
            .await?;
        }
        self.apply::<Service>(&services::peers(c)).await?;
        self.apply::<Service>(&services::client(c)).await?;
        self.apply::<PodDisruptionBudget>(&pdb::budget(c, objects.max_unavailable))
            .await?;
        self.apply::<NetworkPolicy>(&networkpolicy::policy(c)).await?;
        let monitoring = &c.spec.monitoring;
        self.monitoring(
            "ServiceMonitor",
            "servicemonitors",
            c.name,
            monitoring.service_monitor,
            || monitoring::service_monitor(c),
        )
        .await?;
        self.monitoring(
            "PrometheusRule",
            "prometheusrules",
            &format!("{}-alerts", c.name),
            monitoring.prometheus_rule,
            || monitoring::prometheus_rule(c),
        )
        .await
    }

    async fn run(
        &self,
        id: MemberId,
        learner: bool,
        placement_group: u32,
        admin_key: &str,
    ) -> Result<(), PlatformError> {
        self.apply(&self.workload(id, learner, placement_group, false, admin_key))
            .await
    }

    async fn fence(&self, id: MemberId, admin_key: &str) -> Result<(), PlatformError> {
        // Scaled to zero, without the key volume: the StatefulSet controller stops the pod.
        self.apply(&self.workload(id, false, self.placement_group(id), true, admin_key))
            .await
    }

    async fn withdraw_key(&self, id: MemberId) -> Result<(), PlatformError> {
        delete_ok(
            self.api::<Secret>()
                .delete(&self.cluster.key_secret_name(id), &DeleteParams::default())
                .await,
        )
    }

    async fn retire(&self, id: MemberId) -> Result<(), PlatformError> {
        delete_ok(
            self.api::<StatefulSet>()
                .delete(&self.cluster.member_name(id), &DeleteParams::default())
                .await,
        )
    }

    fn address(&self, id: MemberId) -> String {
        self.cluster.member_address(id)
    }

    async fn mark_handled(&self, request: &str) -> Result<(), PlatformError> {
        let value = {
            let mut handled = self.handled.lock().expect("not poisoned");
            handled.insert(request.to_string());
            handled.iter().cloned().collect::<Vec<_>>().join("\n")
        };
        let patch = json!({"metadata": {"annotations": {annotations::HANDLED: value}}});
        self.api::<ByzantineCluster>()
            .patch(self.cluster.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn record(&self, status: &ByzantineClusterStatus, events: &[PlanEvent]) -> Result<(), PlatformError> {
        let patch = json!({
            "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            "kind": "ByzantineCluster",
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api::<ByzantineCluster>()
            .patch_status(self.cluster.name, &params, &Patch::Apply(&patch))
            .await?;
        for event in events {
            self.publish(event).await?;
        }
        Ok(())
    }
}
