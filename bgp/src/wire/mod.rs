//! The BGP-4 messages this speaker writes and reads, as bytes.
//!
//! The layouts are RFC 4271 §4 (header, OPEN, UPDATE, NOTIFICATION, KEEPALIVE), with RFC 5492
//! capabilities, RFC 4760 multiprotocol reach and unreach attributes, RFC 6793 four-octet AS
//! numbers and RFC 8092 large communities. Pure: no IO, no clock. The speaker only announces,
//! so [`decode`] reads a peer's UPDATE no further than its header; [`Update::decode`] reads the
//! subset this crate writes, for tests and for anyone debugging what went on the wire.

mod notification;
mod open;
mod update;

pub use notification::Notification;
pub use open::{Open, OpenError, AS_TRANS};
pub use update::{
    announce_v4, announce_v6, end_of_rib, withdraw_v4, withdraw_v6, PathAttributes, Update,
    UpdateError,
};

/// The 16 octets of all ones every message starts with (RFC 4271 §4.1).
pub const MARKER: [u8; 16] = [0xff; 16];
/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// The largest message without the extended message capability (RFC 8654), which this speaker
/// never advertises: so neither side may send more.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The only BGP version there is.
pub const VERSION: u8 = 4;

/// The message types of RFC 4271 §4.1. ROUTE-REFRESH (5) is not among them: this speaker does
/// not advertise the capability, so a peer must not send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
}

/// An address family this speaker announces host routes in (unicast only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// Address Family Identifier (IANA): 1 for IPv4, 2 for IPv6.
    pub fn afi(self) -> u16 {
        match self {
            Family::Ipv4 => 1,
            Family::Ipv6 => 2,
        }
    }

    /// The family of an address.
    pub fn of(addr: std::net::IpAddr) -> Family {
        match addr {
            std::net::IpAddr::V4(_) => Family::Ipv4,
            std::net::IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4 unicast",
            Family::Ipv6 => "IPv6 unicast",
        })
    }
}

/// Subsequent Address Family Identifier for unicast.
pub const SAFI_UNICAST: u8 = 1;

/// One message read from a peer. An UPDATE's contents are not read: an announce-only speaker
/// has no use for the peer's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update,
    Notification(Notification),
    Keepalive,
}

impl Message {
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
        }
    }
}

/// A message a peer sent that breaks the rules; each maps to the NOTIFICATION RFC 4271 §6
/// says to answer with before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the message does not start with the all-ones marker")]
    NotSynchronized,
    #[error("message length {0} is outside what its type allows (at most {MAX_MESSAGE_LEN})")]
    BadLength(u16),
    #[error("unknown message type {0}")]
    BadType(u8),
    #[error("malformed OPEN: {0}")]
    Open(#[from] OpenError),
}

impl WireError {
    /// The NOTIFICATION that answers this error.
    pub fn notification(&self) -> Notification {
        match self {
            WireError::NotSynchronized => Notification::new(1, 1, Vec::new()),
            WireError::BadLength(len) => Notification::new(1, 2, len.to_be_bytes().to_vec()),
            WireError::BadType(t) => Notification::new(1, 3, vec![*t]),
            WireError::Open(e) => e.notification(),
        }
    }
}

/// Appends a header for a message whose body is `body_len` octets long. The caller has kept
/// the whole message within [`MAX_MESSAGE_LEN`].
pub(crate) fn push_header(out: &mut Vec<u8>, kind: MessageType, body_len: usize) {
    let len = HEADER_LEN + body_len;
    debug_assert!(len <= MAX_MESSAGE_LEN, "message of {len} octets");
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(kind as u8);
}

/// A whole message: header and body.
pub(crate) fn message(kind: MessageType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    push_header(&mut out, kind, body.len());
    out.extend_from_slice(body);
    out
}

/// A KEEPALIVE: a header alone.
pub fn keepalive() -> Vec<u8> {
    message(MessageType::Keepalive, &[])
}

