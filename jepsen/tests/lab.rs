//! The lab itself: isolation, cuts, cleanup, and real `ballastd` members on separate hosts.
//! Needs root; without it these tests fail (loudly) rather than skip.

use std::path::Path;
use std::time::Duration;

use jepsen::{ballast_bin, Host, Lab, LabProcess};
use serde_json::Value;

fn lab(nodes: usize) -> Lab {
    match Lab::new(nodes) {
        Ok(l) => l,
        Err(e) => panic!("LAB SETUP FAILED: {e}"),
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new(&format!("/run/netns/{name}")).exists()
}

#[test]
fn hosts_reach_each_other_and_only_through_the_lab() {
    let lab = lab(3);
    for h in lab.nodes() {
        assert!(lab.can_ping(lab.client(), h), "client -> {}", h.name);
    }
    assert!(lab.can_ping(lab.node(1), lab.node(3)));
    // No default route: nothing outside 10.213.0.0/24 is reachable.
    let routes = lab.exec(lab.node(1), "ip", &["route"]).unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(!routes.contains("default"), "{routes}");
    assert!(routes.contains("10.213.0.0/24"), "{routes}");
}

#[test]
fn partitions_cut_links_and_heal_restores_them() {
    let lab = lab(3);
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));
    lab.isolate(n1).unwrap();
    assert!(!lab.can_ping(n1, n2));
    assert!(!lab.can_ping(n3, n1));
    assert!(lab.can_ping(n2, n3), "the majority still talks");
    assert!(
        lab.can_ping(lab.client(), n1),
        "the client still reaches the isolated node"
    );
    lab.heal().unwrap();
    assert!(lab.can_ping(n1, n2));

    // One way: n1 stops hearing n2; n2 still hears n1 (its request arrives, the reply is lost).
    lab.cut(n2, n1).unwrap();
    let before = (lab.dropped_at(n1), lab.dropped_at(n2));
    assert!(!lab.can_ping(n1, n2));
    let after = (lab.dropped_at(n1), lab.dropped_at(n2));
    assert!(after.0 > before.0, "n2's reply was dropped at n1");
    assert_eq!(after.1, before.1, "nothing is dropped at n2");
    lab.heal().unwrap();
}

#[test]
fn everything_is_deleted_on_drop_and_on_panic() {
    let names = {
        let lab = lab(2);
        let names = lab.namespaces();
        assert_eq!(names.len(), 4, "switch, two nodes, client: {names:?}");
        assert!(names.iter().all(|n| netns_exists(n)));
        names
    };
    assert!(
        names.iter().all(|n| !netns_exists(n)),
        "left behind: {names:?}"
    );

    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(|| {
        let lab = lab(1);
        *names.lock().unwrap() = lab.namespaces();
        panic!("a test fails halfway");
    });
    assert!(r.is_err());
    let names = names.into_inner().unwrap();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| !netns_exists(n)),
        "left behind after panic: {names:?}"
    );
}

/// Starts ballastd on every node host as one cluster.
fn start_cluster(lab: &Lab, dir: &Path) -> Vec<LabProcess> {
    (1..=lab.nodes().len())
        .map(|id| lab.spawn_ballastd(id, dir, &[]).unwrap())
        .collect()
}

/// `ballastctl status -o json` against one member, from the client host.
fn status_of(lab: &Lab, member: &Host) -> Option<Value> {
    let ctl = ballast_bin("ballastctl");
    let out = lab
        .exec(
            lab.client(),
            ctl.to_str().unwrap(),
            &[
                "--endpoints",
                &format!("{}:7400", member.addr),
                "--timeout",
                "1",
                "status",
                "-o",
                "json",
            ],
        )
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The leader as seen by `member` itself (0: none).
fn leader_seen_by(lab: &Lab, member: &Host) -> u64 {
    status_of(lab, member)
        .and_then(|v| v["leader_id"].as_u64())
        .unwrap_or(0)
}

#[test]
fn real_members_on_separate_hosts_survive_isolation_pause_and_kill() {
    for bin in ["ballastd", "ballastctl"] {
        assert!(
            ballast_bin(bin).exists(),
            "{} missing: build the workspace binaries first (cargo build --workspace --bins)",
            ballast_bin(bin).display()
        );
    }
    let lab = lab(3);
    let dir = tempfile_dir(&lab);
    let mut procs = start_cluster(&lab, &dir);
    let agreed = |lab: &Lab, hosts: &[&Host]| -> Option<u64> {
        let seen: Vec<u64> = hosts.iter().map(|h| leader_seen_by(lab, h)).collect();
        (seen[0] != 0 && seen.iter().all(|l| *l == seen[0])).then_some(seen[0])
    };
    let all: Vec<&Host> = lab.nodes().iter().collect();
    let leader = lab
        .wait_for(Duration::from_secs(20), || agreed(&lab, &all))
        .expect("a leader agreed by all three hosts");

    // Isolate the leader: the other two elect one of themselves.
    let old = lab.node(leader as usize);
    lab.isolate(old).unwrap();
    let rest: Vec<&Host> = all.iter().copied().filter(|h| h.name != old.name).collect();
    let new = lab
        .wait_for(Duration::from_secs(20), || {
            agreed(&lab, &rest).filter(|l| *l != leader)
        })
        .expect("the majority elects a new leader");
    lab.heal().unwrap();
    lab.wait_for(Duration::from_secs(20), || agreed(&lab, &all))
        .expect("the old leader rejoins after healing");

    // Pause the leader (SIGSTOP): the others elect a new one; resume: it follows.
    let paused = new as usize;
    procs[paused - 1].pause();
    let rest: Vec<&Host> = all
        .iter()
        .copied()
        .filter(|h| h.name != lab.node(paused).name)
        .collect();
    lab.wait_for(Duration::from_secs(20), || {
        agreed(&lab, &rest).filter(|l| *l != new)
    })
    .expect("a new leader while the old one is stopped");
    procs[paused - 1].resume();
    lab.wait_for(Duration::from_secs(20), || agreed(&lab, &all))
        .expect("the resumed member follows");

    // Kill one member: the two others still serve writes from the client host.
    procs[0].kill();
    assert!(!procs[0].is_running());
    let ctl = ballast_bin("ballastctl");
    let endpoints: Vec<String> = lab
        .nodes()
        .iter()
        .map(|h| format!("{}:7400", h.addr))
        .collect();
    let out = lab
        .exec(
            lab.client(),
            ctl.to_str().unwrap(),
            &[
                "--endpoints",
                &endpoints.join(","),
                "kv",
                "put",
                "lab",
                "ok",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(lab: &Lab) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{}-data", lab.id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
