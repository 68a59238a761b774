//! The agent's settings, resolved once for both ways of running it (`ballastd --agent`, in a
//! member, and `ballastd agent`, alone): flags over the file over the defaults, with the exec
//! checks, release sites, HAProxy, local interfaces and TLS files they name; and
//! `AgentOnlyConfig`, the whole configuration of `ballastd agent`. It neither parses flags
//! (`cli.rs`) nor reads the file (`file.rs`), and checks only the shape of what it merges
//! (the rest is `check.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::cli::{AgentArgs, AgentOpts};
use super::file::{agent_keys, read_toml, AgentFileConfig, AgentFileKeys};
use super::{parse_log_format, ConfigError, LogFormat};
use crate::agent::interfaces::InterfaceMap;
use crate::types::NodeId;

/// The resolved configuration of `ballastd agent`.
#[derive(Debug, Clone)]
pub struct AgentOnlyConfig {
    pub node_id: NodeId,
    pub endpoints: Vec<String>,
    pub advertise: String,
    pub lease: crate::lease::LeaseConfig,
    pub(crate) garp_count: u32,
    pub(crate) garp_interval_ms: u64,
    /// See `--fence-journal`.
    pub fence_journal: Option<PathBuf>,
    pub(crate) check_host: std::net::IpAddr,
    pub(crate) exec_checks: BTreeMap<String, Vec<String>>,
    /// Per service: where its releases live and how they are activated.
    pub(crate) release_sites: BTreeMap<String, crate::agent::release::ReleaseSite>,
    /// The local HAProxy the agent drives, if any.
    pub(crate) haproxy: Option<crate::agent::haproxy::HaproxyConfig>,
    /// Where VIPs go on this server (`--vip-interface`, `--segment-interface`).
    pub(crate) interfaces: InterfaceMap,
    pub log_format: LogFormat,
    pub log: String,
    /// The token file (see `ballastd --help`); the agent uses its `node <id>` line (see
    /// `main.rs`).
    pub token_file: Option<PathBuf>,
    /// Mutual TLS towards the cluster (see `ballastd --help`); None: plaintext.
    pub tls: Option<crate::tls::NodeTlsFiles>,
}

