//! UPDATE (RFC 4271 §4.3) for host routes: IPv4 /32 in the classic fields, IPv6 /128 in
//! MP_REACH_NLRI and MP_UNREACH_NLRI (RFC 4760), and the End-of-RIB marker (RFC 4724 §2).
//!
//! Routes that share path attributes travel together, as many as fit in one message of at
//! most 4096 octets (about 800 IPv4 or 230 IPv6 routes), so a dead node's thousand VIPs move
//! in a handful of messages instead of a thousand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{push_header, Family, MessageType, HEADER_LEN, MAX_MESSAGE_LEN, SAFI_UNICAST};

/// Attribute flags (RFC 4271 §4.3).
const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const EXTENDED_LENGTH: u8 = 0x10;
/// Attribute type codes.
const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MULTI_EXIT_DISC: u8 = 4;
const LOCAL_PREF: u8 = 5;
const MP_REACH_NLRI: u8 = 14;
const MP_UNREACH_NLRI: u8 = 15;
const LARGE_COMMUNITY: u8 = 32;
/// ORIGIN IGP: every node must send the same ORIGIN, or it decides before MED does.
const ORIGIN_IGP: u8 = 0;
const AS_SEQUENCE: u8 = 2;
/// Withdrawn routes length and total path attribute length.
const UPDATE_FIXED: usize = HEADER_LEN + 2 + 2;

/// The path attributes of one announcement. Every route of one epoch shares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathAttributes {
    /// Our AS number on eBGP (an AS_PATH of one AS_SEQUENCE holding it); `None` on iBGP (an
    /// empty AS_PATH). Four octets per number: the peer must offer RFC 6793.
    pub as_path: Option<u32>,
    pub med: u32,
    /// Sent on iBGP only (RFC 4271 §5.1.5).
    pub local_pref: Option<u32>,
    /// (global administrator, local data 1, local data 2), RFC 8092.
    pub large_community: [u32; 3],
}

impl PathAttributes {
    /// ORIGIN, AS_PATH, [NEXT_HOP], MULTI_EXIT_DISC, [LOCAL_PREF], LARGE_COMMUNITY, in the
    /// ascending order RFC 4271 §5 asks for.
    fn encode(&self, next_hop: Option<Ipv4Addr>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        push_attribute(&mut out, TRANSITIVE, ORIGIN, &[ORIGIN_IGP]);
        let mut path = Vec::new();
        if let Some(asn) = self.as_path {
            path.extend_from_slice(&[AS_SEQUENCE, 1]);
            path.extend_from_slice(&asn.to_be_bytes());
        }
        push_attribute(&mut out, TRANSITIVE, AS_PATH, &path);
        if let Some(hop) = next_hop {
            push_attribute(&mut out, TRANSITIVE, NEXT_HOP, &hop.octets());
        }
        push_attribute(&mut out, OPTIONAL, MULTI_EXIT_DISC, &self.med.to_be_bytes());
        if let Some(pref) = self.local_pref {
            push_attribute(&mut out, TRANSITIVE, LOCAL_PREF, &pref.to_be_bytes());
        }
        let community: Vec<u8> = self
            .large_community
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        push_attribute(&mut out, OPTIONAL | TRANSITIVE, LARGE_COMMUNITY, &community);
        out
    }
}

/// Appends one attribute, with a two-octet length only when the value needs it.
fn push_attribute(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.extend_from_slice(&[flags | EXTENDED_LENGTH, code]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, code, value.len() as u8]);
    }
    out.extend_from_slice(value);
}

