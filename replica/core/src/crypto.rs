//! Ed25519 identities, signatures and digests.
//!
//! Signature validity must come out the same on every honest replica whatever else it is verified with:
//! replicas batch different sets (signature cache hits, chunking), so if a batch could accept what a single
//! check refuses, honest replicas would disagree on whether one message is valid. There is therefore one rule,
//! and the single and the batch check both decide by it: the ZIP-215 rule (<https://zips.z.cash/zip-0215>;
//! Tendermint's ADR 079 adopts it for the same reason), as the `ed25519-zebra` crate implements it, plus a rule on
//! keys. A signature with bytes `R_bytes ‖ s_bytes` by a key with bytes `A_bytes` on message `M` is valid iff
//!
//! 1. `A_bytes` decodes to a curve point `A` (a non-canonical encoding of y is accepted) that is not of small
//!    order. A key of small order is refused where it is decoded (`PublicKey::from_bytes`, `KeyError::Weak`),
//!    before any signature, so this depends on the key's bytes alone. A key with a torsion component is accepted;
//! 2. `s_bytes`, read little-endian, is an integer `s` below the group order `l` (canonical `s`);
//! 3. `R_bytes` decodes to a curve point `R` (non-canonical encodings, small order, torsion components accepted);
//! 4. `[8]([s]B - R - [k]A)` is the identity, where `k = SHA-512(R_bytes ‖ A_bytes ‖ M)` reduced mod `l`: the
//!    cofactored equation. The cofactorless `[s]B = R + [k]A` is never used.
//!
//! Why batches agree with it: a batch checks `[8]Σ z_i([s_i]B - R_i - [k_i]A_i) = 0` with 128-bit coefficients
//! `z_i`. Each `[8](…)` lies in the prime-order group, so a batch of valid signatures always passes, and a batch
//! holding an invalid one passes with probability at most 2^-128 over its coefficients. The cofactorless
//! equations that `verify_strict` used before do not combine that way: a torsion component in `R` or `A` cancels
//! in a fraction of batches (a crafted signature passed 93 of 200 batches of five, and no single check).
//! A batch only ever confirms: one that fails is re-checked signature by signature, and those checks decide.
//! The coefficients are drawn from ChaCha20 seeded with a hash of the whole batch: nothing random comes from
//! outside, and no signer can pick them. (Which coefficient goes to which signature follows the crate's hash-map
//! order, which may differ between processes; the verdict does not, but for that 2^-128.)
//!
//! What the rule accepts beyond RFC 8032's strict reading (torsion in `R` or `A`, non-canonical point encodings)
//! only a key's holder can produce, and an honest signer never does: `k` hashes the bytes of `R` and `A`, and `s`
//! must be canonical, so no one else can turn a valid signature into another valid one.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digest of `parts`, each prefixed with its length so that different splits never collide.
    pub fn of(domain: &str, parts: &[&[u8]]) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update((domain.len() as u64).to_le_bytes());
        hasher.update(domain.as_bytes());
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Digest(hasher.finalize().into())
    }

    pub fn short(&self) -> String {
        hex(&self.0[..4])
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// 64 hex digits as 32 bytes.
pub fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An Ed25519 public key as its 32 bytes. Keys from configuration are checked with `from_bytes`; a key that
/// arrives inside a message is only bytes until it is used, and a key that does not decode to a point of
/// large order verifies nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key is not a valid Ed25519 point")]
    NotAPoint,
    #[error("public key is of small order (weak) and is refused")]
    Weak,
    #[error("public key must be 32 bytes, got {0}")]
    Length(usize),
    #[error("public key must be 64 hex digits")]
    Hex,
}

impl PublicKey {
    /// A checked key: it must decode to a point that is not of small order.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<PublicKey, KeyError> {
        let key = PublicKey(bytes);
        key.decompress()?;
        Ok(key)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Length(bytes.len()))?;
        PublicKey::from_bytes(array)
    }

    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_bytes(decode_hex32(text).ok_or(KeyError::Hex)?)
    }

    /// The decoded point, refused when it is not one or is of small order (rule 1 of the module doc).
    pub fn decompress(&self) -> Result<VerifyingKey, KeyError> {
        let point = curve25519_dalek::edwards::CompressedEdwardsY(self.0)
            .decompress()
            .ok_or(KeyError::NotAPoint)?;
        if point.is_small_order() {
            return Err(KeyError::Weak);
        }
        let key = ed25519_zebra::VerificationKey::try_from(self.0).map_err(|_| KeyError::NotAPoint)?;
        Ok(VerifyingKey(key))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn prefix(&self) -> String {
        hex(&self.0[..4])
    }

    /// The single check, which decides validity (the rule of the module doc).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.decompress().is_ok_and(|key| key.verify(message, signature))
    }
}

