//! Activating a release on this server, the way operators switch a `current` symlink by hand:
//! fetch the artifact, verify its SHA-256, unpack it into `releases/<id>/` (through a
//! temporary directory renamed into place, so a partial download never becomes visible),
//! switch `current` atomically (a new symlink renamed over the old one), run the activation
//! hook from local configuration, and prune old releases.
//!
//! Artifacts are a `.tar.gz` file or a directory, at an absolute path on this server or an
//! http(s) URL (tar.gz only). The checksum of a file is `sha256sum`'s; the checksum of a
//! directory is [`digest_dir`]'s (`ballastctl release digest DIR` prints it).
//!
//! Blocking: the agent runs these on tokio's blocking pool.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub use ballast_client::digest::{digest_dir, digest_file};

/// Where and how a service's releases live on this server (local configuration only).
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseSite {
    /// Holds `releases/<id>/` and the `current` symlink.
    pub dir: PathBuf,
    /// Run after `current` switched (argv), with BALLAST_RELEASE and BALLAST_RELEASE_DIR set.
    pub hook: Option<Vec<String>>,
    pub hook_timeout: Duration,
    /// Releases kept on disk (never fewer than the current and the previous one).
    pub keep: usize,
}

/// A release to activate, as registered in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub id: String,
    pub location: String,
    pub sha256: String,
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let t = e.file_type().map_err(|e| e.to_string())?;
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if t.is_symlink() {
            let target = std::fs::read_link(e.path()).map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| e.to_string())?;
        } else {
            std::fs::copy(e.path(), &dst).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn unpack(tar_gz: &Path, into: &Path) -> Result<(), String> {
    let f = std::fs::File::open(tar_gz).map_err(|e| e.to_string())?;
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    std::fs::create_dir_all(into).map_err(|e| e.to_string())?;
    // `unpack` refuses entries that would land outside `into` (.. or absolute paths).
    a.unpack(into)
        .map_err(|e| format!("unpacking {}: {e}", tar_gz.display()))
}

fn download(url: &str, to: &Path) -> Result<(), String> {
    let resp = ureq::get(url)
        .timeout(Duration::from_secs(300))
        .call()
        .map_err(|e| format!("fetching {url}: {e}"))?;
    let mut f = std::fs::File::create(to).map_err(|e| e.to_string())?;
    std::io::copy(&mut resp.into_reader(), &mut f).map_err(|e| format!("fetching {url}: {e}"))?;
    f.sync_all().map_err(|e| e.to_string())
}

/// The release `current` points to, if any.
pub fn current(site: &ReleaseSite) -> Option<String> {
    let target = std::fs::read_link(site.dir.join("current")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Makes `releases/<id>/` exist with the verified artifact. Returns its path.
pub fn stage(site: &ReleaseSite, a: &Artifact) -> Result<PathBuf, String> {
    let releases = site.dir.join("releases");
    std::fs::create_dir_all(&releases)
        .map_err(|e| format!("creating {}: {e}", releases.display()))?;
    let target = releases.join(&a.id);
    if target.is_dir() {
        return Ok(target); // verified when it was staged
    }
    let tmp = releases.join(format!(".tmp-{}-{}", a.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        let expected = a.sha256.to_lowercase();
        let mismatch = |got: String| {
            format!(
                "checksum mismatch for {}: expected {expected}, got {got}; nothing activated",
                a.location
            )
        };
        if a.location.starts_with("http://") || a.location.starts_with("https://") {
            let file = releases.join(format!(".tmp-{}-{}.tar.gz", a.id, std::process::id()));
            let r = download(&a.location, &file).and_then(|()| {
                let got = digest_file(&file)?;
                if got != expected {
                    return Err(mismatch(got));
                }
                unpack(&file, &tmp)
            });
            let _ = std::fs::remove_file(&file);
            r
        } else {
            let src = Path::new(&a.location);
            if src.is_dir() {
                let got = digest_dir(src)?;
                if got != expected {
                    return Err(mismatch(got));
                }
                copy_tree(src, &tmp)
            } else {
                let got = digest_file(src)?;
                if got != expected {
                    return Err(mismatch(got));
                }
                unpack(src, &tmp)
            }
        }
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target).map_err(|e| e.to_string())?;
    Ok(target)
}

/// Points `current` at `releases/<id>` atomically (a new symlink renamed over the old one).
pub fn switch(site: &ReleaseSite, id: &str) -> Result<(), String> {
    let link = site.dir.join("current");
    let tmp = site.dir.join(format!(".current-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("releases").join(id), &tmp)
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &link).map_err(|e| format!("replacing {}: {e}", link.display()))?;
    // The rename is durable once the directory is.
    if let Ok(d) = std::fs::File::open(&site.dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn run_hook(site: &ReleaseSite, id: &str, dir: &Path) -> Result<(), String> {
    let Some(argv) = &site.hook else {
        return Ok(());
    };
    let mut child = super::caps::command(argv)
        .env("BALLAST_RELEASE", id)
        .env("BALLAST_RELEASE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running the activation hook {argv:?}: {e}"))?;
    let deadline = Instant::now() + site.hook_timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!(
                "activation hook failed ({status}): {}",
                err.trim().chars().take(500).collect::<String>()
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "activation hook did not finish within {:?}",
                site.hook_timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stages, switches and runs the hook; then prunes. `previous` (the release running before)
/// is never pruned.
pub fn activate(site: &ReleaseSite, a: &Artifact) -> Result<(), String> {
    let previous = current(site);
    let dir = stage(site, a)?;
    switch(site, &a.id)?;
    run_hook(site, &a.id, &dir)?;
    let mut keep = vec![a.id.clone()];
    keep.extend(previous);
    // The release runs: a directory that could not be cleaned up is not a failed activation
    // (that would roll the rollout back, and every later one too, for as long as it stays).
    if let Err(e) = prune(site, &keep) {
        tracing::warn!(error = %e, release = %a.id, "pruning old releases");
    }
    Ok(())
}

/// Whether `name` in `releases/` is a temporary (`.tmp-…`, a staging) or doomed (`.old-…`,
/// a removal) entry left by another process: one killed while staging or pruning. This
/// process's own end in its pid. This assumes no other live process works in this directory:
/// one agent runs per network namespace (`hostlock.rs`), and a release directory is not
/// shared between namespaces.
fn leftover(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(".tmp-")
        .or_else(|| name.strip_prefix(".old-"))
    else {
        return false;
    };
    let stem = rest.strip_suffix(".tar.gz").unwrap_or(rest);
    !stem.ends_with(&format!("-{}", std::process::id()))
}

/// Removes the oldest releases beyond `site.keep`, never one named in `protect`, and what
/// killed processes left behind. A release is renamed out of the way before it is removed,
/// so one killed halfway is never left as a partial `releases/<id>/` that [`stage`] would
/// take as staged.
pub fn prune(site: &ReleaseSite, protect: &[String]) -> Result<Vec<String>, String> {
    let releases = site.dir.join("releases");
    let mut all: Vec<(std::time::SystemTime, String)> = Vec::new();
    for e in std::fs::read_dir(&releases).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().map_err(|e| e.to_string())?.is_dir();
        if leftover(&name) {
            let r = if is_dir {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
            if let Err(err) = r {
                tracing::warn!(error = %err, path = %e.path().display(), "removing a leftover");
            }
            continue;
        }
        if name.starts_with('.') || !is_dir {
            continue;
        }
        let t = e
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| e.to_string())?;
        all.push((t, name));
    }
    all.sort();
    let keep = site.keep.max(protect.len());
    let mut removed = Vec::new();
    let mut excess = all.len().saturating_sub(keep);
    for (_, name) in all {
        if excess == 0 {
            break;
        }
        if protect.contains(&name) {
            continue;
        }
        let doomed = releases.join(format!(".old-{name}-{}", std::process::id()));
        // One of the same name is an earlier process's (a pid used again) killed mid-removal.
        if doomed.exists() {
            std::fs::remove_dir_all(&doomed).map_err(|e| e.to_string())?;
        }
        std::fs::rename(releases.join(&name), &doomed).map_err(|e| e.to_string())?;
        std::fs::remove_dir_all(&doomed).map_err(|e| e.to_string())?;
        removed.push(name);
        excess -= 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &Path) -> ReleaseSite {
        ReleaseSite {
            dir: dir.to_path_buf(),
            hook: None,
            hook_timeout: Duration::from_secs(5),
            keep: 2,
        }
    }

    /// A tar.gz with `index.html` saying `text`; returns (path, sha256).
    fn tarball(dir: &Path, name: &str, text: &str) -> (PathBuf, String) {
        let path = dir.join(format!("{name}.tar.gz"));
        let f = std::fs::File::create(&path).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "index.html", text.as_bytes())
            .unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let sum = digest_file(&path).unwrap();
        (path, sum)
    }

    fn art(id: &str, path: &Path, sha: &str) -> Artifact {
        Artifact {
            id: id.into(),
            location: path.display().to_string(),
            sha256: sha.into(),
        }
    }

    #[test]
    fn activates_a_tarball_and_switches_current_atomically() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = site(dst.path());
        let (p1, h1) = tarball(src.path(), "v1", "one");
        let (p2, h2) = tarball(src.path(), "v2", "two");
        activate(&s, &art("v1", &p1, &h1)).unwrap();
        assert_eq!(current(&s).as_deref(), Some("v1"));
        activate(&s, &art("v2", &p2, &h2)).unwrap();
        assert_eq!(current(&s).as_deref(), Some("v2"));
        let served = std::fs::read_to_string(dst.path().join("current/index.html")).unwrap();
        assert_eq!(served, "two");
        // Back to v1: already staged, no fetch needed.
        std::fs::remove_file(&p1).unwrap();
        activate(&s, &art("v1", &p1, &h1)).unwrap();
        assert_eq!(current(&s).as_deref(), Some("v1"));
    }

    #[test]
    fn fetches_an_http_artifact() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let (p, h) = tarball(src.path(), "v1", "over http");
        let body = std::fs::read(&p).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1.tar.gz", l.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = c.read(&mut req);
            write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            c.write_all(&body).unwrap();
        });
        let a = Artifact {
            id: "v1".into(),
            location: url,
            sha256: h,
        };
        activate(&site(dst.path()), &a).unwrap();
        server.join().unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("current/index.html")).unwrap(),
            "over http"
        );
    }

    #[test]
    fn a_checksum_mismatch_activates_nothing_and_leaves_nothing_behind() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = site(dst.path());
        let (p1, h1) = tarball(src.path(), "v1", "one");
        activate(&s, &art("v1", &p1, &h1)).unwrap();
        let (p2, _) = tarball(src.path(), "v2", "two");
        let e = activate(&s, &art("v2", &p2, &"0".repeat(64))).unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
        assert_eq!(current(&s).as_deref(), Some("v1"), "still v1");
        let left: Vec<String> = std::fs::read_dir(dst.path().join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["v1"], "no partial v2, no temporary directory");
    }

    #[test]
    fn directories_are_checked_by_tree_digest() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let tree = src.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("a.txt"), "a").unwrap();
        std::fs::write(tree.join("sub/b.txt"), "b").unwrap();
        let sum = digest_dir(&tree).unwrap();
        activate(&site(dst.path()), &art("d1", &tree, &sum)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("current/sub/b.txt")).unwrap(),
            "b"
        );
        std::fs::write(tree.join("sub/b.txt"), "changed").unwrap();
        assert_ne!(digest_dir(&tree).unwrap(), sum);
    }

    #[test]
    fn a_failing_or_slow_hook_is_an_error() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let (p1, h1) = tarball(src.path(), "v1", "one");
        let mut s = site(dst.path());
        s.hook = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo broken >&2; exit 3".into(),
        ]);
        let e = activate(&s, &art("v1", &p1, &h1)).unwrap_err();
        assert!(e.contains("broken"), "{e}");
        s.hook = Some(vec!["sleep".into(), "5".into()]);
        s.hook_timeout = Duration::from_millis(100);
        let e = activate(&s, &art("v1", &p1, &h1)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        s.hook = Some(vec![
            "sh".into(),
            "-c".into(),
            "test \"$BALLAST_RELEASE\" = v1".into(),
        ]);
        s.hook_timeout = Duration::from_secs(5);
        activate(&s, &art("v1", &p1, &h1)).unwrap();
    }

    #[test]
    fn pruning_keeps_the_newest_and_never_the_current_or_previous() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = site(dst.path()); // keep 2
        for (i, id) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
            let (p, h) = tarball(src.path(), id, id);
            activate(&s, &art(id, &p, &h)).unwrap();
            // Distinct modification times even on coarse filesystems.
            let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i as u64);
            let f = std::fs::File::open(dst.path().join("releases").join(id)).unwrap();
            f.set_modified(t).unwrap();
        }
        let mut left: Vec<String> = std::fs::read_dir(dst.path().join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["v3", "v4"]);
        // Protected ones stay even when old.
        let removed = prune(
            &ReleaseSite {
                keep: 1,
                ..s.clone()
            },
            &["v3".to_string(), "v4".to_string()],
        )
        .unwrap();
        assert!(removed.is_empty());
    }

    #[test]
    fn prune_removes_what_a_killed_process_left_and_keeps_its_own() {
        let dst = tempfile::tempdir().unwrap();
        let releases = dst.path().join("releases");
        let me = std::process::id();
        // Pid 1 is never this test: a killed agent's staging, download and removal.
        for d in [".tmp-v9-1", ".old-v8-1", &format!(".tmp-v7-{me}"), "v1"] {
            std::fs::create_dir_all(releases.join(d).join("sub")).unwrap();
        }
        std::fs::write(releases.join(".tmp-v9-1.tar.gz"), b"partial").unwrap();
        std::fs::write(releases.join(format!(".tmp-v7-{me}.tar.gz")), b"mine").unwrap();
        let removed = prune(&site(dst.path()), &[]).unwrap();
        assert!(removed.is_empty());
        let mut left: Vec<String> = std::fs::read_dir(&releases)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                format!(".tmp-v7-{me}"),
                format!(".tmp-v7-{me}.tar.gz"),
                "v1".into()
            ]
        );

        // A removal of this pid's name left by an earlier process (a pid used again) is no
        // obstacle to removing the same release again.
        std::fs::create_dir_all(releases.join(format!(".old-v0-{me}")).join("sub")).unwrap();
        std::fs::create_dir_all(releases.join("v0").join("sub")).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let f = std::fs::File::open(releases.join("v0")).unwrap();
        f.set_modified(old).unwrap();
        let one = ReleaseSite {
            keep: 1,
            ..site(dst.path())
        };
        assert_eq!(prune(&one, &["v1".to_string()]).unwrap(), vec!["v0"]);
        assert!(!releases.join(format!(".old-v0-{me}")).exists());
    }
}
