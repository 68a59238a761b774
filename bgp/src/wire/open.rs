//! OPEN (RFC 4271 §4.2) with capabilities (RFC 5492): what this speaker offers, what a peer
//! offered, and whether the two can talk.
//!
//! This speaker offers exactly three capabilities: multiprotocol IPv4 unicast and IPv6
//! unicast (RFC 4760) and four-octet AS numbers (RFC 6793). Never Graceful Restart (RFC 4724):
//! a router that knew it would keep a dead node's routes after the session ends, which is the
//! one thing the epoch MED cannot repair (docs/bgp-research.md §5).

use std::net::Ipv4Addr;

use super::{message, Family, MessageType, Notification, SAFI_UNICAST, VERSION};

/// The two-octet stand-in for a four-octet AS number (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;
/// Optional parameter type: capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// Capability codes.
const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_FOUR_OCTET_AS: u8 = 65;

/// An OPEN message's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The two-octet "My Autonomous System" field: [`AS_TRANS`] when the number needs four.
    pub my_as: u16,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    /// The four-octet AS capability's number, when it was offered.
    pub as4: Option<u32>,
    /// The (AFI, SAFI) of each multiprotocol capability, in the order offered.
    pub multiprotocol: Vec<(u16, u8)>,
}

/// Why a peer's OPEN is refused; each maps to the NOTIFICATION that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("BGP version {0} (only 4 is spoken)")]
    UnsupportedVersion(u8),
    #[error("{0}")]
    Malformed(&'static str),
    #[error("optional parameter type {0} (only capabilities are known)")]
    UnsupportedParameter(u8),
    #[error("the peer is AS {got}, configured as AS {expected}")]
    BadPeerAs { expected: u32, got: u32 },
    #[error("bad BGP identifier {0}")]
    BadRouterId(Ipv4Addr),
    #[error("hold time {0} s (RFC 4271: 0 or at least 3)")]
    UnacceptableHoldTime(u16),
    #[error(
        "the peer does not offer four-octet AS numbers (RFC 6793), which this speaker requires"
    )]
    NoFourOctetAs,
}

impl OpenError {
    /// The NOTIFICATION (code 2, OPEN Message Error) that answers this error.
    pub fn notification(&self) -> Notification {
        let (subcode, data) = match self {
            // Data: the largest version we speak, in two octets.
            OpenError::UnsupportedVersion(_) => (1, vec![0, VERSION]),
            OpenError::Malformed(_) => (0, Vec::new()),
            OpenError::BadPeerAs { .. } => (2, Vec::new()),
            OpenError::BadRouterId(_) => (3, Vec::new()),
            OpenError::UnsupportedParameter(_) => (4, Vec::new()),
            OpenError::UnacceptableHoldTime(_) => (6, Vec::new()),
            // RFC 5492 §3: the capability we cannot do without.
            OpenError::NoFourOctetAs => (7, vec![CAP_FOUR_OCTET_AS, 4, 0, 0, 0, 0]),
        };
        Notification::new(2, subcode, data)
    }
}

impl Open {
    /// This speaker's OPEN: version 4, both unicast families, the four-octet AS capability,
    /// and `AS_TRANS` in the two-octet field when `asn` needs four octets.
    pub fn ours(asn: u32, hold_time: u16, router_id: Ipv4Addr) -> Open {
        Open {
            version: VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            router_id,
            as4: Some(asn),
            multiprotocol: vec![
                (Family::Ipv4.afi(), SAFI_UNICAST),
                (Family::Ipv6.afi(), SAFI_UNICAST),
            ],
        }
    }

    /// The sender's AS number: the four-octet capability's, else the two-octet field.
    pub fn asn(&self) -> u32 {
        self.as4.unwrap_or(u32::from(self.my_as))
    }

    /// Whether the sender takes routes of `family`. A sender without any multiprotocol
    /// capability speaks IPv4 unicast only (RFC 4760 §1).
    pub fn supports(&self, family: Family) -> bool {
        if self.multiprotocol.is_empty() {
            return family == Family::Ipv4;
        }
        self.multiprotocol.contains(&(family.afi(), SAFI_UNICAST))
    }

