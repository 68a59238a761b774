//! What every gRPC handler shares: timing and counting a call by status code, reading a
//! write's outcome, and forwarding a call to the leader with its status passed back
//! unchanged in kind. No service logic.

use std::future::Future;
use std::time::{Duration, Instant};

use ballast_proto::FORWARDED_HEADER;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::metrics;
use crate::types::{CommandResult, Outcome};

/// Times a request and counts it by status code.
pub(crate) async fn instrument<T>(
    method: &'static str,
    fut: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let r = fut.await.map(Response::new).map_err(Status::from);
    metrics::REQUEST_SECONDS
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
    let code = match &r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    metrics::REQUESTS
        .with_label_values(&[method, &format!("{code:?}")])
        .inc();
    r
}

pub(crate) fn write_outcome(r: CommandResult) -> Result<(u64, Outcome), ApiError> {
    match r.outcome {
        Outcome::Rejected { field, message } => Err(ApiError::InvalidArgument { field, message }),
        Outcome::StaleRetry => Err(ApiError::FailedPrecondition(
            "this request id was already acknowledged to the client; a retry cannot be answered"
                .into(),
        )),
        o => Ok((r.revision, o)),
    }
}

pub(super) fn unexpected(o: Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected outcome {o:?}"))
}

pub(super) fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().get(FORWARDED_HEADER).is_some()
}

/// Passes a forwarded call's status back to the caller unchanged in kind.
pub(super) fn status_to_api(s: Status) -> ApiError {
    let m = s.message().to_string();
    match s.code() {
        tonic::Code::InvalidArgument => ApiError::InvalidArgument {
            field: "request".into(),
            message: m,
        },
        tonic::Code::NotFound => ApiError::NotFound(m),
        tonic::Code::FailedPrecondition => ApiError::FailedPrecondition(m),
        tonic::Code::Unavailable => ApiError::Unavailable(m),
        _ => ApiError::Internal(m),
    }
}

pub(super) fn forwarded_request<T>(msg: T, pool: &crate::member::network::PeerPool) -> Request<T> {
    let mut r = Request::new(msg);
    pool.authorize(&mut r);
    r.metadata_mut()
        .insert(FORWARDED_HEADER, "1".parse().expect("ascii"));
    r.set_timeout(Duration::from_secs(60));
    r
}