/// A host route as NLRI: the prefix length (32 or 128), then every octet.
fn push_host(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            out.push(32);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(128);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// Octets one host route takes as NLRI.
fn host_len(family: Family) -> usize {
    match family {
        Family::Ipv4 => 5,
        Family::Ipv6 => 17,
    }
}

/// Appends one UPDATE: withdrawn routes, path attributes, NLRI.
fn push_update(out: &mut Vec<u8>, withdrawn: &[u8], attributes: &[u8], nlri: &[u8]) {
    push_header(
        out,
        MessageType::Update,
        4 + withdrawn.len() + attributes.len() + nlri.len(),
    );
    out.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    out.extend_from_slice(withdrawn);
    out.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    out.extend_from_slice(attributes);
    out.extend_from_slice(nlri);
}

/// MP_REACH_NLRI or MP_UNREACH_NLRI for IPv6 unicast: AFI 2, SAFI 1, [next hop], routes.
fn push_mp(out: &mut Vec<u8>, next_hop: Option<Ipv6Addr>, routes: &[Ipv6Addr]) {
    let mut value = Vec::with_capacity(21 + routes.len() * 17);
    value.extend_from_slice(&Family::Ipv6.afi().to_be_bytes());
    value.push(SAFI_UNICAST);
    if let Some(hop) = next_hop {
        value.push(16);
        value.extend_from_slice(&hop.octets());
        value.push(0); // reserved
    }
    for r in routes {
        push_host(&mut value, IpAddr::V6(*r));
    }
    let code = if next_hop.is_some() {
        MP_REACH_NLRI
    } else {
        MP_UNREACH_NLRI
    };
    push_attribute(out, OPTIONAL, code, &value);
}

/// How many routes of `family` fit in one message after `overhead` octets.
fn per_message(overhead: usize, family: Family) -> usize {
    (MAX_MESSAGE_LEN - overhead) / host_len(family)
}

/// Appends UPDATEs announcing `routes` (IPv4 /32) with `attrs` and NEXT_HOP `next_hop`;
/// returns how many messages.
pub fn announce_v4(
    out: &mut Vec<u8>,
    attrs: &PathAttributes,
    next_hop: Ipv4Addr,
    routes: &[Ipv4Addr],
) -> usize {
    let attributes = attrs.encode(Some(next_hop));
    let per = per_message(UPDATE_FIXED + attributes.len(), Family::Ipv4);
    let mut nlri = Vec::with_capacity(per * 5);
    for chunk in routes.chunks(per) {
        nlri.clear();
        for r in chunk {
            push_host(&mut nlri, IpAddr::V4(*r));
        }
        push_update(out, &[], &attributes, &nlri);
    }
    routes.len().div_ceil(per)
}

/// Appends UPDATEs announcing `routes` (IPv6 /128) in MP_REACH_NLRI, first of the attributes
/// as RFC 7606 §5.1 asks, with the 16-octet global `next_hop`; returns how many messages.
pub fn announce_v6(
    out: &mut Vec<u8>,
    attrs: &PathAttributes,
    next_hop: Ipv6Addr,
    routes: &[Ipv6Addr],
) -> usize {
    // No NEXT_HOP attribute: there is no IPv4 NLRI (RFC 4760 §3).
    let rest = attrs.encode(None);
    // MP_REACH_NLRI: flags, code, two length octets, AFI, SAFI, length, hop, reserved.
    let per = per_message(UPDATE_FIXED + rest.len() + 4 + 3 + 1 + 16 + 1, Family::Ipv6);
    let mut attributes = Vec::with_capacity(MAX_MESSAGE_LEN);
    for chunk in routes.chunks(per) {
        attributes.clear();
        push_mp(&mut attributes, Some(next_hop), chunk);
        attributes.extend_from_slice(&rest);
        push_update(out, &[], &attributes, &[]);
    }
    routes.len().div_ceil(per)
}

/// Appends UPDATEs withdrawing `routes` (IPv4 /32); returns how many messages.
pub fn withdraw_v4(out: &mut Vec<u8>, routes: &[Ipv4Addr]) -> usize {
    let per = per_message(UPDATE_FIXED, Family::Ipv4);
    let mut withdrawn = Vec::with_capacity(per * 5);
    for chunk in routes.chunks(per) {
        withdrawn.clear();
        for r in chunk {
            push_host(&mut withdrawn, IpAddr::V4(*r));
        }
        push_update(out, &withdrawn, &[], &[]);
    }
    routes.len().div_ceil(per)
}

/// Appends UPDATEs withdrawing `routes` (IPv6 /128) in MP_UNREACH_NLRI; returns how many
/// messages.
pub fn withdraw_v6(out: &mut Vec<u8>, routes: &[Ipv6Addr]) -> usize {
    let per = per_message(UPDATE_FIXED + 4 + 3, Family::Ipv6);
    let mut attributes = Vec::with_capacity(MAX_MESSAGE_LEN);
    for chunk in routes.chunks(per) {
        attributes.clear();
        push_mp(&mut attributes, None, chunk);
        push_update(out, &[], &attributes, &[]);
    }
    routes.len().div_ceil(per)
}

/// Appends the End-of-RIB marker of `family`: an UPDATE with nothing in it for IPv4, an empty
/// MP_UNREACH_NLRI for IPv6. Sent after the first full announcement on a session, so that a
/// router knows it has everything (RFC 4724 §2 recommends it without Graceful Restart too).
pub fn end_of_rib(out: &mut Vec<u8>, family: Family) {
    match family {
        Family::Ipv4 => push_update(out, &[], &[], &[]),
        Family::Ipv6 => {
            let mut attributes = Vec::new();
            push_mp(&mut attributes, None, &[]);
            push_update(out, &[], &attributes, &[]);
        }
    }
}

/// An UPDATE read back, for tests and debugging: only the parts this crate writes, and host
/// routes only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// IPv4 withdrawn routes and MP_UNREACH_NLRI routes.
    pub withdrawn: Vec<IpAddr>,
    /// IPv4 NLRI and MP_REACH_NLRI routes.
    pub announced: Vec<IpAddr>,
    pub origin: Option<u8>,
    /// The AS numbers of the AS_PATH's segments, four octets each; `Some(vec![])` when empty.
    pub as_path: Option<Vec<u32>>,
    pub next_hop: Option<Ipv4Addr>,
    /// The next hop in MP_REACH_NLRI.
    pub mp_next_hop: Option<Ipv6Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub large_communities: Vec<[u32; 3]>,
    /// Whether an MP_UNREACH_NLRI for IPv6 unicast was present (empty: End-of-RIB).
    pub mp_unreach: bool,
    /// The attribute type codes in the order they came.
    pub attribute_order: Vec<u8>,
}

