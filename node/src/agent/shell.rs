//! The agent's shell: carries out what `plan.rs` decides, and nothing more. It holds what
//! the agent holds between reconciles (VIPs with their deadlines, the fence's governed
//! addresses, addresses whose removal failed) and does the IO: the fence (nftables, off the
//! async workers), addresses (netlink), gratuitous ARP, and the Agent service's calls
//! (register, renew, confirm a release).
//!
//! Order matters and is kept here: a VIP answers only once its address is in place and the
//! fence allows it, announcements start after that; a release stops announcements first,
//! shuts the fence, confirms, then removes the address. Both go by the batch: a renewal's
//! grants are allowed in one nft transaction, a reconcile's drops revoked in one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ballast_client::{v1, Client};
use tokio::time::Instant;

use super::addr::Addresses;
use super::fence::VipFence;
use super::garp::{self, LeaseClock};
use super::journal::mono_ns;
use super::plan::{self, Held};
use super::settings::AgentConfig;

/// Release confirmations one reconcile sends at once (each is one call to the leader, which
/// takes it without a Raft round).
const CONFIRMS_IN_FLIGHT: usize = 32;

/// A VIP this agent answers for, with the clock its announcements read.
pub(super) struct HeldVip {
    held: Held,
    clock: Arc<LeaseClock>,
}

/// What the agent holds and knows between reconciles.
pub(super) struct Agent<'a> {
    cfg: &'a AgentConfig,
    client: &'a Client,
    fence: Arc<dyn VipFence>,
    addrs: &'a Addresses,
    held: BTreeMap<String, HeldVip>,
    max_epoch: BTreeMap<String, u64>,
    /// The addresses and interfaces the fence governs now (what `manage` last accepted).
    managed: (Vec<IpAddr>, Vec<String>),
    /// Addresses let go whose removal failed: kept governed, removed again each round.
    leftover: plan::Leftover,
    /// The renew interval the leader last sent.
    renew_every: Duration,
    last_register: Option<Instant>,
    /// The claims of the last answered renewal (`plan::renew_early`).
    claimed_last: std::collections::BTreeSet<(String, u64)>,
    /// The last renewal got no answer: the next reconcile is its retry, which sends no
    /// release confirmation first (`confirmations_until`).
    unanswered: bool,
    /// Grants this agent would not act on because its fence does not govern the VIP (said
    /// once per VIP and epoch, not at every renewal).
    ungoverned: std::collections::BTreeSet<(String, u64)>,
}

/// Runs `f` (a blocking fence call) off the async workers.
pub(super) async fn fenced<T: Send + 'static>(
    fence: &Arc<dyn VipFence>,
    f: impl FnOnce(&dyn VipFence) -> Result<T, super::fence::FenceError> + Send + 'static,
) -> Result<T, super::fence::FenceError> {
    let fence = fence.clone();
    tokio::task::spawn_blocking(move || f(&*fence))
        .await
        .unwrap_or_else(|e| Err(super::fence::FenceError(format!("fence task: {e}"))))
}

impl<'a> Agent<'a> {
    /// An agent that holds nothing yet, with the fence installed and addresses at hand.
    pub(super) fn new(
        cfg: &'a AgentConfig,
        client: &'a Client,
        fence: Arc<dyn VipFence>,
        addrs: &'a Addresses,
    ) -> Self {
        Agent {
            cfg,
            client,
            fence,
            addrs,
            held: BTreeMap::new(),
            max_epoch: BTreeMap::new(),
            managed: (Vec::new(), Vec::new()),
            leftover: BTreeMap::new(),
            renew_every: cfg.lease.renew_interval,
            last_register: None,
            claimed_last: Default::default(),
            unanswered: false,
            ungoverned: Default::default(),
        }
    }

    /// How long until the next reconcile: the renew interval the leader last sent.
    pub(super) fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// The VIPs held now, by name.
    pub(super) fn held_names(&self) -> Vec<String> {
        self.held.keys().cloned().collect()
    }

