//! `lease`: show the cluster's VIP lease settings, or change them. The cluster checks that
//! new settings keep the lease promise; this module refuses only an empty or zero change.

use ballast_client::{v1, Client, Error};
use clap::Subcommand;

use crate::bad;
use crate::output::{lease_out, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum LeaseCmd {
    /// The lease settings in force, and how long a new leader waits before it counts any
    /// lease as over.
    Show,
    /// Change the lease settings (options left out keep their value). Refused when they
    /// cannot keep the promise: the agent's deadline (lease - drift) must end before the
    /// leader's expiry (lease + margin) at the worst clock drift, an owner's lease must
    /// outlast a leader election, and the renew interval must leave room for a renewal that
    /// got no answer (given up after two intervals) and its retry (3/8 of one more) before
    /// the fence closes, 40 ms ahead of the deadline. A longer lease applies at once; after a shorter one, a new leader still
    /// waits the longer one until every grant of it has run out.
    Set {
        /// Length of a grant, ms (counted by the agent from when it sent the renewal).
        #[arg(long)]
        lease_ms: Option<u64>,
        /// How often an owner renews, ms. With more than 5,000 renewals a second at this
        /// interval (over 500 agents at 100 ms), the leader tells agents a longer one, up
        /// to what these settings allow with room to spare (165 ms with the defaults).
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

pub(crate) async fn run(c: &Client, cmd: LeaseCmd, out: Output) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use ballast_client::{v1, Error};
    use clap::error::ErrorKind;

    use super::{settings, LeaseCmd};
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn lease_verbs_parse() {
        assert_eq!(cmd("lease show"), Cmd::Lease(LeaseCmd::Show));
        assert_eq!(
            cmd("lease set --lease-ms 3000 --margin-ms 50"),
            Cmd::Lease(LeaseCmd::Set {
                lease_ms: Some(3000),
                renew_ms: None,
                drift_ms: None,
                margin_ms: Some(50)
            })
        );
        // Nothing given parses; it is refused before anything is sent (below).
        assert_eq!(
            cmd("lease set"),
            Cmd::Lease(LeaseCmd::Set {
                lease_ms: None,
                renew_ms: None,
                drift_ms: None,
                margin_ms: None
            })
        );
        assert_refused(&[
            ("lease set --lease-ms 3s", ErrorKind::ValueValidation),
            ("lease set --lease 3000", ErrorKind::UnknownArgument),
            ("lease show --lease-ms 1", ErrorKind::UnknownArgument),
        ]);
    }

    #[test]
    fn lease_settings_leave_out_what_is_not_given() {
        assert_eq!(
            settings(None, Some(500), None, Some(40)).unwrap(),
            v1::LeaseSettings {
                lease_ms: 0,
                renew_ms: 500,
                drift_ms: 0,
                margin_ms: 40,
                wait_ms: 0
            }
        );
        match settings(None, None, None, None) {
            Err(Error::InvalidArgument(m)) => assert!(m.starts_with("nothing to set"), "{m}"),
            other => panic!("{other:?}"),
        }
        match settings(Some(3000), None, Some(0), None) {
            Err(Error::InvalidArgument(m)) => {
                assert_eq!(m, "lease settings must be above 0 ms")
            }
            other => panic!("{other:?}"),
        }
    }
}
