//! The agent's reconcile loop: the executor of `plan.rs`.
//!
//! Every renew interval, and at once when the watch reports a change, the agent compares what
//! the cluster decided (the VIPs assigned to this node, at which epoch, whether a release was
//! asked, which addresses are retired) with what it holds, and fixes the difference. It claims
//! its VIPs from the leader; each grant moves the kernel fence's deadline to
//! `sent + lease - drift` (the cluster's lease settings, sent with the grant). Acquire is:
//! address added (silent: the fence governs it), fence allows, gratuitous ARP burst while the
//! lease is valid. Release is: announcements stopped, fence revokes, release confirmed, address
//! removed — and confirmed only once the VIP truly no longer answers (revoked in a fence that
//! governs it, or its address gone). A refused renewal of a held VIP drops it at once. Nothing
//! is added or removed as a side effect of an event alone: events only trigger a reconcile.
//!
//! The agent is one process instance (a random id): it registers it, and the cluster binds
//! the node's leases to it, so that a second agent started with the same node id gets none.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ballast_client::{v1, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::addr::Addresses;
use super::fence::VipFence;
use super::garp::{self, LeaseClock};
use super::health::{probe, RiseFall};
use super::journal::mono_ns;
use super::plan::{self, Held};
use crate::lease::LeaseConfig;
use crate::types::NodeId;

/// Settings of the agent (from ballastd's configuration).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: NodeId,
    /// Used only until the leader sends the cluster's settings with a grant.
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
    /// This agent process (random, not 0); the cluster binds the node's leases to it.
    pub instance: u64,
    /// A standalone agent's address for operators (`ballastd agent --advertise`, may be
    /// empty); None for the agent inside a member.
    pub advertise: Option<String>,
}

/// A new agent process's instance id.
pub fn new_instance() -> u64 {
    loop {
        let i: u64 = rand::random();
        if i != 0 {
            return i;
        }
    }
}

type SharedState = Arc<RwLock<Option<v1::GetStateResponse>>>;

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
    cfg.attempt_timeout = lease.renew_interval * 2;
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

/// A VIP this agent answers for, with the clock its announcements read.
struct HeldVip {
    held: Held,
    clock: Arc<LeaseClock>,
}

/// What the agent holds and knows between reconciles.
struct Agent<'a> {
    cfg: &'a AgentConfig,
    client: &'a Client,
    fence: Arc<dyn VipFence>,
    addrs: &'a Addresses,
    held: BTreeMap<String, HeldVip>,
    max_epoch: BTreeMap<String, u64>,
    /// The addresses and interfaces the fence governs now (what `manage` last accepted).
    managed: (Vec<Ipv4Addr>, Vec<String>),
    /// Addresses let go whose removal failed: kept governed, removed again each round.
    leftover: BTreeMap<Ipv4Addr, String>,
    /// The renew interval the leader last sent.
    renew_every: Duration,
    last_register: Option<Instant>,
    /// Grants this agent would not act on because its fence does not govern the VIP (said
    /// once per VIP and epoch, not at every renewal).
    ungoverned: std::collections::BTreeSet<(String, u64)>,
}

/// Runs `f` (a blocking fence call) off the async workers.
async fn fenced<T: Send + 'static>(
    fence: &Arc<dyn VipFence>,
    f: impl FnOnce(&dyn VipFence) -> Result<T, super::fence::FenceError> + Send + 'static,
) -> Result<T, super::fence::FenceError> {
    let fence = fence.clone();
    tokio::task::spawn_blocking(move || f(&*fence))
        .await
        .unwrap_or_else(|e| Err(super::fence::FenceError(format!("fence task: {e}"))))
}

