//! What each peer's session is doing, for `status` output and metrics. Sessions write it;
//! [`crate::Speaker::peers`] copies it out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::wire::Family;

/// The session states of RFC 4271 §8.2.2 that an active-only speaker passes through
/// (it never listens, so it has no Active state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Not connected: waiting out the backoff after a failure, or stopped.
    Idle,
    /// Opening the TCP connection.
    Connect,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, our KEEPALIVE sent; waiting for the peer's.
    OpenConfirm,
    /// Routes flow.
    Established,
}

/// Why routes of one family are not sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithholdReason {
    /// The peer's OPEN did not offer the family's multiprotocol capability.
    NotNegotiated,
    /// The session runs over the other family and no next hop of this family is configured
    /// (`PeerConfig::next_hop_v4` / `next_hop_v6`).
    NoNextHop,
}

/// Routes of one family that are announced but not sent to this peer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    pub family: Family,
    pub routes: usize,
    pub reason: WithholdReason,
}

impl std::fmt::Display for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.reason {
            WithholdReason::NotNegotiated => "the peer did not offer the family in its OPEN",
            WithholdReason::NoNextHop => "no next hop of that family is configured for the peer",
        };
        write!(
            f,
            "{} {} route(s) not sent: {why}",
            self.routes, self.family
        )
    }
}

/// One peer's session, as of the moment it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: SocketAddr,
    pub asn: u32,
    pub state: PeerState,
    /// Why the last session ended or the last attempt failed; kept after a later success.
    pub last_error: Option<String>,
    /// When the current session reached Established.
    pub established_since: Option<Instant>,
    /// The negotiated hold time of the current session (0: no keepalives).
    pub hold_time_secs: Option<u16>,
    /// How many sessions reached Established since the speaker started (a flap counter).
    pub sessions_established: u64,
    /// UPDATE messages sent since the speaker started, over all sessions.
    pub updates_sent: u64,
    /// Routes the peer holds from the current session.
    pub routes_sent: usize,
    /// Announced routes this session cannot send, and why.
    pub withheld: Vec<Withheld>,
}

/// A peer's status, shared between its session (writer) and the speaker's handle (reader).
#[derive(Debug, Clone)]
pub(crate) struct StatusCell(Arc<Mutex<PeerStatus>>);

impl StatusCell {
    pub(crate) fn new(address: SocketAddr, asn: u32) -> StatusCell {
        StatusCell(Arc::new(Mutex::new(PeerStatus {
            address,
            asn,
            state: PeerState::Idle,
            last_error: None,
            established_since: None,
            hold_time_secs: None,
            sessions_established: 0,
            updates_sent: 0,
            routes_sent: 0,
            withheld: Vec::new(),
        })))
    }

    pub(crate) fn get(&self) -> PeerStatus {
        self.lock().clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut PeerStatus)) {
        f(&mut self.lock());
    }

    pub(crate) fn set_state(&self, state: PeerState) {
        self.update(|s| s.state = state);
    }

    /// The session ended: back to Idle, with nothing held by the peer any more (no Graceful
    /// Restart, so the peer drops our routes with the session).
    pub(crate) fn down(&self, error: Option<String>) {
        self.update(|s| {
            s.state = PeerState::Idle;
            if error.is_some() {
                s.last_error = error;
            }
            s.established_since = None;
            s.hold_time_secs = None;
            s.routes_sent = 0;
            s.withheld.clear();
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerStatus> {
        // A panic while holding the lock leaves plain data behind: still worth reading.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
