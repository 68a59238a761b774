//! Agents own the VIP on real lab hosts (three `ballastd --agent`, a client host): it answers
//! from its owner, and moves — without two hosts ever answering — when the owner is killed,
//! paused, isolated, drained or fails its health check; a stale address is removed at start.

use std::time::{Duration, Instant};

use jepsen::viplab::{observer, VipLab, VipLabOptions, VIP, VIP_DRIFT, VIP_LEASE, VIP_MARGIN};
use jepsen::{mac_string, ArpObserver};

#[test]
fn answers_from_its_owner_and_moves_when_the_owner_is_killed() {
    killed_owner(false);
}

/// An IPv6 VIP: added without duplicate address detection, it answers neighbour
/// solicitations and TCP from its owner only; when the owner is killed it moves, the new
/// owner's unsolicited neighbour advertisements turn the client's next connection to it, and
/// no two fences ever allowed it at once (the exact check, with every advertisement seen
/// inside its sender's lease).
#[test]
fn an_ipv6_vip_answers_from_its_owner_and_moves_when_the_owner_is_killed() {
    killed_owner(true);
}

/// The VIP (IPv6 if `ipv6`) answers from its owner, by ARP/ND and TCP, and moves when the
/// owner is SIGKILLed: the client's next connection reaches the new owner, never two at once.
fn killed_owner(ipv6: bool) {
    let (mut v, owner, epoch) = VipLab::start_opts(VipLabOptions {
        ipv6,
        ..Default::default()
    });
    let obs = observer(&v);
    let last = obs
        .probes()
        .into_iter()
        .rev()
        .find(|p| !p.macs.is_empty())
        .unwrap();
    assert_eq!(
        mac_string(&last.macs[0]),
        v.mac(owner),
        "ARP (IPv6: neighbour solicitations) answered by the owner"
    );
    if ipv6 {
        let addr = v
            .lab
            .exec(
                v.host(owner),
                "ip",
                &["-6", "-o", "addr", "show", "dev", "eth0"],
            )
            .unwrap();
        let addr = String::from_utf8_lossy(&addr.stdout).into_owned();
        let line = addr
            .lines()
            .find(|l| l.contains(&format!("inet6 {}/64", v.vip)))
            .unwrap_or_else(|| panic!("the VIP on the owner's eth0: {addr}"));
        assert!(!line.contains("tentative"), "no DAD delay: {line}");
    }
    // TCP too: a client on the client host reaches the owner's listener through the VIP.
    v.lab.serve_names(9000).unwrap();
    assert_eq!(
        v.lab.tcp_read(v.lab.client(), v.vip, 9000).unwrap(),
        format!("n{owner}")
    );
    let t = Instant::now();
    v.procs[owner as usize - 1].take().unwrap().kill();
    let (new_owner, new_epoch) = v.wait_moved(owner, &obs);
    assert!(new_epoch > epoch);
    // The client's next connection reaches the new owner (the dead one's neighbour entry is
    // replaced by the gratuitous ARP, or neighbour advertisement, of the new owner).
    let reached = v
        .lab
        .wait_for(Duration::from_secs(5), || {
            v.lab.tcp_read(v.lab.client(), v.vip, 9000).ok()
        })
        .expect("TCP through the VIP after the move");
    assert_eq!(reached, format!("n{new_owner}"));
    let outage = v.check_run(obs, t);
    // The dead owner's fence expired: its kernel no longer allows the VIP.
    let table = if ipv6 { "ip6" } else { "arp" };
    let set = v
        .lab
        .exec(
            v.host(owner),
            "nft",
            &["list", "set", table, "ballast_fence", "allowed"],
        )
        .unwrap();
    assert!(!String::from_utf8_lossy(&set.stdout).contains(&v.vip.to_string()));
    eprintln!(
        "SIGKILL of node {owner} ({}): node {new_owner} answers; client outage {outage:?}",
        v.vip
    );
}

