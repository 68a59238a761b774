//! VIP lease arithmetic, for the agent and for the leader. Pure: times are passed in.
//!
//! The promise: an agent stops answering for a VIP before the leader may give it to another
//! node. The agent counts its deadline from the moment it *sent* the renewal, minus a drift
//! allowance; the leader counts from the moment it *granted* it (later than the send), plus a
//! margin; and a newly elected leader counts every lease as granted at its own election.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest clock-rate difference between two machines that the settings must tolerate
/// (1000 ppm; NTP-disciplined clocks stay far inside 100 ppm).
pub const MAX_DRIFT_RATIO: f64 = 0.001;

/// Lease settings shared by agents and the leader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    /// Length of a grant.
    pub lease: Duration,
    /// How often the owner renews.
    pub renew_interval: Duration,
    /// Subtracted by the agent from its deadline.
    pub drift_allowance: Duration,
    /// Added by the leader to its expiry.
    pub leader_margin: Duration,
}

/// The defaults fit the default Raft timing (heartbeat 50 ms, election 100-200 ms): a dead
/// owner's VIP moves after about 0.85 s, and a leader election does not take a VIP down
/// (`validate_with_election`). The drift allowance and margin together leave 70 ms between the
/// agent's deadline and the leader's expiry, against at most 0.8 ms of clock-rate difference
/// over a lease ([`MAX_DRIFT_RATIO`]); the kernel fence keeps the agent's side whatever its
/// process does. Those 70 ms are also the longest freeze of a whole virtual machine that is
/// absorbed (node/DESIGN.md, "Clocks"). [`LeaseConfig::fast`] moves a dead server's VIP in
/// about half a second.
impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            lease: Duration::from_millis(800),
            renew_interval: Duration::from_millis(100),
            drift_allowance: Duration::from_millis(20),
            leader_margin: Duration::from_millis(50),
        }
    }
}

impl LeaseConfig {
    /// The fast setting of issue 14, for a LAN: lease 450 ms, renew 100, drift 10, margin 40,
    /// with heartbeat 25 ms and election 50-100 ms. A dead server's VIP answers elsewhere in
    /// about 0.49 s (p99 0.53 s in the failover bench). Not the default: it leaves no room to
    /// pace renewals ([`paced_renew_ms`] keeps 100 ms), and at 1,000 agents x 10,000 VIPs the
    /// members on this machine then timed their 25 ms heartbeats out and held about 100
    /// elections in ten minutes (docs/benchmarks.md). Freeze tolerance 50 ms.
    pub fn fast() -> Self {
        LeaseConfig {
            lease: Duration::from_millis(450),
            renew_interval: Duration::from_millis(100),
            drift_allowance: Duration::from_millis(10),
            leader_margin: Duration::from_millis(40),
        }
    }
}

/// Longest time a cluster goes without a leader after its leader dies, under openraft's rules
/// (0.9 and 0.10 alike): a follower refuses votes for its leader lease (the election timeout's upper bound)
/// after the last heartbeat, and starts its own election only after that lease plus its own
/// timeout (at most the upper bound again).
pub fn leaderless_bound(election_timeout_max: Duration) -> Duration {
    election_timeout_max * 2
}

/// Time an owner is given, after a new leader is elected, to find it and renew.
pub const FIND_LEADER_ALLOWANCE: Duration = Duration::from_millis(100);

/// How long before its deadline an agent's fence stops answering: the nft commit budget plus
/// the kernel's timer resolution (`agent::fence::COMMIT_BUDGET` + `KERNEL_TICK`, asserted
/// equal there). A renewal must be granted and committed before then, not before the deadline.
pub const FENCE_CLOSES_EARLY: Duration = Duration::from_millis(40);

/// Renew intervals an agent waits for the answer to a renewal before it gives up on it
/// (`agent::shell`): never shorter than one of its client's attempts, so that an attempt that
/// times out is followed by the client's move to another member.
pub const RENEW_ATTEMPT_INTERVALS: u32 = 2;

