//! The nftables VIP fence on a real lab host: the kernel stops answering for a VIP when its
//! allowance expires, with no process left to do anything.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ballast_node::agent::fence::{NftFence, VipFence};
use jepsen::{ArpObserver, Lab};

/// The fence of lab host `h`, driven through `ip netns exec`.
fn fence_on(h: &jepsen::Host) -> NftFence {
    NftFence::new(
        ["ip", "netns", "exec", &h.netns, "nft"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}

#[test]
fn the_kernel_stops_answering_for_a_vip_when_its_allowance_expires() {
    let lab = Lab::new(1).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    let (n1, client) = (lab.node(1), lab.client());
    let vip: IpAddr = "10.213.0.100".parse().unwrap();
    // The test harness adds the address with ip(8); the agent will use netlink.
    let out = lab
        .exec(n1, "ip", &["addr", "add", "10.213.0.100/24", "dev", "eth0"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers_arp = || {
        lab.exec(
            client,
            "arping",
            &["-c", "1", "-w", "1", "-I", "eth0", "10.213.0.100"],
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    };
    assert!(answers_arp(), "without a fence the address answers");

    let fence = fence_on(n1);
    fence.install().unwrap();
    fence.manage(&[vip], &["eth0".to_string()]).unwrap();
    assert!(
        !answers_arp(),
        "a managed address that is not allowed is silent"
    );
    assert!(!lab.can_ping_addr(client, vip));

    // Announcements go out on a packet socket, which the ARP hooks never see: the egress
    // filter must drop them too while the address is not allowed.
    let observer = ArpObserver::start(client, vip, Duration::from_millis(10));
    let announce = || {
        let before = observer.frames().len();
        let _ = lab.exec(
            n1,
            "arping",
            &[
                "-U",
                "-c",
                "3",
                "-w",
                "1",
                "-I",
                "eth0",
                "-s",
                "10.213.0.100",
                "10.213.0.100",
            ],
        );
        // arping has returned: its frames are on the bridge by now, give the observer a beat.
        let seen = lab.wait_for(Duration::from_millis(300), || {
            (observer.frames()[before..].iter().any(|f| f.gratuitous)).then_some(())
        });
        seen.is_some()
    };
    assert!(
        !announce(),
        "a gratuitous ARP left the host outside the lease"
    );

    // Allowed until a deadline 1.5 s away; then nobody renews. The deadline is counted from
    // before the call: however long nft takes, the kernel must not answer past it.
    let deadline = Instant::now() + Duration::from_millis(1500);
    assert!(fence.allow_until(vip, deadline).unwrap());
    assert!(answers_arp(), "allowed: it answers ARP");
    assert!(lab.can_ping_addr(client, vip), "allowed: it answers IP");
    assert!(announce(), "allowed: its announcements go out");
    let mut late_answers = Vec::new();
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let ok = answers_arp();
        if t > deadline && ok {
            late_answers.push(t - deadline);
        }
        if t > deadline + Duration::from_millis(1500) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    assert!(
        late_answers.is_empty(),
        "answered after the deadline: {late_answers:?}"
    );
    assert!(!lab.can_ping_addr(client, vip));
    assert!(!announce(), "announced after the deadline");

    // Revocation is immediate.
    assert!(fence
        .allow_until(vip, Instant::now() + Duration::from_secs(30))
        .unwrap());
    assert!(answers_arp());
    // A deadline too near to meet is refused, and revokes.
    assert!(!fence
        .allow_until(vip, Instant::now() + Duration::from_millis(5))
        .unwrap());
    assert!(!answers_arp());
    assert!(fence
        .allow_until(vip, Instant::now() + Duration::from_secs(30))
        .unwrap());
    assert!(answers_arp());
    fence.revoke(vip).unwrap();
    assert!(!answers_arp());

    // An agent stopped between computing an allowance and handing it to nft: nft's watchdog
    // kills it before it can commit an allowance that would outlive the deadline.
    let stalled = fence_on(n1).stalled(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let call = std::thread::spawn(move || stalled.allow_until(vip, deadline));
    // Sampled all through the call: at no moment may the kernel's allowance reach past the
    // deadline.
    let mut beyond = Vec::new();
    while !call.is_finished() {
        let listed = lab
            .exec(
                n1,
                "nft",
                &["list", "set", "arp", "ballast_fence", "allowed"],
            )
            .unwrap();
        let now = Instant::now();
        let text = String::from_utf8_lossy(&listed.stdout);
        if let Some(expires) = jepsen::checker::vip::allowance_in(&text, "10.213.0.100") {
            if now + expires > deadline + Duration::from_millis(10) {
                beyond.push(now + expires - deadline);
            }
        }
    }
    let allowed = call.join().unwrap().unwrap();
    assert!(
        beyond.is_empty(),
        "a stalled allowance reached past the deadline by {beyond:?} (allow_until said {allowed})"
    );

    // Removing the fence gives the address back: it was the fence that silenced it.
    fence.remove().unwrap();
    assert!(answers_arp());
}

/// A renewal's VIPs are allowed in one transaction: all of them answer, and a deadline too
/// near for it refuses and revokes all of them. A reconcile's drops are revoked in one
/// transaction too: exactly the addresses given stop answering.
#[test]
fn one_transaction_allows_or_revokes_every_vip_of_a_renewal() {
    let lab = Lab::new(1).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    let (n1, client) = (lab.node(1), lab.client());
    let vips: Vec<IpAddr> = ["10.213.0.100", "10.213.0.101", "10.213.0.102"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    for v in &vips {
        let cidr = format!("{v}/24");
        let out = lab
            .exec(n1, "ip", &["addr", "add", &cidr, "dev", "eth0"])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let answers_arp = |v: IpAddr| {
        let v = v.to_string();
        lab.exec(client, "arping", &["-c", "1", "-w", "1", "-I", "eth0", &v])
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let fence = fence_on(n1);
    fence.install().unwrap();
    fence.manage(&vips, &["eth0".to_string()]).unwrap();
    assert!(
        vips.iter().all(|v| !answers_arp(*v)),
        "managed, not allowed: silent"
    );
    assert!(fence
        .allow_all_until(&vips, Instant::now() + Duration::from_secs(30))
        .unwrap());
    assert!(
        vips.iter().all(|v| answers_arp(*v)),
        "all allowed by one call"
    );
    fence.revoke_all(&vips[..2]).unwrap();
    assert!(
        !answers_arp(vips[0]) && !answers_arp(vips[1]),
        "both revoked by one call"
    );
    assert!(answers_arp(vips[2]), "an address not given stays allowed");
    assert!(fence
        .allow_all_until(&vips, Instant::now() + Duration::from_secs(30))
        .unwrap());
    assert!(
        vips.iter().all(|v| answers_arp(*v)),
        "allowed again after a revoke"
    );
    assert!(!fence
        .allow_all_until(&vips, Instant::now() + Duration::from_millis(5))
        .unwrap());
    assert!(
        vips.iter().all(|v| !answers_arp(*v)),
        "a deadline too near revokes every one of them"
    );
    fence.remove().unwrap();
}

/// Whether `vip` answers neighbour solicitations from the client now: the next few probes of
/// `observer` sent after this call (so an answer from before a change does not count).
fn answers_nd(lab: &Lab, observer: &ArpObserver) -> bool {
    let now = Instant::now();
    let probes = lab
        .wait_for(Duration::from_secs(2), || {
            let p: Vec<_> = observer
                .probes()
                .into_iter()
                .filter(|p| p.at >= now)
                .collect();
            (p.len() >= 5).then_some(p)
        })
        .expect("the observer probes");
    probes.iter().any(|p| !p.macs.is_empty())
}

/// The MAC and index of `eth0` on lab host `h`.
fn eth0(lab: &Lab, h: &jepsen::Host) -> ([u8; 6], u32) {
    let out = lab
        .exec(
            h,
            "cat",
            &["/sys/class/net/eth0/address", "/sys/class/net/eth0/ifindex"],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut mac = [0u8; 6];
    for (i, p) in lines.next().unwrap().trim().split(':').enumerate() {
        mac[i] = u8::from_str_radix(p, 16).unwrap();
    }
    (mac, lines.next().unwrap().trim().parse().unwrap())
}

/// The IPv6 fence: a managed address that is not allowed answers neither neighbour
/// solicitations nor pings, and its unsolicited advertisements do not leave the host; allowed,
/// it does all three until the deadline, with nobody left to revoke it.
#[test]
fn the_kernel_stops_answering_for_an_ipv6_vip_when_its_allowance_expires() {
    let lab = Lab::new(1).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    let (n1, client) = (lab.node(1), lab.client());
    let vip6: Ipv6Addr = "fd0a:d500::64".parse().unwrap();
    let vip = IpAddr::V6(vip6);
    let out = lab
        .exec(
            n1,
            "ip",
            &["addr", "add", "fd0a:d500::64/64", "dev", "eth0", "nodad"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let observer = ArpObserver::start(client, vip, Duration::from_millis(10));
    assert!(
        answers_nd(&lab, &observer),
        "without a fence the address answers"
    );
    let (mac, index) = eth0(&lab, n1);
    // One unsolicited advertisement sent from n1 as the agent sends it: whether it was seen
    // by the client (and what the send said).
    let announce = || {
        let before = observer.frames().len();
        let sent = lab
            .run_in(n1, move || {
                ballast_node::agent::nd::advertise_once(vip6, index, mac)
                    .map_err(|e| e.raw_os_error())
            })
            .unwrap();
        let seen = lab.wait_for(Duration::from_millis(300), || {
            (observer.frames()[before..].iter().any(|f| f.gratuitous)).then_some(())
        });
        (sent, seen.is_some())
    };
    assert_eq!(announce(), (Ok(()), true), "unfenced, it announces");

    let fence = fence_on(n1);
    fence.install().unwrap();
    fence.manage(&[vip], &["eth0".to_string()]).unwrap();
    assert!(
        !answers_nd(&lab, &observer),
        "a managed address that is not allowed is silent"
    );
    assert!(!lab.can_ping_addr(client, vip));
    assert_eq!(
        announce(),
        (Err(Some(libc::EPERM)), false),
        "the output hook drops an advertisement outside the lease"
    );

    let deadline = Instant::now() + Duration::from_millis(1500);
    assert!(fence.allow_until(vip, deadline).unwrap());
    assert!(answers_nd(&lab, &observer), "allowed: it answers ND");
    assert!(lab.can_ping_addr(client, vip), "allowed: it answers IPv6");
    assert_eq!(announce(), (Ok(()), true), "allowed: it announces");
    lab.wait_for(Duration::from_secs(5), || {
        (Instant::now() > deadline).then_some(())
    })
    .unwrap();
    // Every probe sent after the deadline, for half a second: none answered.
    let late: Vec<_> = lab
        .wait_for(Duration::from_secs(3), || {
            let p = observer.probes();
            p.iter()
                .any(|p| p.at > deadline + Duration::from_millis(500))
                .then_some(p)
        })
        .unwrap()
        .into_iter()
        .filter(|p| p.at > deadline && !p.macs.is_empty())
        .map(|p| p.at - deadline)
        .collect();
    assert!(late.is_empty(), "answered after the deadline: {late:?}");
    assert!(!lab.can_ping_addr(client, vip));
    assert!(!announce().1, "announced after the deadline");

    // Revocation is immediate; IPv4 and IPv6 VIPs share one transaction.
    let v4: IpAddr = "10.213.0.100".parse().unwrap();
    let out = lab
        .exec(n1, "ip", &["addr", "add", "10.213.0.100/24", "dev", "eth0"])
        .unwrap();
    assert!(out.status.success());
    fence.manage(&[v4, vip], &["eth0".to_string()]).unwrap();
    assert_eq!(fence.governed().unwrap(), vec![v4, vip]);
    assert!(fence
        .allow_all_until(&[v4, vip], Instant::now() + Duration::from_secs(30))
        .unwrap());
    assert!(answers_nd(&lab, &observer));
    assert!(lab.can_ping_addr(client, v4));
    fence.revoke(vip).unwrap();
    assert!(!answers_nd(&lab, &observer));
    assert!(lab.can_ping_addr(client, v4), "the IPv4 VIP stays allowed");
    fence.remove().unwrap();
    assert!(answers_nd(&lab, &observer), "no fence: it answers again");
}