/// Reads the first message in `buf`: `Ok(None)` while it is incomplete, else the message and
/// how many octets it took. The header is checked as soon as it is complete, so a peer that
/// sends garbage or announces a length over 4096 is refused before more is read.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16] != MARKER {
        return Err(WireError::NotSynchronized);
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    let kind = buf[18];
    // RFC 4271 §6.1: the smallest length per type; anything over 4096 for every type.
    let min = match kind {
        1 => 29,
        2 => 23,
        3 => 21,
        4 => HEADER_LEN,
        other => return Err(WireError::BadType(other)),
    };
    let too_long = usize::from(len) > MAX_MESSAGE_LEN || (kind == 4 && usize::from(len) != min);
    if usize::from(len) < min || too_long {
        return Err(WireError::BadLength(len));
    }
    let len = usize::from(len);
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let msg = match kind {
        1 => Message::Open(Open::decode(body)?),
        2 => Message::Update,
        3 => Message::Notification(Notification::decode(body)),
        _ => Message::Keepalive,
    };
    Ok(Some((msg, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keepalive_is_the_marker_length_19_and_type_4() {
        let mut want = vec![0xff; 16];
        want.extend_from_slice(&[0x00, 0x13, 0x04]);
        assert_eq!(keepalive(), want);
        assert_eq!(decode(&want), Ok(Some((Message::Keepalive, 19))));
    }

    #[test]
    fn an_incomplete_message_asks_for_more_and_takes_nothing() {
        let ka = keepalive();
        for cut in 0..ka.len() {
            assert_eq!(decode(&ka[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn two_messages_in_one_buffer_are_read_one_at_a_time() {
        let mut buf = keepalive();
        buf.extend_from_slice(&Notification::cease_shutdown("bye").encode());
        let (first, used) = decode(&buf).unwrap().unwrap();
        assert_eq!((first, used), (Message::Keepalive, 19));
        let (second, used2) = decode(&buf[used..]).unwrap().unwrap();
        assert_eq!(
            second,
            Message::Notification(Notification::cease_shutdown("bye"))
        );
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn garbage_is_refused_with_connection_not_synchronized() {
        let buf = [0u8; 19];
        assert_eq!(decode(&buf), Err(WireError::NotSynchronized));
        assert_eq!(
            WireError::NotSynchronized.notification(),
            Notification::new(1, 1, vec![])
        );
    }

    #[test]
    fn a_length_over_4096_is_refused_from_the_header_alone() {
        let mut buf = vec![0xff; 16];
        buf.extend_from_slice(&4097u16.to_be_bytes());
        buf.push(2);
        assert_eq!(decode(&buf), Err(WireError::BadLength(4097)));
        assert_eq!(
            WireError::BadLength(4097).notification(),
            Notification::new(1, 2, vec![0x10, 0x01])
        );
    }

    #[test]
    fn lengths_below_a_types_minimum_are_refused() {
        for (kind, min) in [(1u8, 29u16), (2, 23), (3, 21), (4, 19)] {
            let mut buf = vec![0xff; 16];
            buf.extend_from_slice(&(min - 1).to_be_bytes());
            buf.push(kind);
            assert_eq!(
                decode(&buf),
                Err(WireError::BadLength(min - 1)),
                "type {kind}"
            );
        }
        let mut long_keepalive = vec![0xff; 16];
        long_keepalive.extend_from_slice(&[0, 20, 4, 0]);
        assert_eq!(decode(&long_keepalive), Err(WireError::BadLength(20)));
    }

    #[test]
    fn an_unknown_type_is_refused_with_its_number() {
        let mut buf = vec![0xff; 16];
        buf.extend_from_slice(&[0, 19, 5]);
        assert_eq!(decode(&buf), Err(WireError::BadType(5)));
        assert_eq!(
            WireError::BadType(5).notification(),
            Notification::new(1, 3, vec![5])
        );
    }

    #[test]
    fn an_update_is_recognised_and_its_contents_skipped() {
        let mut buf = vec![0xff; 16];
        buf.extend_from_slice(&[0, 27, 2, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(decode(&buf), Ok(Some((Message::Update, 27))));
    }
}