/// Interfaces that exist here (the fence can only filter on those).
fn present(interfaces: Vec<String>) -> Vec<String> {
    interfaces
        .into_iter()
        .filter(|i| std::path::Path::new("/sys/class/net").join(i).exists())
        .collect()
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
    // 2. Any VIP address left on an interface (a crash, an old epoch, a retired address) goes
    // before the fence is installed: until then the fence a killed agent left behind still
    // silences it, and a fresh fence manages no address until the loop below says which.
    let leftovers = state
        .vips
        .iter()
        .map(|v| (v.name.as_str(), v.address.as_str(), v.interface.as_str()))
        .chain(
            state
                .retired
                .iter()
                .map(|r| (r.vip.as_str(), r.address.as_str(), r.interface.as_str())),
        );
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

    let mut agent = Agent {
        cfg: &cfg,
        client: &client,
        fence,
        addrs: &addrs,
        held: BTreeMap::new(),
        max_epoch: BTreeMap::new(),
        managed: (Vec::new(), Vec::new()),
        leftover: BTreeMap::new(),
        renew_every: cfg.lease.renew_interval,
        last_register: None,
        ungoverned: Default::default(),
    };
    // 3. This process takes the node's leases (refused while another agent process holds
    // them: retried in the loop).
    agent.register().await;
    let mut events = client.watch(v1::WatchRequest {
        key_prefixes: vec![],
        cluster_state: true,
        start_revision: 0,
    });
    let mut next_tick = Instant::now();
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until(next_tick) => {}
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
        let haproxy = haproxy_view.lock().unwrap().clone();
        agent.reconcile(&state, haproxy).await;
        next_tick = Instant::now() + agent.renew_every;
    }
    // Clean stop: stop answering, remove the addresses, then let the node's leases go so that
    // the next agent process takes them at once.
    let names: Vec<String> = agent.held.keys().cloned().collect();
    let mut all_dropped = true;
    for name in names {
        all_dropped &= agent
            .drop_vip(&plan::Drop {
                vip: name,
                why: plan::Why::Expired,
                confirm: None,
            })
            .await;
    }
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