#[test]
fn a_paused_owner_stops_answering_by_its_deadline_and_stays_silent_after_resuming() {
    let (v, owner, _) = VipLab::start();
    let obs = observer(&v);
    let t = Instant::now();
    v.procs[owner as usize - 1].as_ref().unwrap().pause();
    let (new_owner, _) = v.wait_moved(owner, &obs);
    // Lease - drift from the last renewal, sent before the pause.
    let old_mac = v.mac(owner);
    let probes = obs.probes();
    let late: Vec<Duration> = probes
        .iter()
        .filter(|p| {
            p.at > t + (VIP_LEASE - VIP_DRIFT) && p.macs.iter().any(|m| mac_string(m) == old_mac)
        })
        .map(|p| p.at - t)
        .collect();
    assert!(
        late.is_empty(),
        "the paused owner answered after its deadline: {late:?}"
    );
    v.procs[owner as usize - 1].as_ref().unwrap().resume();
    // Once resumed it reconciles: it is no longer the owner, so it removes the address.
    wait_address_gone(&v, owner, Duration::from_secs(10))
        .expect("the resumed old owner removes the address");
    let outage = v.check_run(obs, t);
    eprintln!("SIGSTOP of node {owner}: node {new_owner} answers; client outage {outage:?}");
}

#[test]
fn isolating_the_owner_never_shows_two_hosts_answering() {
    let (v, owner, _) = VipLab::start();
    let obs = observer(&v);
    let t = Instant::now();
    v.lab.isolate(v.host(owner)).unwrap(); // the client still reaches every host
    let (new_owner, _) = v.wait_moved(owner, &obs);
    // Hold the partition for 200 more probes (about 2 s), still watching.
    let seen = obs.probes().len();
    v.lab
        .wait_for(Duration::from_secs(30), || {
            (obs.probes().len() >= seen + 200).then_some(())
        })
        .expect("the observer keeps probing");
    v.lab.heal().unwrap();
    let outage = v.check_run(obs, t);
    eprintln!("isolation of node {owner}: node {new_owner} answers; client outage {outage:?}");
}

/// Announcements stay inside the lease. An owner paused in the middle of its gratuitous ARP
/// burst and resumed once another node took the VIP sends no more of them; an owner that
/// releases the VIP in the middle of one stops it. The exact check flags any ARP frame for
/// the VIP sent outside its sender's lease.
/// Waits up to `within` until node `node` no longer has the VIP's address on its interface.
fn wait_address_gone(v: &VipLab, node: u64, within: Duration) -> Option<()> {
    v.lab.wait_for(within, || {
        let out = v
            .lab
            .exec(v.host(node), "ip", &["-4", "addr", "show", "dev", "eth0"])
            .ok()?;
        (!String::from_utf8_lossy(&out.stdout).contains(VIP)).then_some(())
    })
}

#[test]
fn announcements_stop_when_the_lease_ends_or_the_vip_is_released() {
    // Bursts of 3 s, so that each fault lands in the middle of one.
    let (v, owner, _) = VipLab::start_opts(VipLabOptions {
        extra: Some(Box::new(|_, _| {
            ["--garp-count", "60", "--garp-interval-ms", "50"]
                .map(String::from)
                .to_vec()
        })),
        ..Default::default()
    });
    let obs = observer(&v);
    let t = Instant::now();
    let first = v.procs[owner as usize - 1].as_ref().unwrap();
    first.pause();
    let (second, _) = v.wait_moved(owner, &obs);
    first.resume();
    let (ok, _, err) = v.ctl(&["node", "drain", &second.to_string()]);
    assert!(ok, "{err}");
    let (third, _) = v.wait_moved(second, &obs);
    // An observation window, not a wait for a state: the old owners' bursts would have
    // gone on this long.
    std::thread::sleep(Duration::from_secs(3));
    let second_mac = v.mac(second);
    assert!(
        obs.frames()
            .iter()
            .any(|f| f.gratuitous && mac_string(&f.mac) == second_mac),
        "the observer saw no announcement of node {second}: it could not tell"
    );
    v.check_run(obs, t);
    eprintln!("announcements of {owner} (paused) and {second} (drained) stopped; {third} holds");
}

