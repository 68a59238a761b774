//! HAProxy driven by the cluster: a real haproxy (Debian) on lab host n1 with a runtime
//! socket, and n1's agent told to drive it. Its servers n1..n3 follow the cluster: a failing
//! health check puts one in maint, a drain puts one in drain, a reload (`-sf`) and a restart
//! of HAProxy (every server ready again) are corrected within seconds, `ballastctl status`
//! says when HAProxy cannot be reached or lacks a server, and recovery makes them ready.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_node::agent::haproxy::{parse_servers_state, Want};
use jepsen::viplab::{VipLab, VipLabOptions};
use jepsen::LabProcess;

const HAPROXY: &str = "/usr/sbin/haproxy";

fn states(socket: &Path) -> Option<BTreeMap<String, Want>> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.write_all(b"show servers state be_web\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(parse_servers_state(&out))
}

fn spawn_haproxy(v: &VipLab, cfg: &Path) -> LabProcess {
    spawn_haproxy_with(v, cfg, &[])
}

/// A reload as operators do it: a new process takes over the sockets and tells the old one
/// (`-sf PID`) to finish. Every server of the new process starts ready.
fn reload_haproxy(v: &VipLab, cfg: &Path, old: &LabProcess) -> LabProcess {
    spawn_haproxy_with(v, cfg, &["-sf".into(), old.pid().to_string()])
}

fn spawn_haproxy_with(v: &VipLab, cfg: &Path, extra: &[String]) -> LabProcess {
    let mut args: Vec<String> = vec!["-f".into(), cfg.display().to_string(), "-db".into()];
    args.extend_from_slice(extra);
    v.lab
        .spawn(
            v.lab.node(1),
            Path::new(HAPROXY),
            &args,
            &v.dir.join("haproxy.log"),
        )
        .expect("haproxy starts")
}

fn wait_states(v: &VipLab, socket: &Path, what: &str, want: &[(&str, Want)]) {
    v.lab
        .wait_for(Duration::from_secs(20), || {
            let s = states(socket)?;
            want.iter().all(|(n, w)| s.get(*n) == Some(w)).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "HAProxy never showed {what}: {:?}\nlogs:\n{}",
                states(socket),
                v.logs()
            )
        });
}

/// Waits until the `differences` of `ballastctl status -o json` satisfy `ok`.
fn wait_differences(v: &VipLab, what: &str, ok: impl Fn(&[String]) -> bool) {
    let mut last = Vec::new();
    let done = v.lab.wait_for(Duration::from_secs(20), || {
        let (good, out, _) = v.ctl(&["status", "-o", "json"]);
        let j: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| good)?;
        last = j["differences"]
            .as_array()?
            .iter()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
        ok(&last).then_some(())
    });
    assert!(
        done.is_some(),
        "status never showed {what}: {last:#?}\nlogs:\n{}",
        v.logs()
    );
}

#[test]
fn haproxy_servers_follow_health_drain_and_survive_a_restart() {
    assert!(
        Path::new(HAPROXY).exists(),
        "HAPROXY MISSING: apt-get install haproxy (CI installs it)"
    );
    let sock_dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = sock_dir.path().join("haproxy.sock");
    let sock_arg = socket.display().to_string();
    let (v, _, _) = VipLab::start_opts(VipLabOptions {
        extra: Some(Box::new(move |id, _dir| {
            if id == 1 {
                vec![
                    "--haproxy-socket".into(),
                    sock_arg.clone(),
                    "--haproxy-backend".into(),
                    "web=be_web".into(),
                ]
            } else {
                Vec::new()
            }
        })),
        ..Default::default()
    });
    let cfg = v.dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  stats socket {} mode 600 level admin\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             backend be_web\n  server n1 10.213.0.1:9000\n  server n2 10.213.0.2:9000\n  server n3 10.213.0.3:9000\n\
             frontend fe\n  bind 10.213.0.1:8081\n  default_backend be_web\n",
            socket.display()
        ),
    )
    .unwrap();
    let mut haproxy = spawn_haproxy(&v, &cfg);
    use Want::*;
    wait_states(
        &v,
        &socket,
        "all ready",
        &[("n1", Ready), ("n2", Ready), ("n3", Ready)],
    );

    // n2's health check fails: maint.
    std::fs::remove_file(v.up_file(2)).unwrap();
    wait_states(
        &v,
        &socket,
        "n2 in maint",
        &[("n1", Ready), ("n2", Maint), ("n3", Ready)],
    );

    // n3 drains: drain.
    let (ok, _, err) = v.ctl(&["node", "drain", "3"]);
    assert!(ok, "{err}");
    wait_states(&v, &socket, "n3 draining", &[("n2", Maint), ("n3", Drain)]);

    // HAProxy reloads (a new process, every server ready); the agent puts the states back.
    let mut reloaded = reload_haproxy(&v, &cfg, &haproxy);
    v.lab
        .wait_for(Duration::from_secs(10), || {
            (!haproxy.is_running()).then_some(())
        })
        .expect("the old HAProxy finishes after the reload");
    wait_states(
        &v,
        &socket,
        "the states again after a reload",
        &[("n1", Ready), ("n2", Maint), ("n3", Drain)],
    );

    // And after a restart from scratch.
    reloaded.kill();
    let _ = std::fs::remove_file(&socket);
    let mut haproxy = spawn_haproxy(&v, &cfg);
    wait_states(
        &v,
        &socket,
        "the states again after a restart",
        &[("n1", Ready), ("n2", Maint), ("n3", Drain)],
    );

    // `ballastctl status` shows where HAProxy disagrees. HAProxy gone: the agent says it
    // cannot drive it.
    haproxy.kill();
    let _ = std::fs::remove_file(&socket);
    wait_differences(&v, "HAProxy unreachable", |d| {
        d.iter()
            .any(|l| l.starts_with("node 1: cannot drive HAProxy"))
    });
    // A configuration without n3: the missing server is named.
    let partial = v.dir.join("haproxy-partial.cfg");
    let full = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&partial, full.replace("  server n3 10.213.0.3:9000\n", "")).unwrap();
    haproxy = spawn_haproxy(&v, &partial);
    wait_differences(&v, "n3 missing", |d| {
        d.iter().any(|l| {
            l == "node 1: HAProxy backend be_web has no server n3 (the cluster wants it drain)"
        }) && !d.iter().any(|l| l.contains("cannot drive"))
    });
    // The full configuration again: nothing about HAProxy left.
    haproxy.kill();
    let _ = std::fs::remove_file(&socket);
    let mut haproxy = spawn_haproxy(&v, &cfg);
    wait_differences(&v, "HAProxy in line", |d| {
        !d.iter().any(|l| l.contains("HAProxy"))
    });

    // Recovery: everything ready.
    std::fs::write(v.up_file(2), "").unwrap();
    let (ok, _, err) = v.ctl(&["node", "resume", "3"]);
    assert!(ok, "{err}");
    wait_states(
        &v,
        &socket,
        "all ready again",
        &[("n1", Ready), ("n2", Ready), ("n3", Ready)],
    );
    haproxy.kill();
}
