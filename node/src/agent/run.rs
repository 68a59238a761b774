//! The agent's life: start, the reconcile loop, and the clean stop.
//!
//! At start: the cluster's VIPs read linearizably, any VIP address left on an interface (and
//! any address the last process's fence governed) removed, then the fence installed and this
//! process registered, so every VIP is silent here until granted. Then, every renew interval
//! (the cluster's) and at once when the watch reports a change, one reconcile: `plan.rs`
//! decides, `shell.rs` carries it out (claims and renewals, acquire, release). A reconcile
//! for a change renews only if the change gives this node a VIP it does not hold
//! (`plan::renew_early`); its releases and drops are done at once either way. Nothing is
//! added or removed as a side effect of an event alone: events only trigger a reconcile. On a
//! clean stop, every held VIP is let go, and only then the node's leases.
//!
//! Every view of the state is this server's own: each VIP's interface is the local one its
//! configuration maps it to (`interfaces.rs`), applied as the view is read, so that the plan,
//! the fence and the addresses all name the same interface. Each renewal also says which VIPs
//! of the services this node backs it cannot place (no such interface here).
//!
//! The agent is one process instance (a random id): it registers it, and the cluster binds
//! the node's leases to it, so that a second agent started with the same node id gets none.
//! The side loops (health, HAProxy, releases) are in `loops.rs`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ballast_client::{v1, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::addr::Addresses;
use super::fence::VipFence;
use super::interfaces;
use super::loops::{haproxy_loop, health_loop, release_loop, SharedState};
use super::plan;
use super::settings::AgentConfig;
use super::shell::{fenced, Agent};
use crate::lease::LeaseConfig;

/// A new agent process's instance id.
pub fn new_instance() -> u64 {
    loop {
        let i: u64 = rand::random();
        if i != 0 {
            return i;
        }
    }
}

/// The client an agent talks to the cluster with: an attempt may take two renew intervals, a
/// call gives up within a lease, and retries come quickly — an owner must find a new leader
/// and renew well inside its lease. Its agent calls name `instance`.
pub fn cluster_client(
    endpoints: Vec<String>,
    lease: &LeaseConfig,
    token: Option<String>,
    tls: Option<Arc<ballast_client::tls::ClientTls>>,
    instance: u64,
) -> Client {
    let mut cfg = ballast_client::ClientConfig::new(endpoints);
    cfg.token = token;
    cfg.tls = tls;
    // As long as the loop's own limit on a renewal (two renew intervals, `shell.rs`). Half of
    // it (so that an attempt hanging on a silent leader leaves time for another member) was
    // tried with the state read moved out of the loop, and partitions then took seconds to
    // fail over (failover bench, 11 s takeovers; not analysed to the end): both went back.
    // What a silent leader costs is measured (failover bench, leader-dead).
    cfg.attempt_timeout = lease.renew_interval * crate::lease::RENEW_ATTEMPT_INTERVALS;
    cfg.max_backoff = lease.renew_interval / 2;
    cfg.deadline = lease.lease;
    cfg.agent_instance = instance;
    // Renewals go to the agent's own member first (first endpoint); a NOT_LEADER answer's hint
    // moves them to the leader. Following the hints of successful answers made the agent's
    // own connection to a just-healed leader the bottleneck (failover bench: a newly assigned
    // owner missed its renewals after a partition healed, 6 s takeovers).
    cfg.follow_leader_hints = false;
    Client::new(cfg)
}

/// The agent's watch of the cluster state, from the revision right after `state`, the read
/// it started with. Not "from now": the fence, the clean-up and the registration come between
/// that read and the watch, and a change committed then (a rollout switching this node, right
/// after a new leader's election) was never delivered; the agent went on with the old state
/// until some later change, and a rollout waited for it until its deadline (CI, the release
/// lab test: the leader killed and restarted mid-rollout). A progress mark is asked for after
/// half a lease of silence (see the loop in [`run`]).
pub fn state_watch(state: &v1::GetStateResponse, lease: &LeaseConfig) -> v1::WatchRequest {
    v1::WatchRequest {
        key_prefixes: vec![],
        cluster_state: true,
        start_revision: state.header.as_ref().map_or(0, |h| h.revision + 1),
        progress_ms: (lease.lease / 2).as_millis().clamp(100, 5_000) as u32,
    }
}

