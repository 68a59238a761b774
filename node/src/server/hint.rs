//! A leader hint on every answer of a member that is not the leader.
//!
//! A follower answers writes by forwarding them, so a client that started on a follower would
//! otherwise pay an extra network hop on every write, forever. Each answer from a follower
//! that knows the leader carries the leader's address in the `ballast-leader-addr` header
//! (the same one NOT_LEADER errors carry); the client library moves to it for the next call.

use std::sync::Arc;
use std::task::{Context, Poll};

use ballast_proto::LEADER_ADDR_HEADER;
use futures::future::BoxFuture;

use crate::node::Node;

/// Adds the hint to the answers of the service it wraps.
#[derive(Clone)]
pub struct LeaderHintLayer {
    pub node: Arc<Node>,
}

impl<S> tower::Layer<S> for LeaderHintLayer {
    type Service = LeaderHint<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LeaderHint {
            inner,
            node: self.node.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LeaderHint<S> {
    inner: S,
    node: Arc<Node>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for LeaderHint<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        // Asked before the call: a member that becomes leader meanwhile simply gives no hint.
        let hint = match self.node.leader() {
            (Some(id), Some(addr)) if id != self.node.id => http::HeaderValue::from_str(&addr).ok(),
            _ => None,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            if let Some(v) = hint {
                res.headers_mut().entry(LEADER_ADDR_HEADER).or_insert(v);
            }
            Ok(res)
        })
    }
}
