//! The identity a data directory remembers: which node of which cluster it holds.
//!
//! A data directory started as another node, or reached by another cluster's traffic, is
//! refused with a message that says which is which.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// The identity file's name inside a data directory.
pub const FILE: &str = "identity.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
    /// None until the node formed a cluster or received its first Raft message.
    pub cluster_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {dir} belongs to node {stored}, but this process is configured as node {configured}; use that node id or another data directory")]
    WrongNode {
        dir: String,
        stored: NodeId,
        configured: NodeId,
    },
    #[error("data directory {dir} belongs to cluster {stored}, not {other}; refusing to mix clusters (start with an empty data directory to join another cluster)")]
    WrongCluster {
        dir: String,
        stored: String,
        other: String,
    },
    #[error("identity file {path}: {message}")]
    Io { path: String, message: String },
}

/// The identity file of a data directory.
pub struct IdentityStore {
    dir: PathBuf,
    current: Mutex<Identity>,
}

impl IdentityStore {
    /// Opens the identity of `dir`, creating it for `node_id` when the directory is new.
    /// Returns whether it was new.
    pub fn open(dir: &Path, node_id: NodeId) -> Result<(Self, bool), IdentityError> {
        let path = dir.join(FILE);
        let io = |e: std::io::Error| IdentityError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        // Durably: a power cut must not take the directory that holds everything.
        crate::member::store::create_durable_dir(dir).map_err(|e| IdentityError::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let (identity, fresh) = match std::fs::read(&path) {
            Ok(bytes) => {
                let id: Identity =
                    serde_json::from_slice(&bytes).map_err(|e| IdentityError::Io {
                        path: path.display().to_string(),
                        message: format!("unreadable: {e}"),
                    })?;
                if id.node_id != node_id {
                    return Err(IdentityError::WrongNode {
                        dir: dir.display().to_string(),
                        stored: id.node_id,
                        configured: node_id,
                    });
                }
                (id, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                Identity {
                    node_id,
                    cluster_id: None,
                },
                true,
            ),
            Err(e) => return Err(io(e)),
        };
        let store = IdentityStore {
            dir: dir.to_path_buf(),
            current: Mutex::new(identity.clone()),
        };
        if fresh {
            store.write(&identity)?;
        }
        Ok((store, fresh))
    }

    pub fn get(&self) -> Identity {
        self.current.lock().unwrap().clone()
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.current.lock().unwrap().cluster_id.clone()
    }

    /// Accepts traffic or configuration of cluster `id`: adopts it if the directory has none
    /// yet, refuses it if the directory belongs to another cluster.
    pub fn accept_cluster(&self, id: &str) -> Result<(), IdentityError> {
        let mut cur = self.current.lock().unwrap();
        match &cur.cluster_id {
            Some(stored) if stored == id => Ok(()),
            Some(stored) => Err(IdentityError::WrongCluster {
                dir: self.dir.display().to_string(),
                stored: stored.clone(),
                other: id.to_string(),
            }),
            None => {
                let mut next = cur.clone();
                next.cluster_id = Some(id.to_string());
                self.write(&next)?;
                *cur = next;
                Ok(())
            }
        }
    }

    /// Writes atomically: a temporary file, fsync, rename, fsync of the directory.
    fn write(&self, id: &Identity) -> Result<(), IdentityError> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let io = |e: std::io::Error| IdentityError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(id).expect("identity serializes"))
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_node_and_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (s, fresh) = IdentityStore::open(dir.path(), 2).unwrap();
        assert!(fresh);
        s.accept_cluster("c1").unwrap();
        drop(s);
        let (s, fresh) = IdentityStore::open(dir.path(), 2).unwrap();
        assert!(!fresh);
        assert_eq!(s.cluster_id().as_deref(), Some("c1"));
        let e = s.accept_cluster("c2").unwrap_err();
        assert!(e.to_string().contains("belongs to cluster c1"), "{e}");
        let e = IdentityStore::open(dir.path(), 3).err().unwrap();
        assert!(e.to_string().contains("belongs to node 2"), "{e}");
    }
}
