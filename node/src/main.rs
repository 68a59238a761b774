//! `ballastd`: parse configuration, set up logging, bind, start the member, wait for a signal.

use std::process::ExitCode;

use std::time::Duration;

use ballast_node::config::{AgentArgs, AgentOnlyConfig, Cli, Config, LogFormat, Run};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

// A member spends much of its time allocating and freeing small buffers (gRPC frames, log
// entries); mimalloc does that with less CPU than glibc's allocator on our load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(log: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Reads the TLS files again on every SIGHUP (a failed reload keeps the old ones and says
/// why). Installed even without TLS, so that a stray SIGHUP does not end the process.
fn reload_on_sighup<F>(what: &'static str, tls: Option<F>)
where
    F: Fn() -> Result<(), ballast_client::tls::TlsError> + Send + 'static,
{
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("installing the SIGHUP handler");
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &tls {
                None => tracing::info!("SIGHUP: {what} has no TLS files to reload"),
                Some(reload) => match reload() {
                    Ok(()) => tracing::info!("SIGHUP: {what} reloaded its TLS certificates"),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: TLS reload failed; still using the certificates loaded before"
                    ),
                },
            }
        }
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Cli::parse().into_run() {
        Ok(Run::Member(member)) => *member,
        Ok(Run::Agent(agent)) => return agent_main(*agent).await,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };

    // 1. Configuration: flags over environment over file over defaults, validated.
    let cfg = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ballastd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log, cfg.log_format);

    // 2. Bind the ports first so that a port conflict is reported before anything else.
    let grpc = match TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ballastd: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::from(1);
        }
    };
    let http = match cfg.http_listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("ballastd: cannot listen on {addr} (http): {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };

    // 3. Open storage, start Raft and the servers.
    let handle = match ballast_node::start(cfg, grpc, http).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ballastd: {e}");
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(1);
        }
    };

    // 4. Run until SIGINT or SIGTERM, then stop cleanly; SIGHUP reloads certificates.
    reload_on_sighup(
        "ballastd",
        handle.node.tls.clone().map(|t| move || t.reload()),
    );
    ballast_node::notify::notify("READY=1");
    stop_signal().await;
    ballast_node::notify::notify("STOPPING=1");
    tracing::info!("stopping");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// The token a standalone agent of `node` calls with: its `node <id>` line, else a member
/// token, else (a legacy file) the first admin token; the last two with a warning.
fn agent_token(path: &std::path::Path, node: u64) -> Result<String, String> {
    use ballast_node::auth::{AgentToken, Tokens};
    let tokens = Tokens::load(path)?;
    let (token, kind) = tokens.agent_token(node).ok_or_else(|| {
        format!(
            "{}: no `node {node} <token>` line (nor a member or admin token)",
            path.display()
        )
    })?;
    match kind {
        AgentToken::Node => {}
        AgentToken::Member => tracing::warn!(
            file = %path.display(),
            "no `node {node} <token>` line: using a member token, which lets this server speak Raft and act as any node's agent; give it a file with only its node line"
        ),
        AgentToken::Admin => tracing::warn!(
            file = %path.display(),
            "no `node {node} <token>` line: using the first admin token (a legacy token file); give this server a file with only a `node {node} <token>` line, known to the members"
        ),
    }
    Ok(token.to_string())
}

/// A standalone agent's certificate names node `node` or no one (a member's certificate is
/// not for an agent-only server).
fn agent_cert_names(cert: &std::path::Path, node: u64) -> Result<(), String> {
    use ballast_client::identity::{identity_of, CertIdentity};
    let certs = ballast_client::tls::load_certs(cert).map_err(|e| e.to_string())?;
    match identity_of(&certs[0]).map_err(|e| format!("{}: {e}", cert.display()))? {
        None => {
            tracing::warn!("this agent's certificate names no node (ballastctl certs issue NAME --node {node}): members that check identities will refuse its calls");
            Ok(())
        }
        Some(CertIdentity::Node(n)) if n == node => Ok(()),
        Some(other) => Err(format!(
            "{}: the certificate names {other}, but this agent is node {node} (ballastctl certs issue NAME --node {node})",
            cert.display()
        )),
    }
}

/// `ballastd agent`: register with the cluster, then run the agent until a signal.
async fn agent_main(args: AgentArgs) -> ExitCode {
    let cfg = match AgentOnlyConfig::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ballastd agent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log, cfg.log_format);
    // Its own node's token, which is all it needs (the file may hold only that line).
    let token = match &cfg.token_file {
        Some(path) => match agent_token(path, cfg.node_id) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("ballastd agent: token file {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let tls = match &cfg.tls {
        Some(f) => match ballast_client::tls::ClientTls::load(ballast_client::tls::TlsFiles {
            ca: f.ca.clone(),
            cert: Some(f.cert.clone()),
            key: Some(f.key.clone()),
        }) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("ballastd agent: TLS: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if let Some(f) = &cfg.tls {
        if let Err(e) = agent_cert_names(&f.cert, cfg.node_id) {
            eprintln!("ballastd agent: TLS: {e}");
            return ExitCode::from(2);
        }
    }
    reload_on_sighup("ballastd agent", tls.clone().map(|t| move || t.reload()));
    let instance = ballast_node::agent::new_instance();
    let client = ballast_node::agent::cluster_client(
        cfg.endpoints.clone(),
        &cfg.lease,
        token,
        tls,
        instance,
    );

    // 0. The fence of this server, first: a second agent here stops before it registers,
    //    binds or touches anything (`agent/hostlock.rs`).
    let fence = match ballast_node::agent::fence::local(cfg.node_id, cfg.fence_journal.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ballastd agent: {e}");
            return ExitCode::from(2);
        }
    };

    // 1. Register (or confirm the registration) before holding anything. A refusal (bad
    //    input, or credentials that do not name this node) is final; an unreachable cluster
    //    is retried until it answers or a signal comes.
    let registered = async {
        use ballast_client::Error;
        loop {
            match client
                .register_agent(cfg.node_id, &cfg.advertise, false)
                .await
            {
                Ok(_) => return Ok(()),
                Err(
                    Error::InvalidArgument(m)
                    | Error::PermissionDenied(m)
                    | Error::Unauthenticated(m),
                ) => return Err(m),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register with the cluster yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    };
    tokio::select! {
        r = registered => if let Err(m) = r {
            eprintln!("ballastd agent: the cluster refused node {}: {m}", cfg.node_id);
            return ExitCode::from(2);
        },
        _ = stop_signal() => return ExitCode::SUCCESS,
    }
    tracing::info!(node_id = cfg.node_id, "registered with the cluster");
    ballast_node::notify::notify("READY=1");

    // 2. Run until a signal; on stop the agent releases what it holds.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut task = tokio::spawn(ballast_node::agent::run(
        cfg.agent(instance),
        client,
        fence,
        stop_rx,
    ));
    tokio::select! {
        _ = stop_signal() => {}
        _ = &mut task => {
            // It only returns early when it cannot work (netlink, nft): already logged.
            eprintln!("ballastd agent: the agent stopped; see the log");
            return ExitCode::from(1);
        }
    }
    ballast_node::notify::notify("STOPPING=1");
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = task.await;
    ExitCode::SUCCESS
}
