//! `member`: Raft membership — list the members with their replication, add a learner,
//! promote it, remove a member. Node records of the cluster state are `node.rs`'s.

use ballast_client::{Client, Error};
use clap::Subcommand;

use crate::output::{members_out, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum MemberCmd {
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

pub(crate) async fn run(c: &Client, cmd: MemberCmd, out: Output) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;
    use clap::error::ErrorKind;

    use super::MemberCmd;

    #[test]
    fn member_verbs_parse() {
        assert_eq!(cmd("member list"), Cmd::Member(MemberCmd::List));
        assert_eq!(
            cmd("member add 4 10.0.0.4:7401"),
            Cmd::Member(MemberCmd::Add {
                id: 4,
                addr: "10.0.0.4:7401".into(),
                no_wait: false
            })
        );
        assert_eq!(
            cmd("member add 4 h:1 --no-wait"),
            Cmd::Member(MemberCmd::Add {
                id: 4,
                addr: "h:1".into(),
                no_wait: true
            })
        );
        assert_eq!(
            cmd("member promote 4"),
            Cmd::Member(MemberCmd::Promote { id: 4 })
        );
        assert_eq!(
            cmd("member remove 2"),
            Cmd::Member(MemberCmd::Remove { id: 2 })
        );
    }

    #[test]
    fn bad_member_invocations_are_refused() {
        assert_refused(&[
            ("member add 4", ErrorKind::MissingRequiredArgument),
            ("member add four h:1", ErrorKind::ValueValidation),
            ("member promote -1", ErrorKind::UnknownArgument),
            ("member remove", ErrorKind::MissingRequiredArgument),
            ("member list --wait", ErrorKind::UnknownArgument),
            ("member ls", ErrorKind::InvalidSubcommand),
        ]);
    }
}
