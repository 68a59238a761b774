//! Mutual TLS on a member's gRPC port (Raft and API alike), reloadable on SIGHUP.
//!
//! When configured, every connection must present a certificate signed by the cluster CA
//! (`--tls-ca`); the member shows its own (`--tls-cert`, `--tls-key`) and uses the same pair
//! as a client when it calls the other members. [`NodeTls::reload`] reads all three files
//! again and swaps the server and client configurations together: connections accepted or
//! opened afterwards use the new files, open ones carry on (so a rotation does not disturb
//! Raft). A reload that fails keeps what was loaded before and says why.
//!
//! Handshakes run off the accept loop, each limited to [`HANDSHAKE_TIMEOUT`], so a client that
//! opens a connection and says nothing holds up no one.
//!
//! Identities: the accept loop reads the client certificate's identity URI
//! (`ballast_client::identity`) once, at the handshake, and hands it to every request of the
//! connection ([`ConnInfo`]); `auth.rs` checks it per call when the member *checks
//! identities*, which it does while its own certificate names it (`ballast://member/ID`).
//! Whether a connection is checked is fixed when it is accepted: after a reload that turns
//! checks on, connections opened before carry on as they were (so the members' Raft
//! connections survive a rotation), new ones are checked. While checking, a certificate with
//! a malformed identity URI, or with two, is refused at the handshake. A member's own
//! certificate must name this member or no one: another member's, or an agent-only server's,
//! is refused at start and on reload.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ballast_client::identity::{identity_of, CertIdentity};
use ballast_client::tls::{load_identity, load_roots, provider, ClientTls, TlsError, TlsFiles};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS files of a member: all three are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// What the server side is built from: the configuration, and whether it checks identities.
struct Served {
    config: Arc<rustls::ServerConfig>,
    checks: bool,
}

/// The server side of `files`; `member`: the member it serves, whose certificate must name
/// it or no one.
fn build_server(files: &NodeTlsFiles, member: Option<u64>) -> Result<Served, TlsError> {
    let roots = load_roots(&files.ca)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let (certs, key) = load_identity(&files.cert, &files.key)?;
    let own = identity_of(&certs[0]).map_err(|e| TlsError::File {
        path: files.cert.clone(),
        message: e.to_string(),
    })?;
    if let (Some(id), Some(own)) = (member, own) {
        if own != CertIdentity::Member(id) {
            return Err(TlsError::File {
                path: files.cert.clone(),
                message: format!(
                    "the certificate names {own}, but this is member {id} (ballastctl certs issue --member {id})"
                ),
            });
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Served {
        config: Arc::new(config),
        checks: matches!(own, Some(CertIdentity::Member(_))),
    })
}

/// A member's TLS: what it accepts with and what it calls its peers with.
pub struct NodeTls {
    files: NodeTlsFiles,
    member: Option<u64>,
    server: RwLock<Served>,
    client: Arc<ClientTls>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("files", &self.files)
            .field("member", &self.member)
            .field("checks_identities", &self.checks_identities())
            .finish()
    }
}

impl NodeTls {
    /// Reads and checks the files; an error names the one at fault.
    pub fn load(files: NodeTlsFiles) -> Result<Arc<Self>, TlsError> {
        Self::load_for(files, None)
    }

    /// [`NodeTls::load`] for member `member`: its certificate must name it or no one.
    pub fn load_for(files: NodeTlsFiles, member: Option<u64>) -> Result<Arc<Self>, TlsError> {
        let server = build_server(&files, member)?;
        let client = ClientTls::load(TlsFiles {
            ca: files.ca.clone(),
            cert: Some(files.cert.clone()),
            key: Some(files.key.clone()),
        })?;
        Ok(Arc::new(NodeTls {
            files,
            member,
            server: RwLock::new(server),
            client,
        }))
    }

    /// Reads the files again. The server side is built first and swapped last, and the client
    /// side swaps only once built, so a bad file changes nothing.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server = build_server(&self.files, self.member)?;
        self.client.reload()?;
        *self.server.write().unwrap() = server;
        Ok(())
    }

    /// Whether new connections are checked: this member's own certificate names it.
    pub fn checks_identities(&self) -> bool {
        self.server.read().unwrap().checks
    }

    /// The client side, for calls to the other members and the embedded agent.
    pub fn client(&self) -> &Arc<ClientTls> {
        &self.client
    }

    /// An acceptor and whether the connections it accepts are checked, from one reading.
    fn acceptor(&self) -> (tokio_rustls::TlsAcceptor, bool) {
        let s = self.server.read().unwrap();
        (tokio_rustls::TlsAcceptor::from(s.config.clone()), s.checks)
    }
}

/// An accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls {
        stream: Box<tokio_rustls::server::TlsStream<TcpStream>>,
        /// The identity its client certificate names, if this member checks it.
        checked: Option<Option<CertIdentity>>,
    },
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls { stream, .. } => stream.get_ref().0,
        }
    }
}

