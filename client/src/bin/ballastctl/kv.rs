//! `kv`: the key-value store — get, put (the value from an argument or standard input),
//! compare-and-set, delete, list and watch. How keys, values and events look is
//! `output.rs`'s; failover, retries and resuming a watch are the library's.

use ballast_client::{v1, Client, Error, WatchItem};
use clap::Subcommand;

use crate::output::{self, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum KvCmd {
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

pub(crate) async fn run(c: &Client, cmd: KvCmd, out: Output) -> Result<(), Error> {
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
        ..Default::default()
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

#[cfg(test)]
mod tests {
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;
    use clap::error::ErrorKind;

    use super::KvCmd;

    #[test]
    fn kv_reads_parse() {
        assert_eq!(
            cmd("kv get cfg/a"),
            Cmd::Kv(KvCmd::Get {
                key: "cfg/a".into(),
                serializable: false
            })
        );
        assert_eq!(
            cmd("kv get --serializable cfg/a"),
            Cmd::Kv(KvCmd::Get {
                key: "cfg/a".into(),
                serializable: true
            })
        );
        assert_eq!(
            cmd("kv ls"),
            Cmd::Kv(KvCmd::Ls {
                prefix: String::new(),
                limit: 0,
                serializable: false
            })
        );
        assert_eq!(
            cmd("kv ls cfg/ --limit 10 --serializable"),
            Cmd::Kv(KvCmd::Ls {
                prefix: "cfg/".into(),
                limit: 10,
                serializable: true
            })
        );
        assert_eq!(
            cmd("kv watch"),
            Cmd::Kv(KvCmd::Watch {
                prefixes: vec![],
                rev: 0,
                state: false
            })
        );
        assert_eq!(
            cmd("kv watch a/ b/ --rev 42 --state"),
            Cmd::Kv(KvCmd::Watch {
                prefixes: vec!["a/".into(), "b/".into()],
                rev: 42,
                state: true
            })
        );
    }

    #[test]
    fn kv_writes_parse() {
        assert_eq!(
            cmd("kv put k v"),
            Cmd::Kv(KvCmd::Put {
                key: "k".into(),
                value: Some("v".into())
            })
        );
        // Without a value it is read from standard input.
        assert_eq!(
            cmd("kv put k"),
            Cmd::Kv(KvCmd::Put {
                key: "k".into(),
                value: None
            })
        );
        assert_eq!(
            cmd("kv cas k new --expect-value old"),
            Cmd::Kv(KvCmd::Cas {
                key: "k".into(),
                new_value: "new".into(),
                expect_value: Some("old".into()),
                expect_rev: None
            })
        );
        assert_eq!(
            cmd("kv cas k new --expect-rev 0"),
            Cmd::Kv(KvCmd::Cas {
                key: "k".into(),
                new_value: "new".into(),
                expect_value: None,
                expect_rev: Some(0)
            })
        );
        assert_eq!(
            cmd("kv del k --prefix"),
            Cmd::Kv(KvCmd::Del {
                key: "k".into(),
                prefix: true
            })
        );
    }

    #[test]
    fn bad_kv_invocations_are_refused() {
        assert_refused(&[
            ("kv get", ErrorKind::MissingRequiredArgument),
            ("kv put", ErrorKind::MissingRequiredArgument),
            ("kv put k v extra", ErrorKind::UnknownArgument),
            // cas needs exactly one expectation.
            ("kv cas k v", ErrorKind::MissingRequiredArgument),
            (
                "kv cas k v --expect-value a --expect-rev 1",
                ErrorKind::ArgumentConflict,
            ),
            ("kv cas k v --expect-rev latest", ErrorKind::ValueValidation),
            ("kv ls --limit ten", ErrorKind::ValueValidation),
            ("kv watch --rev x", ErrorKind::ValueValidation),
            ("kv del k --recursive", ErrorKind::UnknownArgument),
        ]);
    }
}
