//! Registry entries rejected now: each key is logged once per change of
//! its rejection (new key, other kind or reason), and once when it is no
//! longer rejected, instead of on every snapshot.

use std::collections::BTreeMap;

use flowpin_registry::Rejection;

/// Key → (kind, reason) of the entries the last snapshot rejected.
pub(super) type RejectedNow = BTreeMap<String, (&'static str, String)>;

/// The rejections of a snapshot, by key.
pub(super) fn of(rejected: &[Rejection]) -> RejectedNow {
    rejected
        .iter()
        .map(|r| (r.key.clone(), (r.kind.as_str(), r.reason.clone())))
        .collect()
}

/// (keys whose rejection is new or changed, keys no longer rejected).
pub(super) fn changes<'a>(
    old: &'a RejectedNow,
    new: &'a RejectedNow,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    let cleared = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(String::as_str)
        .collect();
    (changed, cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(entries: &[(&str, &'static str, &str)]) -> RejectedNow {
        entries
            .iter()
            .map(|(k, kind, r)| (k.to_string(), (*kind, r.to_string())))
            .collect()
    }

    #[test]
    fn a_key_is_reported_once_per_change() {
        let a = now(&[("/p/b/x", "bad_weight", "weight 70000")]);
        assert_eq!(changes(&RejectedNow::new(), &a), (vec!["/p/b/x"], vec![]));
        // The same rejection in the next snapshot: nothing to say.
        assert_eq!(changes(&a, &a.clone()), (vec![], vec![]));
        let b = now(&[("/p/b/x", "bad_weight", "weight 80000")]);
        assert_eq!(changes(&a, &b), (vec!["/p/b/x"], vec![]));
        assert_eq!(changes(&b, &RejectedNow::new()), (vec![], vec!["/p/b/x"]));
    }
}
