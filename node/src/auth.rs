//! Who may call what. Two credentials, each optional, both checked when both are configured:
//! an API token (`--token-file`, the `authorization: Bearer <token>` header) and the identity
//! in the client certificate (`tls.rs` reads it at the handshake). Identity comes from these
//! credentials only, never from a field of the request: a tower layer ([`AuthLayer`]) refuses
//! what a credential may not call before any service runs, and puts the node the caller may
//! act as the agent of ([`AgentScope`]) in the request's extensions, which the agent handlers
//! compare with the request's `node_id` ([`agent_may_act_for`]).
//!
//! Calls come in six kinds ([`Class`]): open (gRPC health, reflection), reads, writes (every
//! other public method), membership changes (AddLearner, PromoteVoter, RemoveNode), agent
//! calls (Renew, Register, ReportHealth, ReportRelease, ConfirmRelease) and Raft (the
//! internal `RaftService`, members only).
//!
//! **Tokens.** One `<role> <token>` per line, tokens of at least 16 characters without spaces,
//! blank lines and `#` comments ignored:
//! - `read <token>`: reads;
//! - `admin <token>`: reads and writes (operators);
//! - `member <token>`: what members call each other with, and their embedded agents the
//!   cluster with: Raft, agent calls for any node, membership changes, reads and writes;
//! - `node <id> <token>`: an agent-only server: agent calls for node `id` only, and reads.
//!
//! A file with a `member` line is *strict*: Raft needs a member token, agent calls a member
//! token or the caller's own node token; admin and read tokens make neither. Membership
//! changes need a member token too: the leader sends the member token with its Raft traffic
//! to whatever address a new learner has, so whoever may add one may learn that token. A file without
//! one is *legacy* (how clusters ran before member tokens): the first admin token is what
//! members call each other with, and admin tokens may do everything; `ballastd` warns at start.
//! Members send the first member token (strict) or the first admin token (legacy); several
//! member lines let a member token be rotated without a stop. Lookups compare SHA-256 digests
//! of the token against every entry without stopping at the first match or difference.
//!
//! **Certificates.** A member whose own certificate names it (`ballast://member/ID`, from
//! `ballastctl certs issue --member ID`) checks identities: Raft needs a member certificate,
//! agent calls for node N a certificate naming `member/N` or `node/N`, a `node/N` certificate
//! may read but not write, and a certificate without identity (operators, scripts) may use
//! the public API but make neither Raft nor agent calls. A connection is judged by the rules
//! in force when it was accepted (see `tls.rs`), so a rotation disturbs no open connection.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use ballast_client::identity::CertIdentity;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Read,
    Admin,
    /// A Raft member (strict mode only).
    Member,
    /// The agent of one agent-only server.
    Node(u64),
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Read => write!(f, "a read token"),
            Grant::Admin => write!(f, "an admin token"),
            Grant::Member => write!(f, "a member token"),
            Grant::Node(id) => write!(f, "node {id}'s token"),
        }
    }
}

