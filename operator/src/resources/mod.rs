//! One pure builder per Kubernetes object the operator owns: (cluster, what the plan decided) -> the object.
//! They are written as the YAML a reader would check (`json!`), then typed, so a field k8s-openapi does not know
//! fails the builder's tests rather than the API server.

pub mod configmap;
pub mod monitoring;
pub mod networkpolicy;
pub mod pdb;
pub mod secret;
pub mod services;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use crate::crd::ByzantineClusterSpec;
use crate::plan::MemberId;

/// The replicas' gRPC port (peers and clients).
pub const GRPC_PORT: u16 = 7000;
/// /metrics, /healthz and /readyz.
pub const METRICS_PORT: u16 = 9100;
/// The operator's one field manager for server-side apply.
pub const FIELD_MANAGER: &str = "bft-operator";
pub const LABEL_CLUSTER: &str = "bft.dev/cluster";
pub const LABEL_MEMBER: &str = "bft.dev/member";
pub const LABEL_GROUP: &str = "bft.dev/placement-group";
/// Pods with this label set to the cluster's name may call its replicas (clients).
pub const LABEL_CLIENT: &str = "bft.dev/client-of";

/// The cluster an object belongs to.
#[derive(Clone, Debug)]
pub struct Cluster<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub spec: &'a ByzantineClusterSpec,
}

impl Cluster<'_> {
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            kind: "ByzantineCluster".into(),
            name: self.name.into(),
            uid: self.uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// metadata for an object of this cluster: name, namespace, labels, the owner reference.
    pub fn metadata(&self, name: &str, extra_labels: &[(&str, String)]) -> Value {
        let mut labels = self.labels();
        for (k, v) in extra_labels {
            labels.insert((*k).to_string(), v.clone());
        }
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "ownerReferences": [self.owner_reference()],
        })
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "bft-replica".into()),
            ("app.kubernetes.io/instance".into(), self.name.into()),
            ("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into()),
            (LABEL_CLUSTER.into(), self.name.into()),
        ])
    }

    pub fn member_name(&self, id: MemberId) -> String {
        format!("{}-{id}", self.name)
    }

    pub fn key_secret_name(&self, id: MemberId) -> String {
        format!("{}-member-{id}", self.name)
    }

    pub fn admin_secret_name(&self) -> String {
        format!("{}-admin", self.name)
    }

    pub fn accounts_secret_name(&self) -> String {
        format!("{}-accounts", self.name)
    }

    pub fn genesis_name(&self) -> String {
        format!("{}-genesis", self.name)
    }

    pub fn peers_service(&self) -> String {
        format!("{}-peers", self.name)
    }

    /// A member's stable gRPC address: its pod's DNS name under the headless service.
    pub fn member_address(&self, id: MemberId) -> String {
        format!(
            "{}-0.{}.{}.svc:{GRPC_PORT}",
            self.member_name(id),
            self.peers_service(),
            self.namespace
        )
    }
}

/// Typed from the JSON a builder wrote; the builders' tests make sure it always is.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("a builder wrote an invalid object: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{GeneratedAccounts, GenesisSpec};

    pub fn spec(replicas: u32) -> ByzantineClusterSpec {
        serde_json::from_value(json!({
            "replicas": replicas,
            "image": "bft-replica:test",
            "genesis": {"generatedAccounts": {"count": 4, "balance": 1000}},
        }))
        .unwrap()
    }

    pub fn cluster(spec: &ByzantineClusterSpec) -> Cluster<'_> {
        Cluster {
            name: "drill",
            namespace: "bft",
            uid: "uid-1",
            spec,
        }
    }

    #[test]
    fn every_object_is_owned_by_its_cluster_and_labelled() {
        let spec = spec(7);
        let c = cluster(&spec);
        let meta = c.metadata("drill-1", &[(LABEL_MEMBER, "1".into())]);
        assert_eq!(meta["ownerReferences"][0]["kind"], "ByzantineCluster");
        assert_eq!(meta["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
        assert_eq!(meta["labels"][LABEL_CLUSTER], "drill");
        assert_eq!(meta["labels"][LABEL_MEMBER], "1");
        assert_eq!(c.member_address(3), "drill-3-0.drill-peers.bft.svc:7000");
        assert_eq!(
            spec.genesis,
            GenesisSpec {
                accounts: vec![],
                generated_accounts: Some(GeneratedAccounts {
                    count: 4,
                    balance: 1000
                })
            }
        );
    }
}
