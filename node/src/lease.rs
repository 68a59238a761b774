//! VIP lease arithmetic, for the agent and for the leader. Pure: times are passed in.
//!
//! The promise: an agent stops answering for a VIP before the leader may give it to another
//! node. The agent counts its deadline from the moment it *sent* the renewal, minus a drift
//! allowance; the leader counts from the moment it *granted* it (later than the send), plus a
//! margin; and a newly elected leader counts every lease as granted at its own election.

use std::time::Duration;

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

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            lease: Duration::from_millis(600),
            renew_interval: Duration::from_millis(150),
            drift_allowance: Duration::from_millis(20),
            leader_margin: Duration::from_millis(100),
        }
    }
}

/// A lease configuration that cannot keep the promise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseConfigError {
    #[error("lease must be at least 100 ms")]
    LeaseTooShort,
    #[error("drift allowance ({drift:?}) must be shorter than the lease ({lease:?})")]
    DriftNotBelowLease { drift: Duration, lease: Duration },
    #[error("renew interval ({renew:?}) must be at most a third of the agent's usable lease ({usable:?}) so that two lost renewals do not drop the VIP")]
    RenewTooSlow { renew: Duration, usable: Duration },
    #[error("the agent's deadline ({agent:?} at the fastest drift) does not end before the leader's expiry ({leader:?} at the slowest): raise the leader margin or the drift allowance")]
    MarginTooSmall { agent: Duration, leader: Duration },
}

impl LeaseConfig {
    /// Refuses settings under which two agents could hold the VIP at once, or under which a
    /// healthy owner would lose it between renewals.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
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
        if self.renew_interval * 3 > usable {
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

    /// The agent's deadline for a renewal it sent at `sent_at` (agent's monotonic clock).
    pub fn agent_deadline(&self, sent_at: Duration) -> Duration {
        sent_at + self.lease - self.drift_allowance
    }

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
            drift_allowance: ms(600),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(LeaseConfigError::DriftNotBelowLease { .. })
        ));
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
        let c = LeaseConfig::default();
        // Granted long ago by the previous leader (or unknown): held until election + L + m.
        assert!(c.leader_considers_held(None, ms(10_000), ms(10_000 + 699)));
        assert!(!c.leader_considers_held(None, ms(10_000), ms(10_000 + 700)));
        assert!(c.leader_considers_held(Some(ms(1)), ms(10_000), ms(10_600)));
        // A grant after the election counts from the grant.
        assert!(c.leader_considers_held(Some(ms(10_500)), ms(10_000), ms(11_100)));
        assert!(!c.leader_considers_held(Some(ms(10_500)), ms(10_000), ms(11_200)));
    }

    /// The same arithmetic driven by tokio's paused clock, the way the agent will use it.
    #[tokio::test(start_paused = true)]
    async fn deadline_on_a_paused_clock() {
        let c = LeaseConfig::default();
        let start = tokio::time::Instant::now();
        let sent = start.elapsed();
        tokio::time::advance(ms(579)).await;
        assert!(start.elapsed() < c.agent_deadline(sent));
        tokio::time::advance(ms(1)).await;
        assert!(start.elapsed() >= c.agent_deadline(sent));
    }
}
