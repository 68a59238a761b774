//! Starting a member: identity, storage, Raft, gRPC, forming or joining the cluster, the
//! leader's loops, the agent, metrics and HTTP, wired in that order (see `start`), and the
//! handle that stops them. Decides nothing: each part is its own module.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::errors::RaftError;
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::leader::book::LeaseBook;
use crate::leader::controller::ControllerConfig;
use crate::member::identity::IdentityStore;
use crate::member::network::{Network, PeerPool};
use crate::member::proposer::now_ms;
use crate::member::proposer::Proposer;
use crate::member::store::{open_member_engine, FileEngine, LogStore, StateMachineStore};
use crate::node::Node;
use crate::types::{NodeId, Op, Outcome, Raft};
use crate::{http, server};

/// Errors that stop a member from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] crate::member::identity::IdentityError),
    #[error("opening storage: {0}")]
    Storage(#[from] crate::member::store::EngineError),
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error("restore: {0}")]
    Restore(String),
    #[error("token file {0}")]
    Tokens(String),
    #[error("TLS: {0}")]
    Tls(#[from] ballast_client::tls::TlsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A started member. Drop does not stop it; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    pub node: Arc<Node>,
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The storage engine, to know when the last holder let go of the data directory.
    engine: std::sync::Weak<FileEngine>,
}

