//! `ballastctl`: the operator's command line for a Ballast cluster.
//!
//! This file holds the command line's top: the global options, the list of verbs, and
//! `main`, which connects to the cluster, hands each verb to its module and turns the
//! outcome into an exit code (0 ok, 1 failure, 2 bad input, 4 not found). Each verb group
//! lives in a module of its own with its subcommands (`kv.rs`, `vip.rs`, ...); everything
//! shown of the cluster's answers is built in `output.rs`. This file knows no verb's flags
//! and formats nothing but its own error lines.

mod bench;
mod certs;
mod kv;
mod lease;
mod member;
mod node;
mod output;
mod release;
mod service;
mod snapshot;
mod status;
mod vip;

use std::process::ExitCode;
use std::time::Duration;

use ballast_client::{Client, ClientConfig, Error};
use clap::{Parser, Subcommand};

use output::Output;

#[derive(Parser)]
#[command(name = "ballastctl", version, about = "Operate a Ballast cluster")]
struct Cli {
    /// Member gRPC endpoints, comma separated (host:port).
    #[arg(
        long,
        env = "BALLAST_ENDPOINTS",
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403",
        global = true,
        help_heading = "Global options"
    )]
    endpoints: String,

    /// Output format of read commands.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true,help_heading = "Global options")]
    output: Output,

    /// Give up on a command after this many seconds of retries.
    #[arg(
        long,
        default_value_t = 15,
        global = true,
        help_heading = "Global options"
    )]
    timeout: u64,

    /// API token for clusters started with --token-file (a read token for reads, an admin
    /// token for anything that changes the cluster).
    #[arg(
        long,
        env = "BALLAST_TOKEN",
        global = true,
        hide_env_values = true,
        help_heading = "Global options"
    )]
    token: Option<String>,

    /// CA certificate (PEM) of a cluster that runs mutual TLS; with --cert and --key the
    /// connection is TLS and the members' certificates are checked against it.
    #[arg(
        long = "cacert",
        value_name = "FILE",
        env = "BALLAST_CACERT",
        global = true,
        help_heading = "Global options"
    )]
    tls_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) signed by the cluster CA (`ballastctl certs issue --client`).
    #[arg(
        long = "cert",
        value_name = "FILE",
        env = "BALLAST_CERT",
        global = true,
        help_heading = "Global options",
        requires = "tls_ca"
    )]
    tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(
        long = "key",
        value_name = "FILE",
        env = "BALLAST_KEY",
        global = true,
        help_heading = "Global options",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, PartialEq, Subcommand)]
enum Cmd {
    /// The cluster at a glance: leader, term, indexes and every member's own view.
    Status,
    /// Raft membership.
    #[command(subcommand)]
    Member(member::MemberCmd),
    /// The key-value store.
    #[command(subcommand)]
    Kv(kv::KvCmd),
    /// The cluster state: nodes, services, VIPs.
    #[command(subcommand)]
    State(status::StateCmd),
    /// Services: define (with their health check and backends), list, delete.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Virtual IPs: define, list, move, delete.
    #[command(subcommand)]
    Vip(vip::VipCmd),
    /// Nodes: list, drain, maintenance, resume.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// The cluster's VIP lease settings: show, set.
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Releases: register, roll out with health gates, watch, pause, resume, abort, roll back.
    #[command(subcommand)]
    Release(release::ReleaseCmd),
    /// Measure put and linearizable get throughput and latency.
    Bench(bench::BenchArgs),
    /// Backups: save the whole cluster state to a file, or check one.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Certificates for mutual TLS: make a CA, issue node and client certificates. Works
    /// offline; talks to no cluster.
    #[command(subcommand)]
    Certs(certs::CertsCmd),
}

