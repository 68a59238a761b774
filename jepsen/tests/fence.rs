//! The nftables VIP fence on a real lab host: the kernel stops answering for a VIP when its
//! allowance expires, with no process left to do anything.

use std::net::Ipv4Addr;
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
    let vip: Ipv4Addr = "10.213.0.100".parse().unwrap();
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
    let vips: Vec<Ipv4Addr> = ["10.213.0.100", "10.213.0.101", "10.213.0.102"]
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
    let answers_arp = |v: Ipv4Addr| {
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