#[test]
fn drain_and_a_failing_health_check_are_planned_moves() {
    let (v, owner, _) = VipLab::start();
    let obs = observer(&v);
    let t = Instant::now();
    let (ok, _, err) = v.ctl(&["node", "drain", &owner.to_string()]);
    assert!(ok, "{err}");
    let (second, _) = v.wait_moved(owner, &obs);
    let drain_outage = jepsen::viplab::check_history(&obs.probes(), t);
    // A planned move takes the address away too, not only the fence's allowance: removed
    // right after the release is confirmed (the fence shut before), so gone about when the
    // new owner answers. Within
    // 500 ms, well before the address's own lifetime (a backstop: a second or two after the
    // last grant) would end it had the removal done nothing.
    wait_address_gone(&v, owner, Duration::from_millis(500))
        .expect("the drained node removes the address at once");

    // The new owner's health check starts failing: the VIP moves again.
    let t = Instant::now();
    std::fs::remove_file(v.up_file(second)).unwrap();
    let (third, _) = v.wait_moved(second, &obs);
    assert_ne!(third, owner, "the drained node is not eligible");
    let health_outage = v.check_run(obs, t);
    eprintln!("drain of {owner}: outage {drain_outage:?}; failed check on {second}: outage {health_outage:?}");
}

/// Item 3 of issue 13, with the holder stopped (SIGSTOP) each time, so that its kernel keeps
/// answering for the old address until its lease runs out. A VIP whose address changes: the
/// old address stops answering before the new one answers anywhere, at a higher epoch. A VIP
/// deleted while a new VIP takes its address on another node: the new one answers only once
/// the old holder's lease is over. Checked on the probes, and exactly on the fences' journals.
#[test]
fn a_changed_or_deleted_vip_never_leaves_its_old_address_answering_beside_the_new() {
    let (v, first, epoch) = VipLab::start();
    let new_addr = "10.213.0.101";
    let obs_old = observer(&v);
    let obs_new = ArpObserver::start(
        v.lab.client(),
        new_addr.parse::<std::net::IpAddr>().unwrap(),
        Duration::from_millis(10),
    );
    let t = Instant::now();
    let apply = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "vip",
            "apply",
            name,
            "--address",
            "10.213.0.101/24",
            "--interface",
            "eth0",
            "--service",
            "web",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = v.ctl(&args);
        assert!(ok, "{err}");
    };
    // Probe times at which `obs` saw `mac` (any MAC: None) answer, since `t`.
    let answered = |obs: &ArpObserver, mac: Option<&str>| {
        obs.probes()
            .into_iter()
            .filter(|p| p.at >= t && !p.macs.is_empty())
            .filter(|p| mac.is_none_or(|m| p.macs.iter().any(|x| mac_string(x) == m)))
            .map(|p| p.at)
            .collect::<Vec<_>>()
    };
    let wait_answer = |obs: &ArpObserver, mac: &str, what: &str| {
        v.lab
            .wait_for(Duration::from_secs(20), || {
                (!answered(obs, Some(mac)).is_empty()).then_some(())
            })
            .unwrap_or_else(|| panic!("{what}; logs:\n{}", v.logs()));
    };

    // The holder must not lead when it is stopped: an election would delay every decision
    // past its lease and hide what this test looks for.
    let not_leading = |id: u64| {
        v.lab
            .wait_for(Duration::from_secs(20), || {
                v.leader().filter(|l| *l != id).map(|_| ())
            })
            .expect("a leader other than the holder");
    };

    // 1. The address changes while its holder is stopped.
    not_leading(first);
    let stopped = v.procs[first as usize - 1].as_ref().unwrap();
    stopped.pause();
    apply("web-vip", &[]);
    let second = v
        .lab
        .wait_for(Duration::from_secs(20), || {
            v.owner().filter(|(o, _)| *o != first).map(|(o, _)| o)
        })
        .unwrap_or_else(|| panic!("the changed VIP never moved on; logs:\n{}", v.logs()));
    wait_answer(&obs_new, &v.mac(second), "the new address never answered");
    stopped.resume();
    let (_, new_epoch) = v.owner().expect("owned");
    assert!(
        new_epoch > epoch,
        "a change of address is a move to a higher epoch"
    );
    let last_old = answered(&obs_old, None).into_iter().max();
    let first_new = answered(&obs_new, None).into_iter().min().unwrap();
    assert!(
        last_old.is_none_or(|l| l < first_new),
        "the old address answered {:?} after the new one first did",
        last_old.map(|l| l - first_new)
    );

    // 2. Deleted while its holder is stopped, and its address made a new VIP that prefers
    // another node.
    let third = (1..=3u64).find(|id| *id != second).unwrap();
    not_leading(second);
    let stopped = v.procs[second as usize - 1].as_ref().unwrap();
    stopped.pause();
    let (ok, _, err) = v.ctl(&["vip", "delete", "web-vip"]);
    assert!(ok, "{err}");
    apply("web-vip-2", &["--priority", &format!("{third}=10")]);
    let third_mac = v.mac(third);
    wait_answer(&obs_new, &third_mac, "the reused address never answered");
    stopped.resume();
    let last_second = answered(&obs_new, Some(&v.mac(second)))
        .into_iter()
        .max()
        .unwrap();
    let first_third = answered(&obs_new, Some(&third_mac))
        .into_iter()
        .min()
        .unwrap();
    assert!(
        last_second < first_third,
        "two nodes answered the reused address"
    );

    // Exactly: the old address's fences all closed before the new address's first opened,
    // and on each address no two nodes were ever allowed at once, nor sent a frame for it
    // outside their lease.
    let base = v.started().1;
    let old_until = v
        .allowed_for(VIP, base)
        .unwrap()
        .iter()
        .map(|a| a.until)
        .max()
        .unwrap();
    let new_from = v
        .allowed_for(new_addr, base)
        .unwrap()
        .iter()
        .map(|a| a.from)
        .min()
        .unwrap();
    assert!(
        old_until <= new_from,
        "the old address was allowed {} ms after the new one",
        (old_until - new_from) / 1_000_000
    );
    v.check_run(obs_old, t);
    v.check_run_for(new_addr, obs_new, t);
}

