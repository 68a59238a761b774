//! `vip`: define a virtual IP (address, interface, gating service, node priorities), list,
//! move, delete, and wait until one is held. Placement is the cluster's: this module asks
//! for it and, for `move` and `wait`, polls the state until it shows the outcome.

use std::time::{Duration, Instant};

use ballast_client::{report, v1, Client, Error};
use clap::Subcommand;

use crate::bad;
use crate::output::{vip_state, vips_out, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum VipCmd {
    /// Create or replace a VIP (its owner and epoch stay the controller's).
    Apply {
        name: String,
        /// IPv4 or IPv6 address with prefix length, e.g. 10.213.0.100/24 or
        /// fd0a:d500::100/64 (IPv6: added without duplicate address detection, announced by
        /// unsolicited neighbour advertisements instead of gratuitous ARP).
        #[arg(long)]
        address: String,
        /// The interface agents add the address to: the name of the VIP's segment, which a
        /// server that calls it otherwise maps to its own (`ballastd --segment-interface
        /// eth0=bond0`, `--vip-interface NAME=ens3`). A server without it never gets the VIP.
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

pub(crate) async fn run(
    c: &Client,
    cmd: VipCmd,
    out: Output,
    timeout: Duration,
) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use ballast_client::Error;
    use clap::error::ErrorKind;

    use super::{parse_priorities, VipCmd};
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn vip_verbs_parse() {
        assert_eq!(
            cmd(concat!(
                "vip apply web-vip --address 10.213.0.100/24 --interface eth0 --service web ",
                "--priority 1=100 --priority 2=50 --preempt --preempt-delay-ms 3000"
            )),
            Cmd::Vip(VipCmd::Apply {
                name: "web-vip".into(),
                address: "10.213.0.100/24".into(),
                interface: "eth0".into(),
                service: "web".into(),
                priorities: vec!["1=100".into(), "2=50".into()],
                preempt: true,
                preempt_delay_ms: 3000,
            })
        );
        assert_eq!(
            cmd("vip apply v --address a --interface i --service s"),
            Cmd::Vip(VipCmd::Apply {
                name: "v".into(),
                address: "a".into(),
                interface: "i".into(),
                service: "s".into(),
                priorities: vec![],
                preempt: false,
                preempt_delay_ms: 0,
            })
        );
        assert_eq!(cmd("vip ls"), Cmd::Vip(VipCmd::Ls));
        assert_eq!(
            cmd("vip delete v"),
            Cmd::Vip(VipCmd::Delete { name: "v".into() })
        );
        assert_eq!(
            cmd("vip move v --to 2"),
            Cmd::Vip(VipCmd::Move {
                name: "v".into(),
                to: 2,
                no_wait: false
            })
        );
        assert_eq!(
            cmd("vip move v --to 2 --no-wait"),
            Cmd::Vip(VipCmd::Move {
                name: "v".into(),
                to: 2,
                no_wait: true
            })
        );
        assert_eq!(
            cmd("vip wait v"),
            Cmd::Vip(VipCmd::Wait { name: "v".into() })
        );
    }

    #[test]
    fn bad_vip_invocations_are_refused() {
        assert_refused(&[
            (
                "vip apply v --address a --interface i",
                ErrorKind::MissingRequiredArgument,
            ),
            ("vip move v", ErrorKind::MissingRequiredArgument),
            ("vip move v --to abc", ErrorKind::ValueValidation),
            ("vip wait", ErrorKind::MissingRequiredArgument),
            ("vip ls --all", ErrorKind::UnknownArgument),
        ]);
    }

    #[test]
    fn priorities_parse() {
        let p = parse_priorities(&["1=100".into(), "2=-5".into(), "1=7".into()]).unwrap();
        assert_eq!(p.into_iter().collect::<Vec<_>>(), [(1, 7), (2, -5)]);
        assert!(parse_priorities(&[]).unwrap().is_empty());
        for (flag, says) in [
            ("1", "priority \"1\" is not NODE=PRIORITY"),
            ("one=1", "\"one\" is not a node id"),
            ("1=high", "\"high\" is not a priority"),
        ] {
            match parse_priorities(&[flag.into()]) {
                Err(Error::InvalidArgument(m)) => assert_eq!(m, says),
                other => panic!("{flag}: {other:?}"),
            }
        }
    }
}
