//! `ballastd`: parse configuration, set up logging, bind, start the member, wait for a signal.

use std::process::ExitCode;

use ballast_node::config::{Args, Config, LogFormat};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn init_logging(cfg: &Config) {
    let filter = EnvFilter::try_new(&cfg.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // 1. Configuration: flags over environment over file over defaults, validated.
    let cfg = match Config::load(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ballastd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg);

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

    // 4. Run until SIGINT or SIGTERM, then stop cleanly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    handle.shutdown().await;
    ExitCode::SUCCESS
}
