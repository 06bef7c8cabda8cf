//! Two Services: a headless one that gives each member a stable DNS name for its peers (ready or not, so a
//! member that is catching up can be reached, and scraped), and a client one in front of the ready members.

use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::{Cluster, GRPC_PORT, LABEL_CLUSTER, METRICS_PORT, typed};

/// Tells the two Services apart (the ServiceMonitor selects the peer one).
pub const LABEL_SERVICE: &str = "bft.dev/service";

pub fn peers(cluster: &Cluster) -> Service {
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": cluster.metadata(&cluster.peers_service(), &[(LABEL_SERVICE, "peers".to_string())]),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {LABEL_CLUSTER: cluster.name},
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        }
    }))
}

pub fn client(cluster: &Cluster) -> Service {
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": cluster.metadata(cluster.name, &[]),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_CLUSTER: cluster.name},
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, spec};

    #[test]
    fn the_peer_service_is_headless_and_publishes_members_that_are_not_ready() {
        let spec = spec(4);
        let s = peers(&cluster(&spec)).spec.unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        let c = client(&cluster(&spec)).spec.unwrap();
        assert_eq!(c.ports.unwrap().len(), 2);
        assert_eq!(c.selector.unwrap()[LABEL_CLUSTER], "drill");
    }
}