/// Which of the file's tokens a standalone agent calls with (see [`Tokens::agent_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentToken {
    /// The `node <id>` line of its own node: all it needs.
    Node,
    /// A member token: it works, but gives this server a member's rights.
    Member,
    /// A legacy file's first admin token.
    Admin,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    /// SHA-256 of every token, with its grant, in file order.
    entries: Vec<([u8; 32], Grant)>,
    /// The file has a `member` line.
    strict: bool,
    first_member: Option<String>,
    first_admin: Option<String>,
    /// The first `node <id>` token of each node.
    nodes: std::collections::BTreeMap<u64, String>,
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut t = Tokens {
            entries: Vec::new(),
            strict: false,
            first_member: None,
            first_admin: None,
            nodes: Default::default(),
        };
        let mut seen = std::collections::BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: String| format!("line {}: {m}", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let (grant, token) = match words.as_slice() {
                ["read", token] => (Grant::Read, *token),
                ["admin", token] => (Grant::Admin, *token),
                ["member", token] => (Grant::Member, *token),
                ["node", id, token] => {
                    let id: u64 = id
                        .parse()
                        .ok()
                        .filter(|id| *id > 0)
                        .ok_or_else(|| at(format!("node id {id:?}: a number from 1")))?;
                    (Grant::Node(id), *token)
                }
                [role, ..] if !["read", "admin", "member", "node"].contains(role) => {
                    return Err(at(format!(
                        "unknown role {role:?} (read, admin, member or node)"
                    )))
                }
                _ => {
                    return Err(at(
                        "expected `read|admin|member <token>` or `node <id> <token>`".into(),
                    ))
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(at(format!(
                    "a token needs at least {MIN_TOKEN_LEN} characters"
                )));
            }
            if !seen.insert(token) {
                return Err(at("the same token twice".into()));
            }
            match grant {
                Grant::Member => {
                    t.strict = true;
                    t.first_member.get_or_insert_with(|| token.to_string());
                }
                Grant::Admin => {
                    t.first_admin.get_or_insert_with(|| token.to_string());
                }
                Grant::Node(id) => {
                    t.nodes.entry(id).or_insert_with(|| token.to_string());
                }
                Grant::Read => {}
            }
            t.entries.push((digest(token), grant));
        }
        if t.entries.is_empty() {
            return Err("holds no token".into());
        }
        Ok(t)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// What `token` grants. Compares its digest with every entry's, to the end, so the time
    /// taken says nothing about how much of a token was right.
    pub fn grant_of(&self, token: &str) -> Option<Grant> {
        let d = digest(token);
        let mut found = None;
        for (entry, grant) in &self.entries {
            let same: bool = entry.ct_eq(&d).into();
            found = if same { Some(*grant) } else { found };
        }
        found
    }

    /// Strict: the file has a `member` line (see the module's documentation).
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// The token members call each other with: the first member token (strict), else the
    /// first admin token (legacy). None: this file cannot serve a member.
    pub fn peer_token(&self) -> Option<&str> {
        if self.strict {
            self.first_member.as_deref()
        } else {
            self.first_admin.as_deref()
        }
    }

    /// The token a standalone agent of `node` calls with: its `node <id>` line, else a member
    /// token, else (legacy) the first admin token.
    pub fn agent_token(&self, node: u64) -> Option<(&str, AgentToken)> {
        if let Some(t) = self.nodes.get(&node) {
            return Some((t, AgentToken::Node));
        }
        if let Some(t) = &self.first_member {
            return Some((t, AgentToken::Member));
        }
        self.first_admin.as_deref().map(|t| (t, AgentToken::Admin))
    }
}

/// The kinds of call, each with its own rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// gRPC health and reflection: no credential.
    Open,
    Read,
    /// Every public method that is neither a read, an agent call nor a membership change.
    Write,
    /// Adding, promoting or removing a member: the new member is sent the member token.
    Membership,
    /// An agent's call about its own node (the request's `node_id`).
    Agent,
    /// The internal Raft service, between members.
    Raft,
}

/// The class of a gRPC method (`path` is `/package.Service/Method`). Anything not known to
/// be something else is a write.
pub fn class(path: &str) -> Class {
    if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
        return Class::Open;
    }
    if path.starts_with("/ballast.v1.RaftService/") {
        return Class::Raft;
    }
    const READ: &[&str] = &[
        "/ballast.v1.KV/Get",
        "/ballast.v1.KV/Range",
        "/ballast.v1.Watch/Watch",
        "/ballast.v1.Cluster/Status",
        "/ballast.v1.State/GetState",
        "/ballast.v1.Agent/Leases",
    ];
    const MEMBERSHIP: &[&str] = &[
        "/ballast.v1.Cluster/AddLearner",
        "/ballast.v1.Cluster/PromoteVoter",
        "/ballast.v1.Cluster/RemoveNode",
    ];
    const AGENT: &[&str] = &[
        "/ballast.v1.Agent/Renew",
        "/ballast.v1.Agent/Register",
        "/ballast.v1.Agent/ReportHealth",
        "/ballast.v1.Agent/ReportRelease",
        "/ballast.v1.Agent/ConfirmRelease",
    ];
    if READ.contains(&path) {
        Class::Read
    } else if AGENT.contains(&path) {
        Class::Agent
    } else if MEMBERSHIP.contains(&path) {
        Class::Membership
    } else {
        Class::Write
    }
}

