//! The speaker's settings, and the combinations [`SpeakerConfig::validate`] refuses before
//! any session starts.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::AS_TRANS;

/// The BGP port.
pub const DEFAULT_PORT: u16 = 179;
/// Offered hold time. The router's own is usually lower (3 s in docs/bgp-research.md) and the
/// smaller one wins; 9 s bounds how long a paused agent's routes stay at a router that offers
/// more.
pub const DEFAULT_HOLD_TIME_SECS: u16 = 9;
/// Longest TCP-MD5 key (Linux `TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_LEN: usize = 80;

/// One speaker: this node's identity and the routers it announces to.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// This node's AS number. Equal to a peer's: iBGP (empty AS_PATH, LOCAL_PREF sent).
    pub local_asn: u32,
    /// The BGP identifier, unique among the router's peers.
    pub router_id: Ipv4Addr,
    /// Global administrator of the large community (asn, 1, epoch) on every route: usually
    /// the router's AS, whose policy may read it.
    pub community_asn: u32,
    pub peers: Vec<PeerConfig>,
}

/// One router.
#[derive(Clone)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub port: u16,
    /// The AS the router must say it is in its OPEN.
    pub asn: u32,
    /// TCP-MD5 key (RFC 2385), 1 to 80 octets.
    pub password: Option<String>,
    /// Offered hold time: 0 (no keepalives, no hold timer) or at least 3 s.
    pub hold_time_secs: u16,
    /// Source address of the TCP connection; the kernel's choice when `None`.
    pub source: Option<IpAddr>,
    /// NEXT_HOP of IPv4 routes; the session's own address when it runs over IPv4. Needed to
    /// send IPv4 routes over an IPv6 session.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop of IPv6 routes; the session's own address when it runs over IPv6. Needed to
    /// send IPv6 routes over an IPv4 session.
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl PeerConfig {
    /// A peer at `address`, port 179, in AS `asn`, with no password and the default hold time.
    pub fn new(address: IpAddr, asn: u32) -> PeerConfig {
        PeerConfig {
            address,
            port: DEFAULT_PORT,
            asn,
            password: None,
            hold_time_secs: DEFAULT_HOLD_TIME_SECS,
            source: None,
            next_hop_v4: None,
            next_hop_v6: None,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// The password stays out of logs.
impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("asn", &self.asn)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("hold_time_secs", &self.hold_time_secs)
            .field("source", &self.source)
            .field("next_hop_v4", &self.next_hop_v4)
            .field("next_hop_v6", &self.next_hop_v6)
            .finish()
    }
}

/// A setting, or a combination of settings, that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("local AS {0} is not an AS a speaker can be in (0 and 23456, AS_TRANS, are reserved)")]
    LocalAsn(u32),
    #[error("the router id must not be 0.0.0.0")]
    RouterId,
    #[error("peer {peer}: AS {asn} is reserved (0 and 23456, AS_TRANS)")]
    PeerAsn { peer: SocketAddr, asn: u32 },
    #[error("peer {peer}: port 0")]
    Port { peer: SocketAddr },
    #[error("peer {peer}: hold time {secs} s (RFC 4271: 0 or at least 3)")]
    HoldTime { peer: SocketAddr, secs: u16 },
    #[error("peer {peer}: a TCP-MD5 password must be 1 to {MAX_PASSWORD_LEN} octets, not {len}")]
    Password { peer: SocketAddr, len: usize },
    #[error("peer {peer}: source address {address} is not of the peer's family")]
    SourceFamily { peer: SocketAddr, address: IpAddr },
    #[error("peer {peer}: not a unicast address")]
    PeerAddress { peer: SocketAddr },
    #[error("peer {0} is configured twice")]
    DuplicatePeer(SocketAddr),
}

impl SpeakerConfig {
    /// Refuses what could never establish a session or would send nonsense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let reserved = |asn: u32| asn == 0 || asn == u32::from(AS_TRANS);
        if reserved(self.local_asn) {
            return Err(ConfigError::LocalAsn(self.local_asn));
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        let mut seen = HashSet::new();
        for p in &self.peers {
            let peer = p.socket_addr();
            if !seen.insert(peer) {
                return Err(ConfigError::DuplicatePeer(peer));
            }
            if p.address.is_unspecified() || p.address.is_multicast() {
                return Err(ConfigError::PeerAddress { peer });
            }
            if reserved(p.asn) {
                return Err(ConfigError::PeerAsn { peer, asn: p.asn });
            }
            if p.port == 0 {
                return Err(ConfigError::Port { peer });
            }
            if matches!(p.hold_time_secs, 1 | 2) {
                return Err(ConfigError::HoldTime {
                    peer,
                    secs: p.hold_time_secs,
                });
            }
            if let Some(len) = p.password.as_ref().map(String::len) {
                if !(1..=MAX_PASSWORD_LEN).contains(&len) {
                    return Err(ConfigError::Password { peer, len });
                }
            }
            if let Some(address) = p.source.filter(|s| s.is_ipv4() != p.address.is_ipv4()) {
                return Err(ConfigError::SourceFamily { peer, address });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SpeakerConfig {
        SpeakerConfig {
            local_asn: 65001,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            community_asn: 65000,
            peers: vec![PeerConfig::new("10.0.0.1".parse().unwrap(), 65000)],
        }
    }

    /// A change to the plain config.
    type Change = fn(&mut SpeakerConfig);

    #[test]
    fn a_plain_config_is_valid_and_each_bad_setting_is_named() {
        assert_eq!(config().validate(), Ok(()));
        let peer: SocketAddr = "10.0.0.1:179".parse().unwrap();
        let cases: Vec<(Change, ConfigError)> = vec![
            (|c| c.local_asn = 23456, ConfigError::LocalAsn(23456)),
            (|c| c.local_asn = 0, ConfigError::LocalAsn(0)),
            (
                |c| c.router_id = Ipv4Addr::UNSPECIFIED,
                ConfigError::RouterId,
            ),
            (
                |c| c.peers[0].asn = 0,
                ConfigError::PeerAsn { peer, asn: 0 },
            ),
            (
                |c| c.peers[0].hold_time_secs = 2,
                ConfigError::HoldTime { peer, secs: 2 },
            ),
            (
                |c| c.peers[0].password = Some(String::new()),
                ConfigError::Password { peer, len: 0 },
            ),
            (
                |c| c.peers[0].password = Some("x".repeat(81)),
                ConfigError::Password { peer, len: 81 },
            ),
            (
                |c| c.peers[0].source = Some("fd0a::1".parse().unwrap()),
                ConfigError::SourceFamily {
                    peer,
                    address: "fd0a::1".parse().unwrap(),
                },
            ),
            (
                |c| c.peers.push(c.peers[0].clone()),
                ConfigError::DuplicatePeer(peer),
            ),
        ];
        for (change, want) in cases {
            let mut c = config();
            change(&mut c);
            assert_eq!(c.validate(), Err(want));
        }
    }

    #[test]
    fn hold_time_zero_and_an_80_octet_password_are_allowed() {
        let mut c = config();
        c.peers[0].hold_time_secs = 0;
        c.peers[0].password = Some("k".repeat(80));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn the_password_is_never_printed() {
        let mut c = config();
        c.peers[0].password = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
