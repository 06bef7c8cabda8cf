//! The replicated ledger: accounts keyed by Ed25519 public keys, balances from a genesis, per-account nonces,
//! and transfers signed by the payer.
//!
//! Execution is deterministic and total: every transfer either applies or is rejected with a reason, and
//! nothing else can happen. Money is only moved, never made or lost, so the sum of balances stays the genesis
//! supply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, KeyPair, PublicKey, Signature};

/// A payment order. `nonce` is the payer's transfer counter: its first transfer has nonce 1, and each
/// executed transfer must carry exactly the next one, so a signed transfer can execute at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    pub from: PublicKey,
    pub to: PublicKey,
    pub amount: u64,
    pub nonce: u64,
}

impl Transfer {
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(96);
        bytes.extend_from_slice(b"bft-transfer-v1");
        bytes.extend_from_slice(self.from.as_bytes());
        bytes.extend_from_slice(self.to.as_bytes());
        bytes.extend_from_slice(&self.amount.to_le_bytes());
        bytes.extend_from_slice(&self.nonce.to_le_bytes());
        bytes
    }

    pub fn sign(self, payer: &KeyPair) -> SignedTransfer {
        let signature = payer.sign(&self.signing_bytes());
        SignedTransfer {
            transfer: self,
            signature,
        }
    }
}

/// A transfer with the payer's signature. Whether the signature is valid is decided before the transfer is
/// ordered (see `messages::verify_transfers`); the ledger executes only what was ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedTransfer {
    pub transfer: Transfer,
    pub signature: Signature,
}

impl SignedTransfer {
    /// Identifies the request: covers the signature too, so two signings of one transfer are two requests.
    pub fn digest(&self) -> Digest {
        Digest::of(
            "transfer",
            &[&self.transfer.signing_bytes(), &self.signature.to_bytes()],
        )
    }

    pub fn verify(&self) -> bool {
        self.transfer
            .from
            .verify(&self.transfer.signing_bytes(), &self.signature)
    }

    /// The funds this transfer spends: two different transfers with one spend key are a double spend.
    pub fn spend_key(&self) -> (PublicKey, u64) {
        (self.transfer.from, self.transfer.nonce)
    }
}

/// Why a transfer was not executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    #[error("the payer's signature does not verify")]
    BadSignature,
    #[error("the payer account does not exist")]
    UnknownPayer,
    #[error("the payee account does not exist")]
    UnknownPayee,
    #[error("insufficient funds: balance {balance}, amount {amount}")]
    InsufficientFunds { balance: u64, amount: u64 },
    #[error("nonce {got} was already used (last used {last})")]
    NonceReused { got: u64, last: u64 },
    #[error("nonce {got} skips ahead (expected {expected})")]
    NonceSkipped { got: u64, expected: u64 },
    #[error("the amount must be positive")]
    ZeroAmount,
    #[error("payer and payee are the same account")]
    SelfTransfer,
}

impl RejectReason {
    /// Whether the rejected transfer used up the payer's nonce (it carried the right one).
    pub fn consumes_nonce(&self) -> bool {
        !matches!(
            self,
            RejectReason::BadSignature
                | RejectReason::UnknownPayer
                | RejectReason::NonceReused { .. }
                | RejectReason::NonceSkipped { .. }
        )
    }
}

/// What executing one transfer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TxOutcome {
    Applied,
    Rejected(RejectReason),
}

