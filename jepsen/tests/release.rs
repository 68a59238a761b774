//! Releases on real lab hosts: three `ballastd --agent`, each with a release directory and a
//! tiny HTTP service that serves `current/index.html` (503 when it says "broken"), checked by
//! the cluster's http health check; a client on the client host requests the service through
//! the VIP all along.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jepsen::http::{longest_failure, HttpProber};
use jepsen::releaselab::{self, status};
use jepsen::viplab::{VipLab, VIP};
use serde_json::Value;

/// A release artifact: a tar.gz whose index.html says `text`. Returns (path, sha256).
fn artifact(dir: &Path, id: &str, text: &str) -> (PathBuf, String) {
    let src = dir.join(format!("src-{id}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("index.html"), text).unwrap();
    let path = dir.join(format!("{id}.tar.gz"));
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&path)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    let sum = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    (path, sum)
}

fn register(v: &VipLab, id: &str, a: &(PathBuf, String)) {
    releaselab::register(v, id, a).unwrap();
}

fn activate(v: &VipLab, id: &str, batch: &str, min_healthy: &str) {
    releaselab::activate(v, id, batch, min_healthy).unwrap();
}

/// Waits until the rollout of `id` ends in `state`; returns the status.
fn wait_rollout(v: &VipLab, id: &str, state: &str) -> Value {
    releaselab::wait_rollout(v, id, state, Duration::from_secs(90)).unwrap_or_else(|| {
        panic!(
            "rollout of {id} never reached {state}: {:?}\nlogs:\n{}",
            status(v),
            v.logs()
        )
    })
}

fn release_status(v: &VipLab, id: &str) -> String {
    let (ok, out, err) = v.ctl(&["release", "ls", "web", "-o", "json"]);
    assert!(ok, "{err}");
    let l: Value = serde_json::from_str(&out).unwrap();
    l.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["status"].as_str().unwrap().to_string())
        .unwrap()
}

/// Waits until the client's latest answer through the VIP is `body`.
fn client_gets(v: &VipLab, client: &HttpProber, body: &str) {
    v.lab
        .wait_for(Duration::from_secs(10), || {
            client
                .answers()
                .last()
                .filter(|a| a.result.as_deref() == Ok(body))
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("the client never got {body:?} through the VIP"));
}

fn on_disk(v: &VipLab, node: u64) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_dir(v.dir.join(format!("rel-n{node}/releases")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    l.sort();
    l
}

#[test]
fn rollouts_switch_releases_behind_the_vip_roll_back_and_survive_a_leader_crash() {
    let work = tempfile::tempdir().unwrap();
    let arts: Vec<(PathBuf, String)> = [
        ("v1", "v1\n"),
        ("v2", "v2\n"),
        ("v3", "broken v3\n"),
        ("v5", "v5\n"),
    ]
    .iter()
    .map(|(id, text)| artifact(work.path(), id, text))
    .collect();
    let v1 = arts[0].clone();
    let (mut v, _, _) = VipLab::start_opts(releaselab::options(
        ("v1".into(), v1.0.clone(), v1.1.clone()),
        3,
    ));
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
    let client = HttpProber::start(
        v.lab.client(),
        vip,
        releaselab::PORT,
        Duration::from_millis(20),
    )
    .unwrap();
    client_gets(&v, &client, "v1\n");

    // v1 -> v2, one node at a time, the VIP owner last: the client sees v2 in the end and
    // no failure beyond a planned move's blip.
    let before = client.answers().len();
    register(&v, "v2", &arts[1]);
    activate(&v, "v2", "1", "1s");
    wait_rollout(&v, "v2", "succeeded");
    let answers = client.answers()[before..].to_vec();
    let failed: Vec<_> = answers.iter().filter(|a| a.result.is_err()).collect();
    let blip = longest_failure(&answers);
    // A planned move of the VIP (the owner switches last) is the only gap: a request or two
    // in flight when the old owner's fence shut.
    assert!(
        failed.len() <= 3 && blip < Duration::from_secs(1),
        "{} requests failed during the rollout, longest run {blip:?}: {failed:?}",
        failed.len()
    );
    client_gets(&v, &client, "v2\n");
    assert!(answers.iter().any(|a| a.result.as_deref() == Ok("v1\n")));

    // A broken v3 (its health check fails) rolls back to v2 by itself.
    register(&v, "v3", &arts[2]);
    activate(&v, "v3", "1", "1s");
    let s = wait_rollout(&v, "v3", "rolled back");
    assert!(
        s["rollout"]["message"]
            .as_str()
            .unwrap()
            .contains("unhealthy"),
        "{s}"
    );
    assert_eq!(s["active_release"], "v2");
    assert_eq!(release_status(&v, "v3"), "failed");

    // A checksum mismatch is refused by the agent and rolls back, nothing activated.
    let (ok, _, err) = v.ctl(&[
        "release",
        "register",
        "web",
        "v4",
        "--artifact",
        arts[3].0.to_str().unwrap(),
        "--sha256",
        &"0".repeat(64),
    ]);
    assert!(ok, "{err}");
    activate(&v, "v4", "1", "1s");
    let s = wait_rollout(&v, "v4", "rolled back");
    assert!(
        s["rollout"]["message"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{s}"
    );
    for n in 1..=3 {
        assert!(
            !on_disk(&v, n).contains(&"v4".to_string()),
            "v4 unpacked on n{n}"
        );
    }

    // The leader is killed mid-rollout (and restarted): the rollout still completes.
    register(&v, "v5", &arts[3]);
    activate(&v, "v5", "1", "2s");
    v.lab
        .wait_for(Duration::from_secs(30), || {
            let s = status(&v)?;
            let switched = s["rollout"]["desired"]
                .as_object()?
                .values()
                .filter(|d| *d == "v5")
                .count();
            (switched >= 1).then_some(())
        })
        .expect("the first node switched");
    let leader = v.leader().expect("a leader");
    v.procs[leader as usize - 1].take().unwrap().kill();
    v.procs[leader as usize - 1] = Some(v.spawn(leader));
    wait_rollout(&v, "v5", "succeeded");
    assert_eq!(status(&v).unwrap()["active_release"], "v5");

    // Rollback returns to the previous release (v2).
    let (ok, _, err) = v.ctl(&["release", "rollback", "web"]);
    assert!(ok, "{err}");
    let s = wait_rollout(&v, "v5", "rolled back");
    assert_eq!(s["active_release"], "v2");
    client_gets(&v, &client, "v2\n");

    // Pruning kept at most 3 releases per node, among them the current and the previous.
    for n in 1..=3 {
        let d = on_disk(&v, n);
        assert!(d.len() <= 3, "n{n} keeps {d:?}");
        assert!(
            d.contains(&"v2".to_string()) && d.contains(&"v5".to_string()),
            "n{n}: {d:?}"
        );
    }
    let all = client.stop();
    eprintln!(
        "{} requests through the VIP, {} failed; longest failure {:?}",
        all.len(),
        all.iter().filter(|a| a.result.is_err()).count(),
        longest_failure(&all)
    );
}