#[test]
fn a_restarted_agent_removes_a_stale_vip_address() {
    let (mut v, owner, _) = VipLab::start();
    let follower = (1..=3).find(|i| *i != owner).unwrap();
    v.procs[follower as usize - 1].take().unwrap().kill();
    // A stale address, as a crash mid-release could leave.
    let out = v
        .lab
        .exec(
            v.host(follower),
            "ip",
            &["addr", "add", "10.213.0.100/24", "dev", "eth0"],
        )
        .unwrap();
    assert!(out.status.success());
    v.procs[follower as usize - 1] = Some(v.spawn(follower));
    v.lab
        .wait_for(Duration::from_secs(15), || {
            let out = v
                .lab
                .exec(
                    v.host(follower),
                    "ip",
                    &["-4", "addr", "show", "dev", "eth0"],
                )
                .ok()?;
            (!String::from_utf8_lossy(&out.stdout).contains(VIP)).then_some(())
        })
        .unwrap_or_else(|| panic!("the stale address stayed; logs:\n{}", v.logs()));
    assert_eq!(
        v.owner().map(|o| o.0),
        Some(owner),
        "the owner kept the VIP"
    );
}

/// A killed owner leaves its address and its fence behind; when it comes back, its agent must
/// remove the address before it replaces the fence (a fresh fence manages no address), and
/// must know the cluster's VIPs although its own member restarts with an old state. The
/// failover bench once saw a restarted owner answer beside the new one for 700 ms.
#[test]
fn a_restarted_owner_never_answers_beside_the_new_one() {
    let (mut v, _, _) = VipLab::start();
    for _ in 0..3 {
        let (owner, _) = v.wait_settled();
        let obs = observer(&v);
        let t = Instant::now();
        v.procs[owner as usize - 1].take().unwrap().kill();
        v.wait_moved(owner, &obs);
        v.procs[owner as usize - 1] = Some(v.spawn(owner));
        // Watched until the restarted agent took over its host: the stale address gone and
        // the VIP managed by its new fence.
        let host = v.host(owner).clone();
        v.lab
            .wait_for(Duration::from_secs(20), || {
                let addrs = v
                    .lab
                    .exec(&host, "ip", &["-4", "addr", "show", "dev", "eth0"]);
                let managed = v.lab.exec(
                    &host,
                    "nft",
                    &["list", "set", "arp", "ballast_fence", "managed"],
                );
                let gone = !String::from_utf8_lossy(&addrs.ok()?.stdout).contains(VIP);
                let fenced = String::from_utf8_lossy(&managed.ok()?.stdout).contains(VIP);
                (gone && fenced).then_some(())
            })
            .unwrap_or_else(|| panic!("the restarted agent kept the address; logs:\n{}", v.logs()));
        v.check_run(obs, t);
    }
}

