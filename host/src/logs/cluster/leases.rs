//! Cluster-wide viewer counting: one key-value entry per slug, changed only
//! by compare-and-set.
//!
//! The entry holds every host's claim: `{"node-a":{"viewers":3,"expiresMs":…}}`.
//! A host writes its own claim (its local viewer count) and keeps it alive by
//! rewriting it before it expires; a crashed host's claim simply runs out.
//! Admitting a viewer is a write that first checks that the claims of the
//! other hosts plus this host's new count stay within the limit. Because
//! every write is a compare-and-set on the revision it read, two hosts
//! admitting at once cannot both take the last slot: one of them re-reads.
//!
//! Expiry compares the writer's clock with the reader's: hosts are expected
//! to keep their clocks in step (NTP); a skew of S seconds lengthens or
//! shortens a lease by S.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One host's claim on a slug's viewer slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Claim {
    pub(crate) viewers: usize,
    /// Wall-clock milliseconds after which the claim no longer counts.
    pub(crate) expires_ms: u64,
}

/// Every host's claim on one slug, keyed by node name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Claims(BTreeMap<String, Claim>);

impl Claims {
    /// Reads a stored value. Anything unreadable counts as no claims: a
    /// damaged entry must not lock a slug's viewers out for good; it is
    /// rewritten whole by the next claim.
    pub(crate) fn parse(value: &[u8]) -> Claims {
        serde_json::from_slice(value).unwrap_or_default()
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("claims serialize")
    }

    /// Forgets claims that ran out by `now_ms`.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        self.0.retain(|_, claim| claim.expires_ms > now_ms);
    }

    /// Viewers claimed by hosts other than `node` and still alive at `now_ms`.
    pub(crate) fn others(&self, node: &str, now_ms: u64) -> usize {
        self.0
            .iter()
            .filter(|(name, claim)| *name != node && claim.expires_ms > now_ms)
            .map(|(_, claim)| claim.viewers)
            .sum()
    }

    /// The latest expiry among live claims of hosts other than `node` that
    /// have viewers: until then, `node` has someone to send entries to.
    pub(crate) fn interest_until(&self, node: &str, now_ms: u64) -> Option<u64> {
        self.0
            .iter()
            .filter(|(name, claim)| *name != node && claim.viewers > 0 && claim.expires_ms > now_ms)
            .map(|(_, claim)| claim.expires_ms)
            .max()
    }

    /// Sets `node`'s claim; a count of 0 removes it.
    pub(crate) fn set(&mut self, node: &str, viewers: usize, expires_ms: u64) {
        if viewers == 0 {
            self.0.remove(node);
        } else {
            self.0.insert(
                node.to_string(),
                Claim {
                    viewers,
                    expires_ms,
                },
            );
        }
    }

    pub(crate) fn get(&self, node: &str) -> Option<Claim> {
        self.0.get(node).copied()
    }
}

/// What a claim write decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClaimOutcome {
    /// Written: this host now holds `viewers` slots.
    Held { viewers: usize },
    /// Refused: the other hosts hold `others` of the `max` slots.
    Full { others: usize, max: usize },
}

/// Decides a claim of `viewers` slots by `node` against what is stored:
/// the claims to write back, or the refusal. `limit` is `None` for renewals
/// and releases, which never refuse (they only restate what is already
/// admitted, or give slots back).
pub(crate) fn decide(
    mut claims: Claims,
    node: &str,
    viewers: usize,
    limit: Option<usize>,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Claims, ClaimOutcome> {
    claims.prune(now_ms);
    if let Some(max) = limit {
        let others = claims.others(node, now_ms);
        if others + viewers > max {
            return Err(ClaimOutcome::Full { others, max });
        }
    }
    claims.set(node, viewers, now_ms + lease_ms);
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: u64 = 15_000;

    #[test]
    fn the_limit_counts_every_host_and_refuses_the_eleventh_viewer() {
        let claims = decide(Claims::default(), "a", 6, Some(10), 1_000, LEASE).unwrap();
        let claims = decide(claims, "b", 4, Some(10), 1_000, LEASE).unwrap();
        assert_eq!(claims.others("c", 1_000), 10);
        assert_eq!(
            decide(claims.clone(), "b", 5, Some(10), 1_000, LEASE),
            Err(ClaimOutcome::Full { others: 6, max: 10 })
        );
        // Releases and renewals never refuse.
        let claims = decide(claims, "b", 0, None, 2_000, LEASE).unwrap();
        assert_eq!(claims.get("b"), None);
        assert_eq!(claims.others("b", 2_000), 6);
    }

    #[test]
    fn a_crashed_hosts_claim_runs_out_with_its_lease() {
        let claims = decide(Claims::default(), "crashed", 10, Some(10), 0, LEASE).unwrap();
        assert!(decide(claims.clone(), "b", 1, Some(10), LEASE - 1, LEASE).is_err());
        let claims = decide(claims, "b", 1, Some(10), LEASE, LEASE).unwrap();
        assert_eq!(claims.get("crashed"), None, "pruned when rewritten");
        assert_eq!(claims.get("b").unwrap().expires_ms, 2 * LEASE);
    }

    #[test]
    fn interest_is_other_hosts_with_live_viewers() {
        let mut claims = Claims::default();
        claims.set("a", 1, 5_000);
        claims.set("b", 2, 9_000);
        assert_eq!(claims.interest_until("a", 1_000), Some(9_000));
        assert_eq!(claims.interest_until("b", 1_000), Some(5_000));
        assert_eq!(claims.interest_until("b", 6_000), None);
    }

    #[test]
    fn stored_values_round_trip_and_garbage_counts_as_empty() {
        let mut claims = Claims::default();
        claims.set("node-1", 3, 42);
        let bytes = claims.to_bytes();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"node-1":{"viewers":3,"expiresMs":42}}"#
        );
        assert_eq!(Claims::parse(&bytes), claims);
        assert_eq!(Claims::parse(b"not json"), Claims::default());
    }
}
