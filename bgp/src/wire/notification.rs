//! NOTIFICATION (RFC 4271 §4.5): the last message on a session, saying why it ends.

use super::{message, MessageType};

/// Error code, subcode and data of a NOTIFICATION. The codes this speaker sends have
/// constructors; any code a peer sends is kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// Hold Timer Expired (RFC 4271 §6.5).
pub const HOLD_TIMER_EXPIRED: u8 = 4;
/// Finite State Machine Error (RFC 4271 §6.6; subcodes from RFC 6608).
pub const FSM_ERROR: u8 = 5;
/// Cease (RFC 4271 §6.7; subcodes from RFC 4486).
pub const CEASE: u8 = 6;
/// Cease subcode: Administrative Shutdown (RFC 4486 §4).
pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease, Administrative Shutdown, with a shutdown communication (RFC 9003): a length
    /// octet and UTF-8 text, cut to 255 octets on a character boundary.
    pub fn cease_shutdown(text: &str) -> Notification {
        let mut end = text.len().min(255);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = vec![end as u8];
        data.extend_from_slice(&text.as_bytes()[..end]);
        Notification::new(CEASE, ADMINISTRATIVE_SHUTDOWN, data)
    }

    /// Hold Timer Expired: no message from the peer within the hold time.
    pub fn hold_timer_expired() -> Notification {
        Notification::new(HOLD_TIMER_EXPIRED, 0, Vec::new())
    }

    /// A message that has no place in the state `subcode` names (RFC 6608: 1 OpenSent,
    /// 2 OpenConfirm, 3 Established); the data is the message type.
    pub fn unexpected(subcode: u8, message_type: u8) -> Notification {
        Notification::new(FSM_ERROR, subcode, vec![message_type])
    }

    /// The whole message, header included.
    pub fn encode(&self) -> Vec<u8> {
        // Data beyond what fits in a message is cut: a NOTIFICATION is informative.
        let data = &self.data[..self.data.len().min(super::MAX_MESSAGE_LEN - 21)];
        let mut body = vec![self.code, self.subcode];
        body.extend_from_slice(data);
        message(MessageType::Notification, &body)
    }

    /// Reads a body of at least two octets (the header check guarantees it).
    pub(super) fn decode(body: &[u8]) -> Notification {
        Notification::new(body[0], body[1], body[2..].to_vec())
    }

    /// RFC 9003's shutdown communication, for Cease subcodes 2 and 4, when it is well formed.
    fn shutdown_text(&self) -> Option<&str> {
        if self.code != CEASE || !matches!(self.subcode, 2 | 4) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        std::str::from_utf8(text).ok().filter(|t| !t.is_empty())
    }
}

/// The name of an error code and subcode, for logs and peer status.
fn names(code: u8, subcode: u8) -> (&'static str, &'static str) {
    let code_name = match code {
        1 => "message header error",
        2 => "OPEN message error",
        3 => "UPDATE message error",
        4 => "hold timer expired",
        5 => "finite state machine error",
        6 => "cease",
        7 => "ROUTE-REFRESH message error",
        _ => "unknown error",
    };
    let sub = match (code, subcode) {
        (1, 1) => "connection not synchronized",
        (1, 2) => "bad message length",
        (1, 3) => "bad message type",
        (2, 1) => "unsupported version number",
        (2, 2) => "bad peer AS",
        (2, 3) => "bad BGP identifier",
        (2, 4) => "unsupported optional parameter",
        (2, 6) => "unacceptable hold time",
        (2, 7) => "unsupported capability",
        (5, 1) => "unexpected message in OpenSent",
        (5, 2) => "unexpected message in OpenConfirm",
        (5, 3) => "unexpected message in Established",
        (6, 1) => "maximum number of prefixes reached",
        (6, 2) => "administrative shutdown",
        (6, 3) => "peer de-configured",
        (6, 4) => "administrative reset",
        (6, 5) => "connection rejected",
        (6, 6) => "other configuration change",
        (6, 7) => "connection collision resolution",
        (6, 8) => "out of resources",
        (6, 9) => "hard reset",
        _ => "",
    };
    (code_name, sub)
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (code, sub) = names(self.code, self.subcode);
        write!(f, "{code} ({}/{}", self.code, self.subcode)?;
        if !sub.is_empty() {
            write!(f, " {sub}")?;
        }
        f.write_str(")")?;
        if let Some(text) = self.shutdown_text() {
            write!(f, ": {text:?}")?;
        } else if !self.data.is_empty() {
            f.write_str(", data ")?;
            for b in self.data.iter().take(32) {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Message};

    #[test]
    fn a_cease_carries_its_shutdown_text_after_a_length_octet() {
        let n = Notification::cease_shutdown("bye");
        let mut want = vec![0xff; 16];
        // length 19 + 2 + 1 + 3 = 25, type 3; code 6, subcode 2; text length 3, "bye"
        want.extend_from_slice(&[0x00, 0x19, 0x03, 0x06, 0x02, 0x03, b'b', b'y', b'e']);
        assert_eq!(n.encode(), want);
        assert_eq!(
            n.to_string(),
            "cease (6/2 administrative shutdown): \"bye\""
        );
    }

    #[test]
    fn a_long_shutdown_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(200); // 400 octets
        let n = Notification::cease_shutdown(&text);
        assert_eq!(n.data[0], 254);
        assert_eq!(n.data.len(), 255);
        assert!(std::str::from_utf8(&n.data[1..]).is_ok());
    }

    #[test]
    fn notifications_round_trip_through_decode() {
        for n in [
            Notification::hold_timer_expired(),
            Notification::unexpected(3, 1),
            Notification::new(2, 2, vec![0xfd, 0xe9]),
            Notification::cease_shutdown("maintenance"),
        ] {
            let bytes = n.encode();
            assert_eq!(
                decode(&bytes),
                Ok(Some((Message::Notification(n.clone()), bytes.len())))
            );
        }
    }

    #[test]
    fn an_unknown_code_shows_its_numbers_and_data() {
        let n = Notification::new(9, 9, vec![1, 2]);
        assert_eq!(n.to_string(), "unknown error (9/9), data 0102");
        assert_eq!(
            Notification::hold_timer_expired().to_string(),
            "hold timer expired (4/0)"
        );
    }
}