#[test]
fn an_owning_leader_hands_over_and_a_leader_crash_does_not_move_the_vip() {
    let (mut v, _, _) = VipLab::start();
    // Put the VIP on the leader on purpose (a planned move).
    let leader = v
        .lab
        .wait_for(Duration::from_secs(10), || v.leader())
        .unwrap();
    let (ok, _, err) = v.ctl(&["vip", "move", "web-vip", "--to", &leader.to_string()]);
    assert!(ok, "{err}");
    let (_, epoch) = v
        .lab
        .wait_for(Duration::from_secs(15), || {
            v.owner().filter(|(o, _)| *o == leader)
        })
        .expect("the VIP moved to the leader");
    let obs = observer(&v);
    let t = Instant::now();
    // The owning leader hands the leadership to a follower; the VIP stays.
    let new_leader = v
        .lab
        .wait_for(Duration::from_secs(20), || {
            v.leader().filter(|l| *l != leader)
        })
        .unwrap_or_else(|| panic!("no hand-over; logs:\n{}", v.logs()));
    assert_eq!(v.owner(), Some((leader, epoch)), "no move for a hand-over");
    let handover_outage = jepsen::viplab::check_history(&obs.probes(), t);

    // Kill the (non-owning) leader: the owner renews with the next one and keeps the VIP.
    let t = Instant::now();
    v.procs[new_leader as usize - 1].take().unwrap().kill();
    v.lab
        .wait_for(Duration::from_secs(20), || {
            v.leader().filter(|l| *l != new_leader)?;
            v.node_alive(new_leader).filter(|a| !a)
        })
        .expect("a new leader marks the dead one down");
    assert_eq!(
        v.owner(),
        Some((leader, epoch)),
        "no move for a leader crash"
    );
    let crash_outage = v.check_run(obs, t);
    eprintln!(
        "hand-over from {leader} to {new_leader}: outage {handover_outage:?}; \
         crash of leader {new_leader}: outage {crash_outage:?}"
    );
    // The owner kept renewing through both leader changes: its lease never ran out.
    let log = v.log(leader);
    assert!(
        !log.contains("lease expired"),
        "the owner's lease ran out during a leader change:\n{log}"
    );
}

#[test]
fn status_shows_leases_holders_and_where_agents_differ() {
    let (v, owner, epoch) = VipLab::start();
    let status = || -> Option<serde_json::Value> {
        let (ok, out, _) = v.ctl(&["status", "-o", "json"]);
        ok.then(|| serde_json::from_str(&out).ok())?
    };
    // Agreement: the owner holds it, its lease has time left, nothing differs.
    let s = v
        .lab
        .wait_for(Duration::from_secs(10), || {
            status().filter(|s| {
                s["differences"].as_array().is_some_and(|d| d.is_empty())
                    && s["vips"][0]["held_by"] == serde_json::json!([owner])
            })
        })
        .expect("status agrees with the decision");
    let vip = &s["vips"][0];
    assert_eq!(vip["owner"], owner);
    assert_eq!(vip["epoch"], epoch);
    let left = vip["lease_remaining_ms"].as_u64().unwrap();
    // At most the lease plus the leader's margin.
    let most = (VIP_LEASE + VIP_MARGIN).as_millis() as u64;
    assert!(left > 0 && left <= most, "lease left {left} ms");

    // A VIP on an interface no server has: every agent reports it cannot place it (if the
    // controller gave it to one before the reports came in, that owner keeps it, since no
    // node can take it, and does not hold it).
    let (ok, _, err) = v.ctl(&[
        "vip",
        "apply",
        "ghost-vip",
        "--address",
        "10.213.0.101/24",
        "--interface",
        "nosuch0",
        "--service",
        "web",
    ]);
    assert!(ok, "{err}");
    let s = v
        .lab
        .wait_for(Duration::from_secs(10), || {
            status().filter(|s| {
                s["differences"].as_array().is_some_and(|d| {
                    (1..=3).all(|id| {
                        let line = format!(
                            "node {id}: VIP ghost-vip cannot be placed: no interface nosuch0 here"
                        );
                        d.iter().any(|l| l.as_str() == Some(line.as_str()))
                    })
                })
            })
        })
        .expect("status shows that no server can place the ghost VIP");
    let (ok, text, _) = v.ctl(&["status"]);
    assert!(ok);
    assert!(
        text.contains("agents (or their HAProxy) differ from the decisions"),
        "{text}"
    );
    eprintln!("{}\n{text}", s["differences"]);
}

