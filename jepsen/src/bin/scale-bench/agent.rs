//! The simulated agents: the shared view of the cluster state, and one task per agent speaking the real Agent protocol.

use super::*;

/// The cluster state as the agents plan from it, indexed per node.
#[derive(Default)]
pub(crate) struct View {
    /// Name -> (owner, epoch, releasing).
    pub(crate) vips: HashMap<String, (u64, u64, bool)>,
    /// Owner -> (name, epoch) of the VIPs it owns and is not asked to release.
    pub(crate) owned: HashMap<u64, Vec<(String, u64)>>,
    /// Owner -> releases it is asked for: VIPs releasing, retired addresses.
    pub(crate) releases: HashMap<u64, Vec<(String, u64)>>,
    /// Node -> services it backs whose health in the state is not healthy.
    pub(crate) unhealthy: HashMap<u64, Vec<String>>,
    pub(crate) owned_total: usize,
    pub(crate) lease: Option<v1::LeaseSettings>,
    /// Backends shown healthy, and agent nodes shown alive.
    pub(crate) healthy: usize,
    pub(crate) alive: usize,
}

impl View {
    pub(crate) fn of(s: &v1::GetStateResponse) -> View {
        let mut v = View {
            lease: s.lease,
            ..Default::default()
        };
        for x in &s.vips {
            v.vips
                .insert(x.name.clone(), (x.owner, x.epoch, x.releasing));
            if x.owner == 0 {
                continue;
            }
            if x.releasing {
                v.releases
                    .entry(x.owner)
                    .or_default()
                    .push((x.name.clone(), x.epoch));
            } else {
                v.owned_total += 1;
                v.owned
                    .entry(x.owner)
                    .or_default()
                    .push((x.name.clone(), x.epoch));
            }
        }
        v.alive = s
            .nodes
            .iter()
            .filter(|n| n.alive && n.id >= FIRST_AGENT_ID)
            .count();
        for r in &s.retired {
            if r.owner != 0 {
                v.releases
                    .entry(r.owner)
                    .or_default()
                    .push((r.vip.clone(), r.epoch));
            }
        }
        for svc in &s.services {
            for (id, b) in &svc.backends {
                if b.health != v1::Health::Healthy as i32 {
                    v.unhealthy.entry(*id).or_default().push(svc.name.clone());
                } else {
                    v.healthy += 1;
                }
            }
        }
        v
    }

    /// Whether `me`'s release of (`vip`, `epoch`) is awaited (`plan::release_awaited`).
    pub(crate) fn release_awaited(&self, me: u64, vip: &str, epoch: u64) -> bool {
        self.releases
            .get(&me)
            .is_some_and(|r| r.iter().any(|(n, e)| n == vip && *e == epoch))
    }
}

