//! The identity a certificate gives its holder, written by `ballastctl certs issue --member ID`
//! or `--node ID` as a URI subject alternative name: `ballast://member/ID` (a Raft member, which
//! may speak Raft and act as the agent of node ID) or `ballast://node/ID` (an agent-only server:
//! it may act as the agent of node ID and read). A certificate without such a URI has no
//! identity (an operator's, a script's). The server side reads it at the TLS handshake
//! (`node/src/tls.rs`) and checks it per call (`node/src/auth.rs`).

/// Scheme and authority of every identity URI.
pub const URI_PREFIX: &str = "ballast://";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    /// A Raft member with this node id.
    Member(u64),
    /// An agent-only server with this node id.
    Node(u64),
}

/// A certificate whose identity cannot be read, or is not one identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not an X.509 certificate: {0}")]
    Certificate(String),
    #[error("identity URI {0:?}: expected ballast://member/ID or ballast://node/ID with ID > 0")]
    BadUri(String),
    #[error("the certificate names several identities ({0:?} and {1:?})")]
    Several(CertIdentity, CertIdentity),
}

impl CertIdentity {
    /// The node id it names.
    pub fn node_id(self) -> u64 {
        match self {
            CertIdentity::Member(id) | CertIdentity::Node(id) => id,
        }
    }

    /// The URI written into the certificate.
    pub fn uri(self) -> String {
        match self {
            CertIdentity::Member(id) => format!("{URI_PREFIX}member/{id}"),
            CertIdentity::Node(id) => format!("{URI_PREFIX}node/{id}"),
        }
    }

    /// Reads an identity URI; `Ok(None)` for a URI of another scheme (not ours to judge).
    pub fn parse_uri(uri: &str) -> Result<Option<Self>, IdentityError> {
        let Some(rest) = uri.strip_prefix(URI_PREFIX) else {
            return Ok(None);
        };
        let bad = || IdentityError::BadUri(uri.to_string());
        let (kind, id) = rest.split_once('/').ok_or_else(bad)?;
        // Digits only: no sign, no spaces, no leading "+".
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let id: u64 = id.parse().map_err(|_| bad())?;
        if id == 0 {
            return Err(bad());
        }
        match kind {
            "member" => Ok(Some(CertIdentity::Member(id))),
            "node" => Ok(Some(CertIdentity::Node(id))),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertIdentity::Member(id) => write!(f, "member {id}"),
            CertIdentity::Node(id) => write!(f, "node {id}"),
        }
    }
}

/// The identity of a DER certificate: None when it has no `ballast://` URI; an error when one
/// is malformed or it names two.
pub fn identity_of(der: &[u8]) -> Result<Option<CertIdentity>, IdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let mut found: Option<CertIdentity> = None;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        if let Some(id) = CertIdentity::parse_uri(uri)? {
            match found {
                Some(other) if other != id => return Err(IdentityError::Several(other, id)),
                _ => found = Some(id),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_bad_ones_are_refused() {
        for id in [CertIdentity::Member(1), CertIdentity::Node(42)] {
            assert_eq!(CertIdentity::parse_uri(&id.uri()), Ok(Some(id)));
        }
        assert_eq!(CertIdentity::parse_uri("spiffe://x/y"), Ok(None));
        for bad in [
            "ballast://member/0",
            "ballast://member/",
            "ballast://member/+1",
            "ballast://member/1/2",
            "ballast://admin/1",
            "ballast://node",
            "ballast://node/99999999999999999999999",
        ] {
            assert!(
                matches!(CertIdentity::parse_uri(bad), Err(IdentityError::BadUri(_))),
                "{bad}"
            );
        }
    }
}
