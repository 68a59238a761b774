//! One peer's sessions, one after the other, for as long as the speaker lives: connect, OPEN,
//! KEEPALIVE, Established; while established, send what the route table gained or lost; after
//! any failure, wait out the backoff and start again.
//!
//! Every session starts from nothing: the router dropped our routes when the previous one
//! ended (no Graceful Restart is ever offered), so the first thing sent is the whole table as
//! it is at that moment (`table::sync` against an empty record).

mod conn;
mod connect;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::backoff::{self, Backoff};
use crate::config::PeerConfig;
use crate::status::{PeerState, StatusCell, Withheld};
use crate::table::{sync, Changes, Peering, Routes};
use crate::wire::{self, Family, Message, MessageType, Notification, Open, OpenError, WireError};
use conn::Conn;

/// With hold time 0 nothing bounds the steps before Established or a write; this does.
const NO_HOLD_LIMIT: Duration = Duration::from_secs(30);
/// How long the last NOTIFICATION may take before the connection is closed regardless.
const LAST_WORD_TIMEOUT: Duration = Duration::from_secs(1);
/// The shutdown communication sent with Cease.
const SHUTDOWN_TEXT: &str = "ballast speaker shutting down";

/// Why a session ended or never began.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("no TCP connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("connection: {0}")]
    Io(std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("a write did not finish within {0:?}: the peer reads nothing")]
    WriteTimeout(Duration),
    #[error("the peer sent a malformed message: {0}")]
    Wire(WireError),
    #[error("the peer's OPEN is refused: {0}")]
    Open(OpenError),
    #[error("the peer sent NOTIFICATION {0}")]
    Notified(Notification),
    #[error("the peer sent {kind:?} in state {state:?}")]
    Unexpected { state: PeerState, kind: MessageType },
    #[error("no message from the peer in state {state:?} within {after:?} (hold timer)")]
    HoldExpired { state: PeerState, after: Duration },
}

impl SessionError {
    /// The NOTIFICATION to send before closing, if the connection is still fit to carry one.
    fn notification(&self) -> Option<Notification> {
        match self {
            SessionError::Wire(e) => Some(e.notification()),
            SessionError::Open(e) => Some(e.notification()),
            SessionError::Unexpected { state, kind } => {
                let subcode = match state {
                    PeerState::OpenSent => 1,
                    PeerState::OpenConfirm => 2,
                    _ => 3,
                };
                Some(Notification::unexpected(subcode, *kind as u8))
            }
            SessionError::HoldExpired { .. } => Some(Notification::hold_timer_expired()),
            _ => None,
        }
    }
}

/// Resolves when the speaker stops: shut down, or its handle dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One peer's task.
pub(crate) struct Session {
    pub peer: PeerConfig,
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    pub community_asn: u32,
    pub routes: watch::Receiver<Routes>,
    pub stop: watch::Receiver<bool>,
    pub status: StatusCell,
}

/// What the established loop reacts to.
enum Event {
    Stop,
    Message(Result<Message, SessionError>),
    Silent,
    KeepaliveDue,
    RoutesChanged,
}

impl Session {
    /// Runs sessions until the speaker stops.
    pub(crate) async fn run(mut self) {
        let peer = self.peer.socket_addr();
        let mut backoff = Backoff::new();
        let mut last_error = String::new();
        loop {
            let mut up = None;
            let result = self.attempt(&mut up).await;
            let Err(error) = result else {
                self.status.down(None);
                tracing::info!(%peer, "BGP speaker stopped");
                return;
            };
            let error = error.to_string();
            self.status.down(Some(error.clone()));
            if up.is_some_and(|t: Instant| t.elapsed() >= backoff::MAX) {
                backoff.reset();
            }
            let wait = backoff.next_wait();
            // A router that stays away fails every attempt alike: say so once, not every 5 s.
            if up.is_some() || error != last_error {
                tracing::warn!(%peer, %error, retry_in = ?wait, "BGP session down");
            } else {
                tracing::debug!(%peer, %error, retry_in = ?wait, "BGP session down");
            }
            last_error = error;
            tokio::select! {
                biased;
                _ = stopped(&mut self.stop) => return,
                _ = sleep(wait) => {}
            }
        }
    }

