//! Fault drills are administrative acts: a forced view change or an injected fault must be signed with the
//! administrator key that signs reconfigurations (the genesis' `admin_key`), and a replica carries one out only
//! once, only for itself, and only within a minute of its signing.
//!
//! The administrator signs an `Order`: a domain tag, the target replica, the action (for a view change the view
//! to leave, for a fault the fault and its probability, or clearing it), the time and a random nonce. The
//! request carries the action in its own fields and the rest in a `DrillAuthorization`; the replica rebuilds
//! the order from what it is asked to do, so the signature covers exactly that. A replica refuses an order
//! whose time is more than `WINDOW_MS` from its clock, or whose nonce it saw within that window (it remembers
//! nonces only as long as they would pass the time check, and at most `MAX_REMEMBERED` of them).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::proto::DrillAuthorization;
use bft_core::crypto::{Digest, KeyPair, PublicKey, Signature};
use bft_core::faults::FaultDrill;
use bft_core::messages::{ReplicaId, View};

const DOMAIN: &str = "pbft/drill";

/// How far an order's time may be from the replica's clock, either way.
pub const WINDOW_MS: u64 = 60_000;

/// How many orders a replica remembers (those within the window); beyond it, orders are refused until older
/// ones leave the window. Only the administrator's own orders count towards it.
pub const MAX_REMEMBERED: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Leave `leave_view` for the next view. A replica already past it (changing to a later view, or in one)
    /// does nothing: a drill moves the cluster one view, however many of its replicas are asked.
    ForceViewChange { leave_view: View },
    /// Start misbehaving as `drill` says, or with `None` stop.
    InjectFault(Option<FaultDrill>),
}

/// What the administrator signs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub target: ReplicaId,
    pub action: Action,
    pub unix_ms: u64,
    pub nonce: u64,
}

impl Order {
    /// An order for `target`, now, with a fresh nonce.
    pub fn new(target: ReplicaId, action: Action) -> Order {
        Order {
            target,
            action,
            unix_ms: crate::unix_ms(),
            nonce: rand::random(),
        }
    }

    fn signing_bytes(&self) -> [u8; 32] {
        let content = postcard::to_allocvec(self).expect("encoding to memory cannot fail");
        Digest::of(DOMAIN, &[&content]).0
    }

    /// The authorization a request for this order carries.
    pub fn sign(&self, admin: &KeyPair) -> DrillAuthorization {
        DrillAuthorization {
            target: self.target,
            unix_ms: self.unix_ms,
            nonce: self.nonce,
            signature: admin.sign(&self.signing_bytes()).to_bytes().to_vec(),
        }
    }
}

/// Why a drill is refused (a gRPC PERMISSION_DENIED).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("fault drills are not allowed on this replica (start it with allow_fault_injection)")]
    NotAllowed,
    #[error("fault drills need the administrator key, and this cluster has none (admin_key)")]
    NoAdminKey,
    #[error("a fault drill must be signed with the administrator key (bftctl --admin-key)")]
    Unsigned,
    #[error("the fault drill is not signed by the administrator key")]
    BadSignature,
    #[error("the fault drill is addressed to replica {0}, not this one")]
    OtherTarget(ReplicaId),
    #[error("the fault drill was signed {0} ms from this replica's clock (at most 60 s either way)")]
    Stale(u64),
    #[error("the fault drill was used before")]
    Replayed,
    #[error("too many fault drills in the last minute")]
    TooMany,
}

/// A replica's check of the drills it is asked for.
pub struct Guard {
    id: ReplicaId,
    allowed: bool,
    admin: Option<PublicKey>,
    /// The nonces and times of the orders admitted within the window.
    seen: Mutex<VecDeque<(u64, u64)>>,
}

impl Guard {
    pub fn new(id: ReplicaId, allowed: bool, admin: Option<PublicKey>) -> Guard {
        Guard {
            id,
            allowed,
            admin,
            seen: Mutex::new(VecDeque::new()),
        }
    }