/// What every request of a connection learns about it (tonic puts it in the extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub local_addr: Option<std::net::SocketAddr>,
    pub remote_addr: Option<std::net::SocketAddr>,
    /// Some when the connection was accepted while this member checked identities: the
    /// identity its client certificate names, if any.
    pub checked: Option<Option<CertIdentity>>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
            checked: match self {
                Conn::Plain(_) => None,
                Conn::Tls { checked, .. } => *checked,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls { stream: s, .. } => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls { stream: s, .. } => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls { stream: s, .. } => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls { stream: s, .. } => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls { stream: s, .. } => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls { stream: s, .. } => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Incoming = Pin<Box<dyn futures::Stream<Item = std::io::Result<Conn>> + Send>>;

/// Pauses of the accept loop after an error that leaves the waiting connection in the backlog
/// (out of descriptors or memory): the next `accept` would fail the same way at once, so
/// retrying without a pause burns a core. Starts at [`AcceptBackoff::FIRST`], doubles up to
/// [`AcceptBackoff::MAX`], starts over after a connection is accepted. Pure: the caller
/// sleeps and logs.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    errors: u64,
    since: Option<std::time::Instant>,
    next: Duration,
}

impl AcceptBackoff {
    pub const FIRST: Duration = Duration::from_millis(5);
    pub const MAX: Duration = Duration::from_secs(1);

    /// After a failed accept at `now`: how long to pause, and whether this error starts a
    /// burst (the one to log).
    pub fn failed(&mut self, now: std::time::Instant) -> (Duration, bool) {
        self.errors += 1;
        let first = self.since.is_none();
        self.since.get_or_insert(now);
        let wait = if first { Self::FIRST } else { self.next };
        self.next = (wait * 2).min(Self::MAX);
        (wait, first)
    }

    /// After an accepted connection at `now`: the burst of errors it ends, if any (how many,
    /// for how long).
    pub fn accepted(&mut self, now: std::time::Instant) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        let errors = std::mem::take(&mut self.errors);
        Some((errors, now - since))
    }
}

/// Errors of `accept` that concern one connection only, which the kernel has dropped: the
/// next connection can be accepted at once. accept(2) lists the network errors Linux passes
/// on this way.
fn consumed_a_connection(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// The connections of `listener`, with Nagle off, through TLS when `tls` is given. A
/// connection whose handshake fails (no certificate, another CA, not TLS at all) is closed and
/// logged; it never reaches the gRPC server. An `accept` that fails for want of descriptors or
/// memory pauses the loop ([`AcceptBackoff`]), logged once per burst and counted in
/// `ballast_accept_errors_total`. The listener closes when the stream is dropped.
pub fn incoming(listener: TcpListener, tls: Option<Arc<NodeTls>>) -> Incoming {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Conn>>(64);
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) if consumed_a_connection(&e) => continue,
                Err(e) => {
                    crate::metrics::ACCEPT_ERRORS.inc();
                    let (wait, first) = backoff.failed(std::time::Instant::now());
                    if first {
                        tracing::error!(error = %e, "cannot accept connections on the gRPC port; retrying with pauses of up to 1 s");
                    }
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            if let Some((errors, lasted)) = backoff.accepted(std::time::Instant::now()) {
                tracing::warn!(
                    errors,
                    ?lasted,
                    "accepting connections on the gRPC port again"
                );
            }
            // tonic's tcp_nodelay applies only to listeners it binds itself; without it
            // delayed ACKs add ~40 ms to small answers.
            let _ = stream.set_nodelay(true);
            let Some(tls) = &tls else {
                if tx.send(Ok(Conn::Plain(stream))).await.is_err() {
                    return;
                }
                continue;
            };
            let (acceptor, checks) = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let checked = if checks {
                            let identity = match s.get_ref().1.peer_certificates() {
                                Some([leaf, ..]) => identity_of(leaf),
                                _ => Ok(None),
                            };
                            match identity {
                                Ok(i) => Some(i),
                                Err(e) => {
                                    tracing::info!(%peer, error = %e, "TLS connection refused: its certificate's identity");
                                    return;
                                }
                            }
                        } else {
                            None
                        };
                        let conn = Conn::Tls {
                            stream: Box::new(s),
                            checked,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

#[cfg(test)]
mod backoff_tests {
    use super::AcceptBackoff;
    use std::time::{Duration, Instant};

    #[test]
    fn pauses_double_to_a_second_and_start_over_after_an_accept() {
        let t0 = Instant::now();
        let mut b = AcceptBackoff::default();
        assert_eq!(b.accepted(t0), None, "no burst to report");
        let waits: Vec<(u64, bool)> = (0..10)
            .map(|_| {
                let (w, first) = b.failed(t0);
                (w.as_millis() as u64, first)
            })
            .collect();
        assert_eq!(
            waits,
            [
                (5, true),
                (10, false),
                (20, false),
                (40, false),
                (80, false),
                (160, false),
                (320, false),
                (640, false),
                (1000, false),
                (1000, false)
            ]
        );
        let later = t0 + Duration::from_millis(2300);
        assert_eq!(b.accepted(later), Some((10, Duration::from_millis(2300))));
        assert_eq!(b.accepted(later), None);
        assert_eq!(b.failed(later), (AcceptBackoff::FIRST, true), "a new burst");
    }
}
