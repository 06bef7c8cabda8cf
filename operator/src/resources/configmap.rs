//! The genesis ConfigMap: the first membership (ids, addresses, public keys), the genesis accounts and the
//! administrator's public key. Public material only: every replica mounts it. It is created once and immutable:
//! later memberships are ordered by the replicas themselves (reconfigurations), and a replica restarted after one
//! must still start from the genesis it shares with the others, or it could not verify the chain of epochs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

use super::{Cluster, typed};
use crate::plan::MemberId;

pub const MEMBERS: &str = "members.json";
pub const GENESIS: &str = "genesis.json";
pub const ADMIN_KEY: &str = "admin-key";

/// `voters`: the genesis members; `keys`: each member's public key (hex); `genesis`: (account public key hex,
/// balance).
pub fn genesis(
    cluster: &Cluster,
    voters: &[MemberId],
    keys: &BTreeMap<MemberId, String>,
    genesis: &[(String, u64)],
    admin_key: &str,
) -> ConfigMap {
    let entry = |id: &MemberId| {
        json!({
            "id": id,
            "address": cluster.member_address(*id),
            "public_key": keys.get(id).cloned().unwrap_or_default(),
        })
    };
    let members: Vec<_> = voters.iter().map(entry).collect();
    let genesis: Vec<_> = genesis
        .iter()
        .map(|(account, balance)| json!({"account": account, "balance": balance}))
        .collect();
    typed(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": cluster.metadata(&cluster.genesis_name(), &[]),
        "immutable": true,
        "data": {
            MEMBERS: serde_json::to_string_pretty(&members).expect("serialisable"),
            GENESIS: serde_json::to_string_pretty(&genesis).expect("serialisable"),
            ADMIN_KEY: admin_key,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, spec};

    #[test]
    fn the_genesis_lists_the_members_with_their_public_keys_and_the_replica_reads_it() {
        let spec = spec(4);
        let keys: BTreeMap<MemberId, String> = (1..=5)
            .map(|id| {
                (
                    id,
                    bft_core::crypto::KeyPair::from_secret([id as u8; 32]).public().to_hex(),
                )
            })
            .collect();
        let genesis = vec![(keys[&1].clone(), 100)];
        let cm = super::genesis(&cluster(&spec), &[1, 2, 3, 4], &keys, &genesis, "ab");
        assert_eq!(cm.immutable, Some(true));
        let data = cm.data.unwrap();
        // The replica's own types read what the operator writes (bft-replica --members-file).
        let members: Vec<bft_client::node_config::MemberConfig> = serde_json::from_str(&data[MEMBERS]).unwrap();
        assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(members[1].public_key, keys[&2]);
        assert_eq!(members[1].address, "drill-2-0.drill-peers.bft.svc:7000");
        let genesis: Vec<bft_client::node_config::GenesisAccount> = serde_json::from_str(&data[GENESIS]).unwrap();
        assert_eq!(genesis[0].balance, 100);
        assert!(
            !data.values().any(|v| v.contains("PRIVATE KEY")),
            "public material only"
        );
    }
}
