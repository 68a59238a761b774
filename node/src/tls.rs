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

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ballast_client::tls::{load_identity, load_roots, provider, ClientTls, TlsError, TlsFiles};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS files of a member: all three are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn build_server(files: &NodeTlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let roots = load_roots(&files.ca)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let (certs, key) = load_identity(&files.cert, &files.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A member's TLS: what it accepts with and what it calls its peers with.
#[derive(Debug)]
pub struct NodeTls {
    files: NodeTlsFiles,
    server: RwLock<Arc<rustls::ServerConfig>>,
    client: Arc<ClientTls>,
}

impl NodeTls {
    /// Reads and checks the files; an error names the one at fault.
    pub fn load(files: NodeTlsFiles) -> Result<Arc<Self>, TlsError> {
        let server = build_server(&files)?;
        let client = ClientTls::load(TlsFiles {
            ca: files.ca.clone(),
            cert: Some(files.cert.clone()),
            key: Some(files.key.clone()),
        })?;
        Ok(Arc::new(NodeTls {
            files,
            server: RwLock::new(Arc::new(server)),
            client,
        }))
    }

    /// Reads the files again. The server side is built first and swapped last, and the client
    /// side swaps only once built, so a bad file changes nothing.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server = build_server(&self.files)?;
        self.client.reload()?;
        *self.server.write().unwrap() = Arc::new(server);
        Ok(())
    }

    /// The client side, for calls to the other members and the embedded agent.
    pub fn client(&self) -> &Arc<ClientTls> {
        &self.client
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.read().unwrap().clone())
    }
}

/// An accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
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
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Incoming = Pin<Box<dyn futures::Stream<Item = std::io::Result<Conn>> + Send>>;

/// The connections of `listener`, with Nagle off, through TLS when `tls` is given. A
/// connection whose handshake fails (no certificate, another CA, not TLS at all) is closed and
/// logged; it never reaches the gRPC server. The listener closes when the stream is dropped.
pub fn incoming(listener: TcpListener, tls: Option<Arc<NodeTls>>) -> Incoming {
    use futures::StreamExt;
    let Some(tls) = tls else {
        return tokio_stream::wrappers::TcpListenerStream::new(listener)
            .map(|conn| {
                conn.map(|s| {
                    // tonic's tcp_nodelay applies only to listeners it binds itself; without
                    // it delayed ACKs add ~40 ms to small answers.
                    let _ = s.set_nodelay(true);
                    Conn::Plain(s)
                })
            })
            .boxed();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pass it on, tonic logs and goes on.
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
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
