//! `release`: register a release of a service, list its releases, print an artifact's
//! digest, start a rollout and follow it, pause, resume, abort or roll back. Rollouts are
//! advanced by the leader's controller; this module asks for them and shows their state.

use std::time::Duration;

use ballast_client::{v1, Client, Error};
use clap::Subcommand;

use crate::bad;
use crate::output::{self, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum ReleaseCmd {
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

pub(crate) async fn run(c: &Client, cmd: ReleaseCmd, out: Output) -> Result<(), Error> {
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
            ..Default::default()
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

/// "10s", "500ms", "5m", "1h" -> milliseconds (a bare number is milliseconds); `field` names
/// the flag in the refusal.
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

#[cfg(test)]
mod tests {
    use ballast_client::{v1, Error};
    use clap::error::ErrorKind;

    use super::{parse_ms, rollout_ended, ReleaseCmd};
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn release_verbs_parse() {
        assert_eq!(
            cmd("release register web r1 --artifact /srv/r1.tar.gz --sha256 ABC"),
            Cmd::Release(ReleaseCmd::Register {
                service: "web".into(),
                id: "r1".into(),
                artifact: "/srv/r1.tar.gz".into(),
                sha256: "ABC".into(),
            })
        );
        assert_eq!(
            cmd("release activate web r1"),
            Cmd::Release(ReleaseCmd::Activate {
                service: "web".into(),
                id: "r1".into(),
                batch: 1,
                min_healthy: "10s".into(),
                deadline: "5m".into(),
                canary: false,
            })
        );
        assert_eq!(
            cmd("release activate web r2 --batch 2 --min-healthy 500ms --deadline 1h --canary"),
            Cmd::Release(ReleaseCmd::Activate {
                service: "web".into(),
                id: "r2".into(),
                batch: 2,
                min_healthy: "500ms".into(),
                deadline: "1h".into(),
                canary: true,
            })
        );
        assert_eq!(
            cmd("release status web --watch"),
            Cmd::Release(ReleaseCmd::Status {
                service: "web".into(),
                watch: true
            })
        );
        assert_eq!(
            cmd("release rollback web"),
            Cmd::Release(ReleaseCmd::Rollback {
                service: "web".into(),
                to: None
            })
        );
        assert_eq!(
            cmd("release rollback web --to r1"),
            Cmd::Release(ReleaseCmd::Rollback {
                service: "web".into(),
                to: Some("r1".into())
            })
        );
        for (verb, expected) in [
            (
                "ls",
                ReleaseCmd::Ls {
                    service: "web".into(),
                },
            ),
            (
                "pause",
                ReleaseCmd::Pause {
                    service: "web".into(),
                },
            ),
            (
                "resume",
                ReleaseCmd::Resume {
                    service: "web".into(),
                },
            ),
            (
                "abort",
                ReleaseCmd::Abort {
                    service: "web".into(),
                },
            ),
        ] {
            assert_eq!(cmd(&format!("release {verb} web")), Cmd::Release(expected));
        }
        assert_eq!(
            cmd("release digest dist/app.tar.gz"),
            Cmd::Release(ReleaseCmd::Digest {
                path: "dist/app.tar.gz".into()
            })
        );
    }

    #[test]
    fn bad_release_invocations_are_refused() {
        assert_refused(&[
            (
                "release register web r1 --artifact /a",
                ErrorKind::MissingRequiredArgument,
            ),
            ("release activate web", ErrorKind::MissingRequiredArgument),
            ("release activate web r1 --batch", ErrorKind::InvalidValue),
            (
                "release activate web r1 --batch all",
                ErrorKind::ValueValidation,
            ),
            ("release pause", ErrorKind::MissingRequiredArgument),
            ("release status web --follow", ErrorKind::UnknownArgument),
            ("release promote web", ErrorKind::InvalidSubcommand),
        ]);
    }

    #[test]
    fn durations_parse() {
        for (s, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("250", 250),
            (" 2s ", 2_000),
        ] {
            assert_eq!(parse_ms("deadline", s).unwrap(), ms, "{s}");
        }
        for (s, says) in [
            ("10d", "--deadline: unknown unit in \"10d\" (ms, s, m, h)"),
            (
                "s",
                "--deadline: \"s\" is not a duration like 500ms, 10s, 5m",
            ),
            ("", "--deadline: \"\" is not a duration like 500ms, 10s, 5m"),
            ("1.5s", "--deadline: unknown unit in \"1.5s\" (ms, s, m, h)"),
        ] {
            match parse_ms("deadline", s) {
                Err(Error::InvalidArgument(m)) => assert_eq!(m, says),
                other => panic!("{s:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_rollout_ends_when_it_succeeded_rolled_back_or_was_aborted() {
        use v1::RolloutState as S;
        for (state, ended) in [
            (S::Unspecified, false),
            (S::Running, false),
            (S::Paused, false),
            (S::RollingBack, false),
            (S::Succeeded, true),
            (S::RolledBack, true),
            (S::Aborted, true),
        ] {
            let r = v1::Rollout {
                state: state as i32,
                ..Default::default()
            };
            assert_eq!(rollout_ended(&r), ended, "{state:?}");
        }
    }
}