/// The nodes a caller may act as the agent of, from its credentials; in the extensions of
/// every request that passed [`AuthLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentScope {
    Any,
    Only(u64),
}

impl AgentScope {
    pub fn permits(self, node: u64) -> bool {
        match self {
            AgentScope::Any => true,
            AgentScope::Only(n) => n == node,
        }
    }

    /// What both credentials allow; None when they name different nodes.
    fn and(self, other: AgentScope) -> Option<AgentScope> {
        match (self, other) {
            (AgentScope::Any, o) | (o, AgentScope::Any) => Some(o),
            (AgentScope::Only(a), AgentScope::Only(b)) => (a == b).then_some(self),
        }
    }
}

fn denied(m: String) -> tonic::Status {
    tonic::Status::permission_denied(m)
}

/// The token rule: what a call of `class` with `authorization` (the header's value) may do.
pub fn check_token(
    tokens: &Tokens,
    path: &str,
    class: Class,
    authorization: Option<&str>,
) -> Result<AgentScope, tonic::Status> {
    if class == Class::Open {
        return Ok(AgentScope::Any);
    }
    let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err(tonic::Status::unauthenticated(
            "this cluster needs a token: send `authorization: Bearer <token>` (ballastctl --token or BALLAST_TOKEN)",
        ));
    };
    let Some(grant) = tokens.grant_of(token.trim()) else {
        return Err(tonic::Status::unauthenticated("unknown token"));
    };
    // In a legacy file the admin token is also the members' and the agents' token.
    let member = grant == Grant::Member || (!tokens.strict && grant == Grant::Admin);
    match (class, grant) {
        (Class::Open | Class::Read, _) => Ok(AgentScope::Any),
        (Class::Write, Grant::Admin | Grant::Member) => Ok(AgentScope::Any),
        (Class::Write, Grant::Read) => Err(denied(format!(
            "{path} changes the cluster: it needs an admin token, this one may only read"
        ))),
        (Class::Write, Grant::Node(id)) => Err(denied(format!(
            "{path} changes the cluster: node {id}'s token may only read and act as node {id}'s agent"
        ))),
        (Class::Agent, Grant::Node(id)) => Ok(AgentScope::Only(id)),
        (Class::Agent, _) if member => Ok(AgentScope::Any),
        (Class::Agent, _) => Err(denied(format!(
            "{path} is an agent's call: it needs the `node <id>` token of the agent's node or a member token, not {grant}"
        ))),
        (Class::Membership, _) if member => Ok(AgentScope::Any),
        (Class::Membership, _) => Err(denied(format!(
            "{path} changes the cluster's members: it needs a member token (a new member is sent it with the Raft traffic), not {grant}"
        ))),
        (Class::Raft, _) if member => Ok(AgentScope::Any),
        (Class::Raft, _) => Err(denied(format!(
            "{path} is Raft traffic between members: it needs a member token, not {grant}"
        ))),
    }
}

