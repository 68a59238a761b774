//! A channel that sends the API token (`authorization: Bearer <token>`) with every call.

use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;

/// [`Channel`] plus the caller's token, if any. Every typed client of the library runs on it.
#[derive(Clone)]
pub struct AuthChannel {
    inner: Channel,
    authorization: Option<http::HeaderValue>,
}

impl AuthChannel {
    pub fn new(inner: Channel, authorization: Option<http::HeaderValue>) -> Self {
        AuthChannel {
            inner,
            authorization,
        }
    }
}

/// `Bearer <token>` as a header value; None for a token that is not printable ASCII.
pub fn bearer(token: &str) -> Option<http::HeaderValue> {
    let mut v = http::HeaderValue::from_str(&format!("Bearer {}", token.trim())).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl tower::Service<http::Request<Body>> for AuthChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        if let Some(v) = &self.authorization {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, v.clone());
        }
        tower::Service::call(&mut self.inner, req)
    }
}