impl Agent<'_> {
    /// This agent's registration (or, `leaving`, its stop).
    fn registration(&self, leaving: bool) -> v1::RegisterRequest {
        v1::RegisterRequest {
            node_id: self.cfg.node_id,
            addr: self.cfg.advertise.clone().unwrap_or_default(),
            leaving,
            in_member: self.cfg.advertise.is_none(),
            ..Default::default()
        }
    }

    /// Binds the node's leases to this process (at start, and again at most every 500 ms
    /// while the leader refuses renewals for the process).
    async fn register(&mut self) {
        if self
            .last_register
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.last_register = Some(Instant::now());
        match self.client.register(self.registration(false)).await {
            Ok(_) => tracing::info!(instance = self.cfg.instance, "agent registered"),
            Err(e) => tracing::error!(
                error = %e,
                node = self.cfg.node_id,
                "the cluster does not bind this node's leases to this agent (yet); retrying"
            ),
        }
    }

    /// Tells the leader a release it waits for is done (true if one was awaited and sent).
    async fn confirm(&self, d: &plan::Drop) -> bool {
        let Some(epoch) = d.confirm else {
            return false;
        };
        if let Err(e) = self
            .client
            .confirm_release(self.cfg.node_id, &d.vip, epoch)
            .await
        {
            tracing::debug!(error = %e, vip = %d.vip, "confirming release");
        }
        true
    }

    /// Governs exactly the addresses the plan says, on the interfaces that exist here.
    async fn govern(&mut self, state: &v1::GetStateResponse) {
        let held: BTreeMap<String, Held> = self
            .held
            .iter()
            .map(|(n, h)| (n.clone(), h.held.clone()))
            .collect();
        let mut addrs = plan::managed(state, &held);
        addrs.extend(self.leftover.keys());
        addrs.sort();
        addrs.dedup();
        let mut ifaces = plan::interfaces(state, &held);
        ifaces.extend(self.leftover.values().cloned());
        ifaces.sort();
        ifaces.dedup();
        let want = (addrs, present(ifaces));
        if want == self.managed {
            return;
        }
        let (a, i) = want.clone();
        match fenced(&self.fence, move |f| f.manage(&a, &i)).await {
            Ok(()) => self.managed = want,
            Err(e) => tracing::error!(error = %e, "updating the fence"),
        }
    }

    /// Stops answering for a held VIP. Confirms the release (when one is awaited) once the
    /// VIP no longer answers: revoked in a fence that governs its address, or its address
    /// removed. Returns false, keeping it held, when neither worked.
    async fn drop_vip(&mut self, d: &plan::Drop) -> bool {
        let Some(h) = self.held.get(&d.vip) else {
            return true;
        };
        h.clock.end();
        let (addr, iface, epoch) = (h.held.addr, h.held.iface.clone(), h.held.epoch);
        let revoked = match fenced(&self.fence, move |f| f.revoke(addr)).await {
            Ok(()) => self.managed.0.contains(&addr),
            Err(e) => {
                tracing::error!(error = %e, vip = %d.vip, "revoking the fence");
                false
            }
        };
        // The next owner waits for the confirmation: given as soon as the fence is shut.
        let mut confirmed = false;
        if revoked {
            confirmed = self.confirm(d).await;
        }
        let removed = match self.addrs.remove(&iface, addr).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, vip = %d.vip, "removing the address");
                false
            }
        };
        if !confirmed && removed {
            self.confirm(d).await;
        }
        if !revoked && !removed {
            return false;
        }
        if !removed {
            self.leftover.insert(addr, iface);
        }
        self.held.remove(&d.vip);
        tracing::info!(vip = %d.vip, epoch, why = d.why.label(), "VIP released");
        true
    }

    async fn reconcile(
        &mut self,
        state: &v1::GetStateResponse,
        haproxy: super::haproxy::HaproxyView,
    ) {
        let me = self.cfg.node_id;
        self.govern(state).await;
        // Leftover addresses of VIPs let go: removed again.
        let leftover: Vec<(Ipv4Addr, String)> =
            self.leftover.iter().map(|(a, i)| (*a, i.clone())).collect();
        for (addr, iface) in leftover {
            // Given to this node again (under another VIP): held, not left over.
            if self.held.values().any(|h| h.held.addr == addr) {
                self.leftover.remove(&addr);
                continue;
            }
            if self.addrs.remove(&iface, addr).await.is_ok() {
                self.leftover.remove(&addr);
            }
        }

        // Drop what the cluster no longer gives us, or asked us to release; expire what ran out.
        let held: BTreeMap<String, Held> = self
            .held
            .iter()
            .map(|(n, h)| (n.clone(), h.held.clone()))
            .collect();
        let mut letting_go = Vec::new();
        for d in plan::drops(
            state,
            &held,
            &mut self.max_epoch,
            me,
            Instant::now().into_std(),
        ) {
            if !self.drop_vip(&d).await {
                letting_go.push(d.vip.clone());
            }
        }
        // Confirm releases of VIPs not held here (never acquired, or let go earlier).
        for (vip, epoch) in plan::confirms_not_held(state, &held_now(&self.held), &letting_go, me) {
            if let Err(e) = self.client.confirm_release(me, &vip, epoch).await {
                tracing::debug!(error = %e, %vip, "confirming release");
            }
        }

        // Claim what is ours and renew.
        let holding: Vec<v1::VipClaim> = self
            .held
            .iter()
            .map(|(name, h)| v1::VipClaim {
                vip: name.clone(),
                epoch: h.held.epoch,
            })
            .collect();
        let sent = Instant::now();
        let req = v1::RenewRequest {
            node_id: me,
            claims: plan::claims(state, &self.max_epoch, me),
            holding,
            haproxy: haproxy.differs,
            haproxy_error: haproxy.error,
            instance: self.cfg.instance,
        };
        let resp =
            match tokio::time::timeout(self.renew_every * 2, self.client.renew_report(req)).await {
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
        if resp.renew_ms > 0 {
            self.renew_every = Duration::from_millis(resp.renew_ms as u64);
        }
        if !resp.refused.is_empty() {
            tracing::warn!(reason = %resp.refused, "renewal refused");
            self.register().await;
        }
        let deadline = plan::deadline(sent.into_std(), &resp, &self.cfg.lease);
        let (drops, acquires) = plan::after_renewal(state, &held_now(&self.held), &resp);
        for d in &drops {
            self.drop_vip(d).await;
        }
        for a in acquires {
            self.acquire(&a, deadline).await;
        }
    }

    /// Answers for a granted VIP until `deadline`: the address first (silent: the fence
    /// governs it), then the fence's allowance, which is the moment the VIP answers, then the
    /// announcements of a fresh one.
    async fn acquire(&mut self, a: &plan::Acquire, deadline: std::time::Instant) {
        let now = std::time::Instant::now();
        if deadline <= now {
            return;
        }
        if !self.managed.0.contains(&a.addr) || !self.managed.1.contains(&a.iface) {
            // A VIP the fence does not govern would answer unfenced: never.
            if self.ungoverned.insert((a.vip.clone(), a.epoch)) {
                tracing::error!(vip = %a.vip, addr = %a.addr, iface = %a.iface, "the fence does not govern this VIP (no such interface here, or see the fence errors); not answering for it");
            }
            return;
        }
        let remaining = deadline - now;
        // The address outlives the fence by at most a second or two: a backstop only.
        if let Err(e) = self
            .addrs
            .add_or_refresh(
                &a.iface,
                a.addr,
                a.prefix,
                remaining + Duration::from_secs(1),
            )
            .await
        {
            tracing::error!(error = %e, vip = %a.vip, "adding the address");
            return;
        }
        let addr = a.addr;
        let allowed = match fenced(&self.fence, move |f| f.allow_until(addr, deadline)).await {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e, vip = %a.vip, "allowing in the fence");
                false
            }
        };
        if !allowed {
            if !self.held.contains_key(&a.vip) {
                let _ = self.addrs.remove(&a.iface, a.addr).await;
            }
            return;
        }
        let deadline_ns = mono_ns()
            + deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_nanos() as u64;
        let held = Held {
            epoch: a.epoch,
            addr: a.addr,
            iface: a.iface.clone(),
            deadline,
        };
        if let Some(h) = self.held.get_mut(&a.vip) {
            // Held before at another address (its release failed, and the VIP came back to
            // this node changed): that address is no longer this VIP's, so it is kept
            // governed and removed like any address let go.
            if h.held.addr != a.addr || h.held.iface != a.iface {
                self.leftover.insert(h.held.addr, h.held.iface.clone());
            }
            h.held = held;
            h.clock.set(deadline_ns);
            return;
        }
        let clock = Arc::new(LeaseClock::new(deadline_ns));
        self.held.insert(
            a.vip.clone(),
            HeldVip {
                held,
                clock: clock.clone(),
            },
        );
        tracing::info!(vip = %a.vip, epoch = a.epoch, addr = %a.addr, "VIP acquired");
        let (iface, ip, count, interval) = (
            a.iface.clone(),
            a.addr,
            self.cfg.garp_count,
            self.cfg.garp_interval,
        );
        tokio::spawn(async move {
            match garp::burst(&iface, ip, count, interval, &clock).await {
                Ok(sent) if sent < count => {
                    tracing::info!(sent, count, %ip, "gratuitous ARP burst cut short: the lease ended")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "gratuitous ARP"),
            }
        });
    }
}

fn held_now(held: &BTreeMap<String, HeldVip>) -> BTreeMap<String, Held> {
    held.iter()
        .map(|(n, h)| (n.clone(), h.held.clone()))
        .collect()
}

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

/// Probes every service this node backs, at its interval; reports transitions, and reports
/// again when the cluster's view differs from what the probes say.
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
        Some(r)
            if crate::member::state::releases::acts(crate::model::RolloutState::from_wire(
                r.state,
            )) =>
        {
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
                    instance: cfg.instance,
                };
                if let Err(e) = client.report_release(req).await {
                    tracing::debug!(error = %e, "reporting the release");
                }
            }
        }
    }
}