    /// The longest wait for each step before Established: the hold time we offer.
    fn step_limit(&self) -> Duration {
        match self.peer.hold_time_secs {
            0 => NO_HOLD_LIMIT,
            s => Duration::from_secs(s.into()),
        }
    }

    /// One connection, from connect to close. `Ok` means the speaker stopped; `up` is set
    /// when the session reached Established.
    async fn attempt(&mut self, up: &mut Option<Instant>) -> Result<(), SessionError> {
        let limit = self.step_limit();
        self.status.set_state(PeerState::Connect);
        let stream = tokio::select! {
            biased;
            _ = stopped(&mut self.stop) => return Ok(()),
            r = timeout(limit, connect::connect(&self.peer)) => match r {
                Ok(stream) => stream.map_err(SessionError::Connect)?,
                Err(_) => return Err(SessionError::ConnectTimeout(limit)),
            },
        };
        let mut conn = Conn::new(stream)?;
        let result = self.talk(&mut conn, up).await;
        let last_word = match &result {
            Ok(()) => Some(Notification::cease_shutdown(SHUTDOWN_TEXT)),
            Err(e) => e.notification(),
        };
        if let Some(n) = last_word {
            let _ = conn.send(&n.encode(), LAST_WORD_TIMEOUT).await;
        }
        result
    }

    /// The next message within `wait`; `None` when the speaker stops first.
    async fn next_message(
        &mut self,
        conn: &mut Conn,
        state: PeerState,
        wait: Duration,
    ) -> Result<Option<Message>, SessionError> {
        tokio::select! {
            biased;
            _ = stopped(&mut self.stop) => Ok(None),
            r = timeout(wait, conn.recv()) => match r {
                Ok(m) => m.map(Some),
                Err(_) => Err(SessionError::HoldExpired { state, after: wait }),
            },
        }
    }

    /// OPEN and KEEPALIVE both ways, then the established loop.
    async fn talk(
        &mut self,
        conn: &mut Conn,
        up: &mut Option<Instant>,
    ) -> Result<(), SessionError> {
        let limit = self.step_limit();
        let ours = Open::ours(self.local_asn, self.peer.hold_time_secs, self.router_id);
        conn.send(&ours.encode(), limit).await?;
        self.status.set_state(PeerState::OpenSent);
        let theirs = match self.next_message(conn, PeerState::OpenSent, limit).await? {
            None => return Ok(()),
            Some(Message::Open(open)) => open,
            Some(Message::Notification(n)) => return Err(SessionError::Notified(n)),
            Some(other) => {
                return Err(SessionError::Unexpected {
                    state: PeerState::OpenSent,
                    kind: other.kind(),
                })
            }
        };
        let hold = ours
            .accept(&theirs, self.peer.asn)
            .map_err(SessionError::Open)?;
        conn.send(&wire::keepalive(), limit).await?;
        self.status.set_state(PeerState::OpenConfirm);
        let wait = match hold {
            0 => limit,
            s => Duration::from_secs(s.into()),
        };
        match self
            .next_message(conn, PeerState::OpenConfirm, wait)
            .await?
        {
            None => return Ok(()),
            Some(Message::Keepalive) => {}
            Some(Message::Notification(n)) => return Err(SessionError::Notified(n)),
            Some(other) => {
                return Err(SessionError::Unexpected {
                    state: PeerState::OpenConfirm,
                    kind: other.kind(),
                })
            }
        }
        *up = Some(Instant::now());
        let peering = self.peering(conn.local, &theirs);
        self.established(conn, &peering, hold).await
    }

    fn peering(&self, local: SocketAddr, theirs: &Open) -> Peering {
        let (own4, own6) = match local.ip() {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (None, Some(a)),
        };
        Peering {
            local_asn: self.local_asn,
            ebgp: self.peer.asn != self.local_asn,
            community_asn: self.community_asn,
            next_hop_v4: self.peer.next_hop_v4.or(own4),
            next_hop_v6: self.peer.next_hop_v6.or(own6),
            ipv4: theirs.supports(Family::Ipv4),
            ipv6: theirs.supports(Family::Ipv6),
        }
    }

