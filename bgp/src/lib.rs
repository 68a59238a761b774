//! A minimal announce-only BGP speaker, for Ballast's agent.
//!
//! The agent announces each VIP it holds as a host route (/32 or /128) to every configured
//! router, with MED = 4294967294 − epoch, so that when two nodes announce one address the
//! router prefers the newer owner within one UPDATE instead of after a hold time. The speaker
//! lives inside the agent's process: when the agent dies the kernel closes the sessions and the
//! routers drop its routes at once, and when it is paused its keepalives stop and the routes go
//! at the hold time. No Graceful Restart is ever offered, so no router keeps a dead node's
//! routes. docs/bgp-research.md holds the measurements behind these choices; README.md the
//! router policy this needs and what the speaker does not do.
//!
//! - [`Speaker::start`] spawns one task per peer (`session`) on the current Tokio runtime.
//! - [`Speaker::announce`] and [`Speaker::withdraw`] change the desired table (`table`) and
//!   wake the sessions; each sends its peer the difference. They never block on the network.
//! - [`Speaker::peers`] reports each session's state (`status`) for `status` and metrics.
//! - [`wire`] is the codec; `backoff` paces reconnections.

mod backoff;
mod config;
mod session;
mod status;
mod table;
pub mod wire;

use std::collections::BTreeMap;
use std::net::IpAddr;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    ConfigError, PeerConfig, SpeakerConfig, DEFAULT_HOLD_TIME_SECS, DEFAULT_PORT, MAX_PASSWORD_LEN,
};
pub use status::{PeerState, PeerStatus, Withheld, WithholdReason};
pub use table::{med_for_epoch, MAX_EPOCH};
pub use wire::Family;

use session::Session;
use status::StatusCell;
use table::Routes;

/// How long [`Speaker::shutdown`] waits for the sessions' last words.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why an address cannot be announced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The epoch has no MED: past [`MAX_EPOCH`], wrapping would let an old owner win and
    /// saturating would tie two owners. Move the address to a new VIP name.
    #[error("{addr}: epoch {epoch} is past {MAX_EPOCH}, the largest with a MED")]
    EpochTooLarge { addr: IpAddr, epoch: u64 },
    /// Unspecified, multicast or broadcast: no router would route to it.
    #[error("{0} is not a unicast address")]
    NotUnicast(IpAddr),
}

/// A running speaker. Dropping it ends the sessions as [`Speaker::shutdown`] does, without
/// waiting for them.
#[derive(Debug)]
pub struct Speaker {
    routes: watch::Sender<Routes>,
    stop: watch::Sender<bool>,
    peers: Vec<StatusCell>,
    tasks: Vec<JoinHandle<()>>,
}

impl Speaker {
    /// Checks the config and starts a session task per peer on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(config: SpeakerConfig) -> Result<Speaker, ConfigError> {
        config.validate()?;
        let (routes, routes_rx) = watch::channel(Routes::new());
        let (stop, stop_rx) = watch::channel(false);
        let mut peers = Vec::new();
        let mut tasks = Vec::new();
        for peer in config.peers {
            let status = StatusCell::new(peer.socket_addr(), peer.asn);
            peers.push(status.clone());
            let session = Session {
                peer,
                local_asn: config.local_asn,
                router_id: config.router_id,
                community_asn: config.community_asn,
                routes: routes_rx.clone(),
                stop: stop_rx.clone(),
                status,
            };
            tasks.push(tokio::spawn(session.run()));
        }
        Ok(Speaker {
            routes,
            stop,
            peers,
            tasks,
        })
    }

    /// Announces `addr` as a host route with `epoch`'s MED and community, replacing any
    /// announcement of it with another epoch. Returns at once; sessions that are down send it
    /// when they come up.
    pub fn announce(&self, addr: IpAddr, epoch: u64) -> Result<(), AnnounceError> {
        if med_for_epoch(epoch).is_none() {
            return Err(AnnounceError::EpochTooLarge { addr, epoch });
        }
        let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
        if addr.is_unspecified() || addr.is_multicast() || broadcast {
            return Err(AnnounceError::NotUnicast(addr));
        }
        self.routes
            .send_if_modified(|t| t.insert(addr, epoch) != Some(epoch));
        Ok(())
    }

    /// Withdraws `addr`; returns whether it was announced. Returns at once.
    pub fn withdraw(&self, addr: IpAddr) -> bool {
        self.routes.send_if_modified(|t| t.remove(&addr).is_some())
    }

    /// Every announced address and its epoch: what each established peer holds, but for
    /// routes [`PeerStatus::withheld`] names and changes not yet written.
    pub fn announced(&self) -> BTreeMap<IpAddr, u64> {
        self.routes.borrow().clone()
    }

    /// Each peer's session, in the order of the config.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers.iter().map(StatusCell::get).collect()
    }

    /// Ends every session with a Cease NOTIFICATION (Administrative Shutdown) and waits for the
    /// tasks to finish, at most [`SHUTDOWN_GRACE`]: a session stuck writing to a router that
    /// reads nothing is then cut off, its connection closed without the Cease.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}
