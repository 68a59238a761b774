//! `ballastctl`: the operator's command line for a Ballast cluster.

mod output;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ballast_client::{backup, files, report, v1, Client, ClientConfig, Error, WatchItem};
use clap::{Parser, Subcommand};

use output::{
    backup_out, lease_out, members_out, nodes_out, vip_state, vips_out, BenchResult, Output,
    StatusView,
};

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

#[derive(Subcommand)]
enum Cmd {
    /// The cluster at a glance: leader, term, indexes and every member's own view.
    Status,
    /// Raft membership.
    #[command(subcommand)]
    Member(MemberCmd),
    /// The key-value store.
    #[command(subcommand)]
    Kv(KvCmd),
    /// The cluster state: nodes, services, VIPs.
    #[command(subcommand)]
    State(StateCmd),
    /// Services: define (with their health check and backends), list, delete.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Virtual IPs: define, list, move, delete.
    #[command(subcommand)]
    Vip(VipCmd),
    /// Nodes: list, drain, maintenance, resume.
    #[command(subcommand)]
    Node(NodeCmd),
    /// The cluster's VIP lease settings: show, set.
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// Releases: register, roll out with health gates, watch, pause, resume, abort, roll back.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Measure put and linearizable get throughput and latency.
    Bench(BenchArgs),
    /// Backups: save the whole cluster state to a file, or check one.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Certificates for mutual TLS: make a CA, issue node and client certificates. Works
    /// offline; talks to no cluster.
    #[command(subcommand)]
    Certs(CertsCmd),
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Make a CA: DIR/ca.pem and DIR/ca-key.pem (mode 0600). Refuses to replace one: every
    /// certificate it signed would stop being trusted. Keep ca-key.pem off the servers.
    Init {
        /// Directory for the CA files (created if missing).
        #[arg(long, default_value = "ballast-ca")]
        dir: std::path::PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Ballast CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate signed by the CA: OUT/NAME.pem and OUT/NAME-key.pem (mode 0600).
    /// A node certificate (the default) serves and calls and must name, with --san, every IP
    /// address and host name members and clients dial it by; a client certificate (--client)
    /// can only call. --member ID names a Raft member (URI ballast://member/ID: it may speak
    /// Raft and act as node ID's agent), --node ID an agent-only server (ballast://node/ID: it
    /// may act as node ID's agent and read; without --san it is a calling-only certificate).
    /// Members whose own certificate names them refuse Raft and agent calls from
    /// certificates without the right identity. Rotate by issuing anew into a fresh
    /// directory, moving the files in place and sending the members SIGHUP.
    Issue {
        /// Common name; also names the files.
        name: String,
        /// Directory of ca.pem and ca-key.pem.
        #[arg(long, default_value = "ballast-ca")]
        ca_dir: std::path::PathBuf,
        /// Output directory [default: the CA directory].
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Subject alternative names: IP addresses or DNS names, comma separated or repeated.
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
        /// A client certificate (calls only) instead of a node certificate.
        #[arg(long, conflicts_with = "member")]
        client: bool,
        /// The certificate of Raft member ID (identity URI ballast://member/ID).
        #[arg(long, value_name = "ID", conflicts_with = "node")]
        member: Option<u64>,
        /// The certificate of agent-only server ID (identity URI ballast://node/ID).
        #[arg(long, value_name = "ID")]
        node: Option<u64>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn certs(cmd: CertsCmd) -> Result<(), ballast_client::certs::CertError> {
    use ballast_client::certs;
    match cmd {
        CertsCmd::Init { dir, name, days } => {
            let cert = certs::init_ca(&dir, &name, days)?;
            println!("CA certificate: {}", cert.display());
            println!("CA key:         {}", dir.join(certs::CA_KEY).display());
        }
        CertsCmd::Issue {
            name,
            ca_dir,
            out,
            san,
            client,
            member,
            node,
            days,
        } => {
            use ballast_client::identity::CertIdentity;
            let identity = member
                .map(CertIdentity::Member)
                .or(node.map(CertIdentity::Node));
            // An agent-only server only calls the cluster: it needs no name to be dialed by.
            let kind = if client || (node.is_some() && san.is_empty()) {
                certs::Kind::Client
            } else {
                certs::Kind::Node
            };
            let out = out.unwrap_or_else(|| ca_dir.clone());
            let (cert, key) = certs::issue(&ca_dir, &out, &name, &san, kind, identity, days)?;
            println!("certificate: {}", cert.display());
            println!("key:         {}", key.display());
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Write a consistent, checksummed backup of the whole cluster state (KV, nodes,
    /// services, releases, VIPs) to FILE, as of a linearizable read. Restore it into a new
    /// cluster with `ballastd restore --from FILE`.
    Save { file: std::path::PathBuf },
    /// Check a backup file (length and checksum) and show what it holds.
    Inspect { file: std::path::PathBuf },
}

#[derive(Subcommand)]
enum ReleaseCmd {
    /// Register a release: a .tar.gz file or a directory, by absolute path on the servers or
    /// http(s) URL, with its SHA-256 (sha256sum of the file; see `ballastd`'s agent docs for
    /// directories). Agents refuse an artifact whose checksum differs.
    Register {
        service: String,
        id: String,
        /// Where agents fetch it: an absolute path on the servers or an http(s) URL.
        #[arg(long)]
        artifact: String,
        /// Its SHA-256, lowercase hex (`ballastctl release digest PATH`).
        #[arg(long)]
        sha256: String,
    },
    /// Releases of a service with their status, the active one first.
    Ls {
        service: String,
    },
    /// Print the SHA-256 to register for an artifact: sha256sum's for a file, the tree
    /// digest agents compute for a directory.
    Digest {
        path: std::path::PathBuf,
    },
    /// Start a rollout: BATCH nodes at a time, each gated on the release applied and healthy
    /// for MIN_HEALTHY; a failed gate or the deadline rolls every node back by itself.
    Activate {
        service: String,
        id: String,
        /// Nodes switched at a time.
        #[arg(long, default_value_t = 1)]
        batch: u32,
        /// How long a switched node must stay healthy, e.g. 10s, 500ms.
        #[arg(long, default_value = "10s")]
        min_healthy: String,
        /// Time for the whole rollout before it rolls back, e.g. 5m.
        #[arg(long, default_value = "5m")]
        deadline: String,
        /// Switch one node, then pause until `release resume`.
        #[arg(long)]
        canary: bool,
    },
    /// The rollout of a service, per node; --watch follows it until it ends.
    Status {
        service: String,
        /// Follow the rollout until it ends.
        #[arg(long)]
        watch: bool,
    },
    Pause {
        service: String,
    },
    Resume {
        service: String,
    },
    /// Stop the rollout; nodes stay where they are.
    Abort {
        service: String,
    },
    /// Every node back to a release (default: the previous one).
    Rollback {
        service: String,
        /// The release to return to (default: the one before the active one).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// List members with role and replication lag.
    List,
    /// Add a node as a learner (it receives the log but does not vote).
    Add {
        id: u64,
        /// Its gRPC address, host:port.
        addr: String,
        /// Return at once instead of waiting until it caught up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a voter or learner.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum KvCmd {
    /// Read a key (linearizable unless --serializable).
    Get {
        key: String,
        /// Answer from the member reached, without asking the leader: faster, maybe stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Write a key. Without VALUE, the value is read from standard input (all of it, as is:
    /// `ballastctl kv put cfg < cfg.json`), for values above the shell's argument limit.
    Put { key: String, value: Option<String> },
    /// Write a key only if it currently has the expected value or revision.
    Cas {
        key: String,
        new_value: String,
        /// The current value must be this.
        #[arg(
            long,
            conflicts_with = "expect_rev",
            required_unless_present = "expect_rev"
        )]
        expect_value: Option<String>,
        /// The current mod revision must be this (0: the key must not exist).
        #[arg(long)]
        expect_rev: Option<u64>,
    },
    /// Delete a key, or every key with a prefix.
    Del {
        key: String,
        /// KEY is a prefix: delete every key under it.
        #[arg(long)]
        prefix: bool,
    },
    /// List keys with a prefix.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Answer from the member reached, without asking the leader: faster, maybe stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Stream changes under prefixes until interrupted.
    Watch {
        prefixes: Vec<String>,
        /// Start at this revision (0: from now).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        /// Also cluster-state changes.
        #[arg(long)]
        state: bool,
    },
}

#[derive(Subcommand)]
enum StateCmd {
    /// Show nodes, services and VIPs.
    Show,
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Create or replace a service.
    Apply {
        name: String,
        /// Health check: tcp:PORT, http:PORT[/path] or exec:NAME (a command named in each
        /// agent's local configuration).
        #[arg(long)]
        check: String,
        /// Node ids that run the service, comma separated.
        #[arg(long)]
        backends: String,
        /// Milliseconds between probes (0: the cluster's default, 2000).
        #[arg(long, default_value_t = 0)]
        interval_ms: u32,
        /// Milliseconds a probe may take (0: the default, 1000 or the interval if shorter).
        #[arg(long, default_value_t = 0)]
        timeout_ms: u32,
        /// Passing probes in a row before a backend counts as healthy (0: the default, 2).
        #[arg(long, default_value_t = 0)]
        rise: u32,
        /// Failing probes in a row before a backend counts as unhealthy (0: the default, 3).
        #[arg(long, default_value_t = 0)]
        fall: u32,
        /// For http checks: accepted status codes, MIN-MAX (default 200-399).
        #[arg(long)]
        expect_status: Option<String>,
        /// For http checks: the body must contain this.
        #[arg(long)]
        body_contains: Option<String>,
    },
    /// List services with the health of each backend.
    Ls,
    /// Delete a service (refused while a VIP uses it).
    Delete { name: String },
}

#[derive(Subcommand)]
enum VipCmd {
    /// Create or replace a VIP (its owner and epoch stay the controller's).
    Apply {
        name: String,
        /// IPv4 address with prefix length, e.g. 10.213.0.100/24.
        #[arg(long)]
        address: String,
        /// The interface agents add the address to (the same name on every server).
        #[arg(long)]
        interface: String,
        /// The service whose health gates where the VIP may be placed.
        #[arg(long)]
        service: String,
        /// Node priority, NODE=PRIORITY (higher wins); repeat for several nodes.
        #[arg(long = "priority")]
        priorities: Vec<String>,
        /// Move the VIP back to a higher-priority node once it is eligible.
        #[arg(long)]
        preempt: bool,
        /// How long a higher-priority node must stay eligible before it takes the VIP back.
        #[arg(long, default_value_t = 0)]
        preempt_delay_ms: u32,
    },
    /// Delete a VIP.
    Delete { name: String },
    /// List VIPs with owner, epoch and any move in progress.
    Ls,
    /// Move a VIP to a node that can hold it now (the owner releases first, then the node
    /// takes it at a higher epoch).
    Move {
        name: String,
        /// Target node id.
        #[arg(long)]
        to: u64,
        /// Return at once instead of waiting until the target owns the VIP.
        #[arg(long)]
        no_wait: bool,
    },
    /// Wait until the VIP has an owner and that node's agent reports holding it (for
    /// scripts: exit 0 once held, 1 when --timeout passes first).
    Wait { name: String },
}

#[derive(Subcommand)]
enum LeaseCmd {
    /// The lease settings in force, and how long a new leader waits before it counts any
    /// lease as over.
    Show,
    /// Change the lease settings (options left out keep their value). Refused when they
    /// cannot keep the promise: the agent's deadline (lease - drift) must end before the
    /// leader's expiry (lease + margin) at the worst clock drift, an owner's lease must
    /// outlast a leader election, and the renew interval must leave room for two lost
    /// renewals. A longer lease applies at once; after a shorter one, a new leader still
    /// waits the longer one until every grant of it has run out.
    Set {
        /// Length of a grant, ms (counted by the agent from when it sent the renewal).
        #[arg(long)]
        lease_ms: Option<u64>,
        /// How often an owner renews, ms.
        #[arg(long)]
        renew_ms: Option<u64>,
        /// Clock-drift allowance the agent subtracts from its deadline, ms.
        #[arg(long)]
        drift_ms: Option<u64>,
        /// Margin the leader adds before it counts a lease as gone, ms.
        #[arg(long)]
        margin_ms: Option<u64>,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List nodes with role, admin state and liveness.
    Ls,
    /// Move VIPs away and take the node out of placement.
    Drain {
        id: u64,
        /// Wait until the node owns and holds no VIP (up to --timeout), e.g. before stopping it.
        #[arg(long)]
        wait: bool,
    },
    /// Like drain, and ignore the node's health.
    Maintenance {
        id: u64,
        /// Wait until the node owns and holds no VIP (up to --timeout).
        #[arg(long)]
        wait: bool,
    },
    /// Put the node back into placement.
    Resume { id: u64 },
    /// Remove a standalone agent's node (`ballastd agent`) that is gone for good. Refused for
    /// Raft members, and while the node owns a VIP or backs a service.
    Forget { id: u64 },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Operations to measure, comma separated: put, get (linearizable), sget (serializable
    /// get, answered by whichever member is asked: the client round trip alone).
    #[arg(long, default_value = "put,get")]
    ops: String,
    /// Concurrency levels, comma separated.
    #[arg(long, default_value = "1,16,64")]
    concurrency: String,
    /// Seconds per (op, concurrency) pair.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
}

async fn status(c: &Client, out: Output) -> Result<(), Error> {
    let _ = c.find_leader().await;
    let first = c.status().await?;
    // Every member's own view, concurrently; unreachable members are shown as such. The
    // leader of the highest term speaks for the cluster (members and their lag): a member
    // that answered first may be a stale leader of an older term.
    let mut views = member_views(c, &first.members, BTreeMap::new()).await;
    let lead = report::leading(views.values().filter_map(|v| v.as_ref().ok())).cloned();
    if let Some(l) = &lead {
        views = member_views(c, &l.members, views).await;
    }
    let highest_term = views
        .values()
        .filter_map(|v| v.as_ref().ok())
        .map(|v| v.term)
        .chain([first.term])
        .max()
        .unwrap_or(0);
    let view = StatusView {
        cluster: lead.unwrap_or(first),
        views,
        highest_term,
        // The decided VIPs, and the leader's view of their leases and of the agents.
        state: c.get_state(true).await.ok(),
        leases: c.leases().await.ok(),
    };
    match out {
        Output::Json => print!("{}", output::pretty(&output::status_json(&view))),
        Output::Table => print!("{}", output::status_text(&view)),
    }
    Ok(())
}

/// Each member's own `Status` answer, by id: those already in `known`, the rest asked now.
async fn member_views(
    c: &Client,
    members: &[v1::Member],
    mut known: BTreeMap<u64, Result<v1::StatusResponse, Error>>,
) -> BTreeMap<u64, Result<v1::StatusResponse, Error>> {
    let missing: Vec<&v1::Member> = members
        .iter()
        .filter(|m| !known.contains_key(&m.id))
        .collect();
    let asked = futures::future::join_all(missing.iter().map(|m| c.member_status(&m.addr))).await;
    known.extend(missing.iter().map(|m| m.id).zip(asked));
    known
}

async fn member(c: &Client, cmd: MemberCmd, out: Output) -> Result<(), Error> {
    let r = match cmd {
        MemberCmd::List => {
            let _ = c.find_leader().await;
            let s = c.status().await?;
            print!("{}", members_out(&s.members, s.raft_state == "leader", out));
            return Ok(());
        }
        MemberCmd::Add { id, addr, no_wait } => c.add_learner(id, &addr, !no_wait).await?,
        MemberCmd::Promote { id } => c.promote_voter(id).await?,
        MemberCmd::Remove { id } => c.remove_node(id).await?,
    };
    // Membership changes are answered by the leader.
    print!("{}", members_out(&r.members, true, out));
    Ok(())
}

async fn kv(c: &Client, cmd: KvCmd, out: Output) -> Result<(), Error> {
    match cmd {
        KvCmd::Get { key, serializable } => {
            let r = c.get(key.clone(), serializable).await?;
            match (out, &r.kv) {
                (Output::Json, _) => print!("{}", output::pretty(&output::get_json(&r))),
                (Output::Table, Some(kv)) => println!("{}", output::text(&kv.value)),
                (Output::Table, None) => return Err(Error::NotFound(format!("key {key:?}"))),
            }
        }
        KvCmd::Put { key, value } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).map_err(|e| {
                        Error::InvalidArgument(format!(
                            "reading the value from standard input: {e}"
                        ))
                    })?;
                    v
                }
            };
            let r = c.put(key, value).await?;
            println!("OK revision {}", output::revision(r.header.as_ref()));
        }
        KvCmd::Cas {
            key,
            new_value,
            expect_value,
            expect_rev,
        } => {
            let expected = match (expect_value, expect_rev) {
                (Some(v), _) => {
                    v1::compare_and_set_request::Expected::ExpectedValue(v.into_bytes())
                }
                (None, Some(r)) => v1::compare_and_set_request::Expected::ExpectedModRevision(r),
                (None, None) => unreachable!("clap requires one"),
            };
            let r = c.compare_and_set(key, expected, new_value).await?;
            if out == Output::Json {
                print!("{}", output::pretty(&output::cas_json(&r)));
            } else if r.succeeded {
                println!("OK revision {}", output::revision(r.header.as_ref()));
            } else {
                let cur = r.kv.map(|k| {
                    format!(
                        "value {:?} at revision {}",
                        output::text(&k.value),
                        k.mod_revision
                    )
                });
                return Err(Error::FailedPrecondition(format!(
                    "compare failed; current: {}",
                    cur.unwrap_or_else(|| "absent".into())
                )));
            }
        }
        KvCmd::Del { key, prefix } => {
            let r = c.delete(key, prefix).await?;
            println!(
                "deleted {} revision {}",
                r.deleted,
                output::revision(r.header.as_ref())
            );
        }
        KvCmd::Ls {
            prefix,
            limit,
            serializable,
        } => {
            let r = c.range(prefix, limit, serializable).await?;
            print!("{}", output::range_out(&r, out));
        }
        KvCmd::Watch {
            prefixes,
            rev,
            state,
        } => return watch(c, prefixes, rev, state, out).await,
    }
    Ok(())
}

/// Prints the changes under `prefixes` (every key when none and no `state`) from revision
/// `rev` until interrupted; returns only when the cluster refuses the watch.
async fn watch(
    c: &Client,
    prefixes: Vec<String>,
    rev: u64,
    state: bool,
    out: Output,
) -> Result<(), Error> {
    let prefixes = if prefixes.is_empty() && !state {
        vec![String::new()]
    } else {
        prefixes
    };
    let mut w = c.watch(v1::WatchRequest {
        key_prefixes: prefixes.into_iter().map(String::into_bytes).collect(),
        cluster_state: state,
        start_revision: rev,
    });
    loop {
        match w.next().await {
            Ok(WatchItem::Changes(r)) => print!("{}", output::watch_lines(&r, out)),
            Ok(WatchItem::Resync { resume_at }) => {
                print!("{}", output::resync_line(resume_at, out))
            }
            // A refusal does not mend itself; anything else is tried again.
            Err(
                e @ (Error::InvalidArgument(_)
                | Error::Unauthenticated(_)
                | Error::PermissionDenied(_)),
            ) => return Err(e),
            Err(e) => eprintln!("watch: {e}; trying again"),
        }
    }
}

async fn snapshot(c: &Client, cmd: SnapshotCmd, out: Output) -> Result<(), Error> {
    let (file, bytes, saved) = match cmd {
        SnapshotCmd::Save { file } => {
            let bytes = c.snapshot().await?;
            // It holds every key and value: mode 0600, through a temporary file of its own
            // renamed into place, so a crash leaves no half backup under the name asked for.
            files::write_atomic(&file, &bytes, 0o600, files::Existing::Replace)
                .map_err(|e| Error::Other(e.to_string()))?;
            (file, bytes, true)
        }
        SnapshotCmd::Inspect { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", file.display())))?;
            (file, bytes, false)
        }
    };
    let (h, _) =
        backup::decode(&bytes).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    print!("{}", backup_out(&file, bytes.len(), &h, saved, out));
    Ok(())
}

async fn state(c: &Client, cmd: StateCmd, out: Output) -> Result<(), Error> {
    let StateCmd::Show = cmd;
    print!("{}", output::state_out(&c.get_state(false).await?, out));
    Ok(())
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn parse_check(spec: &str) -> Result<v1::health_check::Kind, Error> {
    use v1::health_check::Kind;
    let (kind, rest) = spec.split_once(':').ok_or_else(|| {
        bad(format!(
            "check {spec:?} is not tcp:PORT, http:PORT[/path] or exec:NAME"
        ))
    })?;
    let port = |p: &str| {
        p.parse::<u32>()
            .map_err(|_| bad(format!("port {p:?} is not a number")))
    };
    Ok(match kind {
        "tcp" => Kind::Tcp(v1::TcpCheck { port: port(rest)? }),
        "http" => {
            let (p, path) = match rest.split_once('/') {
                Some((p, path)) => (p, format!("/{path}")),
                None => (rest, "/".to_string()),
            };
            Kind::Http(v1::HttpCheck {
                port: port(p)?,
                path,
                ..Default::default()
            })
        }
        "exec" => Kind::Exec(v1::ExecCheck {
            name: rest.to_string(),
        }),
        _ => return Err(bad(format!("check kind {kind:?} is not tcp, http or exec"))),
    })
}

async fn service(c: &Client, cmd: ServiceCmd, out: Output) -> Result<(), Error> {
    match cmd {
        ServiceCmd::Apply {
            name,
            check,
            backends,
            interval_ms,
            timeout_ms,
            rise,
            fall,
            expect_status,
            body_contains,
        } => {
            let mut kind = parse_check(&check)?;
            if let v1::health_check::Kind::Http(h) = &mut kind {
                if let Some(r) = expect_status {
                    let (a, b) = r
                        .split_once('-')
                        .ok_or_else(|| bad(format!("expect-status {r:?} is not MIN-MAX")))?;
                    h.expect_status_min = a
                        .parse()
                        .map_err(|_| bad(format!("{a:?} is not a status code")))?;
                    h.expect_status_max = b
                        .parse()
                        .map_err(|_| bad(format!("{b:?} is not a status code")))?;
                }
                h.body_contains = body_contains.unwrap_or_default();
            }
            let mut map = std::collections::BTreeMap::new();
            for b in backends.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let id: u64 = b
                    .parse()
                    .map_err(|_| bad(format!("backend {b:?} is not a node id")))?;
                map.insert(
                    id,
                    v1::Backend {
                        node_id: id,
                        ..Default::default()
                    },
                );
            }
            let svc = v1::Service {
                name: name.clone(),
                check: Some(v1::HealthCheck {
                    kind: Some(kind),
                    interval_ms,
                    timeout_ms,
                    rise,
                    fall,
                }),
                backends: map,
                active_release: String::new(),
                ..Default::default()
            };
            c.apply_service(svc).await?;
            println!("service {name} applied");
        }
        ServiceCmd::Ls => {
            let st = c.get_state(false).await?;
            if out == Output::Json {
                print!("{}", output::pretty(&output::services_json(&st.services)));
            } else {
                print!("{}", output::services_table(&st.services));
            }
        }
        ServiceCmd::Delete { name } => {
            c.delete_service(&name).await?;
            println!("service {name} deleted");
        }
    }
    Ok(())
}

async fn lease(c: &Client, cmd: LeaseCmd, out: Output) -> Result<(), Error> {
    match cmd {
        LeaseCmd::Show => match c.get_state(false).await?.lease {
            Some(l) => print!("{}", lease_out(&l, out)),
            None => println!("no lease settings yet (the first leader sets its configured ones)"),
        },
        LeaseCmd::Set {
            lease_ms,
            renew_ms,
            drift_ms,
            margin_ms,
        } => {
            c.set_lease(settings(lease_ms, renew_ms, drift_ms, margin_ms)?)
                .await?;
            println!("lease settings changed");
        }
    }
    Ok(())
}

/// The change `lease set` asks for: 0 for what it leaves as it is. Refuses no change at all,
/// and 0 ms.
fn settings(
    lease_ms: Option<u64>,
    renew_ms: Option<u64>,
    drift_ms: Option<u64>,
    margin_ms: Option<u64>,
) -> Result<v1::LeaseSettings, Error> {
    let given = [lease_ms, renew_ms, drift_ms, margin_ms];
    if given.iter().all(Option::is_none) {
        return Err(bad(
            "nothing to set: give --lease-ms, --renew-ms, --drift-ms or --margin-ms".into(),
        ));
    }
    if given.contains(&Some(0)) {
        return Err(bad("lease settings must be above 0 ms".into()));
    }
    Ok(v1::LeaseSettings {
        lease_ms: lease_ms.unwrap_or(0),
        renew_ms: renew_ms.unwrap_or(0),
        drift_ms: drift_ms.unwrap_or(0),
        margin_ms: margin_ms.unwrap_or(0),
        wait_ms: 0,
    })
}

async fn vip(c: &Client, cmd: VipCmd, out: Output, timeout: Duration) -> Result<(), Error> {
    match cmd {
        VipCmd::Apply {
            name,
            address,
            interface,
            service,
            priorities,
            preempt,
            preempt_delay_ms,
        } => {
            c.apply_vip(v1::Vip {
                name: name.clone(),
                address,
                interface,
                service,
                placement: Some(v1::Placement {
                    preempt,
                    preempt_delay_ms,
                    priorities: parse_priorities(&priorities)?,
                }),
                ..Default::default()
            })
            .await?;
            println!("vip {name} applied");
        }
        VipCmd::Delete { name } => {
            c.delete_vip(&name).await?;
            println!("vip {name} deleted");
        }
        VipCmd::Ls => print!("{}", vips_out(&c.get_state(false).await?.vips, out)),
        VipCmd::Move { name, to, no_wait } => {
            c.move_vip(&name, to).await?;
            if no_wait {
                println!("move of {name} to node {to} requested");
                return Ok(());
            }
            let v = poll_vip(c, &name, timeout, false, |v, _| {
                v.owner == to && !v.releasing
            })
            .await
            .map_err(|state| {
                Error::Unavailable(format!(
                    "{name} did not reach node {to} within {timeout:?}; state: {state}"
                ))
            })?;
            println!("{name} is on node {to} at epoch {}", v.epoch);
        }
        VipCmd::Wait { name } => {
            let v = poll_vip(c, &name, timeout, true, |v, leases| {
                v.owner != 0
                    && !v.releasing
                    && leases.is_some_and(|l| report::held_by(&v.name, l).contains(&v.owner))
            })
            .await
            .map_err(|state| {
                Error::Unavailable(format!(
                    "{name} was not held within {timeout:?}; state: {state}"
                ))
            })?;
            println!(
                "{name} ({}) is held by node {} at epoch {}",
                v.address, v.owner, v.epoch
            );
        }
    }
    Ok(())
}

/// `--priority NODE=PRIORITY` flags as node id -> priority (a node named twice: the last).
fn parse_priorities(priorities: &[String]) -> Result<std::collections::BTreeMap<u64, i32>, Error> {
    let mut prio = std::collections::BTreeMap::new();
    for p in priorities {
        let (n, v) = p
            .split_once('=')
            .ok_or_else(|| bad(format!("priority {p:?} is not NODE=PRIORITY")))?;
        let n: u64 = n
            .parse()
            .map_err(|_| bad(format!("{n:?} is not a node id")))?;
        let v: i32 = v
            .parse()
            .map_err(|_| bad(format!("{v:?} is not a priority")))?;
        prio.insert(n, v);
    }
    Ok(prio)
}

/// Polls the VIP until `done` holds (with the leader's leases when `with_leases`), or the
/// timeout passes: then the VIP's last state, for the error.
async fn poll_vip(
    c: &Client,
    name: &str,
    timeout: Duration,
    with_leases: bool,
    done: impl Fn(&v1::Vip, Option<&v1::LeasesResponse>) -> bool,
) -> Result<v1::Vip, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("unknown VIP");
    while Instant::now() < deadline {
        if let Ok(s) = c.get_state(false).await {
            if let Some(v) = s.vips.into_iter().find(|v| v.name == name) {
                let leases = if with_leases {
                    c.leases().await.ok()
                } else {
                    None
                };
                if done(&v, leases.as_ref()) {
                    return Ok(v);
                }
                last = vip_state(&v);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

async fn node(c: &Client, cmd: NodeCmd, out: Output, timeout: Duration) -> Result<(), Error> {
    let (id, state, wait) = match cmd {
        NodeCmd::Ls => {
            print!("{}", nodes_out(&c.get_state(false).await?.nodes, out));
            return Ok(());
        }
        NodeCmd::Drain { id, wait } => (id, v1::AdminState::Draining, wait),
        NodeCmd::Maintenance { id, wait } => (id, v1::AdminState::Maintenance, wait),
        NodeCmd::Resume { id } => (id, v1::AdminState::Active, false),
        NodeCmd::Forget { id } => {
            c.forget_node(id).await?;
            println!("node {id} forgotten");
            return Ok(());
        }
    };
    c.set_node_admin(id, state).await?;
    println!("node {id} is {}", state.label());
    if wait {
        wait_empty(c, id, timeout).await?;
        println!("node {id} holds no VIP");
    }
    Ok(())
}

/// Waits until node `id` owns no VIP, is the target of no move, and its agent reports
/// holding none; fails when `timeout` passes first.
async fn wait_empty(c: &Client, id: u64, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = c.get_state(false).await?;
        let owned: Vec<&str> = st
            .vips
            .iter()
            .filter(|v| v.owner == id || v.move_to == id)
            .map(|v| v.name.as_str())
            .collect();
        let leases = c.leases().await?;
        let held = leases
            .agents
            .iter()
            .any(|a| a.node_id == id && a.heard && !a.holding.is_empty());
        if owned.is_empty() && !held {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Unavailable(format!(
                "node {id} still owns or holds VIPs after {timeout:?}: {owned:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// "10s", "500ms", "5m", "1h" -> milliseconds.
fn parse_ms(field: &str, s: &str) -> Result<u64, Error> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "ms"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| {
        bad(format!(
            "--{field}: {s:?} is not a duration like 500ms, 10s, 5m"
        ))
    })?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(bad(format!(
                "--{field}: unknown unit in {s:?} (ms, s, m, h)"
            )))
        }
    };
    Ok(n * mult)
}

fn rollout_ended(r: &v1::Rollout) -> bool {
    matches!(
        v1::RolloutState::try_from(r.state),
        Ok(v1::RolloutState::Succeeded | v1::RolloutState::RolledBack | v1::RolloutState::Aborted)
    )
}

async fn service_named(c: &Client, name: &str) -> Result<v1::Service, Error> {
    c.get_state(true)
        .await?
        .services
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::NotFound(format!("service {name:?}")))
}

async fn release(c: &Client, cmd: ReleaseCmd, out: Output) -> Result<(), Error> {
    match cmd {
        ReleaseCmd::Register {
            service,
            id,
            artifact,
            sha256,
        } => {
            c.register_release(&service, &id, &artifact, &sha256.to_lowercase())
                .await?;
            println!("release {id} of {service} registered");
        }
        ReleaseCmd::Digest { path } => {
            let d = if path.is_dir() {
                ballast_client::digest::digest_dir(&path)
            } else {
                ballast_client::digest::digest_file(&path)
            }
            .map_err(bad)?;
            println!("{d}  {}", path.display());
        }
        ReleaseCmd::Ls { service } => {
            let svc = service_named(c, &service).await?;
            print!("{}", output::releases_out(&svc.releases, out));
        }
        ReleaseCmd::Activate {
            service,
            id,
            batch,
            min_healthy,
            deadline,
            canary,
        } => {
            let req = v1::StartRolloutRequest {
                service: service.clone(),
                release: id.clone(),
                batch,
                min_healthy_ms: parse_ms("min-healthy", &min_healthy)? as u32,
                deadline_ms: parse_ms("deadline", &deadline)?,
                canary,
                request_id: None,
            };
            c.start_rollout(req).await?;
            println!("rollout of {id} on {service} started; follow it with: ballastctl release status {service} --watch");
        }
        ReleaseCmd::Status { service, watch } => {
            return rollout_status(c, &service, watch, out).await
        }
        ReleaseCmd::Pause { service } => {
            c.control_rollout(&service, v1::RolloutControl::Pause)
                .await?;
            println!("rollout of {service} paused");
        }
        ReleaseCmd::Resume { service } => {
            c.control_rollout(&service, v1::RolloutControl::Resume)
                .await?;
            println!("rollout of {service} resumed");
        }
        ReleaseCmd::Abort { service } => {
            c.control_rollout(&service, v1::RolloutControl::Abort)
                .await?;
            println!("rollout of {service} aborted");
        }
        ReleaseCmd::Rollback { service, to } => {
            c.rollback(&service, to.as_deref().unwrap_or("")).await?;
            println!("{service} rolling back");
        }
    }
    Ok(())
}

/// `release status [--watch]`: the rollout of `service` once, or redrawn as it changes until
/// it ends (an error when it ended rolled back).
async fn rollout_status(c: &Client, service: &str, watch: bool, out: Output) -> Result<(), Error> {
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last: Vec<String> = Vec::new();
    // Pushed changes of the cluster state wake the redraw; a slow tick covers the rest
    // (health ages, the deadline).
    let mut changes = watch.then(|| {
        c.watch(v1::WatchRequest {
            key_prefixes: vec![],
            cluster_state: true,
            start_revision: 0,
        })
    });
    loop {
        let svc = service_named(c, service).await?;
        if out == Output::Json {
            print!("{}", output::pretty(&output::rollout_json(&svc)));
        } else {
            let lines = output::rollout_lines(&svc, is_tty);
            if lines != last {
                if is_tty && !last.is_empty() {
                    // Redraw in place on a terminal.
                    print!("{}", output::redraw(last.len()));
                }
                for l in &lines {
                    println!("{l}");
                }
                last = lines;
            }
        }
        let ended = svc.rollout.as_ref().is_none_or(rollout_ended);
        if !watch || ended {
            if svc
                .rollout
                .as_ref()
                .is_some_and(|r| r.state == v1::RolloutState::RolledBack as i32)
                && watch
            {
                return Err(Error::Unavailable(format!(
                    "the rollout of {service} was rolled back"
                )));
            }
            return Ok(());
        }
        match changes.as_mut() {
            Some(w) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), w.next()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Comma-separated items, trimmed, empty ones left out.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

async fn bench(c: &Client, a: BenchArgs, out: Output) -> Result<(), Error> {
    let _ = c.find_leader().await;
    let value = vec![b'x'; a.value_size];
    // Make sure the keys exist so that gets read real values.
    for k in 0..a.keys.min(1000) {
        c.put(format!("bench/{k}"), value.clone()).await?;
    }
    let mut results = Vec::new();
    for op in items(&a.ops) {
        if !matches!(op, "put" | "get" | "sget") {
            return Err(Error::InvalidArgument(format!(
                "unknown op {op:?}; use put, get or sget"
            )));
        }
        for conc in items(&a.concurrency) {
            let conc: usize = conc.parse().map_err(|_| {
                Error::InvalidArgument(format!("concurrency {conc:?} is not a number"))
            })?;
            let r = measure(c, op, conc, &a, &value).await?;
            if out == Output::Table {
                print!("{}", output::bench_line(&r));
            }
            results.push(output::bench_json(&r));
        }
    }
    if out == Output::Json {
        print!("{}", output::pretty(&serde_json::json!(results)));
    }
    Ok(())
}

/// Runs `op` from `conc` concurrent tasks for `a.seconds`, each on its own keys in turn.
async fn measure(
    c: &Client,
    op: &str,
    conc: usize,
    a: &BenchArgs,
    value: &[u8],
) -> Result<BenchResult, Error> {
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let c = c.clone();
        let value = value.to_vec();
        let op = op.to_string();
        let keys = a.keys.max(1);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = w;
            while Instant::now() < end {
                let key = format!("bench/{}", i % keys);
                i += conc;
                let t = Instant::now();
                let r = match op.as_str() {
                    "put" => c.put(key, value.clone()).await.map(|_| ()),
                    // A serializable get is one client round trip and no Raft work: the
                    // floor every other figure stands on.
                    "sget" => c.get(key, true).await.map(|_| ()),
                    _ => c.get(key, false).await.map(|_| ()),
                };
                match r {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| Error::Other(e.to_string()))?;
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64().max(a.seconds as f64);
    lat.sort_unstable();
    Ok(BenchResult {
        op: op.to_string(),
        concurrency: conc,
        ops_per_sec: lat.len() as f64 / secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        count: lat.len(),
        errors,
        value_size: a.value_size,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Certs(c) = cli.cmd {
        return match certs(c) {
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
    let r = match cli.cmd {
        Cmd::Status => status(&client, cli.output).await,
        Cmd::Member(m) => member(&client, m, cli.output).await,
        Cmd::Kv(k) => kv(&client, k, cli.output).await,
        Cmd::State(s) => state(&client, s, cli.output).await,
        Cmd::Service(sv) => service(&client, sv, cli.output).await,
        Cmd::Vip(v) => vip(&client, v, cli.output, Duration::from_secs(cli.timeout)).await,
        Cmd::Node(n) => node(&client, n, cli.output, Duration::from_secs(cli.timeout)).await,
        Cmd::Lease(l) => lease(&client, l, cli.output).await,
        Cmd::Release(r) => release(&client, r, cli.output).await,
        Cmd::Bench(b) => bench(&client, b, cli.output).await,
        Cmd::Snapshot(sn) => snapshot(&client, sn, cli.output).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of every command says what it does in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        let missing = ballast_client::cli::flags_without_help(&Cli::command(), "ballastctl");
        assert!(missing.is_empty(), "flags without help: {missing:#?}");
    }
}