    /// Established: the whole table and End-of-RIB, then keepalives, the hold timer and every
    /// change of the table, until something ends the session.
    async fn established(
        &mut self,
        conn: &mut Conn,
        peering: &Peering,
        hold: u16,
    ) -> Result<(), SessionError> {
        let peer = self.peer.socket_addr();
        let hold_time = Duration::from_secs(hold.into());
        let write_limit = if hold == 0 { NO_HOLD_LIMIT } else { hold_time };
        let keepalive_every = hold_time / 3;
        self.status.update(|s| {
            s.state = PeerState::Established;
            s.established_since = Some(std::time::Instant::now());
            s.hold_time_secs = Some(hold);
            s.sessions_established += 1;
        });
        tracing::info!(%peer, hold, local = %conn.local, "BGP session established");

        let mut sent = Routes::new();
        let mut changes = sync(&self.routes.borrow_and_update(), &mut sent, peering);
        for family in peering.families() {
            wire::end_of_rib(&mut changes.bytes, family);
            changes.updates += 1;
        }
        self.send_changes(conn, changes, sent.len(), write_limit)
            .await?;

        let mut next_keepalive = Instant::now() + keepalive_every;
        loop {
            let silent_at = conn.last_heard() + hold_time;
            // Messages last: a router that never stops sending must not starve our
            // keepalives and UPDATEs (the hold timer reads `last_heard`, not the queue).
            let event = tokio::select! {
                biased;
                _ = stopped(&mut self.stop) => Event::Stop,
                _ = sleep_until(silent_at), if hold > 0 => Event::Silent,
                _ = sleep_until(next_keepalive), if hold > 0 => Event::KeepaliveDue,
                r = self.routes.changed() => match r {
                    Ok(()) => Event::RoutesChanged,
                    Err(_) => Event::Stop, // the handle is gone
                },
                m = conn.recv() => Event::Message(m),
            };
            match event {
                Event::Stop => return Ok(()),
                Event::Message(m) => match m? {
                    Message::Keepalive | Message::Update => {}
                    Message::Notification(n) => return Err(SessionError::Notified(n)),
                    Message::Open(_) => {
                        return Err(SessionError::Unexpected {
                            state: PeerState::Established,
                            kind: MessageType::Open,
                        })
                    }
                },
                // The reader may have heard something since `silent_at` was computed.
                Event::Silent if conn.last_heard() + hold_time <= Instant::now() => {
                    return Err(SessionError::HoldExpired {
                        state: PeerState::Established,
                        after: hold_time,
                    });
                }
                Event::Silent => {}
                Event::KeepaliveDue => {
                    conn.send(&wire::keepalive(), write_limit).await?;
                    next_keepalive = Instant::now() + keepalive_every;
                }
                Event::RoutesChanged => {
                    let changes = sync(&self.routes.borrow_and_update(), &mut sent, peering);
                    self.send_changes(conn, changes, sent.len(), write_limit)
                        .await?;
                }
            }
        }
    }

    /// Writes one step's UPDATEs and records it in the status.
    async fn send_changes(
        &self,
        conn: &mut Conn,
        changes: Changes,
        routes_sent: usize,
        write_limit: Duration,
    ) -> Result<(), SessionError> {
        if !changes.bytes.is_empty() {
            conn.send(&changes.bytes, write_limit).await?;
        }
        let peer = self.peer.socket_addr();
        self.status.update(|s| {
            // Once per kind, not once per route: a thousand VIPs are one misconfiguration.
            let kinds = |w: &[Withheld]| w.iter().map(|w| (w.family, w.reason)).collect::<Vec<_>>();
            if kinds(&s.withheld) != kinds(&changes.withheld) {
                for w in &changes.withheld {
                    tracing::warn!(%peer, "{w}");
                }
            }
            s.updates_sent += changes.updates as u64;
            s.routes_sent = routes_sent;
            s.withheld = changes.withheld;
        });
        tracing::debug!(%peer, updates = changes.updates, routes_sent, "sent");
        Ok(())
    }
}
