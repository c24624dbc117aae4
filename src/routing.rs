//! Which side a request goes to. Pure: the route table (`table`), the sticky split
//! (`split`), and `decide`, which takes a route's parameters, the request head and the
//! effective weight **as values** and returns the side and why. The effective weight
//! lives in a small cell of its own (`EffectiveWeight`): the judgement writes it, the
//! data path reads it, neither imports the other.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use http::header::{HeaderMap, HeaderName};

use crate::config::{RouteConfig, StickySource, Weight};

pub mod meters;
pub mod split;
pub mod table;

pub use split::Side;

/// A route's split parameters, precomputed from its config.
#[derive(Debug, Clone)]
pub struct Params {
    salt: Box<[u8]>,
    sticky: Box<[StickySource]>,
    override_header: Option<HeaderName>,
    cohort: HashSet<Box<[u8]>>,
}

/// A request's side and why (see [`decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Where the request goes.
    pub side: Side,
    /// Why: rollback, override header, cohort or the hash.
    pub reason: Reason,
    /// The sticky bucket, 0..10 000, when the hash decided (`Reason::Hash`).
    pub bucket: Option<u16>,
}

/// Why a request went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Hash,
    Override,
    Cohort,
    RolledBack,
}

/// The canary's effective weight as the split reads it: the rollback latch and the
/// weight in basis points. Written by the judgement (`rollout`), read on every
/// request; two atomics, no lock.
#[derive(Debug, Default)]
pub struct EffectiveWeight {
    /// When set, every request goes to stable, whatever the weight.
    latched: AtomicBool,
    /// The rollout's weight, 0..=10 000.
    basis_points: AtomicU16,
}

/// Stable or canary for one request. Precedence: the rollback latch beats everything;
/// then the override header (`always`/`never`, any case), then the cohort, then the
/// sticky hash against `weight`.
pub fn decide(
    params: &Params,
    headers: &HeaderMap,
    peer: IpAddr,
    weight: Weight,
    latched: bool,
) -> Decision {
    let decided = |side, reason| Decision {
        side,
        reason,
        bucket: None,
    };
    if latched {
        return decided(Side::Stable, Reason::RolledBack);
    }
    if let Some(name) = &params.override_header {
        if let Some(value) = headers.get(name) {
            let value = value.as_bytes();
            if value.eq_ignore_ascii_case(b"always") {
                return decided(Side::Canary, Reason::Override);
            }
            if value.eq_ignore_ascii_case(b"never") {
                return decided(Side::Stable, Reason::Override);
            }
        }
    }
    split::with_sticky_key(&params.sticky, headers, peer, |key| {
        if !params.cohort.is_empty() && params.cohort.contains(key) {
            return decided(Side::Canary, Reason::Cohort);
        }
        let bucket = split::bucket(&params.salt, key);
        Decision {
            side: split::side_of_bucket(bucket, weight),
            reason: Reason::Hash,
            bucket: Some(bucket),
        }
    })
}

// === impl Params ===

impl Params {
    pub fn new(config: &RouteConfig) -> Params {
        Params {
            salt: config.salt.as_bytes().into(),
            sticky: config.sticky.clone().into_boxed_slice(),
            override_header: config.override_header.clone(),
            cohort: config
                .cohort
                .iter()
                .map(|k| Box::from(k.as_bytes()))
                .collect(),
        }
    }
}

// === impl EffectiveWeight ===

impl EffectiveWeight {
    /// `(weight, latched)` now; the weight as last set, whatever the latch.
    pub fn get(&self) -> (Weight, bool) {
        let latched = self.latched.load(Ordering::Acquire);
        let weight = Weight::from_basis_points(self.basis_points.load(Ordering::Relaxed))
            .unwrap_or(Weight::ZERO);
        (weight, latched)
    }

    /// The weight the split uses now: 0 while latched.
    pub fn effective(&self) -> Weight {
        match self.get() {
            (_, true) => Weight::ZERO,
            (weight, false) => weight,
        }
    }

