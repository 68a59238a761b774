//! A [`VipLab`] whose service "web" is a tiny HTTP server per node that serves the node's
//! current release (`current/index.html` in its release directory) on port [`PORT`], checked
//! by the cluster's http health check; releases registered and rolled out with `ballastctl`.
//! Used by the release lab test and the chaos suite's release workload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::viplab::{VipLab, VipLabOptions};

/// Where every node serves its current release.
pub const PORT: u16 = 8080;

/// A directory artifact whose `index.html` says `text`. Returns (path, sha256 to register).
pub fn artifact_dir(dir: &Path, id: &str, text: &str) -> (PathBuf, String) {
    let path = dir.join(format!("art-{id}"));
    std::fs::create_dir_all(&path).expect("artifact directory");
    std::fs::write(path.join("index.html"), text).expect("artifact file");
    let sum = ballast_client::digest::digest_dir(&path).expect("artifact digest");
    (path, sum)
}

/// `ballastctl release register web ID --artifact PATH --sha256 SUM`.
pub fn register(v: &VipLab, id: &str, artifact: &(PathBuf, String)) -> Result<(), String> {
    let path = artifact.0.display().to_string();
    let (ok, _, err) = v.ctl(&[
        "release",
        "register",
        "web",
        id,
        "--artifact",
        &path,
        "--sha256",
        &artifact.1,
    ]);
    ok.then_some(()).ok_or(err)
}

/// `ballastctl release activate web ID --batch B --min-healthy H --deadline 60s`.
pub fn activate(v: &VipLab, id: &str, batch: &str, min_healthy: &str) -> Result<(), String> {
    let (ok, _, err) = v.ctl(&[
        "release",
        "activate",
        "web",
        id,
        "--batch",
        batch,
        "--min-healthy",
        min_healthy,
        "--deadline",
        "60s",
    ]);
    ok.then_some(()).ok_or(err)
}

/// `ballastctl release status web -o json`.
pub fn status(v: &VipLab) -> Option<Value> {
    let (ok, out, _) = v.ctl(&["release", "status", "web", "-o", "json"]);
    ok.then(|| serde_json::from_str(&out).ok())?
}

/// Waits up to `timeout` until the rollout of `id` is in `state`; returns the status.
pub fn wait_rollout(v: &VipLab, id: &str, state: &str, timeout: Duration) -> Option<Value> {
    v.lab.wait_for(timeout, || {
        status(v).filter(|s| s["rollout"]["release"] == id && s["rollout"]["state"] == state)
    })
}

/// The release a node's service answered with: the last word of `index.html`.
pub fn release_of(body: &str) -> String {
    body.split_whitespace().last().unwrap_or("").to_string()
}

/// Lab options: http check on [`PORT`], a release directory per node (`rel-nN`, keeping
/// `keep` releases), the servers started, and `first` registered and activated everywhere at
/// once before anything waits on the VIP (nothing is healthy before a release runs).
pub fn options(first: (String, PathBuf, String), keep: usize) -> VipLabOptions {
    VipLabOptions {
        check: Some(format!("http:{PORT}/")),
        extra: Some(Box::new(move |id, dir| {
            vec![
                "--release-dir".into(),
                format!("web={}", dir.join(format!("rel-n{id}")).display()),
                "--keep-releases".into(),
                keep.to_string(),
            ]
        })),
        before_vip: Some(Box::new(move |v| {
            let dir = v.dir.clone();
            v.lab
                .serve_files(PORT, |h| {
                    dir.join(format!("rel-{}", h.name))
                        .join("current/index.html")
                })
                .expect("release servers");
            let (id, path, sum) = &first;
            register(v, id, &(path.clone(), sum.clone())).expect("first release registered");
            activate(v, id, "3", "1ms").expect("first release activated");
            wait_rollout(v, id, "succeeded", Duration::from_secs(90))
                .unwrap_or_else(|| panic!("first rollout never succeeded:\n{}", v.logs()));
        })),
        ..Default::default()
    }
}