/// A refusal of the operator's input (exit code 2).
fn bad(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Certs(c) = cli.cmd {
        return match certs::run(c) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ballastctl certs: {e}");
                ExitCode::from(2)
            }
        };
    }
    let endpoints: Vec<String> = cli
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut cfg = ClientConfig::new(endpoints);
    cfg.deadline = Duration::from_secs(cli.timeout);
    // A member that is up but frozen (SIGSTOP, overload) accepts connections and never
    // answers: give each attempt a second, then try the next member.
    cfg.attempt_timeout = Duration::from_secs(1).min(cfg.deadline);
    cfg.token = cli.token.clone();
    if let Some(ca) = &cli.tls_ca {
        let files = ballast_client::tls::TlsFiles {
            ca: ca.clone(),
            cert: cli.tls_cert.clone(),
            key: cli.tls_key.clone(),
        };
        match ballast_client::tls::ClientTls::load(files) {
            Ok(t) => cfg.tls = Some(t),
            Err(e) => {
                eprintln!("ballastctl: TLS: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let client = match Client::try_new(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ballastctl: {e}");
            return ExitCode::from(2);
        }
    };
    let (c, out, timeout) = (&client, cli.output, Duration::from_secs(cli.timeout));
    let r = match cli.cmd {
        Cmd::Status => status::status(c, out).await,
        Cmd::Member(m) => member::run(c, m, out).await,
        Cmd::Kv(k) => kv::run(c, k, out).await,
        Cmd::State(s) => status::state(c, s, out).await,
        Cmd::Service(sv) => service::run(c, sv, out).await,
        Cmd::Vip(v) => vip::run(c, v, out, timeout).await,
        Cmd::Node(n) => node::run(c, n, out, timeout).await,
        Cmd::Lease(l) => lease::run(c, l, out).await,
        Cmd::Release(r) => release::run(c, r, out).await,
        Cmd::Bench(b) => bench::run(c, b, out).await,
        Cmd::Snapshot(sn) => snapshot::run(c, sn, out).await,
        Cmd::Certs(_) => unreachable!("handled before connecting"),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballastctl: {e}");
            match e {
                Error::NotFound(_) => ExitCode::from(4),
                Error::InvalidArgument(_) => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}

/// Parsing helpers for the verb modules' tests: a command line is written as one string, its
/// words split at white space.
#[cfg(test)]
mod test_args {
    use clap::Parser;

    /// `ballastctl ARGS` parsed, or clap's refusal.
    pub(crate) fn parse(args: &str) -> Result<super::Cli, clap::Error> {
        super::Cli::try_parse_from(std::iter::once("ballastctl").chain(args.split_whitespace()))
    }

    /// The verb of `ballastctl ARGS`; panics when clap refuses it.
    pub(crate) fn cmd(args: &str) -> super::Cmd {
        match parse(args) {
            Ok(cli) => cli.cmd,
            Err(e) => panic!("{args:?} refused: {e}"),
        }
    }

    /// Checks that clap refuses each command line, with the kind of error given.
    pub(crate) fn assert_refused(cases: &[(&str, clap::error::ErrorKind)]) {
        for (args, kind) in cases {
            match parse(args) {
                Ok(cli) => panic!("{args:?} accepted as {:?}", cli.cmd),
                Err(e) => assert_eq!(e.kind(), *kind, "{args:?}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_args::{assert_refused, parse};
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    /// Every flag of every command says what it does in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        let missing = ballast_client::cli::flags_without_help(&Cli::command(), "ballastctl");
        assert!(missing.is_empty(), "flags without help: {missing:#?}");
    }

    /// Clap's own checks of the definition: ids that `requires` and `conflicts_with` name
    /// exist, defaults are valid values, no two flags share a name.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_are_taken_before_or_after_the_verb() {
        let before = parse("--endpoints a:1,b:2 -o json --timeout 3 status").unwrap();
        let after = parse("status --endpoints a:1,b:2 --output json --timeout 3").unwrap();
        for cli in [before, after] {
            assert_eq!(cli.endpoints, "a:1,b:2");
            assert_eq!(cli.output, Output::Json);
            assert_eq!(cli.timeout, 3);
            assert_eq!(cli.cmd, Cmd::Status);
        }
        let tls = parse("kv ls --cacert ca.pem --cert c.pem --key k.pem --token t0k").unwrap();
        assert_eq!(tls.tls_ca, Some("ca.pem".into()));
        assert_eq!(tls.tls_cert, Some("c.pem".into()));
        assert_eq!(tls.tls_key, Some("k.pem".into()));
        assert_eq!(tls.token.as_deref(), Some("t0k"));
    }

    /// The defaults as declared (read from the definition, so that BALLAST_* variables in the
    /// test's environment do not matter).
    #[test]
    fn global_defaults() {
        let cmd = Cli::command();
        let default = |id: &str| -> Vec<String> {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            default("endpoints"),
            ["127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"]
        );
        assert_eq!(default("output"), ["table"]);
        assert_eq!(default("timeout"), ["15"]);
        assert!(default("token").is_empty());
    }

    #[test]
    fn bad_global_options_are_refused() {
        assert_refused(&[
            ("", ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand),
            ("-o yaml status", ErrorKind::InvalidValue),
            ("--timeout soon status", ErrorKind::ValueValidation),
            ("--bogus status", ErrorKind::UnknownArgument),
            ("frobnicate", ErrorKind::InvalidSubcommand),
            // A certificate without its CA, a key without its certificate.
            ("--cert c.pem status", ErrorKind::MissingRequiredArgument),
            (
                "--cacert ca.pem --key k.pem status",
                ErrorKind::MissingRequiredArgument,
            ),
        ]);
    }
}
