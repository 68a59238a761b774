//! Checksums of release artifacts, shared by the agent (which verifies) and `ballastctl
//! release digest` (which prints what to register).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, as `sha256sum` prints it.
pub fn digest_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of a directory tree: over its regular files and symlinks in byte order of their
/// relative paths, each as `path NUL length(8 bytes, little endian) content` (a symlink's
/// content is its target). Directories themselves, owners, modes and times do not count.
pub fn digest_dir(root: &Path) -> Result<String, String> {
    let mut entries = Vec::new();
    collect(root, root, &mut entries)?;
    entries.sort();
    let mut h = Sha256::new();
    for rel in entries {
        let p = root.join(&rel);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
        let content = if meta.file_type().is_symlink() {
            std::fs::read_link(&p)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned()
                .into_bytes()
        } else {
            std::fs::read(&p).map_err(|e| e.to_string())?
        };
        h.update(rel.as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(&content);
    }
    Ok(hex(&h.finalize()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let t = e.file_type().map_err(|e| e.to_string())?;
        let p = e.path();
        if t.is_dir() {
            collect(root, &p, out)?;
        } else if t.is_file() || t.is_symlink() {
            let rel = p.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
