//! Agents own the VIP on real lab hosts: it answers ping and ARP from the client host, and
//! when the owner's ballastd is SIGKILLed another node takes it while the dead one's kernel
//! fence has stopped it answering.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jepsen::{ballast_bin, Host, Lab, LabProcess};
use serde_json::Value;

const VIP: &str = "10.213.0.100";

fn start(lab: &Lab, dir: &std::path::Path) -> Vec<LabProcess> {
    let members: Vec<String> = lab
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{}={}:7400", i + 1, h.addr))
        .collect();
    lab.nodes()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let id = i + 1;
            let args: Vec<String> = vec![
                "--node-id".into(),
                id.to_string(),
                "--data-dir".into(),
                dir.join(format!("n{id}")).display().to_string(),
                "--listen".into(),
                format!("{}:7400", h.addr),
                "--http-listen".into(),
                format!("{}:7480", h.addr),
                "--initial-cluster".into(),
                members.join(","),
                "--heartbeat-ms".into(),
                "50".into(),
                "--election-timeout-min-ms".into(),
                "300".into(),
                "--election-timeout-max-ms".into(),
                "600".into(),
                "--agent".into(),
                "--check-host".into(),
                h.addr.to_string(),
            ];
            lab.spawn(
                h,
                &ballast_bin("ballastd"),
                &args,
                &dir.join(format!("n{id}.log")),
            )
            .unwrap()
        })
        .collect()
}

fn ctl(lab: &Lab, args: &[&str]) -> (bool, String, String) {
    let endpoints: Vec<String> = lab
        .nodes()
        .iter()
        .map(|h| format!("{}:7400", h.addr))
        .collect();
    let ep = endpoints.join(",");
    let mut a = vec!["--endpoints", ep.as_str(), "--timeout", "3"];
    a.extend_from_slice(args);
    let out = lab
        .exec(
            lab.client(),
            ballast_bin("ballastctl").to_str().unwrap(),
            &a,
        )
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mac_of(lab: &Lab, h: &Host) -> String {
    let out = lab
        .exec(h, "cat", &["/sys/class/net/eth0/address"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
}

/// The MAC that answers one ARP request for the VIP from the client host, if any.
fn arp_owner(lab: &Lab) -> Option<String> {
    let out = lab
        .exec(
            lab.client(),
            "arping",
            &["-c", "1", "-w", "1", "-I", "eth0", VIP],
        )
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("reply from"))?;
    let mac = line.split('[').nth(1)?.split(']').next()?;
    Some(mac.to_lowercase())
}

fn vip_owner(lab: &Lab) -> Option<(u64, u64)> {
    let (ok, out, _) = ctl(lab, &["vip", "ls", "-o", "json"]);
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    let vip = v.as_array()?.first()?;
    let owner = vip["owner"].as_u64()?;
    (owner != 0).then(|| (owner, vip["epoch"].as_u64().unwrap_or(0)))
}

#[test]
fn the_vip_answers_from_its_owner_and_moves_when_the_owner_is_killed() {
    for bin in ["ballastd", "ballastctl"] {
        assert!(
            ballast_bin(bin).exists(),
            "{} missing: cargo build --workspace --bins",
            ballast_bin(bin).display()
        );
    }
    let lab = Lab::new(3).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    let dir: PathBuf = std::env::temp_dir().join(format!("{}-data", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut procs = start(&lab, &dir);
    lab.wait_for(Duration::from_secs(30), || {
        let (ok, out, _) = ctl(&lab, &["status", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        (ok && v["leader_id"].as_u64()? > 0).then_some(())
    })
    .expect("cluster formed");
    let (ok, _, err) = ctl(
        &lab,
        &[
            "service",
            "apply",
            "web",
            "--check",
            "http:7480/healthz",
            "--backends",
            "1,2,3",
            "--interval-ms",
            "200",
            "--timeout-ms",
            "200",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(
        &lab,
        &[
            "vip",
            "apply",
            "web-vip",
            "--address",
            "10.213.0.100/24",
            "--interface",
            "eth0",
            "--service",
            "web",
        ],
    );
    assert!(ok, "{err}");

    let vip: Ipv4Addr = VIP.parse().unwrap();
    let (owner, epoch) = lab
        .wait_for(Duration::from_secs(30), || {
            vip_owner(&lab).filter(|_| lab.can_ping_addr(lab.client(), vip))
        })
        .unwrap_or_else(|| {
            let logs: Vec<String> = (1..=3)
                .map(|i| std::fs::read_to_string(dir.join(format!("n{i}.log"))).unwrap_or_default())
                .collect();
            panic!("the VIP never answered; logs:\n{}", logs.join("\n----\n"))
        });
    let owner_host = lab.node(owner as usize).clone();
    assert_eq!(
        arp_owner(&lab),
        Some(mac_of(&lab, &owner_host)),
        "ARP answered by the owner"
    );

    // SIGKILL of the owner's ballastd: another node takes the VIP at a higher epoch.
    let killed_at = Instant::now();
    procs[owner as usize - 1].kill();
    let (new_owner, new_epoch) = lab
        .wait_for(Duration::from_secs(30), || {
            vip_owner(&lab)
                .filter(|(o, _)| *o != owner)
                .filter(|_| arp_owner(&lab).is_some_and(|m| m != mac_of(&lab, &owner_host)))
        })
        .expect("the VIP moves to another node");
    let failover = killed_at.elapsed();
    assert!(new_epoch > epoch);
    assert!(lab.can_ping_addr(lab.client(), vip));
    // The dead owner's fence has expired: its kernel no longer allows the VIP.
    let set = lab
        .exec(
            &owner_host,
            "nft",
            &["list", "set", "arp", "ballast_fence", "allowed"],
        )
        .unwrap();
    let set = String::from_utf8_lossy(&set.stdout);
    assert!(
        !set.contains(VIP),
        "the killed owner still allows the VIP: {set}"
    );
    eprintln!("failover from node {owner} to {new_owner} observed after {failover:?}");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
