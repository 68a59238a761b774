//! `node`: the nodes of the cluster state — list them, drain one or put it in maintenance
//! (optionally waiting until it holds no VIP), resume it, forget a standalone agent's node.
//! Raft membership is `member.rs`'s.

use std::time::{Duration, Instant};

use ballast_client::{v1, Client, Error};
use clap::Subcommand;

use crate::output::{nodes_out, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum NodeCmd {
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

pub(crate) async fn run(
    c: &Client,
    cmd: NodeCmd,
    out: Output,
    timeout: Duration,
) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::NodeCmd;
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn node_verbs_parse() {
        assert_eq!(cmd("node ls"), Cmd::Node(NodeCmd::Ls));
        assert_eq!(
            cmd("node drain 1"),
            Cmd::Node(NodeCmd::Drain { id: 1, wait: false })
        );
        assert_eq!(
            cmd("node drain 1 --wait"),
            Cmd::Node(NodeCmd::Drain { id: 1, wait: true })
        );
        assert_eq!(
            cmd("node maintenance --wait 3"),
            Cmd::Node(NodeCmd::Maintenance { id: 3, wait: true })
        );
        assert_eq!(cmd("node resume 3"), Cmd::Node(NodeCmd::Resume { id: 3 }));
        assert_eq!(cmd("node forget 9"), Cmd::Node(NodeCmd::Forget { id: 9 }));
    }

    #[test]
    fn bad_node_invocations_are_refused() {
        assert_refused(&[
            ("node drain", ErrorKind::MissingRequiredArgument),
            ("node drain node-1", ErrorKind::ValueValidation),
            // Only drain and maintenance wait.
            ("node resume 1 --wait", ErrorKind::UnknownArgument),
            ("node rm 1", ErrorKind::InvalidSubcommand),
        ]);
    }
}