impl TxOutcome {
    /// Whether executing the transfer used up the payer's nonce.
    pub fn consumes_nonce(&self) -> bool {
        match self {
            TxOutcome::Applied => true,
            TxOutcome::Rejected(reason) => reason.consumes_nonce(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    /// The nonce of the last executed transfer from this account (0 before the first).
    pub nonce: u64,
    /// That transfer, its outcome and the sequence number of the batch it executed in. It is part of the
    /// replicated state (as PBFT keeps each client's last reply) so that a replica that skipped its execution by
    /// state transfer can still answer the payer truthfully.
    pub last: Option<(Digest, TxOutcome, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("account {0:?} appears twice in the genesis")]
    Duplicate(PublicKey),
    #[error("the genesis supply overflows 64 bits")]
    Overflow,
    #[error("the genesis has no accounts")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot supply {got} differs from the genesis supply {expected}")]
    Supply { got: u128, expected: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ledger {
    accounts: BTreeMap<PublicKey, Account>,
    supply: u64,
    /// Transfers executed since genesis, by outcome: part of the replicated state, so a replica that caught up by
    /// state transfer or restarted reports the cluster's totals, not only what it executed itself.
    executed: Executed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    pub applied: u64,
    pub rejected: u64,
}

impl Ledger {
    pub fn from_genesis(balances: &[(PublicKey, u64)]) -> Result<Ledger, GenesisError> {
        if balances.is_empty() {
            return Err(GenesisError::Empty);
        }
        let mut accounts = BTreeMap::new();
        let mut supply: u64 = 0;
        for &(key, balance) in balances {
            supply = supply.checked_add(balance).ok_or(GenesisError::Overflow)?;
            if accounts
                .insert(
                    key,
                    Account {
                        balance,
                        nonce: 0,
                        last: None,
                    },
                )
                .is_some()
            {
                return Err(GenesisError::Duplicate(key));
            }
        }
        Ok(Ledger {
            accounts,
            supply,
            executed: Executed::default(),
        })
    }

    pub fn executed(&self) -> Executed {
        self.executed
    }

    pub fn account(&self, key: &PublicKey) -> Option<Account> {
        self.accounts.get(key).copied()
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&PublicKey, &Account)> {
        self.accounts.iter()
    }

    pub fn supply(&self) -> u64 {
        self.supply
    }

    /// The sum of all balances; equal to `supply()` at all times.
    pub fn total_balance(&self) -> u128 {
        self.accounts.values().map(|a| a.balance as u128).sum()
    }

    /// Checks a transfer against the current state without changing anything.
    pub fn check(&self, transfer: &Transfer) -> Result<(), RejectReason> {
        let payer = self.accounts.get(&transfer.from).ok_or(RejectReason::UnknownPayer)?;
        if transfer.nonce <= payer.nonce {
            return Err(RejectReason::NonceReused {
                got: transfer.nonce,
                last: payer.nonce,
            });
        }
        if transfer.nonce != payer.nonce + 1 {
            return Err(RejectReason::NonceSkipped {
                got: transfer.nonce,
                expected: payer.nonce + 1,
            });
        }
        if transfer.amount == 0 {
            return Err(RejectReason::ZeroAmount);
        }
        if transfer.from == transfer.to {
            return Err(RejectReason::SelfTransfer);
        }
        if !self.accounts.contains_key(&transfer.to) {
            return Err(RejectReason::UnknownPayee);
        }
        if payer.balance < transfer.amount {
            return Err(RejectReason::InsufficientFunds {
                balance: payer.balance,
                amount: transfer.amount,
            });
        }
        Ok(())
    }

    /// Executes an ordered transfer whose signature was verified before it was ordered. A transfer that
    /// carries the payer's next nonce consumes it even when it is rejected, so a rejection is final: the
    /// same signed transfer can never execute later.
    /// `seq` is the sequence number of the batch being executed, remembered with the payer's last transfer.
    pub fn apply(&mut self, tx: &SignedTransfer, seq: u64) -> TxOutcome {
        let outcome = self.execute(tx, seq);
        match outcome {
            TxOutcome::Applied => self.executed.applied += 1,
            TxOutcome::Rejected(_) => self.executed.rejected += 1,
        }
        outcome
    }

    fn execute(&mut self, tx: &SignedTransfer, seq: u64) -> TxOutcome {
        let transfer = &tx.transfer;
        let result = self.check(transfer);
        let outcome = match result {
            Ok(()) => TxOutcome::Applied,
            Err(reason) => TxOutcome::Rejected(reason),
        };
        if !outcome.consumes_nonce() {
            return outcome;
        }
        let payer = self.accounts.get_mut(&transfer.from).expect("checked above");
        payer.nonce = transfer.nonce;
        payer.last = Some((tx.digest(), outcome, seq));
        if result.is_err() {
            return outcome;
        }
        payer.balance -= transfer.amount;
        let payee = self.accounts.get_mut(&transfer.to).expect("checked above");
        // Cannot overflow: every balance is at most the supply, which fits in 64 bits.
        payee.balance += transfer.amount;
        TxOutcome::Applied
    }

    /// A digest of the whole state, the same on every replica that executed the same transfers.
    pub fn digest(&self) -> Digest {
        Ledger::snapshot_digest(&self.snapshot())
    }

    /// The state digest a snapshot certifies: what CHECKPOINTs sign and state transfers are checked against.
    /// For a state snapshot it is the digest of its `Manifest`, so that each chunk of a state transfer can be
    /// checked on arrival; other bytes (a bare ledger's) get a plain digest under another domain.
    pub fn snapshot_digest(snapshot: &[u8]) -> Digest {
        match Manifest::of(snapshot) {
            Some(manifest) => manifest.digest(),
            None => Digest::of("unstructured-state", &[snapshot]),
        }
    }

    /// The whole state as bytes, for checkpoints and state transfer.
    pub fn snapshot(&self) -> Vec<u8> {
        let entries: Vec<(&PublicKey, &Account)> = self.accounts.iter().collect();
        postcard::to_allocvec(&(self.supply, self.executed, entries)).expect("encoding to memory cannot fail")
    }

    pub fn from_snapshot(bytes: &[u8], expected_supply: u64) -> Result<Ledger, SnapshotError> {
        let (supply, executed, entries): (u64, Executed, Vec<(PublicKey, Account)>) =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let accounts: BTreeMap<PublicKey, Account> = entries.into_iter().collect();
        let ledger = Ledger {
            accounts,
            supply,
            executed,
        };
        let total = ledger.total_balance();
        if supply != expected_supply || total != expected_supply as u128 {
            return Err(SnapshotError::Supply {
                got: total,
                expected: expected_supply,
            });
        }
        Ok(ledger)
    }
}

/// The bytes of one chunk of a state snapshot's body (the last one may be shorter). A state transfer sends one
/// chunk per message, so that a message stays far below `messages::MAX_MESSAGE_BYTES` whatever the ledger's size.
pub const STATE_CHUNK_BYTES: usize = 1 << 20;

/// How a state snapshot is cut for its digest and for state transfer.
///
/// A state snapshot (`governance::state_snapshot`) is a body, the ledger's accounts, length-prefixed, followed by a
/// head, the governance (membership, epoch, quarantines): a few kilobytes however many accounts there are. The
/// state digest covers the head whole, the body's length, and the digest of every `STATE_CHUNK_BYTES` chunk of the
/// body. Every state-transfer message carries the manifest, so a replica checks it against the certified digest,
/// reads the membership from the head (across an epoch it verifies the certificate with it), and checks the one
/// chunk the message brings, all before keeping anything. The chunk digests travel as a flat list rather than as a
/// Merkle tree: 32 bytes per MiB of state (32 KiB for a GiB) is small enough to send whole with each chunk, and
/// then each chunk needs no proof of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub head: Vec<u8>,
    pub body_len: u64,
    pub chunks: Vec<Digest>,
}

impl Manifest {
    /// The manifest of a state snapshot; `None` for bytes that are not one (no length-prefixed body, or a
    /// prefix not in its shortest form, which would let two byte strings share a manifest).
    pub fn of(snapshot: &[u8]) -> Option<Manifest> {
        let (body, head): (&[u8], &[u8]) = postcard::take_from_bytes(snapshot).ok()?;
        if snapshot.len() != varint(body.len() as u64).len() + body.len() + head.len() {
            return None;
        }
        let mut chunks: Vec<Digest> = body.chunks(STATE_CHUNK_BYTES).map(Manifest::chunk_digest).collect();
        if chunks.is_empty() {
            chunks.push(Manifest::chunk_digest(&[]));
        }
        Some(Manifest {
            head: head.to_vec(),
            body_len: body.len() as u64,
            chunks,
        })
    }

    /// The state digest this manifest stands for.
    pub fn digest(&self) -> Digest {
        let chunks: Vec<[u8; 32]> = self.chunks.iter().map(|d| d.0).collect();
        Digest::of(
            "ledger-state",
            &[&self.head, &self.body_len.to_le_bytes(), chunks.as_flattened()],
        )
    }

    pub fn chunk_digest(chunk: &[u8]) -> Digest {
        Digest::of("state-chunk", &[chunk])
    }

    /// How many chunks a body of `body_len` bytes has: at least one (an empty body is one empty chunk).
    pub fn chunk_count(body_len: u64) -> usize {
        (body_len.div_ceil(STATE_CHUNK_BYTES as u64) as usize).max(1)
    }

    /// Whether the list of chunk digests has the length the body's length says.
    pub fn is_consistent(&self) -> bool {
        self.chunks.len() == Manifest::chunk_count(self.body_len)
    }

    /// Where chunk `index` lies in the body (`index` must be below the chunk count).
    pub fn chunk_range(&self, index: usize) -> std::ops::Range<usize> {
        let start = index * STATE_CHUNK_BYTES;
        start..(start + STATE_CHUNK_BYTES).min(self.body_len as usize)
    }

    /// Whether `chunk` is chunk `index` of the state this manifest stands for, and if not, why. The one check a state
    /// transfer's chunk must pass before it is kept; a chunk that fails it under its sender's signature is proof
    /// against the sender, since an honest member cuts its chunks and its manifest from one snapshot.
    pub fn check_chunk(&self, index: usize, chunk: &[u8]) -> Result<(), &'static str> {
        if !self.is_consistent() || index >= self.chunks.len() {
            return Err("no such chunk in the manifest");
        }
        if chunk.len() != self.chunk_range(index).len() || Manifest::chunk_digest(chunk) != self.chunks[index] {
            return Err("the chunk does not match its digest in the certified manifest");
        }
        Ok(())
    }

    /// Where the body starts in the snapshot: after its length prefix.
    pub fn body_offset(&self) -> usize {
        varint(self.body_len).len()
    }

    /// A snapshot of this manifest's size with the length prefix and head in place and the body zeroed, for the
    /// chunks to be written into.
    pub fn empty_snapshot(&self) -> Vec<u8> {
        let mut snapshot = varint(self.body_len);
        snapshot.resize(snapshot.len() + self.body_len as usize, 0);
        snapshot.extend_from_slice(&self.head);
        snapshot
    }
}

/// `n` as postcard encodes a length: LEB128, seven bits a byte, least significant first.
fn varint(mut n: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(10);
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(low);
            return bytes;
        }
        bytes.push(low | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_cuts_a_snapshot_into_chunks_and_puts_it_back_together() {
        for body_len in [
            0,
            1,
            STATE_CHUNK_BYTES - 1,
            STATE_CHUNK_BYTES,
            2 * STATE_CHUNK_BYTES + 5,
        ] {
            let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
            let snapshot = postcard::to_allocvec(&(body.clone(), (7u64, "head"))).unwrap();
            let manifest = Manifest::of(&snapshot).unwrap();
            assert!(manifest.is_consistent());
            assert_eq!(manifest.chunks.len(), body_len.div_ceil(STATE_CHUNK_BYTES).max(1));
            let mut rebuilt = manifest.empty_snapshot();
            let offset = manifest.body_offset();
            for (index, digest) in manifest.chunks.iter().enumerate() {
                let range = manifest.chunk_range(index);
                assert_eq!(Manifest::chunk_digest(&body[range.clone()]), *digest);
                rebuilt[offset + range.start..offset + range.end].copy_from_slice(&body[range]);
            }
            assert_eq!(rebuilt, snapshot, "body of {body_len} bytes");
            assert_eq!(Ledger::snapshot_digest(&rebuilt), manifest.digest());
        }
    }

    #[test]
    fn the_state_digest_covers_every_chunk_and_the_head() {
        let body = vec![1u8; 3 * STATE_CHUNK_BYTES];
        let snapshot = postcard::to_allocvec(&(body.clone(), 1u8)).unwrap();
        let digest = Ledger::snapshot_digest(&snapshot);
        let mut other_chunk = body.clone();
        other_chunk[2 * STATE_CHUNK_BYTES + 9] ^= 1;
        let other_head = postcard::to_allocvec(&(body, 2u8)).unwrap();
        for other in [postcard::to_allocvec(&(other_chunk, 1u8)).unwrap(), other_head] {
            assert_ne!(Ledger::snapshot_digest(&other), digest);
        }
        // A length prefix in a longer form than needed is not a state snapshot.
        let padded = [&[0x83, 0x80, 0x00][..], &[9, 9, 9]].concat();
        assert_eq!(Manifest::of(&padded), None);
        assert!(Manifest::of(&[3, 9, 9, 9, 4]).is_some());
    }

    fn keys(n: u8) -> Vec<KeyPair> {
        (1..=n).map(|i| KeyPair::from_secret([i; 32])).collect()
    }

    fn ledger(keys: &[KeyPair], balance: u64) -> Ledger {
        let genesis: Vec<(PublicKey, u64)> = keys.iter().map(|k| (k.public(), balance)).collect();
        Ledger::from_genesis(&genesis).unwrap()
    }

    fn transfer(from: &KeyPair, to: &KeyPair, amount: u64, nonce: u64) -> SignedTransfer {
        Transfer {
            from: from.public(),
            to: to.public(),
            amount,
            nonce,
        }
        .sign(from)
    }

    fn account(balance: u64, nonce: u64) -> Account {
        Account {
            balance,
            nonce,
            last: None,
        }
    }

    #[test]
    fn a_valid_transfer_moves_money_and_consumes_the_nonce() {
        let k = keys(2);
        let mut l = ledger(&k, 100);
        let t = transfer(&k[0], &k[1], 30, 1);
        assert_eq!(l.apply(&t, 1), TxOutcome::Applied);
        let payer = Account {
            balance: 70,
            nonce: 1,
            last: Some((t.digest(), TxOutcome::Applied, 1)),
        };
        assert_eq!(l.account(&k[0].public()), Some(payer));
        assert_eq!(l.account(&k[1].public()), Some(account(130, 0)));
        assert_eq!(l.total_balance(), 200);
    }

    #[test]
    fn transfers_with_a_wrong_nonce_or_payer_are_rejected_and_change_nothing() {
        let k = keys(3);
        let stranger = KeyPair::from_secret([99; 32]);
        let mut l = ledger(&k[..2], 100);
        let before = l.clone();
        let cases = [
            (
                transfer(&k[0], &k[1], 10, 0),
                RejectReason::NonceReused { got: 0, last: 0 },
            ),
            (
                transfer(&k[0], &k[1], 10, 2),
                RejectReason::NonceSkipped { got: 2, expected: 1 },
            ),
            (transfer(&stranger, &k[1], 10, 1), RejectReason::UnknownPayer),
        ];
        for (t, reason) in cases {
            assert_eq!(l.apply(&t, 1), TxOutcome::Rejected(reason), "{t:?}");
        }
        assert!(l.accounts().eq(before.accounts()), "no account changed");
        assert_eq!(
            l.executed(),
            Executed {
                applied: 0,
                rejected: 3
            }
        );
    }

    #[test]
    fn a_rejected_transfer_with_the_right_nonce_moves_no_money_but_uses_the_nonce() {
        let k = keys(2);
        let stranger = KeyPair::from_secret([99; 32]);
        let cases = [
            (
                transfer(&k[0], &k[1], 101, 1),
                RejectReason::InsufficientFunds {
                    balance: 100,
                    amount: 101,
                },
            ),
            (transfer(&k[0], &stranger, 10, 1), RejectReason::UnknownPayee),
            (transfer(&k[0], &k[1], 0, 1), RejectReason::ZeroAmount),
            (transfer(&k[0], &k[0], 5, 1), RejectReason::SelfTransfer),
        ];
        for (t, reason) in cases {
            let mut l = ledger(&k, 100);
            assert_eq!(l.apply(&t, 1), TxOutcome::Rejected(reason), "{t:?}");
            let payer = Account {
                balance: 100,
                nonce: 1,
                last: Some((t.digest(), TxOutcome::Rejected(reason), 1)),
            };
            assert_eq!(l.account(&k[0].public()), Some(payer));
            assert_eq!(l.account(&k[1].public()), Some(account(100, 0)));
            // Final: the same transfer can never execute later.
            assert_eq!(
                l.apply(&t, 1),
                TxOutcome::Rejected(RejectReason::NonceReused { got: 1, last: 1 })
            );
        }
    }

    #[test]
    fn a_replayed_transfer_is_rejected() {
        let k = keys(2);
        let mut l = ledger(&k, 100);
        let t = transfer(&k[0], &k[1], 10, 1);
        assert_eq!(l.apply(&t, 1), TxOutcome::Applied);
        assert_eq!(
            l.apply(&t, 1),
            TxOutcome::Rejected(RejectReason::NonceReused { got: 1, last: 1 })
        );
    }

    #[test]
    fn signatures_cover_every_field() {
        let k = keys(2);
        let signed = transfer(&k[0], &k[1], 10, 1);
        assert!(signed.verify());
        let mut tampered = signed;
        tampered.transfer.amount = 11;
        assert!(!tampered.verify());
        let forged = signed.transfer.sign(&k[1]);
        assert!(!forged.verify());
    }

    #[test]
    fn snapshot_round_trips_and_digest_tracks_state() {
        let k = keys(3);
        let mut l = ledger(&k, 50);
        let d0 = l.digest();
        l.apply(&transfer(&k[0], &k[2], 5, 1), 1);
        assert_ne!(l.digest(), d0);
        let restored = Ledger::from_snapshot(&l.snapshot(), 150).unwrap();
        assert_eq!(restored, l);
        assert_eq!(restored.digest(), l.digest());
        assert!(Ledger::from_snapshot(&l.snapshot(), 151).is_err());
        assert!(Ledger::from_snapshot(b"garbage", 150).is_err());
    }

    #[test]
    fn genesis_rejects_duplicates_and_overflow() {
        let k = keys(1);
        let p = k[0].public();
        assert_eq!(Ledger::from_genesis(&[(p, 1), (p, 2)]), Err(GenesisError::Duplicate(p)));
        let q = KeyPair::from_secret([5; 32]).public();
        assert_eq!(
            Ledger::from_genesis(&[(p, u64::MAX), (q, 1)]),
            Err(GenesisError::Overflow)
        );
        assert_eq!(Ledger::from_genesis(&[]), Err(GenesisError::Empty));
    }

    /// A plain model of the ledger's rules, for the property below: balances as u128 so nothing wraps, and the
    /// rules written the way the README states them, independently of `Ledger::check`.
    #[derive(Clone, Debug)]
    struct Model {
        /// (balance, last nonce) of each known account.
        accounts: Vec<(u128, u64)>,
    }

    impl Model {
        fn apply(&mut self, from: usize, to: usize, amount: u64, nonce: u64) -> TxOutcome {
            let known = self.accounts.len();
            let Some(&(balance, last)) = self.accounts.get(from) else {
                return TxOutcome::Rejected(RejectReason::UnknownPayer);
            };
            if nonce <= last {
                return TxOutcome::Rejected(RejectReason::NonceReused { got: nonce, last });
            }
            if nonce - last != 1 {
                return TxOutcome::Rejected(RejectReason::NonceSkipped {
                    got: nonce,
                    expected: last + 1,
                });
            }
            // From here on the nonce is used, whatever the outcome.
            self.accounts[from].1 = nonce;
            let reason = if amount == 0 {
                RejectReason::ZeroAmount
            } else if from == to {
                RejectReason::SelfTransfer
            } else if to >= known {
                RejectReason::UnknownPayee
            } else if u128::from(amount) > balance {
                RejectReason::InsufficientFunds {
                    balance: balance as u64,
                    amount,
                }
            } else {
                self.accounts[from].0 -= u128::from(amount);
                self.accounts[to].0 += u128::from(amount);
                return TxOutcome::Applied;
            };
            TxOutcome::Rejected(reason)
        }
    }

    /// An amount relative to the payer's balance when the transfer executes, or a fixed one: the edges are where a
    /// comparison written the wrong way round shows.
    #[derive(Clone, Copy, Debug)]
    enum Amount {
        Balance,
        BalancePlusOne,
        BalanceMinusOne,
        Max,
        Fixed(u64),
    }

    #[derive(Clone, Copy, Debug)]
    enum Nonce {
        Next,
        Last,
        Skip(u64),
        Zero,
        Max,
    }

    fn amounts() -> impl proptest::strategy::Strategy<Value = Amount> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Amount::Balance),
            Just(Amount::BalancePlusOne),
            Just(Amount::BalanceMinusOne),
            Just(Amount::Max),
            (0u64..50).prop_map(Amount::Fixed),
        ]
    }