    /// Checks a peer's OPEN against this one (ours) and the AS the peer is configured with,
    /// and returns the negotiated hold time: the smaller of the two, 0 meaning no keepalives
    /// and no hold timer (RFC 4271 §4.2).
    pub fn accept(&self, theirs: &Open, peer_asn: u32) -> Result<u16, OpenError> {
        if theirs.as4.is_none() {
            return Err(OpenError::NoFourOctetAs);
        }
        if theirs.asn() != peer_asn {
            return Err(OpenError::BadPeerAs {
                expected: peer_asn,
                got: theirs.asn(),
            });
        }
        // RFC 6286 §2.2: zero is never an identifier; equal ones are refused inside an AS.
        let ibgp = self.asn() == theirs.asn();
        if theirs.router_id.is_unspecified() || (ibgp && theirs.router_id == self.router_id) {
            return Err(OpenError::BadRouterId(theirs.router_id));
        }
        if matches!(theirs.hold_time, 1 | 2) {
            return Err(OpenError::UnacceptableHoldTime(theirs.hold_time));
        }
        Ok(self.hold_time.min(theirs.hold_time))
    }

    /// The whole message, header included. All capabilities go in one optional parameter.
    pub fn encode(&self) -> Vec<u8> {
        let mut caps = Vec::new();
        for &(afi, safi) in &self.multiprotocol {
            caps.extend_from_slice(&[CAP_MULTIPROTOCOL, 4]);
            caps.extend_from_slice(&afi.to_be_bytes());
            caps.extend_from_slice(&[0, safi]);
        }
        if let Some(asn) = self.as4 {
            caps.extend_from_slice(&[CAP_FOUR_OCTET_AS, 4]);
            caps.extend_from_slice(&asn.to_be_bytes());
        }
        let mut body = vec![self.version];
        body.extend_from_slice(&self.my_as.to_be_bytes());
        body.extend_from_slice(&self.hold_time.to_be_bytes());
        body.extend_from_slice(&self.router_id.octets());
        if caps.is_empty() {
            body.push(0);
        } else {
            body.push(caps.len() as u8 + 2);
            body.extend_from_slice(&[PARAM_CAPABILITIES, caps.len() as u8]);
            body.extend_from_slice(&caps);
        }
        message(MessageType::Open, &body)
    }

    /// Reads an OPEN body (the header check guarantees at least 10 octets).
    pub(super) fn decode(body: &[u8]) -> Result<Open, OpenError> {
        if body[0] != VERSION {
            return Err(OpenError::UnsupportedVersion(body[0]));
        }
        let mut open = Open {
            version: body[0],
            my_as: u16::from_be_bytes([body[1], body[2]]),
            hold_time: u16::from_be_bytes([body[3], body[4]]),
            router_id: Ipv4Addr::new(body[5], body[6], body[7], body[8]),
            as4: None,
            multiprotocol: Vec::new(),
        };
        for (kind, value) in parameters(body)? {
            if kind != PARAM_CAPABILITIES {
                return Err(OpenError::UnsupportedParameter(kind));
            }
            open.read_capabilities(value)?;
        }
        Ok(open)
    }

    fn read_capabilities(&mut self, mut caps: &[u8]) -> Result<(), OpenError> {
        while let [code, len, rest @ ..] = caps {
            let value = rest
                .get(..usize::from(*len))
                .ok_or(OpenError::Malformed("a capability runs past its parameter"))?;
            match (*code, value) {
                (CAP_MULTIPROTOCOL, [a, b, _, safi]) => {
                    self.multiprotocol
                        .push((u16::from_be_bytes([*a, *b]), *safi));
                }
                (CAP_FOUR_OCTET_AS, [a, b, c, d]) => {
                    self.as4 = Some(u32::from_be_bytes([*a, *b, *c, *d]));
                }
                (CAP_MULTIPROTOCOL | CAP_FOUR_OCTET_AS, _) => {
                    return Err(OpenError::Malformed("a capability of the wrong length"));
                }
                _ => {} // capabilities this speaker does not use
            }
            caps = &rest[usize::from(*len)..];
        }
        if caps.is_empty() {
            Ok(())
        } else {
            Err(OpenError::Malformed("a capability cut short"))
        }
    }
}

