//! Errors of the public API and how they map to gRPC status codes.

use ballast_proto::{LEADER_ADDR_HEADER, LEADER_ID_HEADER};
use tonic::{Code, Status};

use crate::types::NodeId;
use crate::validate::InvalidInput;

/// An error a caller can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Bad input; nothing was applied.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's credentials do not allow this (an agent's call for another node).
    #[error("{0}")]
    PermissionDenied(String),
    /// This member cannot reach a leader for the request. Retry on `leader_addr` if known.
    #[error("not leader{}", match (.leader_id, .leader_addr) { (Some(id), Some(a)) => format!("; leader is {id} at {a}"), _ => "; no leader known".to_string() })]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for revisions the cluster no longer keeps.
    #[error("revision {requested} has been compacted; the oldest available is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    #[error("internal: {0}")]
    Internal(String),
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::InvalidArgument {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::InvalidArgument { .. } => Status::invalid_argument(msg),
            ApiError::NotFound(_) => Status::not_found(msg),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(msg),
            ApiError::PermissionDenied(_) => Status::permission_denied(msg),
            ApiError::NotLeader {
                leader_id,
                leader_addr,
            } => {
                let mut s = Status::new(Code::Unavailable, msg);
                if let (Some(id), Some(addr)) = (leader_id, leader_addr) {
                    if let Ok(v) = id.to_string().parse() {
                        s.metadata_mut().insert(LEADER_ID_HEADER, v);
                    }
                    if let Ok(v) = addr.parse() {
                        s.metadata_mut().insert(LEADER_ADDR_HEADER, v);
                    }
                }
                s
            }
            ApiError::Unavailable(_) => Status::unavailable(msg),
            ApiError::Compacted { .. } => Status::out_of_range(msg),
            ApiError::Internal(_) => Status::internal(msg),
        }
    }
}