    fn nonces() -> impl proptest::strategy::Strategy<Value = Nonce> {
        use proptest::prelude::*;
        prop_oneof![
            6 => Just(Nonce::Next),
            1 => Just(Nonce::Last),
            1 => (2u64..4).prop_map(Nonce::Skip),
            1 => Just(Nonce::Zero),
            1 => Just(Nonce::Max),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Any sequence of transfers (three accounts and one the genesis lacks, amounts at and around the payer's
        /// balance and the largest, nonces reused, skipped or next) gets the model's outcome, every balance and
        /// nonce stays the model's, money is conserved, and the snapshot gives back the same ledger.
        #[test]
        fn the_ledger_executes_like_a_plain_model(
            balances in proptest::collection::vec(proptest::prop_oneof![0u64..100, (u64::MAX / 4)..=(u64::MAX / 3)], 3),
            ops in proptest::collection::vec((0usize..4, 0usize..4, amounts(), nonces()), 1..40),
        ) {
            let keys = keys(4);
            let genesis: Vec<(PublicKey, u64)> = keys[..3].iter().zip(&balances).map(|(k, b)| (k.public(), *b)).collect();
            let mut ledger = Ledger::from_genesis(&genesis).unwrap();
            let mut model = Model { accounts: balances.iter().map(|b| (u128::from(*b), 0)).collect() };
            for (seq, (from, to, amount, nonce)) in ops.into_iter().enumerate() {
                let (balance, last) = model.accounts.get(from).copied().unwrap_or((0, 0));
                let amount = match amount {
                    Amount::Balance => balance as u64,
                    Amount::BalancePlusOne => (balance as u64).saturating_add(1),
                    Amount::BalanceMinusOne => (balance as u64).saturating_sub(1),
                    Amount::Max => u64::MAX,
                    Amount::Fixed(amount) => amount,
                };
                let nonce = match nonce {
                    Nonce::Next => last + 1,
                    Nonce::Last => last,
                    Nonce::Skip(by) => last + by,
                    Nonce::Zero => 0,
                    Nonce::Max => u64::MAX,
                };
                let tx = transfer(&keys[from], &keys[to], amount, nonce);
                let expected = model.apply(from, to, amount, nonce);
                proptest::prop_assert_eq!(ledger.apply(&tx, seq as u64), expected, "{:?}", tx.transfer);
                for (i, &(balance, nonce)) in model.accounts.iter().enumerate() {
                    let account = ledger.account(&keys[i].public()).unwrap();
                    proptest::prop_assert_eq!((u128::from(account.balance), account.nonce), (balance, nonce));
                }
                proptest::prop_assert_eq!(ledger.total_balance(), u128::from(ledger.supply()));
                proptest::prop_assert!(ledger.account(&keys[3].public()).is_none());
            }
            proptest::prop_assert_eq!(Ledger::from_snapshot(&ledger.snapshot(), ledger.supply()).unwrap(), ledger);
        }
    }
}
