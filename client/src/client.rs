//! The gRPC client of a Ballast cluster: one connection per member, leader discovery, calls
//! that retry on another member (and move to the leader a follower names) until a deadline,
//! and the request ids that make writes at-most-once. What `ballastctl`, the agent and the lab
//! use. It does not keep state beyond connections and the write ids it hands out.
//!
//! The typed methods, one per RPC, are in the modules below, by service: `kv.rs` (reads and
//! writes of keys), `cluster.rs` (status, membership, backups), `state.rs` (services, VIPs,
//! nodes, releases, lease settings) and `agent.rs` (what agents send); `crate::watch` adds
//! watches. They all go through [`Client::call`]; this file does not know any RPC but the
//! `Status` it asks every member for when looking for the leader.

mod agent;
mod cluster;
mod kv;
mod state;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ballast_proto::v1::{self, cluster_client::ClusterClient};
use ballast_proto::LEADER_ADDR_HEADER;
use rand::Rng;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::auth_channel::{bearer, AuthChannel};
use crate::error::{retryable, Error};

/// How a [`Client`] connects and retries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Member gRPC addresses, `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// Limit of one attempt.
    pub attempt_timeout: Duration,
    /// Limit of a call with all its retries.
    pub deadline: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Move to the leader that a follower names in a successful answer, saving the
    /// follower's forwarding hop on every later write. A member that timed out recently is
    /// not moved to (a follower's view of the leader can be stale after a partition). Agents
    /// turn this off: they talk to their own member, whose connections to the others are
    /// watched for stalls.
    pub follow_leader_hints: bool,
    /// API token sent with every call (`authorization: Bearer ...`); None: no token.
    pub token: Option<String>,
    /// Mutual TLS towards the members; None: plaintext.
    pub tls: Option<Arc<crate::tls::ClientTls>>,
    /// An agent's process id, named in its agent calls (see `RegisterRequest`); 0 for others.
    pub agent_instance: u64,
    /// Watches ask for a progress mark after this long without a message (unless the
    /// request names its own `progress_ms`), and a watch that hears nothing for three times
    /// as long is taken as cut (a connection stalled by a partition can stay silent for many
    /// seconds after the network heals): it is resumed on a new connection.
    pub watch_progress: Duration,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            connect_timeout: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            follow_leader_hints: true,
            token: None,
            tls: None,
            agent_instance: 0,
            watch_progress: Duration::from_secs(2),
        }
    }
}

struct Target {
    addr: String,
    channel: Channel,
    /// When an attempt on it last got no answer.
    failed_at: Option<Instant>,
}

struct Inner {
    cfg: ClientConfig,
    targets: RwLock<Vec<Target>>,
    /// Index into `targets` of the member believed to lead.
    preferred: AtomicUsize,
    client_id: u64,
    /// `Bearer <token>` when the config has a token.
    authorization: Option<http::HeaderValue>,
    next_seq: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
}

/// A handle to a Ballast cluster. Cheap to clone; clones share connections and the client id.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn normalize(addr: &str) -> String {
    addr.trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

fn channel(addr: &str, cfg: &ClientConfig) -> Result<Channel, Error> {
    crate::tls::lazy_channel(addr, cfg.connect_timeout, cfg.tls.as_ref())
        .map_err(|e| Error::BadEndpoint(addr.into(), e))
}

/// Identifies one logical write across its retries.
struct WriteTicket {
    client: Arc<Inner>,
    id: v1::RequestId,
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        self.client.in_flight.lock().unwrap().remove(&self.id.seq);
    }
}