/// With API tokens: the members hold the whole file, the agent-only server a file with only
/// its own `node 4` line (no admin credential), which is all it needs.
#[test]
fn a_standalone_agent_registers_holds_the_vip_and_loses_it_when_killed() {
    let (mut v, _, _) = VipLab::start_opts(VipLabOptions {
        standalone: 1,
        tokens: true,
        ..Default::default()
    });
    let (ok, out, err) = v.ctl(&["node", "ls", "-o", "json"]);
    assert!(ok, "{err}");
    let nodes: serde_json::Value = serde_json::from_str(&out).unwrap();
    let four = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 4)
        .expect("node 4 registered");
    assert_eq!(four["role"], "agent", "{four}");

    // The id of a member is refused, with the reason (asked with a member token, which may
    // act for any node); node 4's file has no token for another node. Tried from the client
    // host, where no agent runs (on host 4 the running agent's fence lock stops them first).
    let endpoints = v.lab.member_endpoints(3).join(",");
    let agent = |node: &str, tokens: &str| {
        let file = v.dir.join(tokens).display().to_string();
        let args = [
            "agent",
            "--node-id",
            node,
            "--endpoints",
            &endpoints,
            "--token-file",
            &file,
        ];
        let out = v
            .lab
            .exec(
                v.lab.client(),
                jepsen::ballast_bin("ballastd").to_str().unwrap(),
                &args,
            )
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let (code, err) = agent("2", "tokens");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("Raft member"), "{err}");
    let (code, err) = agent("5", "tokens-n4");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no `node 5 <token>` line"), "{err}");

    // The VIP moves to the agent-only server and answers from it.
    let obs = observer(&v);
    let (ok, _, err) = v.ctl(&["vip", "move", "web-vip", "--to", "4"]);
    assert!(ok, "{err}");
    let mac4 = v.mac(4);
    v.lab
        .wait_for(Duration::from_secs(15), || {
            let last = obs.probes().last().cloned()?;
            (last.macs.len() == 1 && mac_string(&last.macs[0]) == mac4).then_some(())
        })
        .unwrap_or_else(|| panic!("node 4 never answered; logs:\n{}", v.logs()));
    let held = v.owner().expect("an owner");
    assert_eq!(held.0, 4);

    // A second agent on the same server (the same node id, its own credentials) stops at
    // once, before it registers or touches the fence (review of issue 13: it used to replace
    // the first one's nft tables, leaving that one's VIP unfenced).
    let log = v.dir.join("second-agent.log");
    let file = v.dir.join("tokens-n4").display().to_string();
    let args: Vec<String> = [
        "agent",
        "--node-id",
        "4",
        "--endpoints",
        &endpoints,
        "--token-file",
        &file,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut second = v
        .lab
        .spawn(v.host(4), &jepsen::ballast_bin("ballastd"), &args, &log)
        .unwrap();
    let stopped = v.lab.wait_for(Duration::from_secs(10), || {
        (!second.is_running()).then_some(())
    });
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    if stopped.is_none() {
        second.kill();
    }
    assert!(stopped.is_some(), "the second agent kept running:\n{said}");
    assert!(said.contains("another agent"), "{said}");
    assert_eq!(v.owner(), Some(held), "the VIP stayed with the first agent");
    let last = obs.probes().last().cloned().unwrap();
    assert_eq!(last.macs.len(), 1);
    assert_eq!(mac_string(&last.macs[0]), mac4);

    // Killed, it stops answering by its deadline and a member takes over.
    let t = Instant::now();
    v.procs[3].take().unwrap().kill();
    let (new_owner, _) = v.wait_moved(4, &obs);
    assert!(new_owner <= 3);
    let outage = v.check_run(obs, t);
    v.lab
        .wait_for(Duration::from_secs(15), || v.node_alive(4).filter(|a| !a))
        .expect("node 4 marked down");
    // Gone for good: out of the service, then forgotten.
    let (ok, _, err) = v.ctl(&["node", "forget", "4"]);
    assert!(!ok && err.contains("backs service"), "{err}");
    eprintln!("standalone agent killed: node {new_owner} answers; outage {outage:?}");
}