/// The certificate rule, for a member that checks identities: what a call of `class` from a
/// client certificate naming `identity` may do.
pub fn check_cert(
    path: &str,
    class: Class,
    identity: Option<CertIdentity>,
) -> Result<AgentScope, tonic::Status> {
    use CertIdentity::{Member, Node};
    match (class, identity) {
        (Class::Open | Class::Read, _) => Ok(AgentScope::Any),
        // A certificate is no secret the leader sends a new member: membership changes are
        // writes here (Raft traffic still needs a member's own certificate and key).
        (Class::Write | Class::Membership, None | Some(Member(_))) => Ok(AgentScope::Any),
        (Class::Write | Class::Membership, Some(Node(id))) => Err(denied(format!(
            "{path} changes the cluster: node {id}'s certificate may only read and act as node {id}'s agent"
        ))),
        (Class::Agent, Some(i)) => Ok(AgentScope::Only(i.node_id())),
        (Class::Agent, None) => Err(denied(format!(
            "{path} is an agent's call: it needs a certificate naming the agent's node (ballastctl certs issue --node ID, or --member ID); this one names no node"
        ))),
        (Class::Raft, Some(Member(_))) => Ok(AgentScope::Any),
        (Class::Raft, other) => Err(denied(format!(
            "{path} is Raft traffic between members: it needs a certificate naming a member (ballastctl certs issue --member ID); this one names {}",
            other.map_or("no one".to_string(), |i| i.to_string())
        ))),
    }
}

/// Both rules: `tokens` when the cluster uses tokens, `cert` (the peer's identity) when this
/// member checks certificate identities. The scope both credentials allow.
pub fn check(
    tokens: Option<&Tokens>,
    cert: Option<Option<CertIdentity>>,
    path: &str,
    authorization: Option<&str>,
) -> Result<AgentScope, tonic::Status> {
    let class = class(path);
    let by_token = match tokens {
        Some(t) => check_token(t, path, class, authorization)?,
        None => AgentScope::Any,
    };
    let by_cert = match cert {
        Some(identity) => check_cert(path, class, identity)?,
        None => AgentScope::Any,
    };
    by_token.and(by_cert).ok_or_else(|| {
        denied(format!(
            "{path}: the token and the certificate name different nodes ({by_token:?}, {by_cert:?})"
        ))
    })
}

/// In an agent handler: refuses a call about `node` from a caller whose credentials name
/// another node.
pub fn agent_may_act_for<T>(
    req: &tonic::Request<T>,
    node: u64,
) -> Result<(), crate::error::ApiError> {
    match req.extensions().get::<AgentScope>() {
        Some(scope) if scope.permits(node) => Ok(()),
        Some(AgentScope::Only(own)) => Err(crate::error::ApiError::PermissionDenied(format!(
            "these credentials act for node {own} only, not node {node}"
        ))),
        _ => Err(crate::error::ApiError::PermissionDenied(
            "no credentials were checked for this call".into(),
        )),
    }
}