/// Reads the state on every burst of changes and at least every second; publishes it. Events
/// that arrive during a read leave one wake-up (a `Notify` keeps one permit), so a burst costs
/// one more read, not one per revision; the agents see only the latest state (`watch`), as the
/// real agent's loop does with the events it finds queued (`agent/run.rs`).
pub(crate) async fn viewer(client: Client, tx: watch::Sender<Arc<View>>, stop: Arc<AtomicBool>) {
    let changed = Arc::new(Notify::new());
    let c2 = changed.clone();
    let w = client.clone();
    let events = tokio::spawn(async move {
        let mut s = w.watch(v1::WatchRequest {
            key_prefixes: vec![],
            cluster_state: true,
            start_revision: 0,
            ..Default::default()
        });
        loop {
            if let Ok(WatchItem::Changes(r)) = s.next().await {
                if r.events.is_empty() {
                    continue;
                }
            }
            c2.notify_one();
        }
    });
    while !stop.load(Ordering::Relaxed) {
        if let Ok(s) = client.get_state(true).await {
            tx.send_replace(Arc::new(View::of(&s)));
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    events.abort();
}

// ---------------------------------------------------------------------------------------
// The simulated agents

/// What the agents measure, shared.
pub(crate) struct Stats {
    pub(crate) recording: AtomicBool,
    pub(crate) latency_us: Mutex<Vec<u32>>,
    pub(crate) renew_ok: AtomicU64,
    pub(crate) renew_err: AtomicU64,
    /// Held VIPs whose agent-side deadline passed before a renewal extended it.
    pub(crate) lapsed: AtomicU64,
    /// Held VIPs the leader refused to renew.
    pub(crate) refused_held: AtomicU64,
    pub(crate) confirms: AtomicU64,
    pub(crate) health_reports: AtomicU64,
    pub(crate) registered: AtomicUsize,
    /// Per agent: how many VIPs it holds.
    pub(crate) held: Vec<AtomicUsize>,
    /// Per agent: (term, when, claims) of the first renewal of each term that granted every
    /// claim (the latest such term).
    pub(crate) full_grant: Vec<Mutex<(u64, Option<Instant>, usize)>>,
    /// VIPs whose acquisition by a new owner is watched, and when that owner got its grant.
    pub(crate) watched: Mutex<HashSet<String>>,
    pub(crate) acquired: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Stats {
    pub(crate) fn new(agents: usize) -> Stats {
        Stats {
            recording: AtomicBool::new(false),
            latency_us: Mutex::new(Vec::new()),
            renew_ok: AtomicU64::new(0),
            renew_err: AtomicU64::new(0),
            lapsed: AtomicU64::new(0),
            refused_held: AtomicU64::new(0),
            confirms: AtomicU64::new(0),
            health_reports: AtomicU64::new(0),
            registered: AtomicUsize::new(0),
            held: (0..agents).map(|_| AtomicUsize::new(0)).collect(),
            full_grant: (0..agents).map(|_| Mutex::new((0, None, 0))).collect(),
            watched: Mutex::new(HashSet::new()),
            acquired: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn held_total(&self) -> usize {
        self.held.iter().map(|h| h.load(Ordering::Relaxed)).sum()
    }
}

/// How an agent ended: its last granted renewal (sent at, deadline).
pub(crate) struct AgentEnd {
    pub(crate) last_grant: Option<(Instant, Instant)>,
}

pub(crate) struct SimAgent {
    pub(crate) idx: usize,
    pub(crate) node: u64,
    pub(crate) client: Client,
    pub(crate) stats: Arc<Stats>,
    pub(crate) view: watch::Receiver<Arc<View>>,
    /// Name -> (epoch, deadline).
    pub(crate) held: HashMap<String, (u64, Instant)>,
    pub(crate) max_epoch: HashMap<String, u64>,
    pub(crate) renew_every: Duration,
    pub(crate) lease_cfg: LeaseConfig,
    pub(crate) last_register: Option<Instant>,
    pub(crate) last_grant: Option<(Instant, Instant)>,
    /// Service -> when its health was last reported.
    pub(crate) reported: HashMap<String, Instant>,
    /// Reconcile at once when the state changes (the real agent), or at the next tick.
    pub(crate) on_change: bool,
    /// The claims of the last answered renewal (`plan::renew_early`).
    pub(crate) claimed_last: std::collections::BTreeSet<(String, u64)>,
    /// The last renewal got no answer (the real agent then sends no confirmation first).
    pub(crate) unanswered: bool,
}

impl SimAgent {
    pub(crate) async fn register(&mut self) -> bool {
        if self
            .last_register
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return false;
        }
        self.last_register = Some(Instant::now());
        let req = v1::RegisterRequest {
            node_id: self.node,
            addr: format!("127.0.0.1:{}", 10_000 + self.idx),
            ..Default::default()
        };
        self.client.register(req).await.is_ok()
    }

    /// The real agent's life, without fence or addresses: register, then one reconcile every
    /// renew interval and at once when the state changes. Stops without a word (a crash) when
    /// `kill` turns true.
    pub(crate) async fn run(mut self, kill: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> AgentEnd {
        // Servers start at different moments: spread the first renewals over an interval.
        let jitter = rand::random::<u64>() % self.renew_every.as_millis().max(1) as u64;
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        while !self.register().await {
            if kill.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                return self.end();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stats.registered.fetch_add(1, Ordering::Relaxed);
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                r = self.view.changed(), if self.on_change => { if r.is_err() { break; } }
            }
            if kill.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                break;
            }
            // The real agent's rhythm (`agent::run`): the next renewal is due an interval after
            // this one started, one that got no answer is retried after a quarter interval and
            // some jitter.
            // A change renews only if it gives this agent a VIP it does not hold, as the real
            // agent's does (`plan::renew_early`).
            let started = tokio::time::Instant::now();
            next = match self.reconcile(started >= next).await {
                None => next,
                Some(true) => started + self.renew_every,
                Some(false) => {
                    tokio::time::Instant::now()
                        + lease::unanswered_retry_delay(self.renew_every, rand::random())
                }
            };
        }
        self.end()
    }

    pub(crate) fn end(&self) -> AgentEnd {
        self.stats.held[self.idx].store(0, Ordering::Relaxed);
        AgentEnd {
            last_grant: self.last_grant,
        }
    }

    /// One reconcile; whether the renewal was answered, `None` if none was made (not `due`,
    /// and the state gives this agent nothing it does not hold).
    pub(crate) async fn reconcile(&mut self, due: bool) -> Option<bool> {
        let view = self.view.borrow_and_update().clone();
        let me = self.node;
        self.report_health(&view);
        // Drop what the cluster no longer gives this node, or asks it to release; expire what
        // ran out (`plan::drops`).
        let now = Instant::now();
        let mut confirm = Vec::new();
        let stats = &self.stats;
        self.held.retain(|name, (epoch, deadline)| {
            let ours = view
                .vips
                .get(name)
                .is_some_and(|(o, e, releasing)| *o == me && e == epoch && !releasing);
            let alive = *deadline > now;
            if ours && !alive {
                stats.lapsed.fetch_add(1, Ordering::Relaxed);
            }
            if !(ours && alive) && view.release_awaited(me, name, *epoch) {
                confirm.push((name.clone(), *epoch));
            }
            ours && alive
        });
        // Releases of VIPs not held here (`plan::confirms_not_held`).
        if let Some(r) = view.releases.get(&me) {
            for (name, epoch) in r {
                if !self.held.contains_key(name) && !confirm.iter().any(|(n, _)| n == name) {
                    confirm.push((name.clone(), *epoch));
                }
            }
        }
        // As the real agent: all of them within half an interval, none on a retry
        // (`lease::confirmations_limit`, `shell::confirmations_until`).
        let until = Instant::now()
            + if self.unanswered {
                Duration::ZERO
            } else {
                lease::confirmations_limit(self.renew_every)
            };
        for (vip, epoch) in confirm {
            if Instant::now() >= until {
                break;
            }
            let call = self.client.confirm_release(me, &vip, epoch);
            if matches!(tokio::time::timeout_at(until.into(), call).await, Ok(Ok(_))) {
                self.stats.confirms.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Claim what is ours (`plan::claims`) and renew.
        let claims: Vec<v1::VipClaim> = view
            .owned
            .get(&me)
            .into_iter()
            .flatten()
            .filter(|(name, epoch)| {
                let seen = self.max_epoch.entry(name.clone()).or_insert(0);
                let ok = *epoch >= *seen;
                *seen = (*seen).max(*epoch);
                ok
            })
            .map(|(name, epoch)| v1::VipClaim {
                vip: name.clone(),
                epoch: *epoch,
            })
            .collect();
        let holding: Vec<v1::VipClaim> = self
            .held
            .iter()
            .map(|(name, (epoch, _))| v1::VipClaim {
                vip: name.clone(),
                epoch: *epoch,
            })
            .collect();
        let held_epoch = |v: &str| self.held.get(v).map(|(e, _)| *e);
        if !due && !plan::renew_early(&claims, held_epoch, &self.claimed_last) {
            return None;
        }
        let claimed = claims.iter().map(|c| (c.vip.clone(), c.epoch)).collect();
        let n_claims = claims.len();
        let req = v1::RenewRequest {
            node_id: me,
            claims,
            holding,
            ..Default::default()
        };
        let sent = Instant::now();
        let resp = match tokio::time::timeout(
            self.renew_every * lease::RENEW_ATTEMPT_INTERVALS,
            self.client.renew_report(req),
        )
        .await
        {
            Ok(Ok(r)) => r,
            _ => {
                self.unanswered = true;
                self.stats.renew_err.fetch_add(1, Ordering::Relaxed);
                self.stats.held[self.idx].store(self.held.len(), Ordering::Relaxed);
                return Some(false);
            }
        };
        let received = Instant::now();
        self.unanswered = false;
        self.claimed_last = claimed;
        self.stats.renew_ok.fetch_add(1, Ordering::Relaxed);
        if self.stats.recording.load(Ordering::Relaxed) {
            let us = (received - sent).as_micros().min(u32::MAX as u128) as u32;
            self.stats.latency_us.lock().unwrap().push(us);
        }
        if resp.renew_ms > 0 {
            self.renew_every = Duration::from_millis(resp.renew_ms as u64);
        }
        if !resp.refused.is_empty() {
            self.register().await;
        }
        // The real agent's deadline and its reading of the answer (`plan::after_renewal`).
        let deadline = plan::deadline(sent, &resp, &self.lease_cfg);
        let mut granted = 0;
        let mut new = Vec::new();
        for g in &resp.grants {
            let holding = self.held.get(&g.vip).is_some_and(|(e, _)| *e == g.epoch);
            if !g.granted {
                if holding {
                    self.held.remove(&g.vip);
                    self.stats.refused_held.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            granted += 1;
            if deadline <= received {
                continue; // `plan::may_answer`: expired already
            }
            if !holding {
                new.push(g.vip.clone());
            }
            self.held.insert(g.vip.clone(), (g.epoch, deadline));
        }
        if granted > 0 {
            self.last_grant = Some((sent, deadline));
        }
        if !new.is_empty() {
            let watched = self.stats.watched.lock().unwrap();
            let mut acquired = self.stats.acquired.lock().unwrap();
            for v in new {
                if watched.contains(&v) {
                    acquired.entry(v).or_insert((received, me));
                }
            }
        }
        if n_claims > 0 && granted == n_claims {
            let term = resp.header.map_or(0, |h| h.raft_term);
            let mut fg = self.stats.full_grant[self.idx].lock().unwrap();
            if term > fg.0 {
                *fg = (term, Some(received), granted);
            }
        }
        self.stats.held[self.idx].store(self.held.len(), Ordering::Relaxed);
        Some(true)
    }

    /// The health loop's part: a backend the state does not show healthy is reported healthy
    /// (the simulated checks always pass), again after a check interval if still not shown.
    pub(crate) fn report_health(&mut self, view: &View) {
        let Some(services) = view.unhealthy.get(&self.node) else {
            return;
        };
        for svc in services {
            if self
                .reported
                .get(svc)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                continue;
            }
            self.reported.insert(svc.clone(), Instant::now());
            let (client, node, svc, stats) = (
                self.client.clone(),
                self.node,
                svc.clone(),
                self.stats.clone(),
            );
            tokio::spawn(async move {
                if client
                    .report_health(node, &svc, v1::Health::Healthy)
                    .await
                    .is_ok()
                {
                    stats.health_reports.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// One step