/// An UPDATE that [`Update::decode`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable UPDATE: {0}")]
pub struct UpdateError(&'static str);

impl Update {
    /// Reads a whole UPDATE message, header included.
    pub fn decode(message: &[u8]) -> Result<Update, UpdateError> {
        let body = message
            .get(HEADER_LEN..)
            .filter(|_| message.get(18) == Some(&(MessageType::Update as u8)))
            .ok_or(UpdateError("not an UPDATE"))?;
        let (withdrawn, rest) = take_len16(body)?;
        let (attributes, nlri) = take_len16(rest)?;
        let mut u = Update {
            withdrawn: hosts(withdrawn, Family::Ipv4)?,
            announced: hosts(nlri, Family::Ipv4)?,
            ..Update::default()
        };
        let mut attrs = attributes;
        while let [flags, code, rest @ ..] = attrs {
            let (value, after) = if flags & EXTENDED_LENGTH != 0 {
                take_len16(rest)?
            } else {
                let (&len, rest) = rest.split_first().ok_or(UpdateError("attribute length"))?;
                split(rest, usize::from(len))?
            };
            u.attribute(*code, value)?;
            u.attribute_order.push(*code);
            attrs = after;
        }
        if !attrs.is_empty() {
            return Err(UpdateError("attribute cut short"));
        }
        Ok(u)
    }

    fn attribute(&mut self, code: u8, v: &[u8]) -> Result<(), UpdateError> {
        let u32_of = |v: &[u8]| -> Result<u32, UpdateError> {
            let b: [u8; 4] = v.try_into().map_err(|_| UpdateError("four-octet value"))?;
            Ok(u32::from_be_bytes(b))
        };
        match code {
            ORIGIN => self.origin = v.first().copied(),
            AS_PATH => {
                let mut path = Vec::new();
                let mut rest = v;
                while let [_kind, count, tail @ ..] = rest {
                    let (asns, after) = split(tail, usize::from(*count) * 4)?;
                    path.extend(asns.chunks(4).map(|c| u32_of(c).unwrap_or_default()));
                    rest = after;
                }
                self.as_path = Some(path);
            }
            NEXT_HOP => self.next_hop = Some(Ipv4Addr::from(u32_of(v)?)),
            MULTI_EXIT_DISC => self.med = Some(u32_of(v)?),
            LOCAL_PREF => self.local_pref = Some(u32_of(v)?),
            LARGE_COMMUNITY => {
                for c in v.chunks(12) {
                    let c: [u8; 12] = c.try_into().map_err(|_| UpdateError("large community"))?;
                    let w = |i: usize| u32_of(&c[i * 4..i * 4 + 4]).unwrap_or_default();
                    self.large_communities.push([w(0), w(1), w(2)]);
                }
            }
            MP_REACH_NLRI => {
                let [0, 2, SAFI_UNICAST, 16, rest @ ..] = v else {
                    return Err(UpdateError("MP_REACH_NLRI other than IPv6 unicast"));
                };
                let (hop, rest) = split(rest, 16)?;
                let hop: [u8; 16] = hop.try_into().expect("16 octets");
                self.mp_next_hop = Some(Ipv6Addr::from(hop));
                let nlri = rest.get(1..).ok_or(UpdateError("MP_REACH_NLRI reserved"))?;
                self.announced.extend(hosts(nlri, Family::Ipv6)?);
            }
            MP_UNREACH_NLRI => {
                let [0, 2, SAFI_UNICAST, nlri @ ..] = v else {
                    return Err(UpdateError("MP_UNREACH_NLRI other than IPv6 unicast"));
                };
                self.mp_unreach = true;
                self.withdrawn.extend(hosts(nlri, Family::Ipv6)?);
            }
            _ => {}
        }
        Ok(())
    }
}

fn split(buf: &[u8], at: usize) -> Result<(&[u8], &[u8]), UpdateError> {
    if buf.len() < at {
        return Err(UpdateError("a field runs past the message"));
    }
    Ok(buf.split_at(at))
}

/// A two-octet length and what it covers, and the rest.
fn take_len16(buf: &[u8]) -> Result<(&[u8], &[u8]), UpdateError> {
    let (len, rest) = split(buf, 2)?;
    split(rest, usize::from(u16::from_be_bytes([len[0], len[1]])))
}

/// Host routes of `family` packed as NLRI.
fn hosts(mut buf: &[u8], family: Family) -> Result<Vec<IpAddr>, UpdateError> {
    let mut out = Vec::new();
    while let [len, rest @ ..] = buf {
        let (octets, after) = split(rest, host_len(family) - 1)?;
        out.push(match (family, *len) {
            (Family::Ipv4, 32) => IpAddr::from(<[u8; 4]>::try_from(octets).expect("4")),
            (Family::Ipv6, 128) => IpAddr::from(<[u8; 16]>::try_from(octets).expect("16")),
            _ => return Err(UpdateError("not a host route")),
        });
        buf = after;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Message};

    fn ebgp(med: u32, epoch: u32) -> PathAttributes {
        PathAttributes {
            as_path: Some(65001),
            med,
            local_pref: None,
            large_community: [65000, 1, epoch],
        }
    }

    /// Splits a buffer of messages, checking each one's header as a peer would.
    fn messages(buf: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let (msg, used) = decode(rest).unwrap().unwrap();
            assert_eq!(msg, Message::Update);
            assert!(used <= MAX_MESSAGE_LEN);
            out.push(&rest[..used]);
            rest = &rest[used..];
        }
        out
    }

    #[test]
    fn an_ebgp_ipv4_announcement_matches_the_rfc_layout_byte_for_byte() {
        let mut out = Vec::new();
        let n = announce_v4(
            &mut out,
            &ebgp(4294967288, 6),
            Ipv4Addr::new(10, 213, 240, 2),
            &[Ipv4Addr::new(10, 213, 240, 100)],
        );
        assert_eq!(n, 1);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0xff; 16][..],
            &[0x00, 70, 2],                         // length 19 + 51, type UPDATE
            &[0x00, 0x00],                          // no withdrawn routes
            &[0x00, 42],                            // path attributes: 42 octets
            &[0x40, 1, 1, 0],                       // ORIGIN IGP
            &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9],  // AS_PATH: AS_SEQUENCE of 1: 65001
            &[0x40, 3, 4, 10, 213, 240, 2],         // NEXT_HOP
            &[0x80, 4, 4, 0xff, 0xff, 0xff, 0xf8],  // MED 4294967288 (= 4294967294 - 6)
            &[0xc0, 32, 12,                         // LARGE_COMMUNITY (65000, 1, 6)
              0, 0, 0xfd, 0xe8, 0, 0, 0, 1, 0, 0, 0, 6],
            &[32, 10, 213, 240, 100],               // NLRI 10.213.240.100/32
        ]
        .concat();
        assert_eq!(out, want);
    }

    #[test]
    fn an_ibgp_announcement_has_an_empty_as_path_and_a_local_pref() {
        let attrs = PathAttributes {
            as_path: None,
            med: 7,
            local_pref: Some(100),
            large_community: [65000, 1, 9],
        };
        let mut out = Vec::new();
        announce_v4(
            &mut out,
            &attrs,
            Ipv4Addr::new(10, 0, 0, 2),
            &[Ipv4Addr::new(10, 0, 0, 9)],
        );
        #[rustfmt::skip]
        let attributes: Vec<u8> = [
            &[0x40, 1, 1, 0][..],
            &[0x40, 2, 0],                 // empty AS_PATH
            &[0x40, 3, 4, 10, 0, 0, 2],
            &[0x80, 4, 4, 0, 0, 0, 7],
            &[0x40, 5, 4, 0, 0, 0, 100],   // LOCAL_PREF 100
            &[0xc0, 32, 12, 0, 0, 0xfd, 0xe8, 0, 0, 0, 1, 0, 0, 0, 9],
        ]
        .concat();
        assert_eq!(&out[21..23], &(attributes.len() as u16).to_be_bytes());
        assert_eq!(&out[23..23 + attributes.len()], &attributes[..]);
        let u = Update::decode(&out).unwrap();
        assert_eq!(u.as_path, Some(vec![]));
        assert_eq!(u.local_pref, Some(100));
    }

    #[test]
    fn an_ipv6_announcement_puts_mp_reach_first_and_no_next_hop_attribute() {
        let hop: Ipv6Addr = "fd0a:d5f0::2".parse().unwrap();
        let vip: Ipv6Addr = "fd0a:d5f0::100".parse().unwrap();
        let mut out = Vec::new();
        assert_eq!(announce_v6(&mut out, &ebgp(4294967289, 5), hop, &[vip]), 1);
        let mut mp = vec![0x80, 14, 38, 0, 2, 1, 16];
        mp.extend_from_slice(&hop.octets());
        mp.push(0); // reserved
        mp.push(128);
        mp.extend_from_slice(&vip.octets());
        assert_eq!(mp.len(), 3 + 38);
        #[rustfmt::skip]
        let rest: Vec<u8> = [
            &[0x40, 1, 1, 0][..],
            &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9],
            &[0x80, 4, 4, 0xff, 0xff, 0xff, 0xf9],
            &[0xc0, 32, 12, 0, 0, 0xfd, 0xe8, 0, 0, 0, 1, 0, 0, 0, 5],
        ]
        .concat();
        let mut want = vec![0xff; 16];
        let len = 19 + 4 + mp.len() + rest.len();
        want.extend_from_slice(&(len as u16).to_be_bytes());
        want.extend_from_slice(&[2, 0, 0]);
        want.extend_from_slice(&((mp.len() + rest.len()) as u16).to_be_bytes());
        want.extend_from_slice(&mp);
        want.extend_from_slice(&rest);
        assert_eq!(out, want);
        let u = Update::decode(&out).unwrap();
        assert_eq!(u.attribute_order, vec![14, 1, 2, 4, 32]);
        assert_eq!(u.next_hop, None);
    }

    #[test]
    fn withdrawals_match_the_rfc_layout() {
        let mut v4 = Vec::new();
        withdraw_v4(&mut v4, &[Ipv4Addr::new(10, 213, 240, 100)]);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0xff; 16][..],
            &[0, 28, 2],
            &[0, 5, 32, 10, 213, 240, 100], // withdrawn routes: one /32
            &[0, 0],                        // no attributes, no NLRI
        ]
        .concat();
        assert_eq!(v4, want);

        let vip: Ipv6Addr = "fd0a:d5f0::100".parse().unwrap();
        let mut v6 = Vec::new();
        withdraw_v6(&mut v6, &[vip]);
        let mut want = vec![0xff; 16];
        want.extend_from_slice(&[0, 46, 2, 0, 0, 0, 23, 0x80, 15, 20, 0, 2, 1, 128]);
        want.extend_from_slice(&vip.octets());
        assert_eq!(v6, want);
    }

    #[test]
    fn end_of_rib_markers_are_an_empty_update_and_an_empty_mp_unreach() {
        let mut v4 = Vec::new();
        end_of_rib(&mut v4, Family::Ipv4);
        let mut want = vec![0xff; 16];
        want.extend_from_slice(&[0, 23, 2, 0, 0, 0, 0]);
        assert_eq!(v4, want);
        let mut v6 = Vec::new();
        end_of_rib(&mut v6, Family::Ipv6);
        let mut want = vec![0xff; 16];
        want.extend_from_slice(&[0, 29, 2, 0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]);
        assert_eq!(v6, want);
        let u = Update::decode(&v6).unwrap();
        assert!(u.mp_unreach && u.withdrawn.is_empty());
    }

    #[test]
    fn a_thousand_routes_are_split_into_full_messages_of_at_most_4096_octets() {
        let v4: Vec<Ipv4Addr> = (0..1000u32)
            .map(|i| Ipv4Addr::from(0x0ad5_0000 + i))
            .collect();
        let v6: Vec<Ipv6Addr> = (0..1000u128)
            .map(|i| Ipv6Addr::from((0xfd0a_d5f0_u128 << 96) | i))
            .collect();
        let hop6: Ipv6Addr = "fd0a:d5f0::2".parse().unwrap();
        let attrs = PathAttributes {
            local_pref: Some(100),
            ..ebgp(1, 1)
        };
        type Case<'a> = (
            &'a str,
            Box<dyn Fn(&mut Vec<u8>) -> usize + 'a>,
            Vec<IpAddr>,
        );
        let cases: Vec<Case> = vec![
            (
                "announce v4",
                Box::new(|o| announce_v4(o, &attrs, Ipv4Addr::new(10, 0, 0, 1), &v4)),
                v4.iter().map(|a| IpAddr::V4(*a)).collect(),
            ),
            (
                "announce v6",
                Box::new(|o| announce_v6(o, &attrs, hop6, &v6)),
                v6.iter().map(|a| IpAddr::V6(*a)).collect(),
            ),
            (
                "withdraw v4",
                Box::new(|o| withdraw_v4(o, &v4)),
                v4.iter().map(|a| IpAddr::V4(*a)).collect(),
            ),
            (
                "withdraw v6",
                Box::new(|o| withdraw_v6(o, &v6)),
                v6.iter().map(|a| IpAddr::V6(*a)).collect(),
            ),
        ];
        for (name, write, want) in cases {
            let mut out = Vec::new();
            let n = write(&mut out);
            let msgs = messages(&out);
            assert_eq!(msgs.len(), n, "{name}");
            // Full: every message but the last has no room for one more route.
            let room = if name.ends_with("v4") { 5 } else { 17 };
            for m in &msgs[..msgs.len() - 1] {
                assert!(
                    m.len() + room > MAX_MESSAGE_LEN,
                    "{name}: {} octets",
                    m.len()
                );
            }
            let mut got = Vec::new();
            for m in msgs {
                let u = Update::decode(m).unwrap();
                got.extend(if name.starts_with("withdraw") {
                    u.withdrawn
                } else {
                    u.announced
                });
            }
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn announcements_round_trip_through_decode() {
        let attrs = ebgp(4294967294 - 42, 42);
        let routes = [Ipv4Addr::new(10, 1, 1, 1), Ipv4Addr::new(10, 1, 1, 2)];
        let mut out = Vec::new();
        announce_v4(&mut out, &attrs, Ipv4Addr::new(10, 1, 1, 254), &routes);
        let u = Update::decode(&out).unwrap();
        assert_eq!(u.origin, Some(ORIGIN_IGP));
        assert_eq!(u.as_path, Some(vec![65001]));
        assert_eq!(u.next_hop, Some(Ipv4Addr::new(10, 1, 1, 254)));
        assert_eq!(u.med, Some(4294967294 - 42));
        assert_eq!(u.local_pref, None);
        assert_eq!(u.large_communities, vec![[65000, 1, 42]]);
        assert_eq!(u.announced, routes.map(IpAddr::V4).to_vec());
        assert_eq!(u.attribute_order, vec![1, 2, 3, 4, 32]);
    }

    #[test]
    fn no_routes_make_no_message() {
        let mut out = Vec::new();
        assert_eq!(withdraw_v4(&mut out, &[]), 0);
        assert_eq!(withdraw_v6(&mut out, &[]), 0);
        assert_eq!(
            announce_v4(&mut out, &ebgp(1, 1), Ipv4Addr::LOCALHOST, &[]),
            0
        );
        assert!(out.is_empty());
    }
}