/// Issue 16, per-server interfaces. VIP "seg-vip" names segment `lan2`, which no host calls
/// so: node 1 has no mapping (no `lan2` there), node 2 maps the segment to a second NIC of
/// its own, `ens3` (`--segment-interface lan2=ens3`), node 3 maps the segment to `eth0` but
/// the VIP itself to `bond0`, which it lacks (`--vip-interface` wins). Status shows where it
/// cannot be placed and why, before it is ever placed; it goes to node 2 only, on `ens3`;
/// once node 2 is dead it stays unowned rather than go to a node that cannot hold it.
#[test]
fn a_vip_goes_only_where_a_server_has_its_interface_and_status_says_where_not() {
    let (mut v, _, _) = VipLab::start_opts(VipLabOptions {
        extra: Some(Box::new(|id, dir| {
            let mut a = vec![
                "--exec-check".to_string(),
                format!("seg=test -e {}", dir.join(format!("seg-n{id}")).display()),
            ];
            match id {
                2 => a.extend(["--segment-interface".into(), "lan2=ens3".into()]),
                3 => a.extend([
                    "--segment-interface".into(),
                    "lan2=eth0".into(),
                    "--vip-interface".into(),
                    "seg-vip=bond0".into(),
                ]),
                _ => {}
            }
            a
        })),
        ..Default::default()
    });
    const SEG_VIP: &str = "10.213.0.101";
    // Node 2's second NIC on the same bridge. It answers ARP only for its own addresses
    // (arp_ignore=1), as a server with two NICs on one segment is set up.
    let n2 = v.host(2).netns.clone();
    let switch = format!("{}-sw", v.lab.id());
    for args in [
        vec![
            "-n", &switch, "link", "add", "q2", "type", "veth", "peer", "name", "ens3", "netns",
            &n2,
        ],
        vec!["-n", &switch, "link", "set", "q2", "master", "br0", "up"],
        vec!["-n", &n2, "link", "set", "ens3", "up"],
        vec![
            "netns",
            "exec",
            &n2,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.arp_ignore=1",
        ],
    ] {
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
    // A service whose backends are not healthy yet, and its VIP: placed nowhere for now.
    let ctl = |args: &[&str]| {
        let (ok, out, err) = v.ctl(args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    ctl(&[
        "service",
        "apply",
        "seg",
        "--check",
        "exec:seg",
        "--backends",
        "1,2,3",
        "--interval-ms",
        "100",
        "--timeout-ms",
        "100",
    ]);
    ctl(&[
        "vip",
        "apply",
        "seg-vip",
        "--address",
        &format!("{SEG_VIP}/24"),
        "--interface",
        "lan2",
        "--service",
        "seg",
    ]);
    // Status says where it cannot go, and why: node 1 has no lan2, node 3 no bond0.
    let want = [
        "node 1: VIP seg-vip cannot be placed: no interface lan2 here",
        "node 3: VIP seg-vip cannot be placed: no interface bond0 here (segment lan2)",
    ];
    let differences = || -> Option<Vec<String>> {
        let (ok, out, _) = v.ctl(&["status", "-o", "json"]);
        let s: serde_json::Value = serde_json::from_str(&out).ok()?;
        let d = s["differences"].as_array()?;
        ok.then(|| {
            d.iter()
                .filter_map(|l| l.as_str().map(String::from))
                .collect()
        })
    };
    let seen = v
        .lab
        .wait_for(Duration::from_secs(15), || {
            differences().filter(|d| want.iter().all(|w| d.iter().any(|l| l == w)))
        })
        .unwrap_or_else(|| {
            panic!(
                "status never said where seg-vip cannot go; logs:\n{}",
                v.logs()
            )
        });
    assert!(
        !seen.iter().any(|l| l.starts_with("node 2:")),
        "node 2 has ens3: {seen:?}"
    );
    assert_eq!(
        vip_owner(&v, "seg-vip"),
        Some((0, 0)),
        "no backend is healthy yet"
    );
    let (ok, text, _) = v.ctl(&["status"]);
    assert!(ok && text.contains(want[1]), "{text}");

    // Every backend turns healthy: only node 2 can take it, on ens3.
    let obs = ArpObserver::start(
        v.lab.client(),
        SEG_VIP.parse::<std::net::IpAddr>().unwrap(),
        Duration::from_millis(10),
    );
    let t = Instant::now();
    for id in 1..=3 {
        std::fs::write(v.dir.join(format!("seg-n{id}")), "").unwrap();
    }
    let ens3_mac = {
        let out = v
            .lab
            .exec(v.host(2), "cat", &["/sys/class/net/ens3/address"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
    };
    v.lab
        .wait_for(Duration::from_secs(15), || {
            let last = obs.probes().last().cloned()?;
            (last.macs.len() == 1 && mac_string(&last.macs[0]) == ens3_mac).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "seg-vip never answered from node 2's ens3; logs:\n{}",
                v.logs()
            )
        });
    assert_eq!(
        vip_owner(&v, "seg-vip"),
        Some((2, 1)),
        "node 2, at the first epoch: never elsewhere"
    );
    let on = |dev: &str| {
        let out = v
            .lab
            .exec(v.host(2), "ip", &["-4", "addr", "show", "dev", dev])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(SEG_VIP)
    };
    assert!(on("ens3") && !on("eth0"), "the address is on ens3 only");

    // Node 2 dies: nobody else can hold seg-vip, so it ends unowned. (Until the leader
    // marks node 2 down, 2 s after its last renewal, the dead node still counts as
    // eligible and may be given it again, at a higher epoch: it never claims it.)
    v.procs[1].take().unwrap().kill();
    v.lab
        .wait_for(Duration::from_secs(20), || {
            v.node_alive(2)
                .filter(|a| !a)
                .and_then(|_| vip_owner(&v, "seg-vip"))
                .filter(|(o, _)| *o == 0)
        })
        .unwrap_or_else(|| panic!("seg-vip stayed owned; logs:\n{}", v.logs()));
    // An observation window, not a wait for a state: ten controller ticks in which nodes
    // 1 and 3, alive and healthy, would be given it if their reports did not count.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(vip_owner(&v, "seg-vip").map(|o| o.0), Some(0));
    let logs = v.logs();
    for id in [1, 3] {
        let given = format!("Assign {{ vip: \"seg-vip\", node: {id},");
        assert!(
            !logs.contains(&given),
            "seg-vip was given to node {id}:\n{logs}"
        );
    }
    // Only node 2's fence ever allowed the address, and every frame for it came from node 2
    // within its lease.
    let base = v.started().1;
    let allowed = v.allowed_for(SEG_VIP, base).unwrap();
    assert!(allowed.iter().all(|a| a.node == 2), "{allowed:?}");
    let outage = v.check_run_for(SEG_VIP, obs, t);
    eprintln!("seg-vip on node 2's ens3 only; status:\n{text}\nanswered after {outage:?}");
    for id in [1, 3] {
        assert!(
            v.log(id).contains("this server cannot place the VIP"),
            "node {id} said nothing:\n{}",
            v.log(id)
        );
    }
}

/// (owner, epoch) of VIP `name` as the cluster decided (owner 0: none).
fn vip_owner(v: &VipLab, name: &str) -> Option<(u64, u64)> {
    let (ok, out, _) = v.ctl(&["vip", "ls", "-o", "json"]);
    let vips: serde_json::Value = serde_json::from_str(&out).ok()?;
    let s = vips.as_array()?.iter().find(|x| x["name"] == name)?;
    ok.then(|| {
        (
            s["owner"].as_u64().unwrap_or(0),
            s["epoch"].as_u64().unwrap_or(0),
        )
    })
}
