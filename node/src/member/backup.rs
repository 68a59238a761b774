//! Backups of the cluster state, and restoring one into a new cluster.
//!
//! A backup is the application state (KV with its revisions, nodes, services with their
//! releases and rollouts, VIPs) at one revision, read linearizably by a member and wrapped in
//! the checksummed file format of `ballast_client::backup`. It leaves out what belongs to the
//! cluster it came from: Raft membership, client sessions (retries of writes made before the
//! backup are not recognised after a restore) and the watch history.
//!
//! Restoring goes through the log of the new cluster: a member started with `restore --from`
//! checks the file, keeps it in its data directory (`restore.pending`) and, once the new
//! cluster has a leader, proposes `Op::Restore`, which every member applies the same way. The
//! operation is refused by a cluster that already holds KV data, services or VIPs (or still
//! waits out a deleted VIP's lease), so several initial members may be given the same file;
//! the first one seeds the cluster. Restored VIPs are unowned and their addresses retired
//! until the old cluster's leases (its lease wait, carried in the payload since format 2)
//! have run out at the new leader, so that no node of the old cluster still answers for one
//! when it is placed (see `StateData::restore`).
//!
//! When a majority is lost for good, `--force-new-cluster` turns a surviving member's data
//! directory into a backup (its last snapshot plus every log entry it holds, committed or
//! not, as etcd does), moves the old Raft data aside and restores that backup into a new
//! one-member cluster, which is then grown back with `--join`.

use std::path::Path;

use ballast_client::backup::{self as format, Header};

use crate::member::state::StateData;
pub use crate::model::backup::{BackupState, PAYLOAD_FORMAT};
use crate::types::NodeId;

/// Name of the backup kept in a data directory until the new cluster applied it.
pub const PENDING: &str = "restore.pending";

/// Marks a data directory that `--force-new-cluster` already turned into a new cluster.
pub const FORCED: &str = "forced-new-cluster";

/// Largest backup state a restore takes: it travels as one Raft entry, which must fit one
/// Raft message with room to spare (see `replicate.rs`).
pub const MAX_RESTORE_BYTES: usize = ballast_proto::MAX_MESSAGE_LEN / 2;

/// Refuses a backup state of `len` bytes that a restore cannot carry.
pub fn check_restore_size(len: usize) -> Result<(), String> {
    if len > MAX_RESTORE_BYTES {
        return Err(format!(
            "the backup's state is {len} bytes; restoring goes through one Raft entry of at most {MAX_RESTORE_BYTES}"
        ));
    }
    Ok(())
}

/// The backup file of `s` (taken from cluster `cluster_id` at wall-clock `now_ms`).
pub fn file_of(s: &StateData, cluster_id: &str, now_ms: u64) -> Vec<u8> {
    format::encode(cluster_id, s.revision, now_ms, &s.backup().encode())
}

/// Reads and checks a backup file down to its state; the error says what is wrong with it.
pub fn read_file(path: &Path) -> Result<(Header, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (header, payload) = check(&bytes, path)?;
    Ok((header, payload.to_vec()))
}

/// Checks the bytes of a backup file (read from `path`) down to its state.
pub fn check<'a>(bytes: &'a [u8], path: &Path) -> Result<(Header, &'a [u8]), String> {
    let (header, payload) =
        format::decode(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    BackupState::decode(payload)
        .and_then(|b| b.check_vips())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((header, payload))
}

/// Writes a backup file (it holds every key and value): mode 0600 whatever the umask, through
/// a temporary file of its own, fsynced and renamed into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    ballast_client::files::write_atomic(
        path,
        bytes,
        0o600,
        ballast_client::files::Existing::Replace,
    )
    .map_err(|e| e.to_string())
}

/// The state a member's data directory holds: its last snapshot, then every log entry after
/// it. Returns it with the index of the last entry applied. The directory must not be in use.
pub fn state_of_data_dir(dir: &Path) -> Result<(StateData, u64), String> {
    use crate::member::store::{
        open_member_engine, LogEngine, StateMachineStore, LOG_DIR, SLED_DIR,
    };
    if !dir.join(LOG_DIR).exists() && !dir.join(SLED_DIR).exists() {
        return Err(format!("{} holds no Raft data", dir.display()));
    }
    let engine = std::sync::Arc::new(
        open_member_engine(dir).map_err(|e| format!("{}: {e}", dir.display()))?,
    );
    let sm = StateMachineStore::open(engine.clone()).map_err(|e| e.to_string())?;
    let mut data = sm.read().clone();
    let start = data.last_applied.map_or(0, |l| l.index + 1);
    let mut last = start.saturating_sub(1);
    for (index, bytes) in engine
        .read_logs(start, u64::MAX)
        .map_err(|e| e.to_string())?
    {
        let entry = crate::member::format::decode_entry(&bytes)
            .map_err(|e| format!("log entry {index} is unreadable: {e}"))?;
        data.apply(&entry);
        last = index;
    }
    Ok((data, last))
}

/// `--force-new-cluster`: writes the state of `dir` as a backup file inside it, moves the old
/// Raft data and identity aside (`*.replaced-<ms>`), and returns the backup's path, to be
/// restored into a new one-member cluster. Everything that can refuse (the node id, a
/// readable state, the restore size limit) is checked before anything is written: a refusal
/// leaves the directory as it was.
pub fn force_new_cluster(
    dir: &Path,
    node_id: NodeId,
    now_ms: u64,
) -> Result<std::path::PathBuf, String> {
    // 1. Checks. The identity store also refuses a directory that belongs to another node.
    let (store, _) =
        crate::member::identity::IdentityStore::open(dir, node_id).map_err(|e| e.to_string())?;
    let old_cluster = store.cluster_id().unwrap_or_default();
    drop(store);
    let identity = dir.join(crate::member::identity::FILE);
    let (state, last) = state_of_data_dir(dir)?;
    let payload = state.backup().encode();
    check_restore_size(payload.len()).map_err(|e| {
        format!(
            "{e}: this member's state cannot seed a new cluster; nothing was changed in {}",
            dir.display()
        )
    })?;
    // 2. The backup, written and synced under its final name.
    let path = dir.join(format!("force-new-cluster-{now_ms}.bak"));
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    write_private(
        &path,
        &format::encode(&old_cluster, state.revision, now_ms, &payload),
    )?;
    // 3. The old cluster's data aside: the file in sled's old place (made again with the new
    // log), then the log (a crash between the two leaves the log, which a new run of this
    // reads again).
    std::fs::rename(
        dir.join(crate::member::store::SLED_DIR),
        dir.join(format!("raft.replaced-{now_ms}")),
    )
    .map_err(io)?;
    std::fs::rename(
        dir.join(crate::member::store::LOG_DIR),
        dir.join(format!("log.replaced-{now_ms}")),
    )
    .map_err(io)?;
    if identity.exists() {
        std::fs::rename(
            &identity,
            dir.join(format!("identity.json.replaced-{now_ms}")),
        )
        .map_err(io)?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    tracing::warn!(
        backup = %path.display(),
        last_log_index = last,
        revision = state.revision,
        "forcing a new one-member cluster from this member's data"
    );
    Ok(path)
}
