//! The agent's reconcile loop.
//!
//! Every renew interval, and at once when the watch reports a change, the agent compares what
//! the cluster decided (the VIPs assigned to this node, at which epoch, whether a release was
//! asked) with what it holds, and fixes the difference. It claims its VIPs from the leader;
//! each grant moves the kernel fence's deadline to `sent + lease - drift`. Acquire is: fence
//! allows, address added (with a valid lifetime as backstop), gratuitous ARP burst. Release
//! is: fence revokes, address removed, release confirmed. Nothing is added or removed as a
//! side effect of an event alone: events only trigger a reconcile.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ballast_client::{v1, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::addr::Addresses;
use super::fence::VipFence;
use super::garp;
use super::health::{probe, RiseFall};
use crate::lease::LeaseConfig;
use crate::types::NodeId;

/// Settings of the agent (from ballastd's configuration).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: NodeId,
    pub lease: LeaseConfig,
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// Where health checks connect (the backend runs on this server).
    pub check_host: IpAddr,
    /// Commands exec checks may run, by name. Only from local configuration.
    pub exec_checks: BTreeMap<String, Vec<String>>,
    /// Per service: where its releases live and how they are activated.
    pub release_sites: BTreeMap<String, super::release::ReleaseSite>,
    /// The local HAProxy to drive, if any.
    pub haproxy: Option<super::haproxy::HaproxyConfig>,
}

struct Held {
    epoch: u64,
    addr: Ipv4Addr,
    iface: String,
    deadline: Instant,
}

fn parse_vip(v: &v1::Vip) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = v.address.split_once('/')?;
    Some((ip.parse().ok()?, len.parse().ok()?))
}

type SharedState = Arc<RwLock<Option<v1::GetStateResponse>>>;

/// The client an agent talks to the cluster with: an attempt may take two renew intervals, a
/// call gives up within a lease, and retries come quickly — an owner must find a new leader
/// and renew well inside its lease.
pub fn cluster_client(
    endpoints: Vec<String>,
    lease: &LeaseConfig,
    token: Option<String>,
    tls: Option<Arc<ballast_client::tls::ClientTls>>,
) -> Client {
    let mut cfg = ballast_client::ClientConfig::new(endpoints);
    cfg.token = token;
    cfg.tls = tls;
    cfg.attempt_timeout = lease.renew_interval * 2;
    cfg.max_backoff = lease.renew_interval / 2;
    cfg.deadline = lease.lease;
    // Renewals go through the agent's own member (first endpoint), which forwards them on
    // connections it watches for stalls; following leader hints made the agent's own
    // connection to a just-healed leader the bottleneck (failover bench: a newly assigned
    // owner missed its renewals after a partition healed, 6 s takeovers).
    cfg.follow_leader_hints = false;
    Client::new(cfg)
}

