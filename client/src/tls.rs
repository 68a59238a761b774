//! Mutual TLS: certificates and keys read from PEM files, and the connector that clients and
//! members use to reach a member over TLS.
//!
//! The configuration is held behind a lock and swapped whole by [`ClientTls::reload`]: every
//! new connection uses the files as they were last loaded, connections already open keep the
//! certificate they were made with. A reload that fails leaves the previous configuration in
//! place. Only TLS 1.3 and 1.2 with the `ring` provider are offered; ALPN is `h2`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why certificates could not be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

/// Where the PEM files are. `cert` and `key` go together; a client without them can only talk
/// to members that do not ask for a certificate (none does when TLS is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) that sign the other side's certificate.
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The crypto provider every configuration is built with (explicit, so that no process-wide
/// default has to be installed).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates in a PEM file, in order; refuses a file with none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| file_err(path, e))?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| file_err(path, format!("holds no usable private key: {e}")))
}

/// A root store of the CA file's certificates.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The certificate chain and key of `files`, checked to belong together.
pub fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| file_err(key, format!("key not supported: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing);
    certified.keys_match().map_err(|_| {
        TlsError::Config(format!(
            "the key in {} does not belong to the certificate in {}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok((certs, key_der))
}

fn build_client(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let roots = load_roots(&files.ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let (certs, key) = load_identity(cert, key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "a client certificate and its key go together".into(),
            ))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The client side of TLS, reloadable.
#[derive(Debug)]
pub struct ClientTls {
    files: TlsFiles,
    config: RwLock<Arc<rustls::ClientConfig>>,
}

impl ClientTls {
    /// Reads the files; an error names the one at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = build_client(&files)?;
        Ok(Arc::new(ClientTls {
            files,
            config: RwLock::new(Arc::new(config)),
        }))
    }

    /// Reads the files again; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_client(&self.files)?;
        *self.config.write().unwrap() = Arc::new(config);
        Ok(())
    }

    fn current(&self) -> Arc<rustls::ClientConfig> {
        self.config.read().unwrap().clone()
    }
}

/// Connects TCP, then TLS with the configuration current at that moment; the server's name
/// (DNS name or IP address) is the endpoint's host.
#[derive(Clone)]
struct TlsConnector {
    tls: Arc<ClientTls>,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
            + Send,
    >,
>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.current();
        Box::pin(async move {
            let bad =
                |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
            let host = uri.host().ok_or_else(|| bad("endpoint without a host"))?;
            let port = uri
                .port_u16()
                .ok_or_else(|| bad("endpoint without a port"))?;
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_string())
                .map_err(|_| bad("endpoint host is not a DNS name or IP address"))?;
            let tcp = TcpStream::connect((bare, port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A lazily connected channel to a member at `addr` (`host:port`), over TLS when `tls` is
/// given. Shared by the client library and by members calling each other.
pub fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
    tls: Option<&Arc<ClientTls>>,
) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(match tls {
        None => ep.connect_lazy(),
        Some(tls) => ep.connect_with_connector_lazy(TlsConnector { tls: tls.clone() }),
    })
}