/// Whether the agent's state is as new as what its watch reported. A state read is
/// serializable and may come from a member behind the one the watch heard from: such a read
/// is used, and made again at the next tick; taken as the last word, it left the agent on a
/// state without the change until some later one (review). Not for ever: a cluster made anew
/// from a backup (`--force-new-cluster`) may count from a revision below what the old one
/// reported.
#[derive(Debug, Default)]
struct Freshness {
    /// The newest revision the watch reported a change (or a resync) at.
    reported: u64,
    /// Reads in a row that came back behind it.
    behind_reads: u32,
}

/// State reads in a row behind the watch's revision before the agent goes on with them.
const MAX_BEHIND_READS: u32 = 20;

impl Freshness {
    /// Notes a watch item: the revision a read must reach to include it (that of its events,
    /// or for a resync the one before where it resumes).
    fn note(&mut self, item: &Result<ballast_client::WatchItem, ballast_client::Error>) {
        let r = match item {
            Ok(ballast_client::WatchItem::Changes(r)) if !r.events.is_empty() => r.revision,
            Ok(ballast_client::WatchItem::Resync { resume_at }) => resume_at.saturating_sub(1),
            _ => return,
        };
        self.reported = self.reported.max(r);
    }

    /// A read came back at `revision`: true if another read is due.
    fn read(&mut self, revision: u64) -> bool {
        if revision >= self.reported {
            self.behind_reads = 0;
            return false;
        }
        self.behind_reads += 1;
        if self.behind_reads < MAX_BEHIND_READS {
            return true;
        }
        tracing::warn!(
            revision,
            reported = self.reported,
            "the cluster state stays behind what the watch reported; going on with it"
        );
        *self = Freshness::default();
        false
    }
}

fn revision_of(s: &v1::GetStateResponse) -> u64 {
    s.header.as_ref().map_or(0, |h| h.revision)
}

/// Says in the log, once while it lasts, that this server cannot place a VIP of a service it
/// backs, and when it can again.
fn tell_unplaceable(told: &mut interfaces::Told, now: &[v1::Unplaceable]) {
    let (new, gone) = told.news(now);
    for (vip, interface) in new {
        tracing::error!(
            %vip,
            %interface,
            "this server cannot place the VIP: no such interface here (see --vip-interface, \
             --segment-interface); the leader places it elsewhere"
        );
    }
    for (vip, interface) in gone {
        tracing::info!(%vip, %interface, "this server can place the VIP again");
    }
}

/// A watch item that says only how far the watch got.
fn is_progress_mark(item: &Result<ballast_client::WatchItem, ballast_client::Error>) -> bool {
    matches!(item, Ok(ballast_client::WatchItem::Changes(r)) if r.events.is_empty())
}