/// How long an agent waits, after a renewal that got no answer, before it tries again: a
/// quarter interval (waiting a whole one would spend the lease a leader election leaves), plus
/// up to an eighth more, picked by `jitter` in [0, 1), so that agents that lost their leader
/// together do not all reach the next one in the same instant.
pub fn unanswered_retry_delay(renew: Duration, jitter: f64) -> Duration {
    renew / 4 + (renew / 8).mul_f64(jitter.clamp(0.0, 1.0))
}

/// How long an agent waits, in one reconcile, for the leader to take the release
/// confirmations due before its renewal, all of them together: half a renew interval. The
/// leader takes one without a Raft round, so a live leader answers in far less; a dead one
/// would otherwise hold the renewal back. A confirmation not taken costs the next owner the
/// wait for the lease instead.
pub fn confirmations_limit(renew: Duration) -> Duration {
    renew / 2
}

/// The latest moment, after an owner sent a renewal that was granted, at which it sends the
/// retry of a next renewal that got no answer: that one is due an interval later, is given up
/// after [`RENEW_ATTEMPT_INTERVALS`], and is retried after [`unanswered_retry_delay`].
pub fn latest_retry(renew: Duration) -> Duration {
    renew * (1 + RENEW_ATTEMPT_INTERVALS) + unanswered_retry_delay(renew, 1.0)
}

/// The shortest lease that keeps the availability rules with these settings: an unanswered
/// renewal's retry sent before the agent's fence closes ([`latest_retry`]), and, on a member,
/// an election outlasted (see
/// [`LeaseConfig::validate_with_election`]). A lease left to its default is at least this, so
/// that pinning slower Raft timing (as before issue 14: election 100-200 ms) or a longer
/// renew interval does not make the default lease invalid.
pub fn shortest_lease(
    renew: Duration,
    drift: Duration,
    election_timeout_max: Option<Duration>,
) -> Duration {
    let by_renew = latest_retry(renew) + FENCE_CLOSES_EARLY + drift;
    let by_election = election_timeout_max.map_or(Duration::ZERO, |e| {
        leaderless_bound(e) + FIND_LEADER_ALLOWANCE + drift + renew + FENCE_CLOSES_EARLY
    });
    // Whole milliseconds, rounded up: the cluster stores its settings in ms, and a lease
    // rounded down would fail the rule it was made to pass (cold review).
    let exact = by_renew.max(by_election);
    let ms = exact.as_nanos().div_ceil(1_000_000) as u64;
    Duration::from_millis(ms)
}

/// Renewals a second the leader asks its agents to stay under, together: past this many
/// agents at the cluster's renew interval, the leader tells every agent a longer one (see
/// [`paced_renew_ms`]). 5,000 a second cost the leader about a quarter of a core on the
/// reference machine (docs/benchmarks.md, "Scale").
pub const RENEWALS_PER_SECOND: u64 = 5_000;

/// What a paced interval leaves beyond the availability rules: the rules only ask that the
/// retry of an unanswered renewal be *sent* before the fence closes, and that an owner be
/// given [`FIND_LEADER_ALLOWANCE`] after an election; a paced interval also leaves this long
/// for that retry to be answered and reach the fence (after release confirmations that
/// waited their [`confirmations_limit`]), and counts the retry's own delay
/// ([`unanswered_retry_delay`]) against the election. Settings an operator chose may go to
/// the rules' edge; the leader does not take agents there by itself (cold review).
pub const PACING_RESERVE: Duration = FIND_LEADER_ALLOWANCE;