/// Runs until `stop` turns true, then removes every VIP it holds.
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
    let state = loop {
        match client.get_state(false).await {
            Ok(s) => break s,
            Err(e) => tracing::warn!(error = %e, "agent waiting for the cluster state"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    // 2. Any VIP address left on an interface (a crash, an old epoch) goes before the fence
    // is installed: until then the fence a killed agent left behind still silences it, and
    // a fresh fence manages no address until the loop below says which.
    for v in &state.vips {
        if let Some((ip, _)) = parse_vip(v) {
            if addrs.has(&v.interface, ip).await.unwrap_or(false) {
                tracing::warn!(vip = %v.name, %ip, "removing a VIP address found at start");
                let _ = addrs.remove(&v.interface, ip).await;
            }
        }
    }
    if let Err(e) = fence.install() {
        tracing::error!(error = %e, "agent cannot install the VIP fence; not starting");
        return;
    }
    let mut managed: Vec<Ipv4Addr> = Vec::new();
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

    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    let mut max_epoch: BTreeMap<String, u64> = BTreeMap::new();
    let mut events = client.watch(v1::WatchRequest {
        key_prefixes: vec![],
        cluster_state: true,
        start_revision: 0,
    });
    let mut tick = tokio::time::interval(cfg.lease.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
            // Changes, a resync after compaction, or a failure (spaced by the watch's
            // backoff; the watch never ends): read the state again.
            ev = events.next() => {
                if let Ok(ballast_client::WatchItem::Changes(r)) = ev {
                    if r.events.is_empty() {
                        continue; // progress mark
                    }
                }
                dirty = true;
            }
        }
        if dirty {
            if let Ok(s) = client.get_state(true).await {
                *shared.write().unwrap() = Some(s);
                dirty = false;
            }
        }
        let Some(state) = shared.read().unwrap().clone() else {
            continue;
        };
        // The fence governs every VIP address of the cluster.
        let mut want: Vec<Ipv4Addr> = state
            .vips
            .iter()
            .filter_map(|v| parse_vip(v).map(|x| x.0))
            .collect();
        want.sort();
        if want != managed {
            match fence.manage(&want) {
                Ok(()) => managed = want,
                Err(e) => tracing::error!(error = %e, "updating the fence"),
            }
        }
        let haproxy = haproxy_view.lock().unwrap().clone();
        reconcile(
            &cfg,
            &client,
            &*fence,
            &addrs,
            &state,
            &mut held,
            &mut max_epoch,
            haproxy,
        )
        .await;
    }
    // Clean stop: stop answering, then remove the addresses.
    for (name, h) in held {
        let _ = fence.revoke(h.addr);
        let _ = addrs.remove(&h.iface, h.addr).await;
        tracing::info!(vip = %name, "released on stop");
    }
}

/// Stops answering for a VIP (the fence first), then removes its address. A planned release
/// is confirmed as soon as the fence is shut, before the address goes, because the next owner
/// waits for that confirmation.
async fn drop_vip(
    fence: &dyn VipFence,
    addrs: &Addresses,
    name: &str,
    h: &Held,
    why: &str,
    confirm: Option<(&Client, NodeId)>,
) {
    match fence.revoke(h.addr) {
        Ok(()) => {
            if let Some((client, me)) = confirm {
                if let Err(e) = client.confirm_release(me, name, h.epoch).await {
                    tracing::debug!(error = %e, vip = %name, "confirming release");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, vip = %name, "revoking the fence"),
    }
    if let Err(e) = addrs.remove(&h.iface, h.addr).await {
        tracing::error!(error = %e, vip = %name, "removing the address");
    }
    tracing::info!(vip = %name, epoch = h.epoch, why, "VIP released");
}

// The loop's state is passed piecewise (rather than as a struct) so each borrow is visible.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    cfg: &AgentConfig,
    client: &Client,
    fence: &dyn VipFence,
    addrs: &Addresses,
    state: &v1::GetStateResponse,
    held: &mut BTreeMap<String, Held>,
    max_epoch: &mut BTreeMap<String, u64>,
    haproxy: super::haproxy::HaproxyView,
) {
    let me = cfg.node_id;
    let vips: BTreeMap<&str, &v1::Vip> = state.vips.iter().map(|v| (v.name.as_str(), v)).collect();

    // An epoch lower than one already seen means a stale view: drop first, ask later.
    for v in &state.vips {
        let seen = max_epoch.entry(v.name.clone()).or_insert(0);
        if v.epoch < *seen {
            if let Some(h) = held.remove(&v.name) {
                drop_vip(fence, addrs, &v.name, &h, "epoch went backwards", None).await;
            }
        }
        *seen = (*seen).max(v.epoch);
    }

    // Drop what the cluster no longer gives us, or asked us to release; expire what ran out.
    let now = Instant::now();
    let mut confirmed: Vec<String> = Vec::new();
    let names: Vec<String> = held.keys().cloned().collect();
    for name in names {
        let h = &held[&name];
        let v = vips.get(name.as_str());
        let reason = match v {
            None => Some("VIP deleted"),
            Some(v) if v.owner != me || v.epoch != h.epoch => Some("reassigned"),
            Some(v) if v.releasing => Some("release requested"),
            _ if h.deadline <= now => Some("lease expired"),
            _ => None,
        };
        if let Some(why) = reason {
            let h = held.remove(&name).expect("present");
            let confirm = v.is_some_and(|v| v.releasing && v.owner == me && v.epoch == h.epoch);
            drop_vip(
                fence,
                addrs,
                &name,
                &h,
                why,
                confirm.then_some((client, me)),
            )
            .await;
            if confirm {
                confirmed.push(name);
            }
        }
    }
    // Confirm releases (also of VIPs never acquired here), so planned moves proceed.
    for v in &state.vips {
        if v.owner == me
            && v.releasing
            && !held.contains_key(&v.name)
            && !confirmed.contains(&v.name)
        {
            if let Err(e) = client.confirm_release(me, &v.name, v.epoch).await {
                tracing::debug!(error = %e, vip = %v.name, "confirming release");
            }
        }
    }

    // Claim what is ours and renew.
    let claims: Vec<v1::VipClaim> = state
        .vips
        .iter()
        .filter(|v| {
            v.owner == me && !v.releasing && v.epoch >= max_epoch.get(&v.name).copied().unwrap_or(0)
        })
        .map(|v| v1::VipClaim {
            vip: v.name.clone(),
            epoch: v.epoch,
        })
        .collect();
    let holding: Vec<v1::VipClaim> = held
        .iter()
        .map(|(name, h)| v1::VipClaim {
            vip: name.clone(),
            epoch: h.epoch,
        })
        .collect();
    let sent = Instant::now();
    let resp = match tokio::time::timeout(
        cfg.lease.renew_interval * 2,
        client.renew_report(v1::RenewRequest {
            node_id: me,
            claims,
            holding,
            haproxy: haproxy.differs,
            haproxy_error: haproxy.error,
        }),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "renewal failed");
            return;
        }
        Err(_) => {
            tracing::debug!("renewal timed out");
            return;
        }
    };
    // Trust the shorter of our lease and the leader's.
    let lease = cfg
        .lease
        .lease
        .min(Duration::from_millis(resp.lease_ms as u64));
    let deadline = sent + lease.saturating_sub(cfg.lease.drift_allowance);
    for g in resp.grants.iter().filter(|g| g.granted) {
        let Some(v) = vips.get(g.vip.as_str()) else {
            continue;
        };
        let Some((ip, prefix)) = parse_vip(v) else {
            continue;
        };
        let now = Instant::now();
        if deadline <= now {
            continue;
        }
        let remaining = deadline - now;
        // The address first: the fence keeps it silent until the allow below, which is the
        // moment the VIP answers. It outlives the fence by at most a second or two: a
        // backstop only.
        if let Err(e) = addrs
            .add_or_refresh(&v.interface, ip, prefix, remaining + Duration::from_secs(1))
            .await
        {
            tracing::error!(error = %e, vip = %g.vip, "adding the address");
            continue;
        }
        let allowed = match fence.allow_until(ip, deadline.into_std()) {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e, vip = %g.vip, "allowing in the fence");
                false
            }
        };
        if !allowed {
            if !held.contains_key(&g.vip) {
                let _ = addrs.remove(&v.interface, ip).await;
            }
            continue;
        }
        let fresh = !held.contains_key(&g.vip);
        held.insert(
            g.vip.clone(),
            Held {
                epoch: g.epoch,
                addr: ip,
                iface: v.interface.clone(),
                deadline,
            },
        );
        if fresh {
            tracing::info!(vip = %g.vip, epoch = g.epoch, %ip, "VIP acquired");
            let (iface, count, interval) = (v.interface.clone(), cfg.garp_count, cfg.garp_interval);
            tokio::spawn(async move {
                if let Err(e) = garp::burst(&iface, ip, count, interval).await {
                    tracing::warn!(error = %e, "gratuitous ARP");
                }
            });
        }
    }
}

