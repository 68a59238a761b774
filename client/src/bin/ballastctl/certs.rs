//! `certs`: a CA and the node and client certificates of a cluster that runs mutual TLS.
//! Works offline and talks to no cluster; the files are made by `ballast_client::certs`.

use ballast_client::certs::{self, CertError};
use ballast_client::identity::CertIdentity;
use clap::Subcommand;

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum CertsCmd {
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

pub(crate) fn run(cmd: CertsCmd) -> Result<(), CertError> {
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
            let identity = member
                .map(CertIdentity::Member)
                .or(node.map(CertIdentity::Node));
            let kind = kind(client, node.is_some(), &san);
            let out = out.unwrap_or_else(|| ca_dir.clone());
            let (cert, key) = certs::issue(&ca_dir, &out, &name, &san, kind, identity, days)?;
            println!("certificate: {}", cert.display());
            println!("key:         {}", key.display());
        }
    }
    Ok(())
}

/// What `certs issue` makes: a client certificate when asked, or for an agent-only server
/// (`--node`) that no one dials (no `--san`): it only calls the cluster. Else a node
/// certificate.
fn kind(client: bool, agent_only: bool, san: &[String]) -> certs::Kind {
    if client || (agent_only && san.is_empty()) {
        certs::Kind::Client
    } else {
        certs::Kind::Node
    }
}

#[cfg(test)]
mod tests {
    use ballast_client::certs::Kind;
    use clap::error::ErrorKind;

    use super::{kind, CertsCmd};
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn certs_verbs_parse_with_their_defaults() {
        assert_eq!(
            cmd("certs init"),
            Cmd::Certs(CertsCmd::Init {
                dir: "ballast-ca".into(),
                name: "Ballast CA".into(),
                days: 3650
            })
        );
        assert_eq!(
            cmd("certs issue n1"),
            Cmd::Certs(CertsCmd::Issue {
                name: "n1".into(),
                ca_dir: "ballast-ca".into(),
                out: None,
                san: vec![],
                client: false,
                member: None,
                node: None,
                days: 825,
            })
        );
        // --san takes a comma-separated list, repeated.
        assert_eq!(
            cmd(concat!(
                "certs issue n1 --ca-dir ca --out o --san 10.0.0.1,n1.example --san ::1 ",
                "--member 1 --days 30"
            )),
            Cmd::Certs(CertsCmd::Issue {
                name: "n1".into(),
                ca_dir: "ca".into(),
                out: Some("o".into()),
                san: vec!["10.0.0.1".into(), "n1.example".into(), "::1".into()],
                client: false,
                member: Some(1),
                node: None,
                days: 30,
            })
        );
    }

    #[test]
    fn certs_identities_conflict() {
        assert_refused(&[
            (
                "certs issue n --client --member 1",
                ErrorKind::ArgumentConflict,
            ),
            (
                "certs issue n --member 1 --node 2",
                ErrorKind::ArgumentConflict,
            ),
            ("certs issue n --node two", ErrorKind::ValueValidation),
            ("certs issue", ErrorKind::MissingRequiredArgument),
        ]);
        // A client certificate may still name an agent-only node.
        assert!(matches!(
            cmd("certs issue a --client --node 4"),
            Cmd::Certs(CertsCmd::Issue {
                client: true,
                node: Some(4),
                ..
            })
        ));
    }

    #[test]
    fn an_agent_only_server_nobody_dials_gets_a_client_certificate() {
        let san = ["10.0.0.9".to_string()];
        assert_eq!(kind(true, false, &san), Kind::Client);
        assert_eq!(kind(false, true, &[]), Kind::Client);
        assert_eq!(kind(false, true, &san), Kind::Node);
        assert_eq!(kind(false, false, &[]), Kind::Node);
    }
}