/// A member key decoded and checked once (`PublicKey::decompress`), ready to verify with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_zebra::VerificationKey);

impl VerifyingKey {
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.into()
    }

    /// The single check: rules 2 to 4 of the module doc (rule 1 was checked when the key was decoded).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.0.verify(&signature.to_zebra(), message).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pk:{}", self.prefix())
    }
}

/// An Ed25519 signature, kept as its two 32-byte halves so it serialises without helpers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature {
    r: [u8; 32],
    s: [u8; 32],
}

impl Signature {
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&self.r);
        bytes[32..].copy_from_slice(&self.s);
        bytes
    }

    pub fn from_bytes(bytes: [u8; 64]) -> Signature {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&bytes[..32]);
        s.copy_from_slice(&bytes[32..]);
        Signature { r, s }
    }

    fn to_zebra(self) -> ed25519_zebra::Signature {
        ed25519_zebra::Signature::from_bytes(&self.to_bytes())
    }

    /// The same signature with one bit flipped: what a corrupting replica sends.
    pub fn corrupted(&self) -> Signature {
        let mut bytes = self.to_bytes();
        bytes[7] ^= 0x01;
        Signature::from_bytes(bytes)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex(&self.r[..4]))
    }
}

/// A private signing key. It never prints: `Debug` shows only the public half.
pub struct KeyPair {
    signing: SigningKey,
    public: PublicKey,
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        KeyPair::from_secret(SigningKey::generate(&mut rand::rng()).to_bytes())
    }

    /// A key derived from 32 secret bytes (the simulator derives them from its seed).
    pub fn from_secret(secret: [u8; 32]) -> KeyPair {
        let signing = SigningKey::from_bytes(&secret);
        let public = PublicKey::from_bytes(signing.verifying_key().to_bytes())
            .expect("a key derived from a secret scalar has large order");
        KeyPair { signing, public }
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature::from_bytes(self.signing.sign(message).to_bytes())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("not an Ed25519 private key in PKCS#8 PEM form")]
    Format,
}

impl KeyPair {
    /// Reads a private key in PKCS#8 PEM form. The error never includes the key's text.
    pub fn from_pkcs8_pem(pem: &str) -> Result<KeyPair, KeyFileError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyFileError::Format)?;
        Ok(KeyPair::from_secret(signing.to_bytes()))
    }

    /// The private key in PKCS#8 PEM form, wiped from memory when dropped.
    pub fn to_pkcs8_pem(&self) -> zeroize::Zeroizing<String> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes")
    }
}

impl Clone for KeyPair {
    fn clone(&self) -> Self {
        KeyPair {
            signing: self.signing.clone(),
            public: self.public,
        }
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({:?}, secret redacted)", self.public)
    }
}

/// One signature check to be made, with the signer's key already decoded and checked.
pub struct SignedItem<'a> {
    pub key: &'a VerifyingKey,
    pub message: &'a [u8],
    pub signature: &'a Signature,
}

