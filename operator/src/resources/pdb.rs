//! The PodDisruptionBudget: voluntary disruptions (drains, upgrades) may take down at most F members minus those
//! already unhealthy, so a quorum always stays up.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;

use super::{Cluster, LABEL_CLUSTER, typed};

pub fn budget(cluster: &Cluster, max_unavailable: u32) -> PodDisruptionBudget {
    typed(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": cluster.metadata(cluster.name, &[]),
        "spec": {
            "maxUnavailable": max_unavailable,
            "selector": {"matchLabels": {LABEL_CLUSTER: cluster.name}},
            // A pod that is not ready anyway may be evicted: it counts among the unhealthy already.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, spec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn the_budget_is_what_the_plan_allows() {
        let spec = spec(7);
        let pdb = budget(&cluster(&spec), 1).spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(pdb.selector.unwrap().match_labels.unwrap()[LABEL_CLUSTER], "drill");
    }
}