/// The renew interval the leader sends its `agents` agents with every answer (ms): the
/// cluster's `renew_ms`, or longer when that many agents renewing at it would send more than
/// [`RENEWALS_PER_SECOND`] renewals a second, but never longer than an interval with which
/// `settings` keep the availability rules ([`LeaseConfig::validate_with_election`], for a
/// member whose election timeout is at most `election_timeout_max`) with
/// [`PACING_RESERVE`] to spare. Only availability depends on the interval: the deadlines
/// count from the send and from the grant, whatever the interval. With the defaults: 100 ms
/// up to 500 agents, then longer, up to 165 ms from 821 agents.
pub fn paced_renew_ms(
    settings: &LeaseSettings,
    agents: usize,
    election_timeout_max: Duration,
) -> u64 {
    let base = settings.renew_ms;
    let wanted = (agents as u64 * 1_000).div_ceil(RENEWALS_PER_SECOND);
    if wanted <= base {
        return base;
    }
    // The bounds of `pacing_allows` in closed form (31/8 of an interval, the fence's early
    // close and the reserve within the usable lease; an interval, its retry's 3/8, the drift
    // and the early close leaving an election and the time to find its leader), then checked
    // by it, a millisecond down at a time against rounding.
    let usable = settings.lease_ms.saturating_sub(settings.drift_ms);
    let early = FENCE_CLOSES_EARLY.as_millis() as u64;
    let reserve = PACING_RESERVE.as_millis() as u64;
    let by_retry = usable.saturating_sub(early + reserve) * 8 / 31;
    let by_election = usable
        .saturating_sub(early)
        .saturating_sub(leaderless_bound(election_timeout_max).as_millis() as u64)
        .saturating_sub(FIND_LEADER_ALLOWANCE.as_millis() as u64)
        * 8
        / 11;
    let mut renew = wanted.min(by_retry).min(by_election);
    while renew > base && !pacing_allows(settings, renew, election_timeout_max) {
        renew -= 1;
    }
    renew.max(base)
}

/// Whether the leader may pace agents to `renew_ms` under `settings`: see [`paced_renew_ms`].
fn pacing_allows(settings: &LeaseSettings, renew_ms: u64, election_timeout_max: Duration) -> bool {
    let c = LeaseSettings {
        renew_ms,
        ..*settings
    }
    .config();
    if c.validate_with_election(election_timeout_max).is_err() {
        return false;
    }
    let r = c.renew_interval;
    let usable = c.lease.saturating_sub(c.drift_allowance);
    // The renewal may follow release confirmations, which wait at most their limit.
    let answered =
        latest_retry(r) + confirmations_limit(r) + FENCE_CLOSES_EARLY + PACING_RESERVE <= usable;
    let spent = c.drift_allowance + r + FENCE_CLOSES_EARLY + unanswered_retry_delay(r, 1.0);
    let outlasts = c.lease.saturating_sub(spent)
        >= leaderless_bound(election_timeout_max) + FIND_LEADER_ALLOWANCE;
    answered && outlasts
}

/// A lease configuration that cannot keep the promise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseConfigError {
    #[error("lease must be at least 100 ms")]
    LeaseTooShort,
    #[error("drift allowance ({drift:?}) must be shorter than the lease ({lease:?})")]
    DriftNotBelowLease { drift: Duration, lease: Duration },
    #[error("renew interval ({renew:?}) too long for the agent's usable lease ({usable:?}): a renewal that gets no answer is given up after two intervals and retried after up to 3/8 of one more, and that retry must be sent before the fence closes ({FENCE_CLOSES_EARLY:?} early); the interval may be at most (usable lease - {FENCE_CLOSES_EARLY:?}) x 8/27")]
    RenewTooSlow { renew: Duration, usable: Duration },
    #[error("the agent's deadline ({agent:?} at the fastest drift) does not end before the leader's expiry ({leader:?} at the slowest): raise the leader margin or the drift allowance")]
    MarginTooSmall { agent: Duration, leader: Duration },
    #[error("a leader crash leaves the cluster without a leader for up to {leaderless:?} (twice the election timeout's upper bound), but an owner's fence may have only {left:?} left when it happens (lease - drift - renew interval - {FENCE_CLOSES_EARLY:?} the fence closes early): every VIP would go dark at each leader election. Lengthen the lease or shorten the election timeout so that {left:?} >= {leaderless:?} + {FIND_LEADER_ALLOWANCE:?}")]
    ShorterThanElection {
        left: Duration,
        leaderless: Duration,
    },
}