/// Runs until `stop` turns true, then removes every VIP it holds and lets its node's leases
/// go.
pub async fn run(
    cfg: AgentConfig,
    client: Client,
    fence: Arc<dyn VipFence>,
    mut stop: watch::Receiver<bool>,
) {
    let addrs = match Addresses::connect() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "agent cannot open netlink; not starting");
            return;
        }
    };
    // 1. The cluster's VIPs, then (2) the fence: every VIP is silent here until granted. The VIP
    // list must be the cluster's current one (a linearizable read): installing the fence
    // empties its set of managed addresses, and an address left on an interface by a crash
    // answers ARP unless it is managed or removed below. A serializable read from a member
    // that just restarted can predate the VIP (the failover bench caught exactly that: a
    // restarted member re-applies its log only up to the committed index it saved).
    let cluster_view = loop {
        match client.get_state(false).await {
            Ok(s) => break s,
            Err(e) => tracing::warn!(error = %e, "agent waiting for the cluster state"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    // From here on, every view of the state is this server's: each VIP on its local
    // interface (`interfaces.rs`).
    let mut state = cluster_view.clone();
    cfg.interfaces.apply(&mut state);
    // 2. Any VIP address left on an interface (a crash, an old epoch, a retired address) goes
    // before the fence is installed: until then the fence a killed agent left behind still
    // silences it, and a fresh fence manages no address until the loop below says which.
    // Looked for on the local interface and on the cluster's (an agent started before with
    // another mapping, or none).
    let mut leftovers = Vec::new();
    for s in [&state, &cluster_view] {
        for v in &s.vips {
            leftovers.push((v.name.as_str(), v.address.as_str(), v.interface.as_str()));
        }
        for r in &s.retired {
            leftovers.push((r.vip.as_str(), r.address.as_str(), r.interface.as_str()));
        }
    }
    let mut looked = std::collections::BTreeSet::new();
    leftovers.retain(|(_, address, iface)| looked.insert((*address, *iface)));
    for (name, address, iface) in leftovers {
        if let Some((ip, _)) = plan::parse_addr(address) {
            if addrs.has(iface, ip).await.unwrap_or(false) {
                tracing::warn!(vip = %name, %ip, "removing a VIP address found at start");
                let _ = addrs.remove(iface, ip).await;
            }
        }
    }
    // So does any address the earlier process's fence governed, which the state may no
    // longer name (a VIP deleted and its retired address cleared while no agent ran here).
    let governed = match fenced(&fence, |f| f.governed()).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "agent cannot read the VIP fence; not starting");
            return;
        }
    };
    for ip in governed {
        match addrs.remove_anywhere(ip).await {
            Ok(true) => tracing::warn!(%ip, "removing an address the last fence governed"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, %ip, "cannot remove an address the last fence governed; not starting");
                return;
            }
        }
    }
    if let Err(e) = fenced(&fence, |f| f.install()).await {
        tracing::error!(error = %e, "agent cannot install the VIP fence; not starting");
        return;
    }
    let watch_from = state_watch(&state, &cfg.lease);
    let shared: SharedState = Arc::new(RwLock::new(Some(state)));
    tokio::spawn(health_loop(
        cfg.clone(),
        client.clone(),
        shared.clone(),
        stop.clone(),
    ));
    let haproxy_view: Arc<std::sync::Mutex<super::haproxy::HaproxyView>> = Default::default();
    if let Some(h) = cfg.haproxy.clone() {
        tokio::spawn(haproxy_loop(
            h,
            client.clone(),
            haproxy_view.clone(),
            stop.clone(),
        ));
    }
    tokio::spawn(release_loop(
        cfg.clone(),
        client.clone(),
        shared.clone(),
        stop.clone(),
    ));

    let mut agent = Agent::new(&cfg, &client, fence, &addrs);
    // 3. This process takes the node's leases (refused while another agent process holds
    // them: retried in the loop).
    agent.register().await;
    // The cluster's changes tell the agent what it owns: a watch cut silently (its connection
    // stalled in a partition, for seconds after the heal) would leave it renewing nothing
    // while the leader assigns it VIPs, one lease after another (failover bench, partition
    // with the fast setting: 7 s takeovers). A mark is asked for after half a lease of
    // silence, so a cut watch is resumed elsewhere within a lease and a half. It shares the
    // client's connections and preferred member: on its own connection to the agent's member
    // (tried, fef9cc5) it delivered an assignment only once that member had applied it, and
    // a member just restarted and catching up under load took up to 1.7 s (failover bench,
    // crash and dead-server trials: the new owner's fence opened a lease late, 4 trials in
    // 60, none in 40 either without it or before it).
    let mut events = client.watch(watch_from);
    let mut next_tick = Instant::now();
    let mut dirty = false;
    let mut fresh = Freshness::default();
    let mut told = interfaces::Told::default();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until(next_tick) => {}
            // Changes, a resync after compaction, or a failure (spaced by the watch's
            // backoff; the watch never ends): read the state again.
            ev = events.next() => {
                // Every item already queued is taken too: the one state read below sees what
                // all of them changed (a burst of changes costs one read and one reconcile,
                // not one each: scale bench, issue 14).
                let mut changed = !is_progress_mark(&ev);
                fresh.note(&ev);
                while let Some(ev) = events.try_next() {
                    changed |= !is_progress_mark(&ev);
                    fresh.note(&ev);
                }
                if !changed {
                    continue;
                }
                dirty = true;
            }
        }
        if dirty {
            match client.get_state(true).await {
                Ok(mut s) => {
                    cfg.interfaces.apply(&mut s);
                    let rev = revision_of(&s);
                    dirty = fresh.read(rev);
                    // While reading again, a read older than the state held is not taken
                    // (the client may have moved to a member further behind).
                    let mut held = shared.write().unwrap();
                    if !dirty || held.as_ref().is_none_or(|h| revision_of(h) <= rev) {
                        *held = Some(s);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reading the cluster state"),
            }
        }
        let Some(state) = shared.read().unwrap().clone() else {
            continue;
        };
        let haproxy = haproxy_view.lock().unwrap().clone();
        // Looked at again every round: an interface may come or go.
        let unplaceable = interfaces::unplaceable(&state, cfg.node_id, interfaces::exists);
        tell_unplaceable(&mut told, &unplaceable);
        let started = Instant::now();
        let due = started >= next_tick;
        let Some(renewed) = agent.reconcile(&state, haproxy, unplaceable, due).await else {
            continue; // a change that gave this node nothing new: renew when due
        };
        // The next renewal is due a renew interval after this one started, however long this
        // one took (the fence's transaction for the VIPs it renewed costs 5-40 ms). A
        // renewal that got no answer (no leader yet, or it moved) is tried again after a
        // quarter interval and a little jitter: waiting a whole one would spend the lease a
        // leader election leaves (failover bench, leader crash; see
        // lease::FIND_LEADER_ALLOWANCE), and the lease settings are checked against the
        // latest such retry (`lease::latest_retry`).
        let every = agent.renew_every();
        next_tick = if renewed {
            started + every
        } else {
            Instant::now() + crate::lease::unanswered_retry_delay(every, rand::random())
        };
    }
    // Clean stop: stop answering, remove the addresses, then let the node's leases go so that
    // the next agent process takes them at once.
    let drops: Vec<plan::Drop> = agent
        .held_names()
        .into_iter()
        .map(|vip| plan::Drop {
            vip,
            why: plan::Why::Expired,
            confirm: None,
        })
        .collect();
    // Nothing to confirm (no drop awaits a confirmation): the limit is now.
    let all_dropped = agent.drop_vips(&drops, Instant::now()).await.is_empty();
    // Only a process that holds nothing lets the binding go: one that could not drop a VIP
    // may still answer for it until its deadline, and the next process must wait that out.
    if !all_dropped {
        tracing::error!(
            "stopping with a VIP that could not be let go; it answers until its lease runs out"
        );
    } else if let Err(e) = client.register(agent.registration(true)).await {
        tracing::debug!(error = %e, "letting the node's leases go");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(
        revision: u64,
        events: usize,
    ) -> Result<ballast_client::WatchItem, ballast_client::Error> {
        Ok(ballast_client::WatchItem::Changes(v1::WatchResponse {
            revision,
            events: vec![v1::Event::default(); events],
        }))
    }

    #[test]
    fn a_read_behind_what_the_watch_reported_is_made_again_but_not_for_ever() {
        let mut f = Freshness::default();
        f.note(&changes(7, 1));
        f.note(&changes(9, 0)); // a progress mark asks for nothing
        assert!(f.read(6), "a read at 6 misses the change at 7");
        assert!(!f.read(7));
        f.note(&Ok(ballast_client::WatchItem::Resync { resume_at: 12 }));
        assert!(f.read(10));
        assert!(!f.read(11), "a resync at 12 needs every revision before it");
        // A cluster made anew counts from below: the agent goes on after enough reads.
        f.note(&changes(100, 1));
        for _ in 1..MAX_BEHIND_READS {
            assert!(f.read(50));
        }
        assert!(!f.read(50));
        assert!(!f.read(51), "what was reported before is forgotten");
    }
}