/// The server side: refuses calls [`check`] refuses, before they reach a service, and tells
/// the agent handlers whom the caller may act for.
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

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // The connection's peer, as the accept loop judged it (`tls.rs`).
        let cert = req
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(|c| c.checked);
        match check(self.tokens.as_deref(), cert, req.uri().path(), header) {
            Ok(scope) => {
                req.extensions_mut().insert(scope);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# operators\nadmin aaaaaaaaaaaaaaaaaaaa\nread rrrrrrrrrrrrrrrrrrrr\n\nadmin bbbbbbbbbbbbbbbbbbbb\nnode 2 nnnnnnnnnnnnnnnnnnnn\n";
    const STRICT: &str = "member mmmmmmmmmmmmmmmmmmmm\nmember MMMMMMMMMMMMMMMMMMMM\nadmin aaaaaaaaaaaaaaaaaaaa\nread rrrrrrrrrrrrrrrrrrrr\nnode 2 nnnnnnnnnnnnnnnnnnnn\nnode 2 oooooooooooooooooooo\n";

    #[test]
    fn the_file_gives_grants_and_the_peer_token() {
        let t = Tokens::parse(FILE).unwrap();
        assert!(!t.strict());
        assert_eq!(t.grant_of("aaaaaaaaaaaaaaaaaaaa"), Some(Grant::Admin));
        assert_eq!(t.grant_of("rrrrrrrrrrrrrrrrrrrr"), Some(Grant::Read));
        assert_eq!(t.grant_of("nnnnnnnnnnnnnnnnnnnn"), Some(Grant::Node(2)));
        assert_eq!(t.grant_of("nope"), None);
        assert_eq!(
            t.grant_of("aaaaaaaaaaaaaaaaaaa"),
            None,
            "a prefix is no token"
        );
        assert_eq!(t.peer_token(), Some("aaaaaaaaaaaaaaaaaaaa"));

        let s = Tokens::parse(STRICT).unwrap();
        assert!(s.strict());
        assert_eq!(s.peer_token(), Some("mmmmmmmmmmmmmmmmmmmm"));
        assert_eq!(s.grant_of("MMMMMMMMMMMMMMMMMMMM"), Some(Grant::Member));
        assert_eq!(s.grant_of("oooooooooooooooooooo"), Some(Grant::Node(2)));
        assert_eq!(
            s.agent_token(2),
            Some(("nnnnnnnnnnnnnnnnnnnn", AgentToken::Node))
        );
        assert_eq!(
            s.agent_token(3),
            Some(("mmmmmmmmmmmmmmmmmmmm", AgentToken::Member))
        );
        assert_eq!(
            t.agent_token(3),
            Some(("aaaaaaaaaaaaaaaaaaaa", AgentToken::Admin))
        );
        // A standalone agent's file may hold its own line only.
        let own = Tokens::parse("node 4 nnnnnnnnnnnnnnnnnnnn").unwrap();
        assert_eq!(own.peer_token(), None);
        assert_eq!(
            own.agent_token(4),
            Some(("nnnnnnnnnnnnnnnnnnnn", AgentToken::Node))
        );
        assert_eq!(own.agent_token(5), None);
    }

    #[test]
    fn bad_files_say_which_line() {
        for (text, says) in [
            ("root aaaaaaaaaaaaaaaaaaaa", "unknown role"),
            ("admin short", "at least 16"),
            ("admin", "expected"),
            ("node aaaaaaaaaaaaaaaaaaaa", "expected"),
            ("node 0 aaaaaaaaaaaaaaaaaaaa", "node id"),
            ("node x aaaaaaaaaaaaaaaaaaaa", "node id"),
            ("member a aaaaaaaaaaaaaaaaaaaa", "expected"),
            ("", "no token"),
            (
                "admin aaaaaaaaaaaaaaaaaaaa\nnode 3 aaaaaaaaaaaaaaaaaaaa",
                "line 2: the same token twice",
            ),
        ] {
            let e = Tokens::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    const RAFT: &str = "/ballast.v1.RaftService/Vote";
    const RENEW: &str = "/ballast.v1.Agent/Renew";
    const PUT: &str = "/ballast.v1.KV/Put";
    const GET: &str = "/ballast.v1.KV/Get";

    fn by_token(file: &str, path: &str, token: &str) -> Result<AgentScope, tonic::Code> {
        let t = Tokens::parse(file).unwrap();
        check(Some(&t), None, path, Some(&format!("Bearer {token}"))).map_err(|s| s.code())
    }

    #[test]
    fn strict_tokens_keep_raft_to_members_and_agents_to_their_node() {
        use tonic::Code::{PermissionDenied, Unauthenticated};
        use AgentScope::*;
        let (member, admin, read, node) = (
            "mmmmmmmmmmmmmmmmmmmm",
            "aaaaaaaaaaaaaaaaaaaa",
            "rrrrrrrrrrrrrrrrrrrr",
            "nnnnnnnnnnnnnnnnnnnn",
        );
        for (path, token, want) in [
            (RAFT, member, Ok(Any)),
            (RAFT, admin, Err(PermissionDenied)),
            (RAFT, read, Err(PermissionDenied)),
            (RAFT, node, Err(PermissionDenied)),
            (RENEW, member, Ok(Any)),
            (RENEW, node, Ok(Only(2))),
            (RENEW, admin, Err(PermissionDenied)),
            (RENEW, read, Err(PermissionDenied)),
            (PUT, member, Ok(Any)),
            (PUT, admin, Ok(Any)),
            (PUT, node, Err(PermissionDenied)),
            (PUT, read, Err(PermissionDenied)),
            (GET, node, Ok(Any)),
            (GET, read, Ok(Any)),
            (GET, "wrongwrongwrongwrong", Err(Unauthenticated)),
        ] {
            assert_eq!(by_token(STRICT, path, token), want, "{path} {token}");
        }
        let t = Tokens::parse(STRICT).unwrap();
        assert_eq!(
            check(Some(&t), None, GET, None).map_err(|s| s.code()),
            Err(Unauthenticated)
        );
        assert_eq!(
            check(Some(&t), None, "/grpc.health.v1.Health/Check", None).map_err(|s| s.code()),
            Ok(Any)
        );
    }

    #[test]
    fn legacy_tokens_let_admin_do_everything() {
        use tonic::Code::PermissionDenied;
        use AgentScope::*;
        let (admin, read, node) = (
            "bbbbbbbbbbbbbbbbbbbb",
            "rrrrrrrrrrrrrrrrrrrr",
            "nnnnnnnnnnnnnnnnnnnn",
        );
        for (path, token, want) in [
            (RAFT, admin, Ok(Any)),
            (RAFT, read, Err(PermissionDenied)),
            (RAFT, node, Err(PermissionDenied)),
            (RENEW, admin, Ok(Any)),
            (RENEW, node, Ok(Only(2))),
            (RENEW, read, Err(PermissionDenied)),
            (PUT, admin, Ok(Any)),
            (PUT, read, Err(PermissionDenied)),
            ("/ballast.v1.Unknown/Thing", read, Err(PermissionDenied)),
        ] {
            assert_eq!(by_token(FILE, path, token), want, "{path} {token}");
        }
    }

    #[test]
    fn certificates_name_members_and_nodes() {
        use tonic::Code::PermissionDenied;
        use AgentScope::*;
        use CertIdentity::{Member, Node};
        let by = |path: &str, i: Option<CertIdentity>| {
            check(None, Some(i), path, None).map_err(|s| s.code())
        };
        for (path, identity, want) in [
            (RAFT, Some(Member(1)), Ok(Any)),
            (RAFT, Some(Node(2)), Err(PermissionDenied)),
            (RAFT, None, Err(PermissionDenied)),
            (RENEW, Some(Member(3)), Ok(Only(3))),
            (RENEW, Some(Node(2)), Ok(Only(2))),
            (RENEW, None, Err(PermissionDenied)),
            (PUT, None, Ok(Any)),
            (PUT, Some(Member(1)), Ok(Any)),
            (PUT, Some(Node(2)), Err(PermissionDenied)),
            (GET, Some(Node(2)), Ok(Any)),
        ] {
            assert_eq!(by(path, identity), want, "{path} {identity:?}");
        }
        // Without identity checks (a member whose own certificate names no one): anything.
        assert_eq!(check(None, None, RAFT, None).map_err(|s| s.code()), Ok(Any));
    }

    #[test]
    fn a_token_and_a_certificate_must_name_the_same_node() {
        let t = Tokens::parse(STRICT).unwrap();
        let node2 = Some("Bearer nnnnnnnnnnnnnnnnnnnn");
        let member = Some("Bearer mmmmmmmmmmmmmmmmmmmm");
        let cert = |i| Some(Some(CertIdentity::Node(i)));
        let code = |r: Result<AgentScope, tonic::Status>| r.map_err(|s| s.code());
        assert_eq!(
            code(check(Some(&t), cert(2), RENEW, node2)),
            Ok(AgentScope::Only(2))
        );
        assert_eq!(
            check(Some(&t), cert(3), RENEW, node2).map_err(|s| s.code()),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(check(Some(&t), cert(3), RENEW, member)),
            Ok(AgentScope::Only(3))
        );
        // Both rules apply: a member token does not open Raft to a node certificate.
        assert_eq!(
            check(Some(&t), cert(3), RAFT, member).map_err(|s| s.code()),
            Err(tonic::Code::PermissionDenied)
        );
    }
}