impl AgentOnlyConfig {
    pub fn load(args: AgentArgs) -> Result<Self, ConfigError> {
        let file: AgentFileConfig = match &args.config {
            Some(path) => read_toml(path)?,
            None => AgentFileConfig::default(),
        };
        let agent = AgentSettings::resolve(&args.agent_opts, agent_keys!(file), None, None)?;
        let endpoints: Vec<String> = match args.endpoints {
            Some(e) => e
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => file.endpoints.unwrap_or_default(),
        };
        let cfg = AgentOnlyConfig {
            node_id: args
                .node_id
                .or(file.node_id)
                .ok_or(ConfigError::MissingNodeId)?,
            endpoints,
            advertise: args.advertise.or(file.advertise).unwrap_or_default(),
            lease: agent.lease,
            garp_count: agent.garp_count,
            garp_interval_ms: agent.garp_interval_ms,
            fence_journal: agent.fence_journal,
            check_host: agent.check_host,
            exec_checks: agent.exec_checks,
            release_sites: agent.release_sites,
            haproxy: agent.haproxy,
            interfaces: agent.interfaces,
            log_format: parse_log_format(args.log_format.or(file.log_format))?,
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            token_file: args.agent_opts.token_file.clone().or(file.token_file),
            tls: tls_files(&args.agent_opts, file.tls_ca, file.tls_cert, file.tls_key)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The agent's own settings, for agent process `instance`.
    pub fn agent(&self, instance: u64) -> crate::agent::AgentConfig {
        crate::agent::AgentConfig {
            node_id: self.node_id,
            lease: self.lease,
            garp_count: self.garp_count,
            garp_interval: Duration::from_millis(self.garp_interval_ms),
            check_host: self.check_host,
            exec_checks: self.exec_checks.clone(),
            release_sites: self.release_sites.clone(),
            haproxy: self.haproxy.clone(),
            interfaces: self.interfaces.clone(),
            instance,
            advertise: Some(self.advertise.clone()),
        }
    }
}

/// The agent's settings, resolved once for both ways of running it (`ballastd --agent` and
/// `ballastd agent`): flags over the file over the defaults (`LeaseConfig::default` for the
/// lease).
pub(super) struct AgentSettings {
    pub(super) lease: crate::lease::LeaseConfig,
    pub(super) garp_count: u32,
    pub(super) garp_interval_ms: u64,
    pub(super) fence_journal: Option<PathBuf>,
    pub(super) check_host: std::net::IpAddr,
    pub(super) exec_checks: BTreeMap<String, Vec<String>>,
    pub(super) release_sites: BTreeMap<String, crate::agent::release::ReleaseSite>,
    pub(super) haproxy: Option<crate::agent::haproxy::HaproxyConfig>,
    pub(super) interfaces: InterfaceMap,
}

impl AgentSettings {
    /// `leader_margin_ms`: a member's `--vip-margin-ms` (an agent alone has none: the
    /// leader's margin is the leader's). `election_timeout_max`: a member's (None for an
    /// agent alone); a lease left to its default is long enough to outlast that election.
    pub(super) fn resolve(
        opts: &AgentOpts,
        file: AgentFileKeys,
        leader_margin_ms: Option<u64>,
        election_timeout_max: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        let defaults = crate::lease::LeaseConfig::default();
        let ms = |flag: Option<u64>, key: Option<u64>, default: Duration| {
            flag.or(key).map_or(default, Duration::from_millis)
        };
        let renew_interval = ms(
            opts.vip_renew_ms,
            file.vip_renew_ms,
            defaults.renew_interval,
        );
        let drift_allowance = ms(
            opts.vip_drift_ms,
            file.vip_drift_ms,
            defaults.drift_allowance,
        );
        let default_lease = defaults.lease.max(crate::lease::shortest_lease(
            renew_interval,
            drift_allowance,
            election_timeout_max,
        ));
        Ok(AgentSettings {
            lease: crate::lease::LeaseConfig {
                lease: ms(opts.vip_lease_ms, file.vip_lease_ms, default_lease),
                renew_interval,
                drift_allowance,
                leader_margin: leader_margin_ms
                    .map_or(defaults.leader_margin, Duration::from_millis),
            },
            garp_count: opts.garp_count.or(file.garp_count).unwrap_or(5),
            garp_interval_ms: opts
                .garp_interval_ms
                .or(file.garp_interval_ms)
                .unwrap_or(100),
            fence_journal: opts.fence_journal.clone().or(file.fence_journal),
            check_host: opts
                .check_host
                .or(file.check_host)
                .unwrap_or_else(|| "127.0.0.1".parse().unwrap()),
            exec_checks: merge_exec_checks(file.exec_checks, &opts.exec_checks)?,
            release_sites: release_sites(
                file.release_dirs,
                file.activate_hooks,
                file.hook_timeout_ms,
                file.keep_releases,
                opts,
            )?,
            haproxy: haproxy_config(opts, file.haproxy_socket, file.haproxy_backends)?,
            interfaces: InterfaceMap {
                vips: interface_map(
                    "vip-interface",
                    file.vip_interfaces,
                    &opts.vip_interfaces,
                    crate::validate::name,
                )?,
                segments: interface_map(
                    "segment-interface",
                    file.segment_interfaces,
                    &opts.segment_interfaces,
                    crate::validate::interface,
                )?,
            },
        })
    }
}

/// Exec checks from the file, then from `--exec-check NAME=COMMAND` flags (a flag replaces a
/// file entry of the same name).
fn merge_exec_checks(
    file: Option<BTreeMap<String, Vec<String>>>,
    flags: &[String],
) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut m = file.unwrap_or_default();
    for e in flags {
        let (name, cmd) = e.split_once('=').ok_or_else(|| ConfigError::Invalid {
            field: "exec-check".into(),
            message: format!("{e:?} is not NAME=COMMAND"),
        })?;
        m.insert(
            name.to_string(),
            cmd.split_whitespace().map(String::from).collect(),
        );
    }
    Ok(m)
}

/// Release sites from the file, then from flags (a flag replaces a file entry).
fn release_sites(
    file_dirs: Option<BTreeMap<String, PathBuf>>,
    file_hooks: Option<BTreeMap<String, Vec<String>>>,
    file_timeout: Option<u64>,
    file_keep: Option<usize>,
    opts: &AgentOpts,
) -> Result<BTreeMap<String, crate::agent::release::ReleaseSite>, ConfigError> {
    let pair = |field: &str, e: &str| -> Result<(String, String), ConfigError> {
        let (k, v) = e.split_once('=').ok_or_else(|| ConfigError::Invalid {
            field: field.into(),
            message: format!("{e:?} is not SERVICE=VALUE"),
        })?;
        Ok((k.to_string(), v.to_string()))
    };
    let mut dirs = file_dirs.unwrap_or_default();
    for e in &opts.release_dirs {
        let (k, v) = pair("release-dir", e)?;
        dirs.insert(k, PathBuf::from(v));
    }
    let mut hooks = file_hooks.unwrap_or_default();
    for e in &opts.activate_hooks {
        let (k, v) = pair("activate-hook", e)?;
        hooks.insert(k, v.split_whitespace().map(String::from).collect());
    }
    let timeout = Duration::from_millis(opts.hook_timeout_ms.or(file_timeout).unwrap_or(30_000));
    let keep = opts.keep_releases.or(file_keep).unwrap_or(5);
    if keep < 2 {
        return Err(ConfigError::Invalid {
            field: "keep-releases".into(),
            message: "must be at least 2 (the current and the previous release)".into(),
        });
    }
    for (svc, argv) in &hooks {
        if !dirs.contains_key(svc) {
            return Err(ConfigError::Invalid {
                field: "activate-hook".into(),
                message: format!("service {svc:?} has a hook but no --release-dir"),
            });
        }
        if argv.is_empty() {
            return Err(ConfigError::Invalid {
                field: "activate-hook".into(),
                message: format!("{svc:?} has no command"),
            });
        }
    }
    let mut out = BTreeMap::new();
    for (svc, dir) in dirs {
        if !dir.is_absolute() {
            return Err(ConfigError::Invalid {
                field: "release-dir".into(),
                message: format!("{} (for {svc:?}) must be an absolute path", dir.display()),
            });
        }
        out.insert(
            svc.clone(),
            crate::agent::release::ReleaseSite {
                dir,
                hook: hooks.get(&svc).cloned(),
                hook_timeout: timeout,
                keep,
            },
        );
    }
    Ok(out)
}

/// A map of local interfaces (`--vip-interface VIP=IFACE`, `--segment-interface
/// SEGMENT=IFACE`): the file's, then the flags' (a flag replaces a file entry of the same
/// key). Keys are checked by `key` (a VIP name, an interface name), values as interface
/// names, as `ballastctl vip apply` checks them; an error names `flag`.
fn interface_map(
    flag: &str,
    file: Option<BTreeMap<String, String>>,
    flags: &[String],
    key: fn(&str, &str) -> crate::validate::Result,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        field: flag.into(),
        message,
    };
    let mut m = file.unwrap_or_default();
    for e in flags {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| bad(format!("{e:?} is not NAME=IFACE")))?;
        m.insert(k.to_string(), v.to_string());
    }
    for (k, v) in &m {
        key(flag, k).map_err(|e| bad(format!("{k:?}: {}", e.message)))?;
        crate::validate::interface(flag, v)
            .map_err(|e| bad(format!("{k}={v:?}: {}", e.message)))?;
    }
    Ok(m)
}

