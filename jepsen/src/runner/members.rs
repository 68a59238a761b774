//! How the runner's clients reach the members: their endpoints and, in TLS runs, the
//! certificates made for the run; the workloads' clients and the short-lived ones that ask the
//! cluster something from the client host. What the clients do with them is the workloads'.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_client::{Client, ClientConfig};

use crate::history::Op;
use crate::lab::Lab;

/// How the runner's clients reach the members: their gRPC endpoints and, in TLS runs, the
/// client certificate.
#[derive(Clone)]
pub(super) struct Members {
    pub(super) endpoints: Vec<String>,
    pub(super) tls: Option<Arc<ballast_client::tls::ClientTls>>,
}

impl Members {
    pub(super) fn plain(endpoints: Vec<String>) -> Self {
        Members {
            endpoints,
            tls: None,
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.endpoints.clone());
        c.tls = self.tls.clone();
        c
    }
}

/// Makes a CA, a certificate per member host and a client certificate under `dir`; returns
/// the members' extra flags per node id and the client side.
pub(super) fn tls_material(
    lab: &Lab,
    dir: &Path,
) -> Result<(Vec<Vec<String>>, Arc<ballast_client::tls::ClientTls>), String> {
    use ballast_client::certs;
    let ca = dir.join("ca");
    certs::init_ca(&ca, "jepsen CA", 2).map_err(|e| e.to_string())?;
    let mut flags = vec![Vec::new()];
    for (i, h) in lab.nodes().iter().enumerate() {
        let name = format!("n{}", i + 1);
        // Member certificates name their member, so Raft and agent calls are checked.
        let identity = Some(ballast_client::identity::CertIdentity::Member(i as u64 + 1));
        let sans = [h.addr.to_string()];
        let (cert, key) = certs::issue(&ca, &ca, &name, &sans, certs::Kind::Node, identity, 2)
            .map_err(|e| e.to_string())?;
        flags.push(vec![
            "--tls-ca".into(),
            ca.join(certs::CA_CERT).display().to_string(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]);
    }
    let (cert, key) = certs::issue(&ca, &ca, "jepsen", &[], certs::Kind::Client, None, 2)
        .map_err(|e| e.to_string())?;
    let client = ballast_client::tls::ClientTls::load(ballast_client::tls::TlsFiles {
        ca: ca.join(certs::CA_CERT),
        cert: Some(cert),
        key: Some(key),
    })
    .map_err(|e| e.to_string())?;
    Ok((flags, client))
}

/// Asks the cluster from the client host with a short-lived client (calls limited to
/// `deadline`): `ask` gets the client and returns what it found. None: the thread failed.
pub(super) fn ask_cluster<T, F, Fut>(
    members: &Members,
    lab: &Lab,
    deadline: Duration,
    ask: F,
) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let members = members.clone();
    lab.run_in(lab.client(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let mut cfg = members.config();
        cfg.deadline = deadline;
        // The client's channels need the runtime: made inside it.
        Some(rt.block_on(async move { ask(Client::new(cfg)).await }))
    })
    .ok()
    .flatten()
}

/// A workload client: a short deadline, so that an operation that cannot finish during a
/// fault is recorded (as unknown) instead of waiting the fault out.
pub(super) fn workload_client(members: &Members) -> Client {
    let mut cfg = members.config();
    cfg.attempt_timeout = Duration::from_millis(500);
    cfg.deadline = Duration::from_secs(1);
    Client::new(cfg)
}

/// What every workload client of a run shares: the members, the run's start (operation times
/// are nanoseconds since), the history its operations go to, and the flag that stops it.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) members: Members,
    pub(super) t0: Instant,
    pub(super) history: Arc<Mutex<Vec<Op>>>,
    pub(super) stop: Arc<AtomicBool>,
}
