//! One step's figures and how they are printed.

use super::*;

#[derive(Default, Clone)]
pub(crate) struct Row {
    pub(crate) agents: usize,
    pub(crate) vips: usize,
    pub(crate) setup: Duration,
    pub(crate) placed: Duration,
    pub(crate) window: Duration,
    pub(crate) renew_leader: f64,
    pub(crate) renew_agents: f64,
    pub(crate) renew_errors: u64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) cpu: f64,
    pub(crate) members_cpu: f64,
    pub(crate) bench_cpu: f64,
    pub(crate) rss: f64,
    pub(crate) log_per_min: f64,
    pub(crate) revisions: u64,
    pub(crate) lapsed_window: u64,
    pub(crate) reassign: Option<Reassign>,
    pub(crate) takeover: Option<Takeover>,
}

#[derive(Clone)]
pub(crate) struct Reassign {
    pub(crate) vips: usize,
    /// From the victim's last granted renewal (sent) to the state showing all moved.
    pub(crate) status_all: Duration,
    /// ... to the first VIP shown moved.
    pub(crate) status_first: Duration,
    /// ... to the last new owner's grant.
    pub(crate) granted_all: Duration,
    /// Earliest new-owner grant minus the victim's deadline (negative: two holders).
    pub(crate) margin: f64,
    pub(crate) early: usize,
    /// The soonest the leader may reassign: lease + margin after the last grant's send.
    pub(crate) floor: Duration,
}

#[derive(Clone)]
pub(crate) struct Takeover {
    pub(crate) vips: usize,
    pub(crate) elected: Option<Duration>,
    pub(crate) first: Duration,
    pub(crate) all: Duration,
    pub(crate) lapsed: u64,
    pub(crate) complete: bool,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Row {
    pub(crate) fn header() -> String {
        format!(
            "{:>6} {:>6} {:>8} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>10} {:>18} {:>10}",
            "agents",
            "VIPs",
            "renew/s",
            "p50 ms",
            "p99 ms",
            "CPU",
            "RSS MB",
            "log/min",
            "placed s",
            "reassign",
            "reassign ms (stat)",
            "leader ms"
        )
    }

    pub(crate) fn line(&self) -> String {
        let (rn, rs) = match &self.reassign {
            Some(r) => (
                r.vips.to_string(),
                format!("{:.0} / {:.0}", ms(r.status_all), ms(r.granted_all)),
            ),
            None => ("-".into(), "-".into()),
        };
        let lt = match &self.takeover {
            Some(t) if t.complete => format!("{:.0}", ms(t.all)),
            Some(_) => "incomplete".into(),
            None => "-".into(),
        };
        format!(
            "{:>6} {:>6} {:>8.0} {:>7.2} {:>7.2} {:>6.2} {:>6.0} {:>8.0} {:>8.1} {:>10} {:>18} {:>10}",
            self.agents,
            self.vips,
            self.renew_leader,
            ms(self.p50),
            ms(self.p99),
            self.cpu,
            self.rss,
            self.log_per_min,
            self.placed.as_secs_f64(),
            rn,
            rs,
            lt
        )
    }

    pub(crate) fn details(&self) -> String {
        let mut s = format!(
            "{} agents, {} VIPs: setup {:.1} s (VIPs placed and held {:.1} s after the first was made); \
window {:.1} s: renewals answered by the leader {:.0}/s, seen OK by agents {:.0}/s, failed {}; \
latency p50 {:.2} p99 {:.2} max {:.2} ms; leader CPU {:.2} cores, all members {:.2}, this process {:.2}; \
leader RSS {:.0} MiB; log +{:.0}/min, revisions +{}; leases lapsed at agents {}",
            self.agents,
            self.vips,
            self.setup.as_secs_f64(),
            self.placed.as_secs_f64(),
            self.window.as_secs_f64(),
            self.renew_leader,
            self.renew_agents,
            self.renew_errors,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.cpu,
            self.members_cpu,
            self.bench_cpu,
            self.rss,
            self.log_per_min,
            self.revisions,
            self.lapsed_window,
        );
        if let Some(r) = &self.reassign {
            s += &format!(
                "\n  reassign {} VIPs of a dead node: from its last renewal, first shown moved {:.0} ms, \
all shown moved {:.0} ms, all granted to new owners {:.0} ms (the lease allows no move before \
{:.0} ms); earliest new grant {:+.0} ms after the dead node's deadline, {} before it",
                r.vips,
                ms(r.status_first),
                ms(r.status_all),
                ms(r.granted_all),
                ms(r.floor),
                r.margin,
                r.early
            );
        }
        if let Some(t) = &self.takeover {
            s += &format!(
                "\n  leader killed: new leader seen {}, first agent granted by it {:.0} ms, all {} VIPs {} {:.0} ms; \
leases lapsed at agents meanwhile {}",
                t.elected
                    .map_or("-".into(), |d| format!("after {:.0} ms", ms(d))),
                ms(t.first),
                t.vips,
                if t.complete { "granted by" } else { "NOT all granted by" },
                ms(t.all),
                t.lapsed
            );
        }
        s
    }
}