/// The three TLS files, flag over file; all or none.
pub(super) fn tls_files(
    opts: &AgentOpts,
    file_ca: Option<PathBuf>,
    file_cert: Option<PathBuf>,
    file_key: Option<PathBuf>,
) -> Result<Option<crate::tls::NodeTlsFiles>, ConfigError> {
    let ca = opts.tls_ca.clone().or(file_ca);
    let cert = opts.tls_cert.clone().or(file_cert);
    let key = opts.tls_key.clone().or(file_key);
    match (ca, cert, key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Ok(Some(crate::tls::NodeTlsFiles { ca, cert, key })),
        _ => Err(ConfigError::Invalid {
            field: "tls".into(),
            message: "--tls-ca, --tls-cert and --tls-key go together (mutual TLS needs all three)"
                .into(),
        }),
    }
}

/// The HAProxy settings from flags (which win) or the file; refuses a socket without
/// backends, backends without a socket, and malformed SERVICE=BACKEND pairs.
fn haproxy_config(
    opts: &AgentOpts,
    file_socket: Option<PathBuf>,
    file_backends: Option<Vec<String>>,
) -> Result<Option<crate::agent::haproxy::HaproxyConfig>, ConfigError> {
    let socket = opts.haproxy_socket.clone().or(file_socket);
    let pairs = if opts.haproxy_backends.is_empty() {
        file_backends.unwrap_or_default()
    } else {
        opts.haproxy_backends.clone()
    };
    let bad = |m: &str| ConfigError::Invalid {
        field: "haproxy-backend".into(),
        message: m.into(),
    };
    let mut backends = BTreeMap::new();
    for p in &pairs {
        let (svc, be) = p
            .split_once('=')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(char::is_whitespace))
            .ok_or_else(|| bad(&format!("{p:?} is not SERVICE=BACKEND")))?;
        backends.insert(svc.to_string(), be.to_string());
    }
    match (socket, backends.is_empty()) {
        (None, true) => Ok(None),
        (Some(socket), false) => Ok(Some(crate::agent::haproxy::HaproxyConfig {
            socket,
            backends,
        })),
        (Some(_), true) => Err(bad(
            "--haproxy-socket needs at least one --haproxy-backend SERVICE=BACKEND",
        )),
        (None, false) => Err(bad("--haproxy-backend needs --haproxy-socket")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_standalone_agent_needs_an_id_and_endpoints() {
        let parse = |v: &[&str]| {
            AgentOnlyConfig::load(
                AgentArgs::try_parse_from(std::iter::once("agent").chain(v.iter().copied()))
                    .unwrap(),
            )
        };
        assert_eq!(
            parse(&["--endpoints", "10.0.0.1:7400"]).unwrap_err(),
            ConfigError::MissingNodeId
        );
        assert!(matches!(
            parse(&["--node-id", "9"]).unwrap_err(),
            ConfigError::Invalid { field, .. } if field == "endpoints"
        ));
        assert!(matches!(
            parse(&["--node-id", "9", "--endpoints", "nope"]).unwrap_err(),
            ConfigError::Invalid { field, .. } if field == "endpoints"
        ));
        let c = parse(&[
            "--node-id",
            "9",
            "--endpoints",
            "10.0.0.1:7400, 10.0.0.2:7400",
            "--exec-check",
            "up=test -e /tmp/up",
        ])
        .unwrap();
        assert_eq!(c.endpoints, vec!["10.0.0.1:7400", "10.0.0.2:7400"]);
        assert_eq!(c.exec_checks["up"], vec!["test", "-e", "/tmp/up"]);
        assert_eq!(c.lease, crate::lease::LeaseConfig::default());
    }

    /// `--vip-interface` and `--segment-interface`, from the file and the flags (a flag
    /// replaces the file's entry), for `ballastd agent` and a member's agent alike; a
    /// malformed pair or name is refused with the flag's name.
    #[test]
    fn local_interfaces_come_from_flags_over_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "node_id = 9\nendpoints = [\"10.0.0.1:7400\"]\n\
             vip_interfaces = { web-vip = \"ens3\", db-vip = \"eth1\" }\n\
             [segment_interfaces]\neth0 = \"bond0\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let parse = |v: &[&str]| {
            let head = ["agent", "--config", file];
            AgentOnlyConfig::load(
                AgentArgs::try_parse_from(head.iter().chain(v.iter()).copied()).unwrap(),
            )
        };
        let c = parse(&[
            "--vip-interface",
            "web-vip=ens4",
            "--segment-interface",
            "lan2=eth2",
        ])
        .unwrap();
        let pairs = |m: &BTreeMap<String, String>| -> Vec<(String, String)> {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let own = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            pairs(&c.interfaces.vips),
            own(&[("db-vip", "eth1"), ("web-vip", "ens4")])
        );
        assert_eq!(
            pairs(&c.interfaces.segments),
            own(&[("eth0", "bond0"), ("lan2", "eth2")])
        );
        assert_eq!(c.agent(1).interfaces, c.interfaces);
        assert_eq!(c.interfaces.local("web-vip", "eth0"), "ens4");
        assert_eq!(c.interfaces.local("other", "eth0"), "bond0");

        for (bad, field) in [
            (["--vip-interface", "web-vip"], "vip-interface"),
            (["--vip-interface", "Web=eth0"], "vip-interface"),
            (
                ["--vip-interface", "web-vip=a-name-far-too-long"],
                "vip-interface",
            ),
            (["--segment-interface", "eth0="], "segment-interface"),
            (["--segment-interface", "eth 0=bond0"], "segment-interface"),
            (["--segment-interface", "eth0=bond/0"], "segment-interface"),
        ] {
            match parse(&bad) {
                Err(ConfigError::Invalid { field: f, message }) => {
                    assert_eq!(f, field, "{bad:?}: {message}")
                }
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }

        // A member's agent reads the same flags.
        let m = crate::config::Config::load(crate::config::cli::tests::args(&[
            "--node-id",
            "1",
            "--agent",
            "--segment-interface",
            "eth0=bond0",
        ]))
        .unwrap();
        assert_eq!(m.interfaces.local("web-vip", "eth0"), "bond0");
    }
}