    pub fn is_latched(&self) -> bool {
        self.latched.load(Ordering::Acquire)
    }

    /// Closes the latch; true for the caller that closed it (the first).
    pub fn latch(&self) -> bool {
        self.latched
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Opens the latch (a resumed or promoted canary).
    pub fn open(&self) {
        self.latched.store(false, Ordering::Release);
    }

    pub fn set(&self, weight: Weight) {
        self.basis_points
            .store(weight.basis_points(), Ordering::Relaxed);
    }
}

// === impl Reason ===

impl Reason {
    /// `hash`, `override`, `cohort` or `rolled_back`, as in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Hash => "hash",
            Reason::Override => "override",
            Reason::Cohort => "cohort",
            Reason::RolledBack => "rolled_back",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::HeaderValue;

    use super::*;

    /// `decide`'s precedence, as a table: rollback > override > cohort > hash.
    #[test]
    fn decide_precedence_rollback_override_cohort_hash() {
        let toml = r#"
[[route]]
name = "r"
stable = { endpoints = ["127.0.0.1:1"] }
canary = { endpoints = ["127.0.0.1:2"] }
canary_weight = 0
sticky = ["header:x-user"]
override_header = "x-canary"
cohort = ["qa-1"]
"#;
        let config = crate::config::parse_str(toml, Path::new("t.toml")).unwrap();
        let params = Params::new(&config.routes[0]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let headers = |user: Option<&str>, force: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(user) = user {
                headers.insert("x-user", HeaderValue::from_str(user).unwrap());
            }
            if let Some(force) = force {
                headers.insert("x-canary", HeaderValue::from_str(force).unwrap());
            }
            headers
        };
        // (user, override, latched) → (side, reason); weight 0, so the hash always
        // says stable.
        let cases = [
            (Some("u1"), None, false, Side::Stable, Reason::Hash),
            (Some("qa-1"), None, false, Side::Canary, Reason::Cohort),
            (
                Some("u1"),
                Some("always"),
                false,
                Side::Canary,
                Reason::Override,
            ),
            (
                Some("qa-1"),
                Some("never"),
                false,
                Side::Stable,
                Reason::Override,
            ),
            (
                Some("qa-1"),
                Some("ALWAYS"),
                false,
                Side::Canary,
                Reason::Override,
            ),
            (
                Some("qa-1"),
                Some("maybe"),
                false,
                Side::Canary,
                Reason::Cohort,
            ),
            (None, Some("always"), false, Side::Canary, Reason::Override),
            (
                Some("u1"),
                Some("always"),
                true,
                Side::Stable,
                Reason::RolledBack,
            ),
            (Some("qa-1"), None, true, Side::Stable, Reason::RolledBack),
            (Some("u1"), None, true, Side::Stable, Reason::RolledBack),
        ];
        for (user, force, latched, side, reason) in cases {
            let decision = decide(&params, &headers(user, force), peer, Weight::ZERO, latched);
            assert_eq!(
                (decision.side, decision.reason),
                (side, reason),
                "user {user:?}, override {force:?}, latched {latched}"
            );
            assert_eq!(decision.bucket.is_some(), reason == Reason::Hash);
        }
        // The weight is a value: at 100 % the hash says canary, latched or not aside.
        let decision = decide(
            &params,
            &headers(Some("u1"), None),
            peer,
            Weight::FULL,
            false,
        );
        assert_eq!(
            (decision.side, decision.reason),
            (Side::Canary, Reason::Hash)
        );
    }

    #[test]
    fn the_cell_reads_zero_while_latched_and_keeps_the_weight() {
        let cell = EffectiveWeight::default();
        cell.set(Weight::FULL);
        assert_eq!(cell.effective(), Weight::FULL);
        assert!(cell.latch(), "the first latch wins");
        assert!(!cell.latch());
        assert_eq!(cell.effective(), Weight::ZERO);
        assert_eq!(cell.get(), (Weight::FULL, true));
        cell.open();
        assert_eq!(cell.effective(), Weight::FULL);
    }
}
