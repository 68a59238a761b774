//! `status` and `state show`: the read-only views of the whole cluster. `status` asks every
//! member for its own view and lets the leader of the highest term speak for the cluster;
//! `state show` prints the decided state (nodes, services, VIPs). How they look is
//! `output.rs`'s; nothing here changes the cluster.

use std::collections::BTreeMap;

use ballast_client::{report, v1, Client, Error};
use clap::Subcommand;

use crate::output::{self, Output, StatusView};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum StateCmd {
    /// Show nodes, services and VIPs.
    Show,
}

pub(crate) async fn status(c: &Client, out: Output) -> Result<(), Error> {
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

pub(crate) async fn state(c: &Client, cmd: StateCmd, out: Output) -> Result<(), Error> {
    let StateCmd::Show = cmd;
    print!("{}", output::state_out(&c.get_state(false).await?, out));
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;
    use clap::error::ErrorKind;

    use super::StateCmd;

    #[test]
    fn status_and_state_show_take_no_arguments() {
        assert_eq!(cmd("status"), Cmd::Status);
        assert_eq!(cmd("state show"), Cmd::State(StateCmd::Show));
        assert_refused(&[
            ("status extra", ErrorKind::UnknownArgument),
            ("state", ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand),
            ("state list", ErrorKind::InvalidSubcommand),
        ]);
    }
}
