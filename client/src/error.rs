//! The client's errors, one variant per way a call can fail that a caller may act on
//! (invalid argument, not found, failed precondition, compacted, unavailable, refused
//! credentials, ...), mapped from gRPC codes.

use tonic::{Code, Status};

/// What went wrong with a call, in terms a caller can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request was refused as malformed; the message names the field. Not retried.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A watch asked for revisions the cluster no longer keeps.
    #[error("compacted: {0}")]
    Compacted(String),
    /// No member could serve the call before the deadline. For a write the outcome is unknown;
    /// retrying it through the same client with the same request is safe.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No token, or one the cluster does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token may not do this (a read token calling a write).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("bad endpoint {0:?}: {1}")]
    BadEndpoint(String, String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn from_status(s: &Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => Error::InvalidArgument(m),
            Code::NotFound => Error::NotFound(m),
            Code::FailedPrecondition => Error::FailedPrecondition(m),
            // The server's compaction error; tonic also answers OUT_OF_RANGE for a message
            // above the size limit, which is no compaction.
            Code::OutOfRange if m.contains("compacted") => Error::Compacted(m),
            Code::Unavailable | Code::DeadlineExceeded => Error::Unavailable(m),
            Code::Unauthenticated => Error::Unauthenticated(m),
            Code::PermissionDenied => Error::PermissionDenied(m),
            c => Error::Other(format!("{c:?}: {m}")),
        }
    }
}

/// Whether another attempt (possibly elsewhere) may succeed.
pub(crate) fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_compaction_error_is_compaction() {
        let compacted =
            Status::out_of_range("revision 1 has been compacted; the oldest available is 22");
        assert!(matches!(
            Error::from_status(&compacted),
            Error::Compacted(_)
        ));
        // tonic's own answer to a message above the size limit.
        let too_large = Status::out_of_range(
            "Error, encoded message length too large: found 24004649 bytes, the limit is: 16777216 bytes",
        );
        assert!(matches!(Error::from_status(&too_large), Error::Other(_)));
    }
}