    /// What can be told before the request's content is read: whether drills are allowed here at all, and
    /// whether the request carries an authorization to check.
    pub fn precheck<'a>(
        &self,
        authorization: Option<&'a DrillAuthorization>,
    ) -> Result<(PublicKey, &'a DrillAuthorization), Refusal> {
        if !self.allowed {
            return Err(Refusal::NotAllowed);
        }
        let admin = self.admin.ok_or(Refusal::NoAdminKey)?;
        let authorization = authorization.ok_or(Refusal::Unsigned)?;
        Ok((admin, authorization))
    }

    /// Admits a request for `action` with its `authorization` at `now_ms`, or says why not. An admitted order
    /// is remembered, so the same request is refused the second time.
    pub fn admit(
        &self,
        action: Action,
        authorization: Option<&DrillAuthorization>,
        now_ms: u64,
    ) -> Result<Order, Refusal> {
        let (admin, authorization) = self.precheck(authorization)?;
        let signature: [u8; 64] = authorization
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Refusal::BadSignature)?;
        let order = Order {
            target: authorization.target,
            action,
            unix_ms: authorization.unix_ms,
            nonce: authorization.nonce,
        };
        if !admin.verify(&order.signing_bytes(), &Signature::from_bytes(signature)) {
            return Err(Refusal::BadSignature);
        }
        if order.target != self.id {
            return Err(Refusal::OtherTarget(order.target));
        }
        let skew = order.unix_ms.abs_diff(now_ms);
        if skew > WINDOW_MS {
            return Err(Refusal::Stale(skew));
        }
        let mut seen = self.seen.lock().expect("no panic while holding the lock");
        // An order past the window would be refused as stale anyway: it need not be remembered.
        seen.retain(|(_, at)| at.saturating_add(WINDOW_MS) >= now_ms);
        if seen.iter().any(|(nonce, _)| *nonce == order.nonce) {
            return Err(Refusal::Replayed);
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(Refusal::TooMany);
        }
        seen.push_back((order.nonce, order.unix_ms));
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_core::faults::Fault;

    const NOW: u64 = 1_800_000_000_000;

    fn admin() -> KeyPair {
        KeyPair::from_secret([7; 32])
    }

    fn guard() -> Guard {
        Guard::new(3, true, Some(admin().public()))
    }

    fn order(action: Action) -> Order {
        Order {
            target: 3,
            action,
            unix_ms: NOW,
            nonce: 42,
        }
    }

    const LEAVE_0: Action = Action::ForceViewChange { leave_view: 0 };

    #[test]
    fn an_order_signed_by_the_administrator_is_admitted_once() {
        let g = guard();
        let auth = order(LEAVE_0).sign(&admin());
        assert_eq!(g.admit(LEAVE_0, Some(&auth), NOW + 5), Ok(order(LEAVE_0)));
        assert_eq!(g.admit(LEAVE_0, Some(&auth), NOW + 6), Err(Refusal::Replayed));
        // Another nonce is another order.
        let mut again = order(LEAVE_0);
        again.nonce = 43;
        assert!(g.admit(LEAVE_0, Some(&again.sign(&admin())), NOW + 7).is_ok());
    }

    #[test]
    fn unsigned_foreign_and_mismatched_orders_are_refused() {
        let g = guard();
        assert_eq!(g.admit(LEAVE_0, None, NOW), Err(Refusal::Unsigned));
        let stranger = KeyPair::from_secret([8; 32]);
        let forged = order(LEAVE_0).sign(&stranger);
        assert_eq!(g.admit(LEAVE_0, Some(&forged), NOW), Err(Refusal::BadSignature));
        let mut short = order(LEAVE_0).sign(&admin());
        short.signature.truncate(10);
        assert_eq!(g.admit(LEAVE_0, Some(&short), NOW), Err(Refusal::BadSignature));
        // The signature covers the action: the same authorization for another view or another fault fails.
        let auth = order(LEAVE_0).sign(&admin());
        let leave_1 = Action::ForceViewChange { leave_view: 1 };
        assert_eq!(g.admit(leave_1, Some(&auth), NOW), Err(Refusal::BadSignature));
        let fault = |p| Action::InjectFault(Some(FaultDrill::new(Fault::Censorship, p).unwrap()));
        let auth = order(fault(0.5)).sign(&admin());
        assert_eq!(g.admit(fault(1.0), Some(&auth), NOW), Err(Refusal::BadSignature));
        assert_eq!(
            g.admit(Action::InjectFault(None), Some(&auth), NOW),
            Err(Refusal::BadSignature)
        );
        // ... and the target: an order for replica 3 does nothing at replica 4, nor one for 4 at 3.
        let other = Guard::new(4, true, Some(admin().public()));
        assert_eq!(other.admit(fault(0.5), Some(&auth), NOW), Err(Refusal::OtherTarget(3)));
        let mut for_4 = order(LEAVE_0);
        for_4.target = 4;
        assert_eq!(
            g.admit(LEAVE_0, Some(&for_4.sign(&admin())), NOW),
            Err(Refusal::OtherTarget(4))
        );
        // Nothing refused was remembered: the genuine order still passes.
        assert!(g.admit(fault(0.5), Some(&auth), NOW).is_ok());
    }

    #[test]
    fn drills_need_permission_and_an_administrator_key() {
        let auth = order(LEAVE_0).sign(&admin());
        let not_allowed = Guard::new(3, false, Some(admin().public()));
        assert_eq!(not_allowed.admit(LEAVE_0, Some(&auth), NOW), Err(Refusal::NotAllowed));
        let no_admin = Guard::new(3, true, None);
        assert_eq!(no_admin.admit(LEAVE_0, Some(&auth), NOW), Err(Refusal::NoAdminKey));
    }

    #[test]
    fn orders_outside_the_window_are_refused_and_nonces_are_kept_only_within_it() {
        let g = guard();
        let auth = order(LEAVE_0).sign(&admin());
        assert_eq!(
            g.admit(LEAVE_0, Some(&auth), NOW + WINDOW_MS + 1),
            Err(Refusal::Stale(WINDOW_MS + 1))
        );
        assert_eq!(
            g.admit(LEAVE_0, Some(&auth), NOW - WINDOW_MS - 1),
            Err(Refusal::Stale(WINDOW_MS + 1))
        );
        // At the window's edges, either way, it passes once.
        assert!(g.admit(LEAVE_0, Some(&auth), NOW - WINDOW_MS).is_ok());
        assert_eq!(g.admit(LEAVE_0, Some(&auth), NOW + WINDOW_MS), Err(Refusal::Replayed));
        // Once it is past the window its nonce is forgotten, and the order is refused as stale instead.
        let mut later = order(LEAVE_0);
        later.nonce = 1;
        later.unix_ms = NOW + WINDOW_MS + 1;
        assert!(
            g.admit(LEAVE_0, Some(&later.sign(&admin())), NOW + WINDOW_MS + 1)
                .is_ok()
        );
        assert_eq!(g.seen.lock().unwrap().len(), 1);
        assert_eq!(
            g.admit(LEAVE_0, Some(&auth), NOW + WINDOW_MS + 1),
            Err(Refusal::Stale(WINDOW_MS + 1))
        );
    }

    #[test]
    fn memory_is_bounded_by_a_cap_and_the_window() {
        let g = guard();
        for nonce in 0..MAX_REMEMBERED as u64 {
            let mut o = order(LEAVE_0);
            o.nonce = nonce;
            assert!(g.admit(LEAVE_0, Some(&o.sign(&admin())), NOW).is_ok());
        }
        let mut one_more = order(LEAVE_0);
        one_more.nonce = u64::MAX;
        let auth = one_more.sign(&admin());
        assert_eq!(g.admit(LEAVE_0, Some(&auth), NOW), Err(Refusal::TooMany));
        assert_eq!(g.seen.lock().unwrap().len(), MAX_REMEMBERED);
        // A minute later the old ones have left the window and are forgotten.
        let mut fresh = one_more;
        fresh.unix_ms = NOW + WINDOW_MS + 1;
        assert!(
            g.admit(LEAVE_0, Some(&fresh.sign(&admin())), NOW + WINDOW_MS + 1)
                .is_ok()
        );
        assert_eq!(g.seen.lock().unwrap().len(), 1);
    }
}
