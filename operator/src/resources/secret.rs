//! A member's key Secret: its Ed25519 keypair, created once and never overwritten (the Secret is immutable),
//! deleted when the member is fenced so that no pod can mount the key again.

use std::collections::BTreeMap;

use bft_core::crypto::KeyPair;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::{Cluster, LABEL_MEMBER, typed};
use crate::plan::MemberId;

pub const PRIVATE_KEY: &str = "private-key.pem";
pub const PUBLIC_KEY: &str = "public-key";

/// The Secret holding `key` for member `id`. Its private half appears nowhere else.
pub fn member_key(cluster: &Cluster, id: MemberId, key: &KeyPair) -> Secret {
    keypair_secret(
        cluster,
        &cluster.key_secret_name(id),
        &[(LABEL_MEMBER, id.to_string())],
        key,
    )
}

/// The administrator key that signs reconfigurations; replicas get its public half (BFT_ADMIN_KEY).
pub fn admin_key(cluster: &Cluster, key: &KeyPair) -> Secret {
    keypair_secret(cluster, &cluster.admin_secret_name(), &[], key)
}

fn keypair_secret(cluster: &Cluster, name: &str, labels: &[(&str, String)], key: &KeyPair) -> Secret {
    let mut secret: Secret = typed(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": cluster.metadata(name, labels),
        "type": "Opaque",
        "immutable": true,
    }));
    secret.data = Some(BTreeMap::from([
        (
            PRIVATE_KEY.to_string(),
            ByteString(key.to_pkcs8_pem().as_bytes().to_vec()),
        ),
        (PUBLIC_KEY.to_string(), ByteString(key.public().to_hex().into_bytes())),
    ]));
    secret
}

/// Generated genesis accounts (test material): their secret keys in hex, one per line.
pub fn accounts(cluster: &Cluster, keys: &[KeyPair]) -> Secret {
    let secrets: Vec<String> = keys.iter().map(|k| bft_core::crypto::hex(&k.secret_bytes())).collect();
    let mut secret: Secret = typed(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": cluster.metadata(&cluster.accounts_secret_name(), &[]),
        "type": "Opaque",
        "immutable": true,
    }));
    secret.data = Some(BTreeMap::from([(
        "accounts".to_string(),
        ByteString(secrets.join("\n").into_bytes()),
    )]));
    secret
}

/// The public key (hex) a key Secret holds, if it is well formed.
pub fn public_key(secret: &Secret) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(PUBLIC_KEY)?.0;
    let hex = String::from_utf8(bytes.clone()).ok()?;
    bft_core::crypto::PublicKey::from_hex(&hex).ok()?;
    Some(hex)
}

/// The account keys an accounts Secret holds.
pub fn account_keys(secret: &Secret) -> Option<Vec<KeyPair>> {
    let bytes = &secret.data.as_ref()?.get("accounts")?.0;
    let text = String::from_utf8(bytes.clone()).ok()?;
    text.lines()
        .map(|l| bft_core::crypto::decode_hex32(l).map(KeyPair::from_secret))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, spec};

    #[test]
    fn a_member_key_secret_is_immutable_and_holds_the_keypair() {
        let spec = spec(4);
        let key = KeyPair::generate();
        let secret = member_key(&cluster(&spec), 3, &key);
        assert_eq!(secret.metadata.name.as_deref(), Some("drill-member-3"));
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(public_key(&secret), Some(key.public().to_hex()));
        let pem = String::from_utf8(secret.data.unwrap()[PRIVATE_KEY].0.clone()).unwrap();
        assert_eq!(KeyPair::from_pkcs8_pem(&pem).unwrap().public(), key.public());
    }

    #[test]
    fn accounts_round_trip() {
        let spec = spec(4);
        let keys = vec![KeyPair::generate(), KeyPair::generate()];
        let secret = accounts(&cluster(&spec), &keys);
        let back = account_keys(&secret).unwrap();
        assert_eq!(
            back.iter().map(|k| k.public()).collect::<Vec<_>>(),
            keys.iter().map(|k| k.public()).collect::<Vec<_>>()
        );
    }
}
