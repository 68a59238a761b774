//! API tokens with two roles. With `--token-file`, every call but the gRPC health service and
//! reflection needs `authorization: Bearer <token>`: no token or an unknown one gets
//! UNAUTHENTICATED, a read token calling anything that changes state (or takes a backup) gets
//! PERMISSION_DENIED. Members call each other (Raft, forwarding) with the file's first admin
//! token, so every member of a cluster is given the same file. Without the option the API is
//! open, as before (a warning says so at start).
//!
//! The token file: one `<role> <token>` per line, role `read` or `admin`, tokens of at least
//! 16 characters without spaces; blank lines and `#` comments are ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Admin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    roles: BTreeMap<String, Role>,
    peer: String,
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut roles = BTreeMap::new();
        let mut peer = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {}: expected `<read|admin> <token>`", n + 1));
            };
            let role = match role {
                "read" => Role::Read,
                "admin" => Role::Admin,
                other => {
                    return Err(format!(
                        "line {}: unknown role {other:?} (read or admin)",
                        n + 1
                    ))
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {}: a token needs at least {MIN_TOKEN_LEN} characters",
                    n + 1
                ));
            }
            if roles.insert(token.to_string(), role).is_some() {
                return Err(format!("line {}: the same token twice", n + 1));
            }
            if role == Role::Admin && peer.is_none() {
                peer = Some(token.to_string());
            }
        }
        let peer = peer.ok_or("no admin token: members need one to call each other")?;
        Ok(Tokens { roles, peer })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.roles.get(token).copied()
    }

    /// The token members use with each other (the file's first admin token).
    pub fn peer_token(&self) -> &str {
        &self.peer
    }
}

/// The role a gRPC method needs (`path` is `/package.Service/Method`); None: open to all.
/// Anything not known to only read needs admin.
pub fn required(path: &str) -> Option<Role> {
    if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
        return None;
    }
    const READ: &[&str] = &[
        "/ballast.v1.KV/Get",
        "/ballast.v1.KV/Range",
        "/ballast.v1.Watch/Watch",
        "/ballast.v1.Cluster/Status",
        "/ballast.v1.State/GetState",
        "/ballast.v1.Agent/Leases",
    ];
    Some(if READ.contains(&path) {
        Role::Read
    } else {
        Role::Admin
    })
}

/// What a call with `authorization` (the header's value, if any) to `path` may do.
pub fn check(
    tokens: &Tokens,
    path: &str,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    let Some(need) = required(path) else {
        return Ok(());
    };
    let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err(tonic::Status::unauthenticated(
            "this cluster needs a token: send `authorization: Bearer <token>` (ballastctl --token or BALLAST_TOKEN)",
        ));
    };
    match tokens.role_of(token.trim()) {
        None => Err(tonic::Status::unauthenticated("unknown token")),
        Some(role) if role < need => Err(tonic::Status::permission_denied(format!(
            "{path} changes the cluster: it needs an admin token, this one may only read"
        ))),
        Some(_) => Ok(()),
    }
}

/// The server side: refuses calls [`check`] refuses, before they reach a service.
#[derive(Clone)]
pub struct AuthLayer {
    pub tokens: Option<Arc<Tokens>>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Auth<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if let Some(tokens) = &self.tokens {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Err(status) = check(tokens, req.uri().path(), header) {
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        let fut = self.inner.call(req);
        Box::pin(fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# operators\nadmin aaaaaaaaaaaaaaaaaaaa\nread rrrrrrrrrrrrrrrrrrrr\n\nadmin bbbbbbbbbbbbbbbbbbbb\n";

    #[test]
    fn the_file_gives_roles_and_the_first_admin_token_to_peers() {
        let t = Tokens::parse(FILE).unwrap();
        assert_eq!(t.role_of("aaaaaaaaaaaaaaaaaaaa"), Some(Role::Admin));
        assert_eq!(t.role_of("rrrrrrrrrrrrrrrrrrrr"), Some(Role::Read));
        assert_eq!(t.role_of("nope"), None);
        assert_eq!(t.peer_token(), "aaaaaaaaaaaaaaaaaaaa");
    }

    #[test]
    fn bad_files_say_which_line() {
        for (text, says) in [
            ("root aaaaaaaaaaaaaaaaaaaa", "unknown role"),
            ("admin short", "at least 16"),
            ("admin", "expected"),
            ("read rrrrrrrrrrrrrrrrrrrr", "no admin token"),
            (
                "admin aaaaaaaaaaaaaaaaaaaa\nread aaaaaaaaaaaaaaaaaaaa",
                "same token twice",
            ),
        ] {
            let e = Tokens::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn methods_need_the_right_role() {
        let t = Tokens::parse(FILE).unwrap();
        let code = |path: &str, h: Option<&str>| check(&t, path, h).err().map(|s| s.code());
        use tonic::Code::*;
        assert_eq!(code("/grpc.health.v1.Health/Check", None), None);
        assert_eq!(code("/ballast.v1.KV/Get", None), Some(Unauthenticated));
        assert_eq!(
            code("/ballast.v1.KV/Get", Some("Bearer wrongwrongwrongwrong")),
            Some(Unauthenticated)
        );
        assert_eq!(
            code("/ballast.v1.KV/Get", Some("Bearer rrrrrrrrrrrrrrrrrrrr")),
            None
        );
        assert_eq!(
            code("/ballast.v1.KV/Put", Some("Bearer rrrrrrrrrrrrrrrrrrrr")),
            Some(PermissionDenied)
        );
        assert_eq!(
            code("/ballast.v1.KV/Put", Some("Bearer bbbbbbbbbbbbbbbbbbbb")),
            None
        );
        assert_eq!(
            code(
                "/ballast.v1.RaftService/Vote",
                Some("Bearer rrrrrrrrrrrrrrrrrrrr")
            ),
            Some(PermissionDenied)
        );
        assert_eq!(
            code(
                "/ballast.v1.Unknown/Thing",
                Some("Bearer rrrrrrrrrrrrrrrrrrrr")
            ),
            Some(PermissionDenied)
        );
    }
}