impl LeaseConfig {
    /// Refuses settings under which two agents could hold the VIP at once, or under which a
    /// healthy owner would lose it between renewals.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        self.check(latest_retry(self.renew_interval) + FENCE_CLOSES_EARLY)
    }

    /// The rules a committed `SetLease` is applied under, frozen as they were when that
    /// operation was defined: replaying the log must give every member, of every build, the
    /// same state, so a stricter rule here would make a member that replays an entry refuse
    /// what one that took it from a snapshot kept (cold review). [`LeaseConfig::validate`],
    /// stricter since (the renewal's retry, not three intervals, within the usable lease),
    /// is what new settings must pass before they are proposed.
    pub fn validate_applied(&self) -> Result<(), LeaseConfigError> {
        self.check(self.renew_interval * 3)
    }

    /// The rules, with `renewal_needs` the part of the usable lease the renewal path takes.
    fn check(&self, renewal_needs: Duration) -> Result<(), LeaseConfigError> {
        if self.lease < Duration::from_millis(100) {
            return Err(LeaseConfigError::LeaseTooShort);
        }
        if self.drift_allowance >= self.lease {
            return Err(LeaseConfigError::DriftNotBelowLease {
                drift: self.drift_allowance,
                lease: self.lease,
            });
        }
        let usable = self.lease - self.drift_allowance;
        if renewal_needs > usable {
            return Err(LeaseConfigError::RenewTooSlow {
                renew: self.renew_interval,
                usable,
            });
        }
        // Real time the agent may keep the VIP after its send, if its clock runs slow, versus
        // the real time the leader waits after its grant, if its clock runs fast.
        let agent = usable.mul_f64(1.0 + MAX_DRIFT_RATIO);
        let leader = (self.lease + self.leader_margin).mul_f64(1.0 - MAX_DRIFT_RATIO);
        if agent >= leader {
            return Err(LeaseConfigError::MarginTooSmall { agent, leader });
        }
        Ok(())
    }

    /// Refuses settings under which the death of a leader would make every owner's lease run
    /// out before the next leader can renew it. Not a safety rule (an owner without a leader
    /// stops answering, never two owners) but an availability one: the failure of any member
    /// would take every VIP down for an election.
    pub fn validate_with_election(
        &self,
        election_timeout_max: Duration,
    ) -> Result<(), LeaseConfigError> {
        self.validate()?;
        let left = self
            .lease
            .saturating_sub(self.drift_allowance + self.renew_interval + FENCE_CLOSES_EARLY);
        let leaderless = leaderless_bound(election_timeout_max);
        if left < leaderless + FIND_LEADER_ALLOWANCE {
            return Err(LeaseConfigError::ShorterThanElection { left, leaderless });
        }
        Ok(())
    }

    /// The agent's deadline for a renewal it sent at `sent_at` (agent's monotonic clock).
    pub fn agent_deadline<T: std::ops::Add<Duration, Output = T>>(&self, sent_at: T) -> T {
        agent_deadline(sent_at, self.lease, self.drift_allowance)
    }
}

/// The agent's deadline for grants of a renewal sent at `sent` under a `lease` with
/// `drift` allowed: `sent + lease - drift`, on the agent's monotonic clock. What the agent's
/// plan (`agent/plan.rs`) and the checks above compute.
pub fn agent_deadline<T: std::ops::Add<Duration, Output = T>>(
    sent: T,
    lease: Duration,
    drift: Duration,
) -> T {
    sent + lease.saturating_sub(drift)
}

impl LeaseConfig {
    /// When the leader may consider the lease gone: counted from the later of the grant and
    /// its own election (leader's monotonic clock).
    pub fn leader_expiry(&self, granted_at: Option<Duration>, leader_since: Duration) -> Duration {
        let base = granted_at.map_or(leader_since, |g| g.max(leader_since));
        base + self.lease + self.leader_margin
    }

    /// Whether the leader must still treat the lease as held at `now`.
    pub fn leader_considers_held(
        &self,
        granted_at: Option<Duration>,
        leader_since: Duration,
        now: Duration,
    ) -> bool {
        now < self.leader_expiry(granted_at, leader_since)
    }
}