/// Probes every service this node backs, at its interval; reports transitions, and reports
/// again when the cluster's view differs from what the probes say.
/// Every second, the local HAProxy's servers are set to what the cluster decided (see
/// `haproxy.rs`); comparing every time re-applies the states after a reload. The cluster state
/// is read afresh each time (a serializable read from this agent's member), so a missed watch
/// event cannot leave HAProxy behind. A failure is logged when it starts, then every 30 s while
/// it lasts.
async fn haproxy_loop(
    h: super::haproxy::HaproxyConfig,
    client: Client,
    view: Arc<std::sync::Mutex<super::haproxy::HaproxyView>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing_since: Option<Instant> = None;
    let mut last_warned: Option<Instant> = None;
    loop {
        let result: Result<super::haproxy::Reconciled, String> = async {
            let state = client.get_state(true).await.map_err(|e| e.to_string())?;
            let mut all = super::haproxy::Reconciled::default();
            for (service, backend) in &h.backends {
                let want = super::haproxy::desired(&state, service);
                let r = super::haproxy::reconcile(&h.socket, backend, &want)
                    .await
                    .map_err(|e| format!("{}: {e}", h.socket.display()))?;
                all.changed.extend(r.changed);
                all.differs.extend(r.differs);
            }
            Ok(all)
        }
        .await;
        let seen = match result {
            Ok(r) => {
                failing_since = None;
                for c in r.changed {
                    tracing::info!(change = %c, "HAProxy server state set");
                }
                super::haproxy::HaproxyView {
                    differs: r.differs,
                    error: String::new(),
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if last_warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(30)) {
                    tracing::warn!(error = %e, failing_for = ?since.elapsed(), "cannot drive HAProxy");
                    last_warned = Some(Instant::now());
                }
                super::haproxy::HaproxyView {
                    differs: Vec::new(),
                    error: e,
                }
            }
        };
        *view.lock().unwrap() = seen;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn health_loop(
    cfg: AgentConfig,
    client: Client,
    shared: SharedState,
    mut stop: watch::Receiver<bool>,
) {
    let mut trackers: BTreeMap<String, (RiseFall, Instant)> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let Some(state) = shared.read().unwrap().clone() else {
            continue;
        };
        for svc in &state.services {
            let Some(backend) = svc.backends.get(&cfg.node_id) else {
                continue;
            };
            let Some(check) = &svc.check else { continue };
            let (rf, due) = trackers
                .entry(svc.name.clone())
                .or_insert_with(|| (RiseFall::new(check.rise, check.fall), Instant::now()));
            if Instant::now() < *due {
                continue;
            }
            *due = Instant::now() + Duration::from_millis(check.interval_ms.max(10) as u64);
            let ok = probe(check, cfg.check_host, &cfg.exec_checks).await;
            rf.observe(ok);
            let known = rf.health;
            if known != v1::Health::Unknown && backend.health != known as i32 {
                match client.report_health(cfg.node_id, &svc.name, known).await {
                    Ok(_) => {
                        tracing::info!(service = %svc.name, health = known.label(), "health reported")
                    }
                    Err(e) => tracing::debug!(error = %e, "reporting health"),
                }
            }
        }
    }
}

/// The release the cluster wants this node to run for `svc` ("" for none, or "leave it").
pub fn desired_release(svc: &v1::Service, me: NodeId) -> String {
    match &svc.rollout {
        Some(r) if crate::releases::in_progress(svc) => {
            r.desired.get(&me).cloned().unwrap_or_default()
        }
        Some(r) if r.state == v1::RolloutState::Aborted as i32 => String::new(),
        _ => svc.active_release.clone(),
    }
}

/// Makes each service's release on this server the one the cluster wants (for services with a
/// local release directory), and reports what runs: a Raft write per change, not per tick. A
/// release that failed to activate is not retried until the cluster wants another one.
async fn release_loop(
    cfg: AgentConfig,
    client: Client,
    shared: SharedState,
    mut stop: watch::Receiver<bool>,
) {
    let me = cfg.node_id;
    // Service -> (release, error) of the last failed activation.
    let mut failed: BTreeMap<String, (String, String)> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Some(state) = shared.read().unwrap().clone() else {
            continue;
        };
        for svc in &state.services {
            let (Some(site), Some(backend)) =
                (cfg.release_sites.get(&svc.name), svc.backends.get(&me))
            else {
                continue;
            };
            let want = desired_release(svc, me);
            if failed.get(&svc.name).is_some_and(|(id, _)| *id != want) {
                failed.remove(&svc.name); // the cluster moved on
            }
            let s2 = site.clone();
            let mut running = tokio::task::spawn_blocking(move || super::release::current(&s2))
                .await
                .unwrap_or(None)
                .unwrap_or_default();
            if !want.is_empty() && running != want && !failed.contains_key(&svc.name) {
                match svc.releases.iter().find(|r| r.id == want) {
                    None => {
                        failed.insert(
                            svc.name.clone(),
                            (want.clone(), "release not registered".into()),
                        );
                    }
                    Some(r) => {
                        let art = super::release::Artifact {
                            id: r.id.clone(),
                            location: r.artifact.clone(),
                            sha256: r.sha256.clone(),
                        };
                        let s2 = site.clone();
                        let res = tokio::task::spawn_blocking(move || {
                            super::release::activate(&s2, &art)
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        match res {
                            Ok(()) => {
                                tracing::info!(service = %svc.name, release = %want, "release activated");
                                running = want.clone();
                            }
                            Err(e) => {
                                tracing::error!(service = %svc.name, release = %want, error = %e, "release activation failed");
                                failed.insert(svc.name.clone(), (want.clone(), e));
                            }
                        }
                        // What `current` points to now (a failed hook leaves it switched).
                        let s2 = site.clone();
                        running = tokio::task::spawn_blocking(move || super::release::current(&s2))
                            .await
                            .unwrap_or(None)
                            .unwrap_or(running);
                    }
                }
            }
            let (failed_release, error) = failed.get(&svc.name).cloned().unwrap_or_default();
            if backend.applied_release != running
                || backend.release_failed != failed_release
                || backend.apply_error != error
            {
                let req = v1::ReportReleaseRequest {
                    node_id: me,
                    service: svc.name.clone(),
                    applied: running,
                    failed_release,
                    error,
                };
                if let Err(e) = client.report_release(req).await {
                    tracing::debug!(error = %e, "reporting the release");
                }
            }
        }
    }
}