impl NodeHandle {
    /// Stops serving, stops Raft and releases the data directory.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.node.raft.shutdown().await;
        for mut t in self.tasks {
            // Servers drain in-flight calls; a client that holds a connection open does not
            // hold up the stop for long.
            if tokio::time::timeout(Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
        // Connection tasks and one-off tasks end on their own soon after the stop; until the
        // last of them drops its handle on the node, the data directory stays locked.
        drop(self.node);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.engine.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("the storage engine is still held 10 s after the stop");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resolves when a stop was requested through [`NodeHandle::stopper`].
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Starts a member on already bound listeners (tests bind port 0 and pass them in).
pub async fn start(
    mut cfg: Config,
    grpc: TcpListener,
    http_listener: Option<TcpListener>,
) -> Result<NodeHandle, StartError> {
    let grpc_addr = grpc.local_addr()?;
    let http_addr = match &http_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let advertise = cfg
        .advertise
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());

    // TLS files, checked (and the key matched to its certificate) before anything is written.
    let tls = match &cfg.tls {
        Some(files) => Some(crate::tls::NodeTls::load_for(
            files.clone(),
            Some(cfg.node_id),
        )?),
        None => None,
    };
    if tls.as_ref().is_some_and(|t| !t.checks_identities()) {
        tracing::warn!(
            "this member's certificate names no member: any certificate from the CA may speak Raft and act as any node's agent. Issue member certificates (ballastctl certs issue NAME --member ID) to every member and reload them all"
        );
    }

    // API tokens, read before anything else so that a bad file changes nothing.
    let tokens = match &cfg.token_file {
        Some(path) => {
            let t = crate::auth::Tokens::load(path).map_err(StartError::Tokens)?;
            if t.peer_token().is_none() {
                return Err(StartError::Tokens(format!(
                    "{}: no member (or admin) token: members need one to call each other",
                    path.display()
                )));
            }
            if !t.strict() {
                tracing::warn!(
                    file = %path.display(),
                    "the token file has no `member` line: admin tokens speak Raft and may act as any node's agent. Turn the first `admin` line into `member` (same token; members call each other with it), add a new `admin` line for operators and `node <id> <token>` lines for agent-only servers, then restart the members one at a time"
                );
            }
            Some(Arc::new(t))
        }
        None => {
            if tls.is_some() {
                tracing::warn!(
                    "no --token-file: any client with a certificate from the CA may read and write"
                );
            } else {
                tracing::warn!("no --token-file: the API is open to anyone who reaches this port");
            }
            None
        }
    };

    // 0. Disaster recovery: this member's data becomes a backup for a new one-member cluster.
    // Done once: a flag left in a unit file must not force again at every restart.
    let forced = cfg.data_dir.join(crate::member::backup::FORCED);
    if cfg.force_new_cluster && forced.exists() {
        tracing::warn!(
            marker = %forced.display(),
            "this data directory was already forced into a new cluster; ignoring --force-new-cluster (remove it from the configuration)"
        );
    } else if cfg.force_new_cluster {
        let backup = crate::member::backup::force_new_cluster(&cfg.data_dir, cfg.node_id, now_ms())
            .map_err(StartError::Restore)?;
        std::fs::write(&forced, backup.display().to_string())?;
        cfg.bootstrap = true;
        cfg.initial_cluster.clear();
        cfg.restore_from = Some(backup);
    }
    cfg.force_new_cluster = false;

    // 1. The data directory: identity first, so a wrong directory is refused before anything.
    let (identity, fresh) = IdentityStore::open(&cfg.data_dir, cfg.node_id)?;
    let identity = Arc::new(identity);
    let forming = fresh && (cfg.bootstrap || !cfg.initial_cluster.is_empty());
    let pending = cfg.data_dir.join(crate::member::backup::PENDING);
    let mut cluster_id = cfg.initial_cluster_id();
    if let Some(from) = &cfg.restore_from {
        // Checked before anything is created: a bad file leaves the directory as it was.
        let bytes = std::fs::read(from)
            .map_err(|e| StartError::Restore(format!("{}: {e}", from.display())))?;
        let (header, payload) =
            crate::member::backup::check(&bytes, from).map_err(StartError::Restore)?;
        if !fresh {
            return Err(StartError::Restore(format!(
                "{} already holds a cluster's data; a backup is restored into an empty data directory",
                cfg.data_dir.display()
            )));
        }
        crate::member::backup::check_restore_size(payload.len()).map_err(StartError::Restore)?;
        // Initial members given the same file agree on an id no other cluster has.
        if !cfg.bootstrap {
            cluster_id = format!("{cluster_id}-restored-{}", &header.payload_sha256[..16]);
        }
        // The very bytes checked above, kept private like every backup.
        crate::member::backup::write_private(&pending, &bytes).map_err(StartError::Restore)?;
        tracing::info!(from = %from.display(), revision = header.revision, old_cluster = %header.cluster_id, "restoring a backup into a new cluster");
    }
    if forming {
        identity.accept_cluster(&cluster_id)?;
    } else if !fresh {
        check_restart_cluster(
            &cfg,
            &identity,
            member_client_config(&cfg.join, &tokens, &tls),
        )
        .await?;
    }

    // 2. Storage: the log and the state machine on the file engine (a log on sled, from an
    // older ballastd, moved there first).
    let engine = Arc::new(open_member_engine(&cfg.data_dir)?);
    let log_store = LogStore::new(engine.clone());
    let committed = log_store.committed_index();
    let engine_handle = Arc::downgrade(&engine);
    let sm = StateMachineStore::open(engine)?;

    // 3. Raft, with the tonic network.
    let pool = PeerPool::new(
        identity.clone(),
        Duration::from_millis(cfg.election_timeout_min_ms),
        tokens.as_ref().and_then(|t| t.peer_token()),
        tls.as_ref().map(|t| t.client().clone()),
    );
    let raft_config = Arc::new(
        cfg.raft_config()
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?,
    );
    let raft = Raft::new(
        cfg.node_id,
        raft_config,
        Network { pool: pool.clone() },
        log_store,
        sm.clone(),
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;

    let (stop, stop_rx) = watch::channel(false);
    let node = Arc::new(Node {
        id: cfg.node_id,
        raft: raft.clone(),
        sm,
        identity,
        pool,
        committed,
        advertise: advertise.clone(),
        rpc_timeout: cfg.rpc_timeout(),
        stopping: stop_rx.clone(),
        proposer: Proposer::spawn(raft.clone(), stop_rx.clone()),
        clock_start: Instant::now(),
        controller_cfg: ControllerConfig {
            lease: cfg.lease,
            node_down_after: Duration::from_millis(cfg.node_down_after_ms),
            election_timeout_max: Duration::from_millis(cfg.election_timeout_max_ms),
        },
        book: Mutex::new(LeaseBook::default()),
        controller_wake: tokio::sync::Notify::new(),
        handover_settle: Duration::from_millis(cfg.election_timeout_max_ms * 10)
            .max(Duration::from_secs(2)),
        tokens: tokens.clone(),
        tls: tls.clone(),
        failpoints: Default::default(),
        read_policy: cfg.read_policy,
        election_timeout_max: Duration::from_millis(cfg.election_timeout_max_ms),
        lease_reads_after_ms: std::sync::atomic::AtomicU64::new(0),
    });
    let mut tasks = Vec::new();

    // 4. Serve gRPC (Raft and the public API) before forming, so peers can reach us.
    tasks.push(tokio::spawn(server::serve(
        node.clone(),
        grpc,
        stop_rx.clone(),
    )));

    // 5. Form a new cluster, or ask to join a running one.
    if forming {
        let members: BTreeMap<NodeId, BasicNode> = if cfg.bootstrap {
            BTreeMap::from([(cfg.node_id, BasicNode::new(advertise.clone()))])
        } else {
            cfg.initial_cluster
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
                .collect()
        };
        tracing::info!(?members, cluster_id = ?node.identity.cluster_id(), "forming a new cluster");
        match raft.initialize(members).await {
            Ok(()) => {}
            // Another initial member got there first and already reached us: we are in.
            Err(RaftError::APIError(openraft::errors::InitializeError::NotAllowed(e))) => {
                tracing::info!(reason = %e, "cluster already formed by a peer");
            }
            Err(e) => return Err(StartError::Raft(e.to_string())),
        }
    } else if fresh && !cfg.join.is_empty() {
        tasks.push(tokio::spawn(join_cluster(
            member_client_config(&cfg.join, &tokens, &tls),
            cfg.node_id,
            advertise.clone(),
            stop_rx.clone(),
        )));
    }

    // A backup waiting to seed this (new) cluster: proposed once a leader exists.
    if pending.exists() {
        tasks.push(tokio::spawn(restore_pending(
            node.clone(),
            pending.clone(),
            stop_rx.clone(),
        )));
    }

    // 6. The agent, if this server holds VIPs and runs backends.
    if cfg.agent {
        let instance = crate::agent::new_instance();
        let agent_cfg = crate::agent::AgentConfig {
            node_id: cfg.node_id,
            lease: cfg.lease,
            garp_count: cfg.garp_count,
            garp_interval: Duration::from_millis(cfg.garp_interval_ms),
            check_host: cfg.check_host,
            exec_checks: cfg.exec_checks.clone(),
            release_sites: cfg.release_sites.clone(),
            haproxy: cfg.haproxy.clone(),
            interfaces: cfg.interfaces.clone(),
            instance,
            advertise: None,
        };
        let client = crate::agent::cluster_client(
            vec![advertise.clone()],
            &cfg.lease,
            peer_token(&tokens),
            tls.as_ref().map(|t| t.client().clone()),
            instance,
        );
        let fence = crate::agent::fence::local(cfg.node_id, cfg.fence_journal.as_deref())?;
        tasks.push(tokio::spawn(crate::agent::run(
            agent_cfg,
            client,
            fence,
            stop_rx.clone(),
        )));
    }

    // 7. The controller (acts only while this member leads), metrics and the HTTP endpoints.
    // A member that just started votes for nobody, itself included, for one election
    // timeout: it forgot the leader lease it was keeping before (`Node::votes_open`).
    {
        let (raft, wait) = (
            raft.clone(),
            Duration::from_millis(cfg.election_timeout_max_ms),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            raft.runtime_config().elect(true);
        }));
    }
    tasks.push(tokio::spawn(crate::leader::loops::controller_loop(
        node.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::leader::loops::handover_loop(
        node.clone(),
        stop_rx.clone(),
    )));
    if let Some(l) = http_listener {
        tasks.push(tokio::spawn(http::serve(node.clone(), l, stop_rx.clone())));
    }

    // 8. Tell scripts where we listen.
    if let Some(path) = &cfg.addr_file {
        let text = serde_json::json!({
            "node_id": cfg.node_id,
            "grpc": grpc_addr.to_string(),
            "advertise": advertise,
            "http": http_addr.map(|a| a.to_string()),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text.to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    tracing::info!(node_id = cfg.node_id, %grpc_addr, ?http_addr, %advertise, fresh, "member started");
    Ok(NodeHandle {
        node,
        grpc_addr,
        http_addr,
        stop,
        tasks,
        engine: engine_handle,
    })
}

/// Proposes the backup kept in the data directory until the cluster applied or refused it
/// (refused: another initial member's copy seeded the cluster first), then deletes it.
async fn restore_pending(
    node: Arc<Node>,
    path: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let payload = match crate::member::backup::read_file(&path) {
        Ok((_, p)) => p,
        Err(e) => {
            tracing::error!(error = %e, "the pending backup is unreadable; not restoring");
            return;
        }
    };
    loop {
        match node
            .propose(
                None,
                Op::RestoreHeld {
                    payload: payload.clone(),
                },
            )
            .await
        {
            Ok(r) => {
                match r.outcome {
                    Outcome::Rejected { message, .. } => {
                        tracing::info!(%message, "backup not applied")
                    }
                    _ => tracing::info!(
                        revision = r.revision,
                        "cluster state restored from the backup"
                    ),
                }
                let _ = std::fs::remove_file(&path);
                return;
            }
            Err(e) => tracing::debug!(error = %e, "restore waits for a leader"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The token this member calls the others with (its embedded agent too).
fn peer_token(tokens: &Option<Arc<crate::auth::Tokens>>) -> Option<String> {
    tokens
        .as_ref()
        .and_then(|t| t.peer_token())
        .map(String::from)
}

/// How this member calls the others through the public API (joining, checking the cluster
/// id): with the peer token and its own certificate, like its Raft calls.
fn member_client_config(
    endpoints: &[String],
    tokens: &Option<Arc<crate::auth::Tokens>>,
    tls: &Option<Arc<crate::tls::NodeTls>>,
) -> ballast_client::ClientConfig {
    let mut c = ballast_client::ClientConfig::new(endpoints.to_vec());
    c.token = peer_token(tokens);
    c.tls = tls.as_ref().map(|t| t.client().clone());
    c
}

/// A restarted member refuses to start when its configuration names another cluster than the
/// one its data directory belongs to: another --cluster-name with --initial-cluster, or --join
/// endpoints that answer with another cluster id.
async fn check_restart_cluster(
    cfg: &Config,
    identity: &IdentityStore,
    mut ccfg: ballast_client::ClientConfig,
) -> Result<(), StartError> {
    let Some(stored) = identity.cluster_id() else {
        return Ok(());
    };
    let wrong = |other: String| {
        StartError::Identity(crate::member::identity::IdentityError::WrongCluster {
            dir: cfg.data_dir.display().to_string(),
            stored: stored.clone(),
            other,
        })
    };
    if !cfg.initial_cluster.is_empty() {
        // Like etcd, a restarted member ignores the member list itself (it may have been
        // edited since), but not the cluster name.
        if !stored.starts_with(&format!("{}-", cfg.cluster_name)) {
            return Err(wrong(format!("a cluster named {:?}", cfg.cluster_name)));
        }
        if stored != cfg.initial_cluster_id() {
            tracing::info!(%stored, "--initial-cluster differs from the one this data directory was formed with; it is ignored on restart");
        }
    }
    if !cfg.join.is_empty() {
        ccfg.deadline = Duration::from_secs(2);
        let client = ballast_client::Client::new(ccfg);
        match client.status().await {
            Ok(s) if !s.cluster_id.is_empty() && s.cluster_id != stored => {
                return Err(wrong(s.cluster_id))
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the --join endpoints for their cluster id; starting anyway")
            }
        }
    }
    Ok(())
}

/// Asks a running cluster to add this node as a learner, then to promote it to voter.
async fn join_cluster(
    ccfg: ballast_client::ClientConfig,
    id: NodeId,
    addr: String,
    mut stop: watch::Receiver<bool>,
) {
    let client = ballast_client::Client::new(ccfg);
    let work = async {
        let mut delay = Duration::from_millis(200);
        loop {
            let r = async {
                client.add_learner(id, &addr, true).await?;
                client.promote_voter(id).await
            }
            .await;
            match r {
                Ok(_) => {
                    tracing::info!(node_id = id, "joined the cluster as a voter");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "joining the cluster failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}