/// The VIP lease settings as the cluster stores them (`ballastctl lease set`), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSettings {
    pub lease_ms: u64,
    pub renew_ms: u64,
    pub drift_ms: u64,
    pub margin_ms: u64,
}

impl LeaseSettings {
    pub fn from_config(c: &LeaseConfig) -> Self {
        LeaseSettings {
            lease_ms: c.lease.as_millis() as u64,
            renew_ms: c.renew_interval.as_millis() as u64,
            drift_ms: c.drift_allowance.as_millis() as u64,
            margin_ms: c.leader_margin.as_millis() as u64,
        }
    }

    pub fn config(&self) -> LeaseConfig {
        LeaseConfig {
            lease: Duration::from_millis(self.lease_ms),
            renew_interval: Duration::from_millis(self.renew_ms),
            drift_allowance: Duration::from_millis(self.drift_ms),
            leader_margin: Duration::from_millis(self.margin_ms),
        }
    }

    /// How long the leader counts a grant as held: lease + margin, ms.
    pub fn span_ms(&self) -> u64 {
        self.lease_ms + self.margin_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn defaults_are_valid_and_bad_combinations_are_refused() {
        LeaseConfig::default().validate().unwrap();
        let c = LeaseConfig {
            lease: ms(50),
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(LeaseConfigError::LeaseTooShort));
        let c = LeaseConfig {
            renew_interval: ms(300),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(LeaseConfigError::RenewTooSlow { .. })
        ));
        let c = LeaseConfig {
            drift_allowance: ms(0),
            leader_margin: ms(0),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(LeaseConfigError::MarginTooSmall { .. })
        ));
        let c = LeaseConfig {
            drift_allowance: ms(800),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(LeaseConfigError::DriftNotBelowLease { .. })
        ));
    }

    #[test]
    fn an_unanswered_renewal_is_retried_before_the_fence_closes() {
        // The retry waits a quarter interval plus at most an eighth.
        assert_eq!(unanswered_retry_delay(ms(100), 0.0), ms(25));
        assert_eq!(
            unanswered_retry_delay(ms(100), 0.5),
            Duration::from_micros(31_250)
        );
        assert_eq!(
            unanswered_retry_delay(ms(100), 7.0),
            Duration::from_micros(37_500)
        );
        // Due at 1 interval, given up at 3, retried by 3 3/8.
        assert_eq!(latest_retry(ms(100)), Duration::from_micros(337_500));
        // Defaults: usable 780 ms; 219 ms x 27/8 + 40 = 779.1 fits, 220 ms (782.5) does not.
        let at = |renew| LeaseConfig {
            renew_interval: ms(renew),
            ..Default::default()
        };
        at(219).validate().unwrap();
        assert!(matches!(
            at(220).validate(),
            Err(LeaseConfigError::RenewTooSlow { .. })
        ));
        // A committed SetLease applies under the rule it was written under (3 intervals):
        // 220 ms was accepted then, and replaying it must give the same state.
        at(220).validate_applied().unwrap();
        at(260).validate_applied().unwrap();
        assert!(at(261).validate_applied().is_err());
    }

    #[test]
    fn a_default_lease_for_a_long_renew_interval_is_whole_ms_and_valid() {
        // 220 ms x 27/8 + 40 + 20 = 802.5 ms: rounded up, and valid as stored.
        let lease = shortest_lease(ms(220), ms(20), None);
        assert_eq!(lease, ms(803));
        let c = LeaseConfig {
            lease,
            renew_interval: ms(220),
            ..Default::default()
        };
        LeaseSettings::from_config(&c).config().validate().unwrap();
    }

    #[test]
    fn a_lease_must_outlast_a_leader_election() {
        let c = LeaseConfig::fast();
        // The fast setting: heartbeat 25 ms, election 50..100 ms; 450 - 10 - 100 - 40 = 300 ms
        // left against 200 + 100.
        c.validate_with_election(ms(100)).unwrap();
        assert!(matches!(
            c.validate_with_election(ms(101)),
            Err(LeaseConfigError::ShorterThanElection { .. })
        ));
        // The defaults fit the default election timeouts (up to 200 ms).
        LeaseConfig::default()
            .validate_with_election(ms(200))
            .unwrap();
        // etcd-like election timeouts (up to 1 s) need a lease of at least 2.35 s with a 200 ms
        // renew interval (2,350 - 10 - 200 - 40 = 2,000 + 100).
        let long = LeaseConfig {
            lease: ms(2_350),
            renew_interval: ms(200),
            ..LeaseConfig::fast()
        };
        long.validate_with_election(ms(1000)).unwrap();
        let short = LeaseConfig {
            lease: ms(2_349),
            ..long
        };
        assert!(short.validate_with_election(ms(1000)).is_err());
    }

    #[test]
    fn the_shortest_lease_passes_both_rules_and_one_ms_less_does_not() {
        for (renew, election) in [
            (100, Some(100)),
            (100, Some(200)),
            (250, Some(100)),
            (200, None),
        ] {
            let (renew, election) = (ms(renew), election.map(ms));
            let c = LeaseConfig {
                lease: shortest_lease(renew, ms(10), election),
                renew_interval: renew,
                ..LeaseConfig::fast()
            };
            let check = |c: &LeaseConfig| match election {
                Some(e) => c.validate_with_election(e),
                None => c.validate(),
            };
            check(&c).unwrap();
            // As the cluster stores it (whole ms), it passes too.
            assert_eq!(c.lease.subsec_nanos() % 1_000_000, 0, "{c:?}");
            check(&LeaseSettings::from_config(&c).config()).unwrap();
            let less = LeaseConfig {
                lease: c.lease - ms(1),
                ..c
            };
            assert!(check(&less).is_err(), "{less:?}");
        }
        // Neither setting needs more than its own lease.
        assert_eq!(shortest_lease(ms(100), ms(10), Some(ms(100))), ms(450));
        assert!(shortest_lease(ms(100), ms(20), Some(ms(200))) <= ms(800));
    }

    #[test]
    fn renewals_are_paced_by_the_number_of_agents_within_the_rules() {
        let defaults = LeaseSettings::from_config(&LeaseConfig::default());
        let e = ms(200);
        // Up to 500 agents at 100 ms stay within 5,000 renewals a second.
        assert_eq!(paced_renew_ms(&defaults, 0, e), 100);
        assert_eq!(paced_renew_ms(&defaults, 500, e), 100);
        assert_eq!(paced_renew_ms(&defaults, 501, e), 101);
        assert_eq!(paced_renew_ms(&defaults, 800, e), 160);
        // Past that, the longest interval the 800 ms lease allows with the reserve: 165 ms,
        // whatever the number of agents. With 166 ms, confirmations (83 ms), a renewal and
        // its retry (27/8 x 166 = 560.25), the fence's early close (40) and the reserve (100)
        // no longer fit in 800 - 20.
        assert_eq!(paced_renew_ms(&defaults, 821, e), 165);
        assert_eq!(paced_renew_ms(&defaults, 1_000, e), 165);
        assert_eq!(paced_renew_ms(&defaults, 1_000_000, e), 165);
        assert!(pacing_allows(&defaults, 165, e));
        assert!(!pacing_allows(&defaults, 166, e));
        // With a slower election (up to 240 ms) the election's side binds, at 116 ms: with
        // 117 ms, an election (480 ms), the time to find its leader (100) and the retry's
        // delay (43.9) do not fit in 800 - 20 - 117 - 40.
        assert_eq!(paced_renew_ms(&defaults, 10_000, ms(240)), 116);
        assert!(!pacing_allows(&defaults, 117, ms(240)));
        // The fast setting leaves no room to pace: its agents keep its 100 ms.
        let fast = LeaseSettings::from_config(&LeaseConfig::fast());
        assert_eq!(paced_renew_ms(&fast, 10_000, ms(100)), 100);
        // Every paced interval keeps the rules, on settings of every shape.
        for (lease, renew, drift, margin, election) in [
            (800, 100, 20, 50, 200),
            (450, 100, 10, 40, 100),
            (2_350, 200, 10, 40, 1_000),
            (5_000, 500, 20, 50, 1_800),
            (5_000, 100, 20, 50, 200),
            (803, 220, 20, 50, 150),
            (120, 20, 100, 50, 10),
        ] {
            let s = LeaseSettings {
                lease_ms: lease,
                renew_ms: renew,
                drift_ms: drift,
                margin_ms: margin,
            };
            let wanted = |agents: usize| (agents as u64 * 1_000).div_ceil(RENEWALS_PER_SECOND);
            for agents in [1, 10, 600, 1_000, 3_000, 100_000] {
                let paced = paced_renew_ms(&s, agents, ms(election));
                assert!(paced >= renew, "{s:?} {agents}");
                assert!(paced <= wanted(agents).max(renew), "{s:?} {agents}");
                if paced > renew {
                    assert!(pacing_allows(&s, paced, ms(election)), "{s:?} {agents}");
                    let c = LeaseSettings {
                        renew_ms: paced,
                        ..s
                    }
                    .config();
                    c.validate_with_election(ms(election)).unwrap();
                    // The longest: a millisecond more is more than wanted, or not allowed.
                    assert!(
                        paced == wanted(agents) || !pacing_allows(&s, paced + 1, ms(election)),
                        "{s:?} {agents} {paced}"
                    );
                } else {
                    // Not paced: nothing was wanted, or nothing longer is allowed.
                    assert!(
                        wanted(agents) <= renew || !pacing_allows(&s, renew + 1, ms(election)),
                        "{s:?} {agents}"
                    );
                }
            }
        }
        // Settings an older build stored that fail the rules keep their own interval.
        let old = LeaseSettings {
            renew_ms: 250,
            ..defaults
        };
        assert_eq!(paced_renew_ms(&old, 100_000, e), 250);
    }

    #[test]
    fn the_agent_always_gives_up_before_the_leader_reassigns() {
        let c = LeaseConfig::default();
        // The grant happens after the send, by any delay; the agent's deadline is before the
        // leader's expiry whatever the delay.
        for send in [0u64, 7, 1_000, 123_456] {
            for delay in [0u64, 1, 50, 400] {
                let agent = c.agent_deadline(ms(send));
                let leader = c.leader_expiry(Some(ms(send + delay)), ms(0));
                assert!(agent < leader, "send {send} delay {delay}");
            }
        }
    }

    #[test]
    fn a_new_leader_counts_every_lease_from_its_election() {
        let c = LeaseConfig::fast();
        // Granted long ago by the previous leader (or unknown): held until election + L + m.
        assert!(c.leader_considers_held(None, ms(10_000), ms(10_000 + 489)));
        assert!(!c.leader_considers_held(None, ms(10_000), ms(10_000 + 490)));
        assert!(c.leader_considers_held(Some(ms(1)), ms(10_000), ms(10_450)));
        // A grant after the election counts from the grant.
        assert!(c.leader_considers_held(Some(ms(10_500)), ms(10_000), ms(10_989)));
        assert!(!c.leader_considers_held(Some(ms(10_500)), ms(10_000), ms(10_990)));
    }

    /// The same arithmetic on instants, as the agent's plan computes it: over 440 ms
    /// (450 ms lease, 10 ms drift) after the send, and not a moment longer.
    #[test]
    fn the_deadline_counts_from_the_send_less_the_drift() {
        let c = LeaseConfig::fast();
        let sent = std::time::Instant::now();
        let deadline = c.agent_deadline(sent);
        assert_eq!(deadline - sent, ms(440));
        assert_eq!(agent_deadline(sent, ms(450), ms(10)), deadline);
        assert_eq!(
            agent_deadline(sent, ms(10), ms(20)),
            sent,
            "never before the send"
        );
    }
}