/// Checks many signatures, answering for each whether its single check holds.
///
/// A batch that passes confirms every member; one that fails is re-checked signature by signature. Both
/// equations are cofactored (module doc), so a batch passes only if every single check does (but for
/// probability 2^-128), and the answers never depend on what else is in the batch or where.
pub fn verify_many(items: &[SignedItem<'_>]) -> Vec<bool> {
    // Below this a batch saves less than its set-up costs.
    const BATCH_MIN: usize = 4;
    if items.len() >= BATCH_MIN && batch_holds(items) {
        return vec![true; items.len()];
    }
    items
        .iter()
        .map(|item| item.key.verify(item.message, item.signature))
        .collect()
}

/// The cofactored batch equation over `items`, with coefficients drawn from a hash of all of them.
fn batch_holds(items: &[SignedItem<'_>]) -> bool {
    use rand::SeedableRng;
    let mut transcript = Sha256::new();
    transcript.update(b"bft-replica batch verification v1");
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for item in items {
        let key = item.key.to_bytes();
        let signature = item.signature.to_bytes();
        transcript.update(key);
        transcript.update(signature);
        transcript.update((item.message.len() as u64).to_le_bytes());
        transcript.update(item.message);
        batch.queue((
            ed25519_zebra::VerificationKeyBytes::from(key),
            item.signature.to_zebra(),
            item.message,
        ));
    }
    let seed: [u8; 32] = transcript.finalize().into();
    batch.verify(rand_chacha::ChaCha20Rng::from_seed(seed)).is_ok()
}

/// Signatures no honest signer makes, for tests. Each is made with the signer's secret scalar, as a Byzantine
/// member can: whether it is valid depends on which verification equation is used.
#[cfg(test)]
pub(crate) mod crafted {
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest as _, Sha512};

    use super::{PublicKey, Signature};

    fn scalar_of_hash(parts: &[&[u8]]) -> Scalar {
        let mut hasher = Sha512::new();
        for part in parts {
            hasher.update(part);
        }
        Scalar::from_bytes_mod_order_wide(&hasher.finalize().into())
    }

    /// A Schnorr signature with nonce point `rB + T` by the secret scalar of `secret` under the key encoded as
    /// `key`: `k = SHA-512(R ‖ key ‖ message)`, `s = r + k·a`.
    fn sign(secret: [u8; 32], key: [u8; 32], message: &[u8], torsion: &EdwardsPoint) -> Signature {
        let a = ed25519_dalek::SigningKey::from_bytes(&secret).to_scalar();
        let r = scalar_of_hash(&[b"crafted nonce", &secret, message]);
        let big_r = (EdwardsPoint::mul_base(&r) + torsion).compress().0;
        let k = scalar_of_hash(&[&big_r, &key, message]);
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&big_r);
        bytes[32..].copy_from_slice(&(r + k * a).to_bytes());
        Signature::from_bytes(bytes)
    }

    /// The torsion point `t·T8` (`t` in 0..8; 0 is the identity, 4 has order 2, 2 and 6 order 4, odd ones 8).
    pub fn torsion(t: usize) -> EdwardsPoint {
        EIGHT_TORSION[t]
    }

    /// By the member key of `secret`, with a torsion component in `R`: `[s]B - R - [k]A = -T`, so the
    /// cofactored equation holds and the cofactorless one does not.
    pub fn torsion_in_r(secret: [u8; 32], message: &[u8], t: usize) -> Signature {
        let key = super::KeyPair::from_secret(secret).public();
        sign(secret, *key.as_bytes(), message, &torsion(t))
    }

    /// A key `aB + T` with a torsion component (not of small order, so it decodes) and an otherwise honest
    /// signature under it: `[s]B - R - [k]A = -[k]T`, cofactored valid, cofactorless valid only when `8 | k·t`.
    pub fn torsion_in_key(secret: [u8; 32], message: &[u8], t: usize) -> (PublicKey, Signature) {
        let a = ed25519_dalek::SigningKey::from_bytes(&secret).to_scalar();
        let key = (EdwardsPoint::mul_base(&a) + torsion(t)).compress().0;
        let public = PublicKey::from_bytes(key).expect("a large-order point plus torsion is not of small order");
        (public, sign(secret, key, message, &EdwardsPoint::default()))
    }

    /// A valid signature with a torsion point added to `R` and nothing else changed: `k` changes with `R`, so
    /// no equation holds.
    pub fn shifted_r(signature: &Signature, t: usize) -> Signature {
        let mut bytes = signature.to_bytes();
        let r = CompressedEdwardsY(bytes[..32].try_into().expect("32 bytes"))
            .decompress()
            .expect("R of a valid signature decodes");
        bytes[..32].copy_from_slice(&(r + torsion(t)).compress().0);
        Signature::from_bytes(bytes)
    }

    /// The same signature with `s + l` in place of `s`: the same equation, a non-canonical encoding.
    pub fn s_plus_l(signature: &Signature) -> Signature {
        let mut bytes = signature.to_bytes();
        // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (byte, l) in bytes[32..].iter_mut().zip(L) {
            let sum = *byte as u16 + l as u16 + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "s + l fits in 32 bytes");
        Signature::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let key = KeyPair::from_secret([7; 32]);
        let signature = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &signature));
        assert!(!key.public().verify(b"hellp", &signature));
        assert!(!key.public().verify(b"hello", &signature.corrupted()));
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::Weak));
        // A point of order 2 (y = -1).
        let minus_one = [
            0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert_eq!(PublicKey::from_bytes(minus_one), Err(KeyError::Weak));
    }

    #[test]
    fn batch_agrees_with_single_checks() {
        let keys: Vec<KeyPair> = (0..8u8).map(|i| KeyPair::from_secret([i + 1; 32])).collect();
        let messages: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10]).collect();
        let mut signatures: Vec<Signature> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let publics: Vec<VerifyingKey> = keys.iter().map(|k| k.public().decompress().unwrap()).collect();
        let items = |sigs: &[Signature]| -> Vec<bool> {
            let items: Vec<SignedItem> = (0..8)
                .map(|i| SignedItem {
                    key: &publics[i],
                    message: &messages[i],
                    signature: &sigs[i],
                })
                .collect();
            verify_many(&items)
        };
        assert_eq!(items(&signatures), vec![true; 8]);
        signatures[3] = signatures[3].corrupted();
        let mut expected = vec![true; 8];
        expected[3] = false;
        assert_eq!(items(&signatures), expected);
    }

    /// A signature to check: the key it claims, the message, the signature; and the key decoded once and the
    /// verdict of the single check, which the batches are compared with.
    struct Case {
        key: PublicKey,
        message: Vec<u8>,
        signature: Signature,
        decoded: VerifyingKey,
        alone: bool,
    }

    impl Case {
        fn new(key: PublicKey, message: Vec<u8>, signature: Signature) -> Case {
            Case {
                decoded: key.decompress().unwrap(),
                alone: key.verify(&message, &signature),
                key,
                message,
                signature,
            }
        }
    }

    fn honest(i: u8) -> Case {
        let key = KeyPair::from_secret([i + 1; 32]);
        let message = vec![i; 20];
        Case::new(key.public(), message.clone(), key.sign(&message))
    }

    /// Every kind of crafted signature, named: some valid under one equation and not the other, some under none.
    fn crafted_cases() -> Vec<(String, Case)> {
        let mut cases = Vec::new();
        for t in [1, 2, 4, 7] {
            let secret = [100 + t as u8; 32];
            let message = b"crafted".to_vec();
            let signature = crafted::torsion_in_r(secret, &message, t);
            let key = KeyPair::from_secret(secret).public();
            cases.push((format!("torsion {t} in R"), Case::new(key, message, signature)));
            let message = b"crafted key".to_vec();
            let (key, signature) = crafted::torsion_in_key(secret, &message, t);
            cases.push((format!("torsion {t} in the key"), Case::new(key, message, signature)));
            let honest = honest(40 + t as u8);
            let signature = crafted::shifted_r(&honest.signature, t);
            cases.push((
                format!("R shifted by torsion {t}"),
                Case::new(honest.key, honest.message, signature),
            ));
        }
        let honest = honest(50);
        let signature = crafted::s_plus_l(&honest.signature);
        cases.push(("s + l".into(), Case::new(honest.key, honest.message, signature)));
        cases
    }

    /// `verify_many`'s verdicts on `cases`, and each one's single check.
    fn batch_and_singles(cases: &[&Case]) -> (Vec<bool>, Vec<bool>) {
        let items: Vec<SignedItem> = cases
            .iter()
            .map(|c| SignedItem {
                key: &c.decoded,
                message: &c.message,
                signature: &c.signature,
            })
            .collect();
        (verify_many(&items), cases.iter().map(|c| c.alone).collect())
    }

    #[test]
    fn every_verdict_is_the_single_checks_whatever_the_batch() {
        let honest: Vec<Case> = (0..16).map(honest).collect();
        for (what, crafted) in crafted_cases() {
            for n in 1..=16 {
                for position in 0..n {
                    let mut batch: Vec<&Case> = honest[..n - 1].iter().collect();
                    batch.insert(position, &crafted);
                    let (verdicts, singles) = batch_and_singles(&batch);
                    assert_eq!(verdicts, singles, "{what} at {position} in a batch of {n}");
                }
            }
        }
    }

    /// The rule of the module doc, case by case: the cofactored equation accepts torsion in `R` or in the key,
    /// nothing accepts a shifted `R` or a non-canonical `s`, and a small-order key verifies nothing even where
    /// the equation would hold for every message.
    #[test]
    fn the_rule_is_cofactored_with_canonical_s_and_no_weak_keys() {
        for (what, case) in crafted_cases() {
            assert_eq!(case.alone, what.starts_with("torsion"), "{what}");
        }
        // The identity as a key, smuggled past `from_bytes` in a message: R = identity, s = 0 satisfies
        // [8]([s]B - R - [k]A) = 0 for any message, so only the key rule refuses it.
        let mut identity = [0u8; 64];
        identity[0] = 1;
        let weak: PublicKey = serde_json::from_str(&format!("{:?}", &identity[..32])).unwrap();
        assert_eq!(weak.decompress().unwrap_err(), KeyError::Weak);
        assert!(!weak.verify(b"anything", &Signature::from_bytes(identity)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any mixture of honest and crafted signatures, in any order, with repeats.
        #[test]
        fn any_mixture_gets_the_single_checks_verdicts(picks in proptest::collection::vec(0usize..40, 1..=16)) {
            let mut pool: Vec<Case> = (0..16).map(honest).collect();
            pool.extend(crafted_cases().into_iter().map(|(_, case)| case));
            let batch: Vec<&Case> = picks.iter().map(|i| &pool[i % pool.len()]).collect();
            let (verdicts, singles) = batch_and_singles(&batch);
            proptest::prop_assert_eq!(verdicts, singles);
        }
    }

    /// Figures, not assertions: `cargo test --release -p bft-replica --lib verification_rate -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints figures; run in release"]
    fn verification_rate() {
        let cases: Vec<Case> = (0..64u8).map(honest).collect();
        let items: Vec<SignedItem> = cases
            .iter()
            .map(|c| SignedItem {
                key: &c.decoded,
                message: &c.message,
                signature: &c.signature,
            })
            .collect();
        let rounds = 200;
        let rate = |run: &dyn Fn()| {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                run();
            }
            (rounds * 64) as f64 / start.elapsed().as_secs_f64()
        };
        let single = rate(&|| {
            for item in items.chunks(1) {
                assert!(verify_many(item)[0]);
            }
        });
        let decoding = rate(&|| {
            for c in &cases {
                assert!(c.key.verify(&c.message, &c.signature));
            }
        });
        let batch = rate(&|| assert!(verify_many(&items).iter().all(|ok| *ok)));
        // As protocol messages come: 64 signatures by 4 members.
        let members: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_secret([i; 32])).collect();
        let messages: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 20]).collect();
        let by_members: Vec<Case> = (0..64)
            .map(|i| {
                let key = &members[i % 4];
                Case::new(key.public(), messages[i].clone(), key.sign(&messages[i]))
            })
            .collect();
        let member_items: Vec<SignedItem> = by_members
            .iter()
            .map(|c| SignedItem {
                key: &c.decoded,
                message: &c.message,
                signature: &c.signature,
            })
            .collect();
        let by_four = rate(&|| assert!(verify_many(&member_items).iter().all(|ok| *ok)));
        println!(
            "one core: {single:.0} signatures/s one by one (key decoded once), {decoding:.0}/s one by one decoding the key each time, {batch:.0}/s in batches of 64 (64 keys), {by_four:.0}/s in batches of 64 by 4 keys"
        );
    }

    #[test]
    fn key_pair_debug_hides_the_secret() {
        let key = KeyPair::from_secret([9; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex(&key.secret_bytes())));
    }

    #[test]
    fn pkcs8_pem_round_trip() {
        let key = KeyPair::from_secret([4; 32]);
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(KeyPair::from_pkcs8_pem(&pem).unwrap().public(), key.public());
        let error = KeyPair::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nnonsense\n").unwrap_err();
        assert!(!error.to_string().contains("nonsense"));
    }

    #[test]
    fn hex_round_trip() {
        let key = KeyPair::from_secret([3; 32]).public();
        assert_eq!(PublicKey::from_hex(&key.to_hex()), Ok(key));
        assert_eq!(PublicKey::from_hex("zz"), Err(KeyError::Hex));
    }
}