    /// This agent's registration (or, `leaving`, its stop).
    pub(super) fn registration(&self, leaving: bool) -> v1::RegisterRequest {
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
    pub(super) async fn register(&mut self) {
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

    /// Tells the leader a release it waits for is done (true if one was awaited and sent),
    /// giving up at `until`.
    async fn confirm(&self, d: &plan::Drop, until: Instant) -> bool {
        let Some(epoch) = d.confirm else {
            return false;
        };
        self.confirm_release(&d.vip, epoch, until).await;
        true
    }

    /// When the release confirmations of one reconcile, all together, stop waiting for the
    /// leader (`lease::confirmations_limit`): the renewal after them must not be held back.
    /// Now, so none is sent, when the reconcile retries a renewal that got no answer: the
    /// leader that did not answer it would not take them either, and the retry must go out
    /// when the lease rules count on it (`lease::pacing_allows` counts one wait, not two; cold
    /// review). A release still awaited is confirmed by a later reconcile.
    fn confirmations_until(&self) -> Instant {
        let now = Instant::now();
        if self.unanswered {
            return now;
        }
        now + crate::lease::confirmations_limit(self.renew_every)
    }

    /// Tells the leader this node let (vip, epoch) go, giving up at `until`: on the
    /// renewal's path nothing waits long, and a confirmation that cannot reach a leader now
    /// is sent again by a later reconcile.
    async fn confirm_release(&self, vip: &str, epoch: u64, until: Instant) {
        if until <= Instant::now() {
            tracing::debug!(%vip, "no time left to confirm the release in this reconcile");
            return;
        }
        let confirm = self.client.confirm_release(self.cfg.node_id, vip, epoch);
        match tokio::time::timeout_at(until, confirm).await {
            Ok(Err(e)) => tracing::debug!(error = %e, %vip, "confirming release"),
            Err(_) => tracing::debug!(%vip, "confirming release timed out"),
            Ok(Ok(_)) => {}
        }
    }

    /// Governs exactly the addresses the plan says, on the interfaces that exist here.
    async fn govern(&mut self, state: &v1::GetStateResponse, held: &BTreeMap<String, Held>) {
        let (addrs, ifaces) = plan::governed(state, held, &self.leftover);
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

    /// Stops answering for the held VIPs among `drops`: announcements end, then one fence
    /// transaction shuts them all (one nft run however many: a rebalance or a failing service
    /// that lets hundreds go must not hold back the renewal of the rest), then each release
    /// awaited is confirmed and the addresses are removed. A release is confirmed only once
    /// its VIP no longer answers: revoked in a fence that governs its address, or its address
    /// removed. Returns the names of VIPs neither worked for: they stay held.
    pub(super) async fn drop_vips(
        &mut self,
        drops: &[plan::Drop],
        confirm_until: Instant,
    ) -> Vec<String> {
        let going: Vec<(&plan::Drop, IpAddr, String, u64)> = drops
            .iter()
            .filter_map(|d| {
                let h = self.held.get(&d.vip)?;
                h.clock.end();
                Some((d, h.held.addr, h.held.iface.clone(), h.held.epoch))
            })
            .collect();
        if going.is_empty() {
            return Vec::new();
        }
        let addrs: Vec<IpAddr> = going.iter().map(|g| g.1).collect();
        let shut = self.revoke(addrs).await;
        let revoked: Vec<bool> = going
            .iter()
            .map(|(_, addr, ..)| shut.contains(addr) && self.managed.0.contains(addr))
            .collect();
        // The next owners wait for the confirmations: given as soon as the fence is shut.
        let after_revoke = going.iter().zip(&revoked).filter(|(_, r)| **r);
        self.confirm_all(after_revoke.map(|(g, _)| g.0), confirm_until)
            .await;
        let mut removed = Vec::with_capacity(going.len());
        for (d, addr, iface, _) in &going {
            removed.push(match self.addrs.remove(iface, *addr).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, vip = %d.vip, "removing the address");
                    false
                }
            });
        }
        let done: Vec<plan::LetGo> = revoked
            .iter()
            .zip(&removed)
            .map(|(r, m)| plan::let_go(*r, *m))
            .collect();
        let after_removal = going
            .iter()
            .zip(&done)
            .filter(|(_, l)| l.confirm_after_removal);
        self.confirm_all(after_removal.map(|(g, _)| g.0), confirm_until)
            .await;
        let mut kept = Vec::new();
        for ((d, addr, iface, epoch), l) in going.into_iter().zip(done) {
            if l.still_held {
                kept.push(d.vip.clone());
                continue;
            }
            if l.leftover {
                self.leftover.insert(addr, iface);
            }
            self.held.remove(&d.vip);
            tracing::info!(vip = %d.vip, epoch, why = d.why.label(), "VIP released");
        }
        kept
    }

