//! `snapshot`: save a backup of the whole cluster state to a file (0600, written whole or
//! not at all), or check a backup file. Restoring one is `ballastd restore`'s.

use ballast_client::{backup, files, Client, Error};
use clap::Subcommand;

use crate::output::{backup_out, Output};

#[derive(Debug, PartialEq, Subcommand)]
pub(crate) enum SnapshotCmd {
    /// Write a consistent, checksummed backup of the whole cluster state (KV, nodes,
    /// services, releases, VIPs) to FILE, as of a linearizable read. Restore it into a new
    /// cluster with `ballastd restore --from FILE`.
    Save { file: std::path::PathBuf },
    /// Check a backup file (length and checksum) and show what it holds.
    Inspect { file: std::path::PathBuf },
}

pub(crate) async fn run(c: &Client, cmd: SnapshotCmd, out: Output) -> Result<(), Error> {
    let (file, bytes, saved) = match cmd {
        SnapshotCmd::Save { file } => {
            let bytes = c.snapshot().await?;
            // It holds every key and value: mode 0600, through a temporary file of its own
            // renamed into place, so a crash leaves no half backup under the name asked for.
            files::write_atomic(&file, &bytes, 0o600, files::Existing::Replace)
                .map_err(|e| Error::Other(e.to_string()))?;
            (file, bytes, true)
        }
        SnapshotCmd::Inspect { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", file.display())))?;
            (file, bytes, false)
        }
    };
    let (h, _) =
        backup::decode(&bytes).map_err(|e| Error::Other(format!("{}: {e}", file.display())))?;
    print!("{}", backup_out(&file, bytes.len(), &h, saved, out));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::SnapshotCmd;
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn snapshot_verbs_parse() {
        assert_eq!(
            cmd("snapshot save b.bak"),
            Cmd::Snapshot(SnapshotCmd::Save {
                file: "b.bak".into()
            })
        );
        assert_eq!(
            cmd("snapshot inspect /tmp/b.bak"),
            Cmd::Snapshot(SnapshotCmd::Inspect {
                file: "/tmp/b.bak".into()
            })
        );
        assert_refused(&[
            ("snapshot save", ErrorKind::MissingRequiredArgument),
            ("snapshot restore b.bak", ErrorKind::InvalidSubcommand),
        ]);
    }
}
