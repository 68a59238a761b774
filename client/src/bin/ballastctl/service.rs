//! `service`: define a service (its health check and backends), list services with the
//! health of each backend, delete one. Releases of a service are `release.rs`'s.

use ballast_client::{v1, Client, Error};
use clap::Subcommand;

use crate::bad;
use crate::output::{self, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum ServiceCmd {
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

pub(crate) async fn run(c: &Client, cmd: ServiceCmd, out: Output) -> Result<(), Error> {
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

/// `--check`: tcp:PORT, http:PORT[/path] (path "/" when left out) or exec:NAME.
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

#[cfg(test)]
mod tests {
    use ballast_client::{v1, Error};
    use clap::error::ErrorKind;
    use v1::health_check::Kind;

    use super::{parse_check, ServiceCmd};
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn service_verbs_parse() {
        assert_eq!(
            cmd("service apply web --check http:8080/healthz --backends 1,2,3"),
            Cmd::Service(ServiceCmd::Apply {
                name: "web".into(),
                check: "http:8080/healthz".into(),
                backends: "1,2,3".into(),
                interval_ms: 0,
                timeout_ms: 0,
                rise: 0,
                fall: 0,
                expect_status: None,
                body_contains: None,
            })
        );
        assert_eq!(
            cmd(concat!(
                "service apply web --check http:80 --backends 1 --interval-ms 500 ",
                "--timeout-ms 200 --rise 1 --fall 5 --expect-status 200-204 --body-contains ok"
            )),
            Cmd::Service(ServiceCmd::Apply {
                name: "web".into(),
                check: "http:80".into(),
                backends: "1".into(),
                interval_ms: 500,
                timeout_ms: 200,
                rise: 1,
                fall: 5,
                expect_status: Some("200-204".into()),
                body_contains: Some("ok".into()),
            })
        );
        assert_eq!(cmd("service ls"), Cmd::Service(ServiceCmd::Ls));
        assert_eq!(
            cmd("service delete web"),
            Cmd::Service(ServiceCmd::Delete { name: "web".into() })
        );
    }

    #[test]
    fn bad_service_invocations_are_refused() {
        // --check and --backends are required.
        assert_refused(&[
            (
                "service apply web --backends 1",
                ErrorKind::MissingRequiredArgument,
            ),
            (
                "service apply web --check tcp:1",
                ErrorKind::MissingRequiredArgument,
            ),
            (
                "service apply --check tcp:1 --backends 1",
                ErrorKind::MissingRequiredArgument,
            ),
            (
                "service apply web --check tcp:1 --backends 1 --rise two",
                ErrorKind::ValueValidation,
            ),
            ("service delete", ErrorKind::MissingRequiredArgument),
            ("service ls web", ErrorKind::UnknownArgument),
        ]);
    }

    #[test]
    fn checks_parse() {
        assert_eq!(
            parse_check("tcp:5432").unwrap(),
            Kind::Tcp(v1::TcpCheck { port: 5432 })
        );
        let http = |path: &str| {
            Kind::Http(v1::HttpCheck {
                port: 8080,
                path: path.into(),
                ..Default::default()
            })
        };
        // Without a path, "/".
        assert_eq!(parse_check("http:8080").unwrap(), http("/"));
        assert_eq!(parse_check("http:8080/a/b?c").unwrap(), http("/a/b?c"));
        assert_eq!(
            parse_check("exec:pg-ready").unwrap(),
            Kind::Exec(v1::ExecCheck {
                name: "pg-ready".into()
            })
        );
        for (spec, says) in [
            ("tcp", "is not tcp:PORT, http:PORT[/path] or exec:NAME"),
            ("tcp:http", "port \"http\" is not a number"),
            ("http:/x", "port \"\" is not a number"),
            ("udp:53", "check kind \"udp\" is not tcp, http or exec"),
        ] {
            match parse_check(spec) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(says), "{spec}: {m}"),
                other => panic!("{spec}: {other:?}"),
            }
        }
    }
}