impl Client {
    /// A client that connects lazily; no network traffic until the first call.
    pub fn new(cfg: ClientConfig) -> Self {
        Self::try_new(cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Client::new`], refusing endpoints that are not addresses.
    pub fn try_new(cfg: ClientConfig) -> Result<Self, Error> {
        if cfg.endpoints.is_empty() {
            return Err(Error::BadEndpoint(
                String::new(),
                "no endpoints given".into(),
            ));
        }
        let mut targets = Vec::new();
        for e in &cfg.endpoints {
            let addr = normalize(e);
            targets.push(Target {
                channel: channel(&addr, &cfg)?,
                addr,
                failed_at: None,
            });
        }
        let authorization = match &cfg.token {
            Some(t) => Some(bearer(t).ok_or_else(|| {
                Error::InvalidArgument("the token must be printable ASCII".into())
            })?),
            None => None,
        };
        let mut rng = rand::thread_rng();
        Ok(Client {
            inner: Arc::new(Inner {
                targets: RwLock::new(targets),
                preferred: AtomicUsize::new(0),
                client_id: rng.gen_range(1..u64::MAX),
                authorization,
                next_seq: AtomicU64::new(1),
                in_flight: Mutex::new(BTreeSet::new()),
                cfg,
            }),
        })
    }

    /// Connects and finds the leader (best effort: calls work without it, through forwarding).
    pub async fn connect(cfg: ClientConfig) -> Result<Self, Error> {
        let c = Self::try_new(cfg)?;
        let _ = c.find_leader().await;
        Ok(c)
    }

    /// Asks the members for the leader and prefers it. Returns its address.
    ///
    /// Every endpoint is asked at once; the leader named in the highest term wins, so a
    /// member cut off from the others that still calls itself (or another) leader of an
    /// older term is not followed.
    pub async fn find_leader(&self) -> Result<String, Error> {
        let addrs: Vec<(String, Channel)> = {
            let t = self.inner.targets.read().unwrap();
            t.iter()
                .map(|t| (t.addr.clone(), t.channel.clone()))
                .collect()
        };
        let timeout = self.inner.cfg.attempt_timeout.min(Duration::from_secs(1));
        let answers = futures::future::join_all(addrs.into_iter().map(|(addr, ch)| {
            let mut c = ClusterClient::new(self.wrap(ch));
            async move {
                let mut req = tonic::Request::new(v1::StatusRequest {});
                req.set_timeout(timeout);
                (addr, c.status(req).await.map(|r| r.into_inner()))
            }
        }))
        .await;
        let mut last = Error::Unavailable("no member answered".into());
        let mut best: Option<(u64, String)> = None;
        for (addr, answer) in answers {
            match answer {
                Ok(s) if s.leader_id != 0 && !s.leader_addr.is_empty() => {
                    if best.as_ref().is_none_or(|(t, _)| s.term > *t) {
                        best = Some((s.term, s.leader_addr));
                    }
                }
                Ok(_) => last = Error::Unavailable(format!("{addr} knows no leader")),
                Err(s) => last = Error::Unavailable(format!("{addr}: {}", s.message())),
            }
        }
        let (_, leader) = best.ok_or(last)?;
        self.prefer(&leader);
        Ok(leader)
    }

    /// The address currently preferred.
    pub fn preferred_endpoint(&self) -> String {
        let t = self.inner.targets.read().unwrap();
        t[self.inner.preferred.load(Ordering::Relaxed) % t.len()]
            .addr
            .clone()
    }

    fn current(&self) -> (usize, AuthChannel) {
        let t = self.inner.targets.read().unwrap();
        let i = self.inner.preferred.load(Ordering::Relaxed) % t.len();
        (i, self.wrap(t[i].channel.clone()))
    }

    fn wrap(&self, ch: Channel) -> AuthChannel {
        AuthChannel::new(ch, self.inner.authorization.clone())
    }

    fn rotate(&self, from: usize) {
        let n = self.inner.targets.read().unwrap().len();
        let _ = self.inner.preferred.compare_exchange(
            from,
            (from + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Replaces the connection to target `idx` after an attempt got no answer. A connection
    /// that lost packets (a partition) can stay stalled in TCP's retransmission backoff for
    /// seconds after the network heals; a new one works at once.
    pub(crate) fn reconnect(&self, idx: usize) {
        let mut t = self.inner.targets.write().unwrap();
        if let Some(target) = t.get_mut(idx) {
            target.failed_at = Some(Instant::now());
            if let Ok(ch) = channel(&target.addr, &self.inner.cfg) {
                target.channel = ch;
            }
        }
    }

    /// Moves to the leader a successful answer named, unless it is where we are or it gave
    /// no answer lately (a stale hint would send every call to an unreachable member).
    fn follow_hint(&self, hint: &str) {
        let hint = normalize(hint);
        if hint == self.preferred_endpoint() {
            return;
        }
        let quarantine = (self.inner.cfg.attempt_timeout * 2).max(Duration::from_secs(1));
        let failed_lately = self
            .inner
            .targets
            .read()
            .unwrap()
            .iter()
            .any(|t| t.addr == hint && t.failed_at.is_some_and(|f| f.elapsed() < quarantine));
        if !failed_lately {
            self.prefer(&hint);
        }
    }

    /// Prefers `addr`, adding it to the targets if it was not one of the endpoints.
    fn prefer(&self, addr: &str) {
        let addr = normalize(addr);
        {
            let t = self.inner.targets.read().unwrap();
            if let Some(i) = t.iter().position(|t| t.addr == addr) {
                self.inner.preferred.store(i, Ordering::Relaxed);
                return;
            }
        }
        if let Ok(ch) = channel(&addr, &self.inner.cfg) {
            let mut t = self.inner.targets.write().unwrap();
            t.push(Target {
                addr,
                channel: ch,
                failed_at: None,
            });
            self.inner.preferred.store(t.len() - 1, Ordering::Relaxed);
        }
    }

    /// Runs `f` against the preferred member, failing over and backing off until the deadline.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, Error>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let cfg = &self.inner.cfg;
        let deadline = Instant::now() + cfg.deadline;
        let mut backoff = cfg.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (idx, ch) = self.current();
            let last = match tokio::time::timeout(cfg.attempt_timeout, f(ch)).await {
                Ok(Ok(r)) => {
                    if cfg.follow_leader_hints {
                        if let Some(h) = r
                            .metadata()
                            .get(LEADER_ADDR_HEADER)
                            .and_then(|v| v.to_str().ok())
                        {
                            self.follow_hint(h);
                        }
                    }
                    return Ok(r.into_inner());
                }
                Ok(Err(s)) if !retryable(&s) => return Err(Error::from_status(&s)),
                Ok(Err(s)) => {
                    let hint = s
                        .metadata()
                        .get(LEADER_ADDR_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(normalize);
                    match hint {
                        Some(h) if h != self.preferred_endpoint() => {
                            self.prefer(&h);
                            // A fresh hint is worth one immediate retry.
                            if attempts == 1 {
                                continue;
                            }
                        }
                        _ => self.rotate(idx),
                    }
                    format!("{:?}: {}", s.code(), s.message())
                }
                Err(_) => {
                    self.reconnect(idx);
                    self.rotate(idx);
                    format!("no answer within {:?}", cfg.attempt_timeout)
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable(format!(
                    "{what}: gave up after {attempts} attempts; last: {last}"
                )));
            }
            let jitter = rand::thread_rng().gen_range(0.5..1.5);
            let sleep = backoff.mul_f64(jitter).min(deadline - now);
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(cfg.max_backoff);
        }
    }

    fn ticket(&self) -> WriteTicket {
        // The seq is taken under the lock that guards the in-flight set: taken outside it, a
        // concurrent write could compute its `acked_below` between this one's seq and its
        // insertion, and so acknowledge a write that has not even been sent.
        let (seq, acked_below) = {
            let mut f = self.inner.in_flight.lock().unwrap();
            let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
            f.insert(seq);
            (seq, *f.iter().next().unwrap_or(&seq))
        };
        WriteTicket {
            client: self.inner.clone(),
            id: v1::RequestId {
                client_id: self.inner.client_id,
                seq,
                acked_below,
            },
        }
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    pub(crate) fn current_channel(&self) -> (usize, AuthChannel) {
        self.current()
    }

    pub(crate) fn failover_from(&self, idx: usize, status: Option<&Status>) {
        let hint = status
            .and_then(|s| s.metadata().get(LEADER_ADDR_HEADER))
            .and_then(|v| v.to_str().ok())
            .map(normalize);
        match hint {
            Some(h) => self.prefer(&h),
            None => self.rotate(idx),
        }
    }
}

fn consistency(serializable: bool) -> i32 {
    if serializable {
        v1::ReadConsistency::Serializable as i32
    } else {
        v1::ReadConsistency::Linearizable as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_and_required() {
        assert_eq!(normalize(" http://127.0.0.1:7401/ "), "127.0.0.1:7401");
        assert!(matches!(
            Client::try_new(ClientConfig::new(vec![])),
            Err(Error::BadEndpoint(..))
        ));
    }

    #[tokio::test]
    async fn request_ids_ack_everything_below_the_oldest_write_in_flight() {
        let c = Client::new(ClientConfig::new(vec!["127.0.0.1:1".into()]));
        let a = c.ticket();
        let b = c.ticket();
        assert_eq!(a.id.client_id, b.id.client_id);
        assert_eq!((a.id.seq, b.id.seq), (1, 2));
        assert_eq!(b.id.acked_below, 1, "seq 1 is still in flight");
        drop(a);
        let d = c.ticket();
        assert_eq!((d.id.seq, d.id.acked_below), (3, 2));
        drop(b);
        drop(d);
        let e = c.ticket();
        assert_eq!(e.id.acked_below, e.id.seq);
    }

    #[tokio::test]
    async fn a_leader_hint_outside_the_endpoints_becomes_a_target() {
        let c = Client::new(ClientConfig::new(vec![
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
        ]));
        c.prefer("127.0.0.1:9");
        assert_eq!(c.preferred_endpoint(), "127.0.0.1:9");
        c.prefer("127.0.0.1:2");
        assert_eq!(c.preferred_endpoint(), "127.0.0.1:2");
        let (i, _) = c.current();
        c.rotate(i);
        assert_eq!(c.preferred_endpoint(), "127.0.0.1:9");
    }

    #[tokio::test]
    async fn an_unreachable_cluster_fails_within_the_deadline() {
        let mut cfg = ClientConfig::new(vec!["127.0.0.1:1".into()]);
        cfg.deadline = Duration::from_millis(300);
        let c = Client::new(cfg);
        let started = Instant::now();
        match c.put("k", "v").await {
            Err(Error::Unavailable(m)) => assert!(m.contains("gave up"), "{m}"),
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