    /// Shuts the fence for `addrs`, in one transaction; if that fails, one address at a time,
    /// so that one the fence refuses does not keep the others open. Returns those shut. When
    /// the batch failed for a reason that fails every run (the table flushed by someone
    /// else), the fallback costs one nft run per address again and may hold the renewal back
    /// past the lease of the VIPs kept: their fence then closes by itself (availability, not
    /// safety), and those not shut stay held until their removal works.
    async fn revoke(&self, addrs: Vec<IpAddr>) -> std::collections::BTreeSet<IpAddr> {
        let all = addrs.clone();
        match fenced(&self.fence, move |f| f.revoke_all(&all)).await {
            Ok(()) => return addrs.into_iter().collect(),
            Err(e) if addrs.len() == 1 => {
                tracing::error!(error = %e, addr = %addrs[0], "revoking the fence");
                return Default::default();
            }
            Err(e) => {
                tracing::error!(error = %e, addrs = addrs.len(), "revoking the fence together; one at a time")
            }
        }
        let mut shut = std::collections::BTreeSet::new();
        for addr in addrs {
            match fenced(&self.fence, move |f| f.revoke(addr)).await {
                Ok(()) => {
                    shut.insert(addr);
                }
                Err(e) => tracing::error!(error = %e, %addr, "revoking the fence"),
            }
        }
        shut
    }

