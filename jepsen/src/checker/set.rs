//! The set workload's checker: unique elements added by many clients, one read of the whole
//! set after healing. Every acknowledged add must be there, with the value it was added with;
//! nothing that no client tried to add may be there. Adds with an unknown outcome may be
//! either.

use std::collections::BTreeSet;

/// What the clients did and what the final read returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetHistory {
    pub acknowledged: BTreeSet<i64>,
    /// Attempts whose outcome is unknown (timeouts).
    pub unknown: BTreeSet<i64>,
    /// Attempts that certainly failed.
    pub failed: BTreeSet<i64>,
    pub final_read: BTreeSet<i64>,
    /// Elements the final read returned with a value other than the one added.
    pub damaged: BTreeSet<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetReport {
    /// Acknowledged, but missing from the final read.
    pub lost: Vec<i64>,
    /// In the final read, but never attempted.
    pub unexpected: Vec<i64>,
    /// In the final read although the add was reported failed: a failure that was not one.
    pub failed_but_present: Vec<i64>,
    /// Present, but with another value than the one added.
    pub damaged: Vec<i64>,
    /// Unknown adds that made it (fine, for the record).
    pub recovered: usize,
}

impl SetReport {
    /// Lost and unexpected elements break the promise; an add reported failed that took
    /// effect breaks the client contract (a definite failure must not have happened).
    pub fn valid(&self) -> bool {
        self.lost.is_empty()
            && self.damaged.is_empty()
            && self.unexpected.is_empty()
            && self.failed_but_present.is_empty()
    }
}

pub fn check(h: &SetHistory) -> SetReport {
    let attempted: BTreeSet<i64> = h
        .acknowledged
        .iter()
        .chain(&h.unknown)
        .chain(&h.failed)
        .copied()
        .collect();
    SetReport {
        lost: h.acknowledged.difference(&h.final_read).copied().collect(),
        unexpected: h.final_read.difference(&attempted).copied().collect(),
        failed_but_present: h.failed.intersection(&h.final_read).copied().collect(),
        damaged: h.damaged.intersection(&h.final_read).copied().collect(),
        recovered: h.unknown.intersection(&h.final_read).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[i64]) -> BTreeSet<i64> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_valid_run_is_accepted() {
        let h = SetHistory {
            acknowledged: set(&[1, 2, 3]),
            unknown: set(&[4, 5]),
            failed: set(&[6]),
            final_read: set(&[1, 2, 3, 5]),
            ..Default::default()
        };
        let r = check(&h);
        assert!(r.valid(), "{r:?}");
        assert_eq!(r.recovered, 1);
    }

    #[test]
    fn a_lost_write_is_rejected() {
        let h = SetHistory {
            acknowledged: set(&[1, 2, 3]),
            final_read: set(&[1, 3]),
            ..Default::default()
        };
        let r = check(&h);
        assert_eq!(r.lost, vec![2]);
        assert!(!r.valid());
    }

    #[test]
    fn elements_nobody_added_and_failed_adds_that_happened_are_rejected() {
        let h = SetHistory {
            acknowledged: set(&[1]),
            failed: set(&[2]),
            final_read: set(&[1, 2, 9]),
            ..Default::default()
        };
        let r = check(&h);
        assert_eq!(r.unexpected, vec![9]);
        assert_eq!(r.failed_but_present, vec![2]);
        assert!(!r.valid());
    }

    #[test]
    fn a_value_that_came_back_damaged_is_rejected() {
        let h = SetHistory {
            acknowledged: set(&[1, 2]),
            final_read: set(&[1, 2]),
            damaged: set(&[2]),
            ..Default::default()
        };
        let r = check(&h);
        assert_eq!(r.damaged, vec![2]);
        assert!(r.lost.is_empty());
        assert!(!r.valid());
    }
}
