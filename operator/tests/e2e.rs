//! End to end on a real Kubernetes cluster with the operator installed (operator/tests/e2e/kind.sh sets one up
//! with kind). Ignored by default: no cluster can run where the rest of the tests run. Run with
//! `KUBECONFIG=... cargo test -p bft-operator --test e2e -- --ignored --test-threads 1`.

use std::time::{Duration, Instant};

use bft_operator::crd::ByzantineCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NS: &str = "bft-e2e";

async fn client() -> Client {
    Client::try_default()
        .await
        .expect("a kubeconfig (KUBECONFIG) for the test cluster")
}

async fn wait_for(
    api: &Api<ByzantineCluster>,
    name: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&ByzantineCluster) -> bool,
) -> ByzantineCluster {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(c) = api.get(name).await
            && done(&c)
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}: {:?}",
            api.get(name).await.map(|c| c.status)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
#[ignore = "needs a real Kubernetes cluster with the operator installed: operator/tests/e2e/kind.sh sets one up"]
async fn a_cluster_comes_up_fences_a_misbehaving_member_and_is_deleted_cleanly() {
    let client = client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await;
    let clusters: Api<ByzantineCluster> = Api::namespaced(client.clone(), NS);
    let cluster: ByzantineCluster = serde_json::from_value(json!({
        "apiVersion": "bft.dev/v1alpha1",
        "kind": "ByzantineCluster",
        "metadata": {"name": "e2e"},
        "spec": {
            "replicas": 4,
            "image": "bft-replica:dev",
            "imagePullPolicy": "Never",
            "protocol": {"viewChangeTimeoutMs": 1000, "checkpointInterval": 10},
            "genesis": {"generatedAccounts": {"count": 4, "balance": 1000000}},
            "faultDrills": {"allowed": true},
        }
    }))
    .unwrap();

    // A resource the schema refuses never gets in.
    let mut bad = cluster.clone();
    bad.metadata.name = Some("bad".into());
    bad.spec.replicas = 3;
    let refused = clusters
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("replicas"), "{refused}");

    clusters.create(&PostParams::default(), &cluster).await.unwrap();
    let started = Instant::now();
    let up = wait_for(&clusters, "e2e", Duration::from_secs(300), "4 healthy members", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == "Running" && s.healthy_replicas == 4)
    })
    .await;
    println!("new 4-member cluster to Running: {:?}", started.elapsed());
    assert_eq!(up.status.as_ref().unwrap().quorum_size, 3);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    assert_eq!(
        sets.list(&ListParams::default().labels("bft.dev/cluster=e2e"))
            .await
            .unwrap()
            .items
            .len(),
        4
    );
    let pdb: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
    let budget = pdb.get("e2e").await.unwrap();
    assert_eq!(
        budget.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // A fault drill: member 4 corrupts every signature; it is fenced and its key withdrawn.
    let patch = json!({"metadata": {"annotations": {"bft.dev/inject-fault": "4:signature-corruption:1.0"}}});
    clusters
        .patch("e2e", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let fenced = wait_for(&clusters, "e2e", Duration::from_secs(300), "member 4 fenced", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.members.iter().any(|m| m.id == 4 && m.fenced))
    })
    .await;
    assert_eq!(fenced.status.unwrap().replacement.unwrap().remove, vec![4]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while secrets.get_opt("e2e-member-4").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the fenced member's key is still there");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(sets.get("e2e-4").await.unwrap().spec.unwrap().replicas, Some(0));

    // Deletion: the finalizer runs, and the resource goes.
    clusters.delete("e2e", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while clusters.get_opt("e2e").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the cluster was not deleted");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
