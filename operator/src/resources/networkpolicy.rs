//! The NetworkPolicy: a cluster's replicas accept gRPC only from their peers, from pods labelled as its clients
//! and from the operator, and metrics scrapes only on the metrics port. Nothing else reaches them.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::{Cluster, GRPC_PORT, LABEL_CLIENT, LABEL_CLUSTER, METRICS_PORT, typed};

pub fn policy(cluster: &Cluster) -> NetworkPolicy {
    typed(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": cluster.metadata(cluster.name, &[]),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_CLUSTER: cluster.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {LABEL_CLUSTER: cluster.name}}},
                        {"podSelector": {"matchLabels": {LABEL_CLIENT: cluster.name}}},
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "bft-operator"}},
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
                },
                {
                    // Scraping: any pod may read /metrics, nothing else on that port.
                    "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
                },
            ],
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, spec};

    #[test]
    fn grpc_is_open_to_peers_clients_and_the_operator_only() {
        let spec = spec(4);
        let p = serde_json::to_value(policy(&cluster(&spec))).unwrap();
        let ingress = p["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 2);
        assert_eq!(ingress[0]["ports"][0]["port"], GRPC_PORT);
        assert_eq!(ingress[0]["from"].as_array().unwrap().len(), 3);
        assert_eq!(ingress[1]["ports"][0]["port"], METRICS_PORT);
        assert!(ingress[1].get("from").is_none(), "metrics port open to scrapers");
    }
}
