//! One StatefulSet per member, of at most one pod: a StatefulSet never runs two pods of one identity at once
//! (unlike a Deployment during a rollout), so a member's key is mounted by at most one running pod. A fenced
//! member's StatefulSet is scaled to zero and mounts no key; its volume stays for forensics.
//!
//! Placement: members of one placement group never share a node (required anti-affinity), and there are F
//! groups, so no node holds more than F members. Zones get a soft spread: no zone holds more than F members when
//! there are at least N/F zones; a hard rule would leave members unschedulable where there are fewer.

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{Value, json};

use super::{Cluster, GRPC_PORT, LABEL_CLUSTER, LABEL_GROUP, LABEL_MEMBER, METRICS_PORT, configmap, secret, typed};
use crate::plan::MemberId;

pub const DEFAULT_ZONE_LABEL: &str = "topology.kubernetes.io/zone";

pub struct MemberWorkload<'a> {
    pub id: MemberId,
    pub learner: bool,
    pub placement_group: u32,
    pub fenced: bool,
    /// The administrator's public key (hex), which authorises reconfigurations.
    pub admin_key: &'a str,
}

pub fn member(cluster: &Cluster, m: &MemberWorkload) -> StatefulSet {
    let spec = cluster.spec;
    let name = cluster.member_name(m.id);
    let member_labels = [
        (LABEL_MEMBER, m.id.to_string()),
        (LABEL_GROUP, m.placement_group.to_string()),
    ];
    let metadata = cluster.metadata(&name, &member_labels);
    let pod_labels = &metadata["labels"];
    let env = |k: &str, v: String| json!({"name": k, "value": v});
    let envs = vec![
        env("BFT_ID", m.id.to_string()),
        env("BFT_KEY_FILE", "/keys/private-key.pem".into()),
        env("BFT_MEMBERS_FILE", format!("/config/{}", configmap::MEMBERS)),
        env("BFT_GENESIS_FILE", format!("/config/{}", configmap::GENESIS)),
        env("BFT_DATA_DIR", "/data".into()),
        env("BFT_LISTEN", format!("0.0.0.0:{GRPC_PORT}")),
        env("BFT_METRICS_LISTEN", format!("0.0.0.0:{METRICS_PORT}")),
        env("BFT_LOG_JSON", "true".into()),
        env("BFT_ALLOW_FAULT_INJECTION", spec.fault_drills.allowed.to_string()),
        env(
            "BFT_VIEW_CHANGE_TIMEOUT_MS",
            spec.protocol.view_change_timeout_ms.to_string(),
        ),
        env("BFT_CHECKPOINT_INTERVAL", spec.protocol.checkpoint_interval.to_string()),
        // Always the pair, as `params()` derives it: the replica never has to guess one from the other.
        env("BFT_LOG_WINDOW", spec.params().log_window.to_string()),
        env(
            "BFT_MAX_CONCURRENT_REQUESTS",
            spec.protocol.max_concurrent_requests.to_string(),
        ),
        env(
            "BFT_QUARANTINE_DURATION_MS",
            spec.detection.quarantine_duration_ms.to_string(),
        ),
        env("BFT_ADMIN_KEY", m.admin_key.to_string()),
    ];
    // A learner is started like any member with the genesis membership, which does not name it: it waits until
    // the reconfiguration that adds it is in force, then catches up by state transfer.
    let _ = m.learner;
    let mut volumes = vec![json!({"name": "config", "configMap": {"name": cluster.genesis_name()}})];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": "/config", "readOnly": true}),
        json!({"name": "data", "mountPath": "/data"}),
    ];
    if !m.fenced {
        volumes.push(json!({
            "name": "key",
            "secret": {
                "secretName": cluster.key_secret_name(m.id),
                "items": [{"key": secret::PRIVATE_KEY, "path": secret::PRIVATE_KEY}],
                "defaultMode": 0o400,
            }
        }));
        mounts.push(json!({"name": "key", "mountPath": "/keys", "readOnly": true}));
    }
    let zone_label = spec
        .scheduling
        .zone_label
        .clone()
        .unwrap_or_else(|| DEFAULT_ZONE_LABEL.into());
    let same_group = json!({"matchLabels": {
        LABEL_CLUSTER: cluster.name,
        LABEL_GROUP: m.placement_group.to_string(),
    }});
    let mut affinity = spec
        .scheduling
        .affinity
        .as_ref()
        .map(|a| serde_json::to_value(a).expect("serialisable"))
        .unwrap_or_else(|| json!({}));
    affinity["podAntiAffinity"] = json!({
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": same_group, "topologyKey": "kubernetes.io/hostname"},
        ],
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": same_group, "topologyKey": zone_label}},
        ],
    });
    let mut container = json!({
        "name": "replica",
        "image": spec.image,
        "env": envs,
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "volumeMounts": mounts,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": METRICS_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": METRICS_PORT}, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": {
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if let Some(policy) = spec.image_pull_policy {
        container["imagePullPolicy"] = serde_json::to_value(policy).expect("serialisable");
    }
    if let Some(resources) = &spec.resources {
        container["resources"] = serde_json::to_value(resources).expect("serialisable");
    }
    let mut claim = json!({
        "metadata": {"name": "data", "labels": {LABEL_CLUSTER: cluster.name, LABEL_MEMBER: m.id.to_string()}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage.size}},
        }
    });
    if let Some(class) = &spec.storage.storage_class_name {
        claim["spec"]["storageClassName"] = json!(class);
    }
    let pod_spec: Value = json!({
        "containers": [container],
        "volumes": volumes,
        "affinity": affinity,
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": zone_label,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {LABEL_CLUSTER: cluster.name}},
        }],
        "tolerations": spec.scheduling.tolerations,
        "nodeSelector": spec.scheduling.node_selector,
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
        "securityContext": {"fsGroup": 65532, "runAsUser": 65532, "runAsGroup": 65532},
    });
    typed(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "replicas": if m.fenced { 0 } else { 1 },
            "serviceName": cluster.peers_service(),
            "podManagementPolicy": "OrderedReady",
            "selector": {"matchLabels": {LABEL_CLUSTER: cluster.name, LABEL_MEMBER: m.id.to_string()}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
            "volumeClaimTemplates": [claim],
            // The volume outlives the StatefulSet: a retired member's data stays for forensics.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, spec};

    fn workload(id: MemberId, fenced: bool) -> MemberWorkload<'static> {
        MemberWorkload {
            id,
            learner: false,
            placement_group: id % 2,
            fenced,
            admin_key: "ad",
        }
    }

    fn mounted_secrets(sts: &StatefulSet) -> Vec<String> {
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()))
            .collect()
    }

    #[test]
    fn a_member_runs_one_pod_mounting_only_its_own_key() {
        let spec = spec(7);
        let sts = member(&cluster(&spec), &workload(3, false));
        let s = sts.spec.as_ref().unwrap();
        assert_eq!(s.replicas, Some(1));
        assert_eq!(mounted_secrets(&sts), vec!["drill-member-3"]);
        let container = &s.template.spec.as_ref().unwrap().containers[0];
        let env: Vec<(String, String)> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert!(env.contains(&("BFT_ID".into(), "3".into())));
        assert!(env.contains(&("BFT_VIEW_CHANGE_TIMEOUT_MS".into(), "5000".into())));
        assert!(env.contains(&("BFT_ALLOW_FAULT_INJECTION".into(), "false".into())));
        assert_eq!(s.service_name.as_deref(), Some("drill-peers"));
    }

    /// Regression: the schema accepted checkpointInterval up to 1,000,000 while the replica refused any above 100
    /// (its log window stayed at the default 200 < 2 x interval), so such a cluster crash-looped every pod. Every
    /// extreme the spec accepts must give a replica parameters it starts with, read from the pod's environment the
    /// way `bft-replica` reads it (its flags' variables into `params`, whatever is left out defaulted).
    #[test]
    fn every_protocol_setting_the_spec_accepts_starts_a_replica() {
        use crate::crd::bounds::*;
        // The variables `bft-replica` reads into its parameters.
        let variables = [
            ("BFT_VIEW_CHANGE_TIMEOUT_MS", "view_change_timeout_ms"),
            ("BFT_CHECKPOINT_INTERVAL", "checkpoint_interval"),
            ("BFT_LOG_WINDOW", "log_window"),
            ("BFT_MAX_CONCURRENT_REQUESTS", "max_concurrent_requests"),
            ("BFT_MAX_BATCH_SIZE", "max_batch_size"),
            ("BFT_QUARANTINE_DURATION_MS", "quarantine_duration_ms"),
        ];
        let intervals = [CHECKPOINT_INTERVAL_MIN, 2, 100, 101, 1_000, CHECKPOINT_INTERVAL_MAX];
        let windows = [None, Some(LOG_WINDOW_MIN), Some(201), Some(2_000), Some(LOG_WINDOW_MAX)];
        let (mut accepted, mut refused) = (0, 0);
        for replicas in [REPLICAS_MIN, REPLICAS_MAX] {
            for interval in intervals {
                for window in windows {
                    for timeout in [VIEW_CHANGE_TIMEOUT_MS_MIN, VIEW_CHANGE_TIMEOUT_MS_MAX] {
                        for requests in [MAX_CONCURRENT_REQUESTS_MIN, MAX_CONCURRENT_REQUESTS_MAX] {
                            for quarantine in [QUARANTINE_MS_MIN, QUARANTINE_MS_MAX] {
                                let mut spec = spec(replicas);
                                spec.protocol.checkpoint_interval = interval;
                                spec.protocol.log_window = window;
                                spec.protocol.view_change_timeout_ms = timeout;
                                spec.protocol.max_concurrent_requests = requests;
                                spec.detection.quarantine_duration_ms = quarantine;
                                if spec.validate().is_err() {
                                    refused += 1;
                                    continue;
                                }
                                accepted += 1;
                                let what = format!("{:?}", spec.protocol);
                                assert_eq!(spec.params().validate(), Ok(()), "{what}");
                                let sts = member(&cluster(&spec), &workload(1, false));
                                let pod = sts.spec.unwrap().template.spec.unwrap();
                                let mut params = json!({});
                                for var in pod.containers[0].env.iter().flatten() {
                                    if let Some((_, key)) = variables.iter().find(|(name, _)| *name == var.name) {
                                        let value: u64 = var.value.as_deref().unwrap().parse().unwrap();
                                        params[*key] = value.into();
                                    }
                                }
                                let read: bft_core::Params = serde_json::from_value(params).unwrap();
                                assert_eq!(read, spec.params(), "{what}");
                                assert_eq!(read.validate(), Ok(()), "{what}");
                            }
                        }
                    }
                }
            }
        }
        // Only windows below twice the interval are refused, and the test saw both kinds.
        assert!(accepted > 0 && refused > 0, "{accepted} accepted, {refused} refused");
    }

    #[test]
    fn a_fenced_member_is_scaled_to_zero_and_mounts_no_key() {
        let spec = spec(7);
        let sts = member(&cluster(&spec), &workload(5, true));
        assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(0));
        assert!(mounted_secrets(&sts).is_empty());
        let claims = sts.spec.as_ref().unwrap().volume_claim_templates.as_ref().unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"), "its volume stays");
    }

    #[test]
    fn members_of_a_placement_group_never_share_a_node() {
        let spec = spec(7);
        let sts = member(&cluster(&spec), &workload(4, false));
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
        let required = anti.required_during_scheduling_ignored_during_execution.unwrap();
        assert_eq!(required[0].topology_key, "kubernetes.io/hostname");
        let labels = required[0]
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(labels[LABEL_GROUP], "0");
        assert_eq!(labels[LABEL_CLUSTER], "drill");
    }
}