    /// Confirms the releases awaited among `drops`, a few at a time, all within `until`.
    async fn confirm_all<'d>(&self, drops: impl Iterator<Item = &'d plan::Drop>, until: Instant) {
        use futures::StreamExt;
        futures::stream::iter(drops)
            .for_each_concurrent(CONFIRMS_IN_FLIGHT, |d| async move {
                self.confirm(d, until).await;
            })
            .await;
    }

    /// Returns whether the renewal was answered (false: the loop tries again soon, not a
    /// whole renew interval later, so that an owner finds a new leader well inside its lease),
    /// or `None` if none was made: a reconcile for a change of the state, before the renewal
    /// is `due`, renews only if the state gives this node a VIP it does not hold
    /// (`plan::renew_early`).
    pub(super) async fn reconcile(
        &mut self,
        state: &v1::GetStateResponse,
        haproxy: super::haproxy::HaproxyView,
        unplaceable: Vec<v1::Unplaceable>,
        due: bool,
    ) -> Option<bool> {
        let me = self.cfg.node_id;
        // What is held now: governing and removing leftovers change nothing held.
        let held = held_now(&self.held);
        self.govern(state, &held).await;
        // Leftover addresses of VIPs let go: removed again.
        let (forget, remove) = plan::leftovers_to_remove(&self.leftover, &held);
        for addr in forget {
            self.leftover.remove(&addr);
        }
        for (addr, iface) in remove {
            if self.addrs.remove(&iface, addr).await.is_ok() {
                self.leftover.remove(&addr);
            }
        }

        // Drop what the cluster no longer gives us, or asked us to release; expire what ran out.
        // The confirmations of this reconcile share one limit, however many there are:
        // without a leader, k of them would otherwise hold the renewal back k times (cold
        // review).
        let confirm_until = self.confirmations_until();
        let drops = plan::drops(
            state,
            &held,
            &mut self.max_epoch,
            me,
            Instant::now().into_std(),
        );
        let mut skip = self.drop_vips(&drops, confirm_until).await;
        // Those just let go with a release awaited were confirmed by `drop_vips`: not twice
        // (cold review: 250 VIPs of a planned move were each confirmed again, one at a time,
        // before the renewal).
        skip.extend(
            drops
                .iter()
                .filter(|d| d.confirm.is_some())
                .map(|d| d.vip.clone()),
        );
        // Confirm releases of VIPs not held here (never acquired, or let go earlier), within
        // the same limit.
        for (vip, epoch) in plan::confirms_not_held(state, &held_now(&self.held), &skip, me) {
            self.confirm_release(&vip, epoch, confirm_until).await;
        }

        // Claim what is ours and renew.
        let claims = plan::claims(state, &self.max_epoch, me);
        let held_epoch = |v: &str| self.held.get(v).map(|h| h.held.epoch);
        if !due && !plan::renew_early(&claims, held_epoch, &self.claimed_last) {
            return None;
        }
        let claimed: std::collections::BTreeSet<(String, u64)> =
            claims.iter().map(|c| (c.vip.clone(), c.epoch)).collect();
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
            claims,
            holding,
            haproxy: haproxy.differs,
            haproxy_error: haproxy.error,
            instance: self.cfg.instance,
            unplaceable,
        };
        // Twice the longer of the cluster's renew interval and this agent's own: never shorter
        // than one of the client's attempts (`run::cluster_client`), so that an attempt that
        // times out is followed by the client's reconnect and move to another member.
        let limit = self.renew_every.max(self.cfg.lease.renew_interval)
            * crate::lease::RENEW_ATTEMPT_INTERVALS;
        let resp = match tokio::time::timeout(limit, self.client.renew_report(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "renewal failed");
                self.unanswered = true;
                return Some(false);
            }
            Err(_) => {
                tracing::debug!("renewal timed out");
                self.unanswered = true;
                return Some(false);
            }
        };
        self.unanswered = false;
        self.claimed_last = claimed;
        if resp.renew_ms > 0 {
            self.renew_every = Duration::from_millis(resp.renew_ms as u64);
        }
        if !resp.refused.is_empty() {
            tracing::warn!(reason = %resp.refused, "renewal refused");
            self.register().await;
        }
        let deadline = plan::deadline(sent.into_std(), &resp, &self.cfg.lease);
        let (drops, acquires) = plan::after_renewal(state, &held_now(&self.held), &resp);
        let confirm_until = self.confirmations_until();
        self.drop_vips(&drops, confirm_until).await;
        self.acquire(acquires, deadline).await;
        Some(true)
    }

    /// Answers for the granted VIPs until `deadline`: each one's address first (silent: the
    /// fence governs it), then the fence's allowance for all of them in one transaction,
    /// which is the moment they answer, then the announcements of the fresh ones.
    async fn acquire(&mut self, acquires: Vec<plan::Acquire>, deadline: std::time::Instant) {
        let mut ready = Vec::with_capacity(acquires.len());
        for a in acquires {
            if self.place(&a, deadline).await {
                ready.push(a);
            }
        }
        if ready.is_empty() {
            return;
        }
        let addrs: Vec<_> = ready.iter().map(|a| a.addr).collect();
        let allowed = match fenced(&self.fence, move |f| f.allow_all_until(&addrs, deadline)).await
        {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e, vips = ready.len(), first = %ready[0].vip, "allowing in the fence");
                false
            }
        };
        for a in &ready {
            if !allowed {
                if !self.held.contains_key(&a.vip) {
                    let _ = self.addrs.remove(&a.iface, a.addr).await;
                }
                continue;
            }
            self.hold(a, deadline);
        }
    }

    /// Puts a granted VIP's address in place, if it may answer until `deadline`.
    async fn place(&mut self, a: &plan::Acquire, deadline: std::time::Instant) -> bool {
        let remaining = match plan::may_answer(
            a,
            &self.managed,
            deadline,
            std::time::Instant::now(),
        ) {
            Ok(remaining) => remaining,
            Err(plan::Refusal::Expired) => return false,
            Err(plan::Refusal::Ungoverned) => {
                // A VIP the fence does not govern would answer unfenced: never.
                if self.ungoverned.insert((a.vip.clone(), a.epoch)) {
                    tracing::error!(vip = %a.vip, addr = %a.addr, iface = %a.iface, "the fence does not govern this VIP (no such interface here, or see the fence errors); not answering for it");
                }
                return false;
            }
        };
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
            return false;
        }
        true
    }

    /// Records a VIP the fence now allows until `deadline`; a fresh one is announced.
    fn hold(&mut self, a: &plan::Acquire, deadline: std::time::Instant) {
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
            if let Some((addr, iface)) = plan::displaced(Some(&h.held), a) {
                self.leftover.insert(addr, iface);
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

/// Interfaces that exist here (the fence can only filter on those).
fn present(interfaces: Vec<String>) -> Vec<String> {
    interfaces
        .into_iter()
        .filter(|i| std::path::Path::new("/sys/class/net").join(i).exists())
        .collect()
}

fn held_now(held: &BTreeMap<String, HeldVip>) -> BTreeMap<String, Held> {
    held.iter()
        .map(|(n, h)| (n.clone(), h.held.clone()))
        .collect()
}
