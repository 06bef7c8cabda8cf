//! Ed25519 identities, signatures and digests.
//!
//! Signature validity must come out the same on every honest replica, or replicas could disagree on whether
//! a proposal is valid. So: public keys of small order are refused when they are decoded, every check uses
//! `verify_strict` semantics (canonical `s`, canonical non-small-order `R`), and batch verification, whose
//! randomness is derived from its inputs and therefore deterministic, only ever confirms; a batch that fails
//! is re-checked one signature at a time with the strict check, which alone decides.

use std::fmt;

pub use ed25519_dalek::VerifyingKey;
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

    /// The decoded point, refused when it is not one or is of small order.
    pub fn decompress(&self) -> Result<VerifyingKey, KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::NotAPoint)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(key)
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

    /// Strict single verification: the check that decides validity.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.decompress()
            .is_ok_and(|key| verify_strict(&key, message, signature))
    }
}

fn verify_strict(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    let signature = ed25519_dalek::Signature::from_bytes(&signature.to_bytes());
    key.verify_strict(message, &signature).is_ok()
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

/// Checks many signatures, answering for each whether it is valid under the strict single check.
///
/// A batch that passes confirms every member (valid signatures always pass, and the batch equation's
/// coefficients come from a transcript of its inputs, so the same batch gives the same answer everywhere).
/// Before batching, the cheap parts of the strict check that the batch equation does not make (canonical,
/// non-small-order `R`) are done per item. A failing batch falls back to the strict check for each item.
pub fn verify_many(items: &[SignedItem<'_>]) -> Vec<bool> {
    const BATCH_MIN: usize = 4;
    if items.len() < BATCH_MIN {
        return items
            .iter()
            .map(|item| verify_strict(item.key, item.message, item.signature))
            .collect();
    }
    let batchable = items.iter().all(|item| r_is_strict(item.signature));
    if batchable {
        let messages: Vec<&[u8]> = items.iter().map(|item| item.message).collect();
        let signatures: Vec<ed25519_dalek::Signature> = items
            .iter()
            .map(|item| ed25519_dalek::Signature::from_bytes(&item.signature.to_bytes()))
            .collect();
        let keys: Vec<VerifyingKey> = items.iter().map(|item| *item.key).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return vec![true; items.len()];
        }
    }
    items
        .iter()
        .map(|item| verify_strict(item.key, item.message, item.signature))
        .collect()
}

/// `R` must be a canonical encoding of a point that is not of small order, as `verify_strict` demands. Checked on
/// the bytes, without decoding the point (which costs a square root): the y coordinate must be below the field
/// prime, and the encoding must not be one of the eight small-order points' (with either sign bit). Whether R is
/// on the curve at all the batch equation itself finds out.
fn r_is_strict(signature: &Signature) -> bool {
    let r = signature.r;
    let mut y = r;
    y[31] &= 0x7f;
    // y >= p = 2^255 - 19 only when y is one of p .. 2^255 - 1: top bytes all ones and the low byte >= 0xed.
    let y_at_least_p = y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed;
    !y_at_least_p && !small_order_encodings().contains(&y)
}

/// The y-coordinate encodings (sign bit cleared) of the eight points of small order.
fn small_order_encodings() -> &'static [[u8; 32]; 8] {
    static ENCODINGS: std::sync::OnceLock<[[u8; 32]; 8]> = std::sync::OnceLock::new();
    ENCODINGS.get_or_init(|| {
        curve25519_dalek::constants::EIGHT_TORSION.map(|point| {
            let mut y = point.compress().0;
            y[31] &= 0x7f;
            y
        })
    })
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

    #[test]
    fn the_cheap_r_check_agrees_with_decoding() {
        let decoded = |r: [u8; 32]| {
            curve25519_dalek::edwards::CompressedEdwardsY(r)
                .decompress()
                .is_some_and(|p| !p.is_small_order() && p.compress().0 == r)
        };
        let key = KeyPair::from_secret([5; 32]);
        let honest = key.sign(b"m");
        assert!(r_is_strict(&honest));
        // Small-order points, with either sign bit, and y at or above the prime are refused.
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            for flip in [0u8, 0x80] {
                let mut bytes = honest.to_bytes();
                let mut r = point.compress().0;
                r[31] ^= flip;
                bytes[..32].copy_from_slice(&r);
                assert!(!r_is_strict(&Signature::from_bytes(bytes)), "{r:?}");
            }
        }
        let mut at_p = [0xff; 32];
        at_p[0] = 0xed;
        at_p[31] = 0x7f;
        for r in [at_p, [0xff; 32]] {
            let mut bytes = honest.to_bytes();
            bytes[..32].copy_from_slice(&r);
            assert!(!r_is_strict(&Signature::from_bytes(bytes)) && !decoded(r));
        }
        // On every R of many honest signatures, the byte check and the decoding agree.
        for i in 0..200u32 {
            let sig = key.sign(&i.to_le_bytes());
            assert_eq!(r_is_strict(&sig), decoded(sig.r));
        }
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