/// The optional parameters as (type, value), in the classic form or RFC 9072's extended one
/// (length octet 255 and a first type of 255, then two-octet lengths).
fn parameters(body: &[u8]) -> Result<Vec<(u8, &[u8])>, OpenError> {
    let extended = body[9] == 255 && body.get(10) == Some(&255);
    let (mut params, declared, head) = if extended {
        let len = body
            .get(11..13)
            .ok_or(OpenError::Malformed("extended parameters length cut short"))?;
        (
            &body[13..],
            usize::from(u16::from_be_bytes([len[0], len[1]])),
            3,
        )
    } else {
        (&body[10..], usize::from(body[9]), 2)
    };
    if params.len() != declared {
        return Err(OpenError::Malformed(
            "optional parameters length disagrees with the message length",
        ));
    }
    let mut out = Vec::new();
    while !params.is_empty() {
        let header = params
            .get(..head)
            .ok_or(OpenError::Malformed("an optional parameter cut short"))?;
        let len = if extended {
            usize::from(u16::from_be_bytes([header[1], header[2]]))
        } else {
            usize::from(header[1])
        };
        let value = params.get(head..head + len).ok_or(OpenError::Malformed(
            "an optional parameter runs past the message",
        ))?;
        out.push((header[0], value));
        params = &params[head + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Message};

    fn open_from(body: &[u8]) -> Result<Open, OpenError> {
        Open::decode(body)
    }

    #[test]
    fn our_open_has_both_families_and_the_four_octet_as_and_nothing_else() {
        let bytes = Open::ours(65001, 9, Ipv4Addr::new(10, 0, 0, 1)).encode();
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0xff; 16][..],
            &[0x00, 49, 1],                   // length 19 + 30, type OPEN
            &[4],                             // version
            &[0xfd, 0xe9],                    // my AS 65001
            &[0x00, 9],                       // hold time 9 s
            &[10, 0, 0, 1],                   // BGP identifier
            &[20],                            // optional parameters length
            &[2, 18],                         // parameter: capabilities, 18 octets
            &[1, 4, 0x00, 0x01, 0, 1],        // multiprotocol IPv4 unicast
            &[1, 4, 0x00, 0x02, 0, 1],        // multiprotocol IPv6 unicast
            &[65, 4, 0x00, 0x00, 0xfd, 0xe9], // four-octet AS 65001
        ]
        .concat();
        assert_eq!(bytes, want);
        // No Graceful Restart (64), ever; nor anything else.
        let caps = &bytes[31..];
        assert!(caps.chunks(6).all(|c| c[0] == 1 || c[0] == 65));
    }

    #[test]
    fn a_four_octet_asn_puts_as_trans_in_the_two_octet_field() {
        let open = Open::ours(4_200_000_000, 3, Ipv4Addr::new(10, 0, 0, 1));
        let bytes = open.encode();
        assert_eq!(&bytes[20..22], &[0x5b, 0xa0]); // 23456
        assert_eq!(&bytes[45..49], &4_200_000_000u32.to_be_bytes());
        let Ok(Some((Message::Open(back), 49))) = decode(&bytes) else {
            panic!("does not decode");
        };
        assert_eq!(back, open);
        assert_eq!(back.asn(), 4_200_000_000);
    }

    #[test]
    fn a_bird_style_open_with_one_parameter_per_capability_is_read() {
        #[rustfmt::skip]
        let body: Vec<u8> = [
            &[4, 0xfd, 0xe8, 0, 3, 10, 213, 240, 1][..],
            &[26],
            &[2, 6, 1, 4, 0, 1, 0, 1],        // IPv4 unicast
            &[2, 2, 2, 0],                    // route refresh, ignored
            &[2, 6, 65, 4, 0, 0, 0xfd, 0xe8], // four-octet AS 65000
            &[2, 4, 70, 0, 71, 0],            // two capabilities this speaker ignores
        ]
        .concat();
        let open = open_from(&body).unwrap();
        assert_eq!(open.asn(), 65000);
        assert_eq!(open.hold_time, 3);
        assert!(open.supports(Family::Ipv4));
        assert!(!open.supports(Family::Ipv6));
    }

    #[test]
    fn an_open_without_multiprotocol_capabilities_means_ipv4_only() {
        let open = open_from(&[4, 0, 1, 0, 90, 1, 2, 3, 4, 0]).unwrap();
        assert!(open.supports(Family::Ipv4));
        assert!(!open.supports(Family::Ipv6));
        assert_eq!(open.as4, None);
    }

    #[test]
    fn extended_optional_parameters_are_read() {
        #[rustfmt::skip]
        let body: Vec<u8> = [
            &[4, 0xfd, 0xe8, 0, 3, 10, 213, 240, 1][..],
            &[255, 255, 0, 9],                   // RFC 9072: 9 octets of parameters
            &[2, 0, 6, 65, 4, 0, 0, 0xfd, 0xe8], // capabilities, two-octet length
        ]
        .concat();
        assert_eq!(open_from(&body).unwrap().as4, Some(65000));
    }

    #[test]
    fn malformed_opens_are_refused() {
        let head = [4, 0xfd, 0xe8, 0, 3, 10, 213, 240, 1];
        let cases: [&[u8]; 5] = [
            &[5],                       // parameters length says 5, none follow
            &[4, 2, 2, 65, 4],          // capability runs past its parameter
            &[4, 2, 4, 65, 2, 0, 1],    // four-octet AS of two octets
            &[3, 2, 1, 1],              // capability cut short
            &[4, 2, 3, 65, 4, 0, 0xaa], // parameter runs past the message
        ];
        for tail in cases {
            let body = [&head[..], tail].concat();
            assert!(
                matches!(open_from(&body), Err(OpenError::Malformed(_))),
                "{tail:?}: {:?}",
                open_from(&body)
            );
        }
        let auth = [&head[..], &[3, 1, 1, 0]].concat();
        assert_eq!(open_from(&auth), Err(OpenError::UnsupportedParameter(1)));
        let v3 = [&[3][..], &head[1..], &[0]].concat();
        assert_eq!(open_from(&v3), Err(OpenError::UnsupportedVersion(3)));
        assert_eq!(
            OpenError::UnsupportedVersion(3).notification(),
            Notification::new(2, 1, vec![0, 4])
        );
    }

    #[test]
    fn the_hold_time_is_the_smaller_and_one_or_two_seconds_are_refused() {
        let ours = Open::ours(65001, 9, Ipv4Addr::new(10, 0, 0, 2));
        let theirs = |hold| Open::ours(65000, hold, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ours.accept(&theirs(3), 65000), Ok(3));
        assert_eq!(ours.accept(&theirs(90), 65000), Ok(9));
        assert_eq!(ours.accept(&theirs(0), 65000), Ok(0));
        for hold in [1, 2] {
            let err = ours.accept(&theirs(hold), 65000).unwrap_err();
            assert_eq!(err, OpenError::UnacceptableHoldTime(hold));
            assert_eq!(
                (err.notification().code, err.notification().subcode),
                (2, 6)
            );
        }
    }

    #[test]
    fn a_peer_of_another_as_is_refused_with_bad_peer_as() {
        let ours = Open::ours(65001, 9, Ipv4Addr::new(10, 0, 0, 2));
        let theirs = Open::ours(65009, 3, Ipv4Addr::new(10, 0, 0, 1));
        let err = ours.accept(&theirs, 65000).unwrap_err();
        assert_eq!(
            err,
            OpenError::BadPeerAs {
                expected: 65000,
                got: 65009
            }
        );
        assert_eq!(err.notification(), Notification::new(2, 2, vec![]));
    }

    #[test]
    fn a_peer_without_four_octet_as_or_with_a_bad_identifier_is_refused() {
        let ours = Open::ours(65001, 9, Ipv4Addr::new(10, 0, 0, 2));
        let mut old = Open::ours(65000, 3, Ipv4Addr::new(10, 0, 0, 1));
        old.as4 = None;
        assert_eq!(ours.accept(&old, 65000), Err(OpenError::NoFourOctetAs));
        assert_eq!(
            OpenError::NoFourOctetAs.notification(),
            Notification::new(2, 7, vec![65, 4, 0, 0, 0, 0])
        );
        let zero = Open::ours(65000, 3, Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            ours.accept(&zero, 65000),
            Err(OpenError::BadRouterId(Ipv4Addr::UNSPECIFIED))
        );
        // Inside one AS the identifiers must differ; across ASes they may be equal.
        let twin = Open::ours(65001, 3, Ipv4Addr::new(10, 0, 0, 2));
        assert!(matches!(
            ours.accept(&twin, 65001),
            Err(OpenError::BadRouterId(_))
        ));
        let ebgp_twin = Open::ours(65000, 3, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ours.accept(&ebgp_twin, 65000), Ok(3));
    }
}
