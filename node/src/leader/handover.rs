//! Keeps the Raft leadership off the servers that own VIPs.
//!
//! When the owner of a VIP is also the Raft leader, its crash costs an election before a new
//! leader can even start counting the lost lease (which it must count from its election):
//! failover takes the election plus a lease instead of a lease. So a leader that owns a VIP
//! hands the leadership to a caught-up follower that owns none, through openraft's leadership
//! transfer (`Trigger::transfer_leader`: the leader stops serving and tells every voter; the
//! successor elects itself once its log holds the leader's last entry, with a vote that
//! voters grant although their leader lease is valid).
//!
//! A hand-over that goes wrong (the log moved on between the check and the vote) leaves the
//! cluster without a leader for at most an ordinary election, which VIP leases are validated
//! to outlast (`LeaseConfig::validate_with_election`). It never affects safety: every new
//! leader counts every lease from its own election.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::types::NodeId;

/// What the decision reads; all of it is the leader's own knowledge.
pub struct Input<'a> {
    pub me: NodeId,
    /// How long this member has led.
    pub led_for: Duration,
    /// Since this member last asked for a hand-over in its current term, if it did.
    pub since_last_attempt: Option<Duration>,
    pub last_log_index: u64,
    /// The other voters and the last log index each has (None: not known yet).
    pub followers: &'a [(NodeId, Option<u64>)],
    /// How many VIPs each node owns.
    pub owned: &'a BTreeMap<NodeId, usize>,
    /// A planned move is under way: its release confirmation lives in this leader's memory
    /// only, and a new leader would wait out the lease instead.
    pub moving: bool,
    /// A leader must have led this long, and waited this long since its last attempt.
    pub settle: Duration,
}

/// The follower to hand the leadership to, if the leader should.
pub fn successor(i: &Input<'_>) -> Option<NodeId> {
    let owns = |id: NodeId| i.owned.get(&id).copied().unwrap_or(0);
    if owns(i.me) == 0 || i.moving || i.led_for < i.settle {
        return None;
    }
    if i.since_last_attempt.is_some_and(|d| d < i.settle) {
        return None;
    }
    i.followers
        .iter()
        .filter(|(id, matched)| *matched == Some(i.last_log_index) && owns(*id) == 0)
        .map(|(id, _)| *id)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(3);

    fn input<'a>(
        followers: &'a [(NodeId, Option<u64>)],
        owned: &'a BTreeMap<NodeId, usize>,
    ) -> Input<'a> {
        Input {
            me: 1,
            led_for: Duration::from_secs(10),
            since_last_attempt: None,
            last_log_index: 40,
            followers,
            owned,
            moving: false,
            settle: S,
        }
    }

    #[test]
    fn an_owning_leader_hands_over_to_a_caught_up_follower_that_owns_nothing() {
        let owned = BTreeMap::from([(1, 1), (2, 1)]);
        let f = [(2, Some(40)), (3, Some(40))];
        assert_eq!(successor(&input(&f, &owned)), Some(3));
        // A follower that is behind is not asked.
        let f = [(2, Some(40)), (3, Some(39))];
        assert_eq!(successor(&input(&f, &owned)), None);
        let f = [(2, Some(40)), (3, None)];
        assert_eq!(successor(&input(&f, &owned)), None);
    }

    #[test]
    fn nothing_happens_without_a_reason_or_too_soon() {
        let f = [(2, Some(40)), (3, Some(40))];
        // The leader owns nothing.
        let owned = BTreeMap::from([(2, 1)]);
        assert_eq!(successor(&input(&f, &owned)), None);
        // Every follower owns a VIP too: a hand-over would not help.
        let owned = BTreeMap::from([(1, 1), (2, 1), (3, 2)]);
        assert_eq!(successor(&input(&f, &owned)), None);
        // Too early in the term, or too soon after the last attempt.
        let owned = BTreeMap::from([(1, 1)]);
        let mut i = input(&f, &owned);
        i.led_for = Duration::from_secs(1);
        assert_eq!(successor(&i), None);
        let mut i = input(&f, &owned);
        i.since_last_attempt = Some(Duration::from_secs(1));
        assert_eq!(successor(&i), None);
        i.since_last_attempt = Some(S);
        assert_eq!(successor(&i), Some(2));
        // Not in the middle of a planned move.
        i.moving = true;
        assert_eq!(successor(&i), None);
    }
}
