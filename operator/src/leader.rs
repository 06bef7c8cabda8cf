//! Leader election over a coordination.k8s.io Lease, so that two operator pods never act at once: only the
//! holder runs the controller. The holder renews every third of the lease; a holder that cannot renew before
//! two thirds of it have passed stops acting (the process exits and is restarted as a standby), well before
//! another pod may take the lease over when it expires.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// What a candidate does with the lease as it finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It holds the lease: renew it.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds it.
    Wait,
}

/// Pure: the decision for `me` given the lease's spec at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else { return Decision::Acquire };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + duration < now);
            if expired { Decision::Acquire } else { Decision::Wait }
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Elector {
        Elector {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    /// One attempt; whether this candidate holds the lease afterwards. Conflicts (someone else wrote first)
    /// are a "no", never an error.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let decision = decide(existing.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let previous = existing.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            renew_time: Some(MicroTime(now)),
            acquire_time: if decision == Decision::Renew {
                previous.acquire_time
            } else {
                Some(MicroTime(now))
            },
            lease_transitions: Some(previous.lease_transitions.unwrap_or(0) + i32::from(decision == Decision::Acquire)),
            ..LeaseSpec::default()
        };
        let result = match existing {
            // Optimistic concurrency: the replace carries the resourceVersion read, so two candidates cannot
            // both win.
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_held_by_another_is_waited_for_until_it_expires() {
        let t0: Timestamp = "2026-11-24T20:00:00Z".parse().unwrap();
        let lease = held("pod-a", t0);
        assert_eq!(
            decide(Some(&lease), "pod-b", t0 + SignedDuration::from_secs(10)),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&lease), "pod-b", t0 + SignedDuration::from_secs(16)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&lease), "pod-a", t0 + SignedDuration::from_secs(10)),
            Decision::Renew
        );
        assert_eq!(decide(None, "pod-b", t0), Decision::Acquire);
        assert_eq!(decide(Some(&LeaseSpec::default()), "pod-b", t0), Decision::Acquire);
    }
}
