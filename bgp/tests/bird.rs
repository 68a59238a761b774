//! The speaker against a real router: BIRD 2 in a network namespace (`lab/`), with the policy
//! README.md asks of routers (no Graceful Restart, hold time 3, host routes only, `med metric
//! on` across ASes). Needs root and `bird2`, and fails without them, as CI runs it as root.
//! Every wait polls BIRD or the speaker against a deadline.

mod lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ballast_bgp::{med_for_epoch, PeerState};
use lab::{Lab, Neighbor, Node, NodeSpeaker, ROUTER_AS};

const VIP: &str = "10.213.240.100";
const VIP_ROUTE: &str = "10.213.240.100/32";

fn vip() -> IpAddr {
    VIP.parse().unwrap()
}

fn neighbor(node: &Node, asn: u32) -> Neighbor {
    Neighbor {
        node: node.clone(),
        asn,
        password: None,
        ipv6: false,
        gr_aware: false,
    }
}

/// A lab of one node, a, in AS 65001, peering over IPv4 with BIRD, its speaker running.
fn one_node() -> (Lab, Node, NodeSpeaker) {
    let mut lab = Lab::new(1);
    let a = lab.nodes[0].clone();
    lab.start_bird(&[neighbor(&a, 65001)], false);
    let node = NodeSpeaker::to_router(&a, 65001, None, false);
    (lab, a, node)
}

fn community(epoch: u64) -> String {
    format!("({ROUTER_AS}, 1, {epoch})")
}

#[test]
fn an_announced_route_reaches_the_router_with_its_med_and_community_and_a_withdrawal_removes_it() {
    let (lab, a, node) = one_node();
    node.speaker().announce(vip(), 5).unwrap();
    let best = lab.wait_best(VIP_ROUTE, &a);
    assert_eq!(best.med, med_for_epoch(5));
    assert_eq!(best.large_community, Some(community(5)));
    assert_eq!(lab.bgp_state(&a), "Established");
    assert!(node.speaker().withdraw(vip()));
    lab.wait_gone(VIP_ROUTE, Duration::from_secs(5));
    assert_eq!(
        lab.bgp_state(&a),
        "Established",
        "a withdrawal is not a session end"
    );
}

/// Node a holds the VIP at epoch 5; b takes it at 6 and wins; a takes it back at 7 and wins.
fn the_higher_epoch_wins(asn_a: u32, asn_b: u32) {
    let mut lab = Lab::new(2);
    let (a, b) = (lab.nodes[0].clone(), lab.nodes[1].clone());
    lab.start_bird(&[neighbor(&a, asn_a), neighbor(&b, asn_b)], asn_a != asn_b);
    let node_a = NodeSpeaker::to_router(&a, asn_a, None, false);
    let node_b = NodeSpeaker::to_router(&b, asn_b, None, false);
    node_a.speaker().announce(vip(), 5).unwrap();
    assert_eq!(lab.wait_best(VIP_ROUTE, &a).med, med_for_epoch(5));
    node_b.speaker().announce(vip(), 6).unwrap();
    let best = lab.wait_best(VIP_ROUTE, &b);
    assert_eq!(best.large_community, Some(community(6)));
    assert_eq!(
        lab.routes(VIP_ROUTE).len(),
        2,
        "both owners' routes are held"
    );
    node_a.speaker().announce(vip(), 7).unwrap();
    assert_eq!(lab.wait_best(VIP_ROUTE, &a).med, med_for_epoch(7));
}

#[test]
fn the_higher_epoch_wins_at_the_router_between_nodes_of_one_as() {
    the_higher_epoch_wins(65001, 65001);
}

#[test]
fn the_higher_epoch_wins_at_the_router_across_ases_with_med_metric_on() {
    the_higher_epoch_wins(65001, 65002);
}

#[test]
fn a_killed_speakers_route_leaves_even_a_graceful_restart_aware_router_at_once() {
    let mut lab = Lab::new(1);
    let a = lab.nodes[0].clone();
    // BIRD's default: it would keep the routes of a peer that offered Graceful Restart for
    // up to 120 s after the session ends. The speaker never offers it.
    let aware = Neighbor {
        gr_aware: true,
        ..neighbor(&a, 65001)
    };
    lab.start_bird(&[aware], false);
    let node = NodeSpeaker::to_router(&a, 65001, None, false);
    node.speaker().announce(vip(), 5).unwrap();
    lab.wait_best(VIP_ROUTE, &a);
    let killed = Instant::now();
    node.kill();
    // Far below the hold time of 3 s: the closed connection ends the session at once. (With
    // a Graceful Restart capability for IPv4 in our OPEN, this wait fails: checked by hand.)
    lab.wait_gone(VIP_ROUTE, Duration::from_secs(1));
    eprintln!(
        "route gone {:?} after the speaker's runtime was dropped",
        killed.elapsed()
    );
}

#[test]
fn tcp_md5_with_the_right_password_establishes_and_with_a_wrong_one_never_does() {
    let mut lab = Lab::new(2);
    let (a, b) = (lab.nodes[0].clone(), lab.nodes[1].clone());
    let keyed = |node: &Node| Neighbor {
        password: Some("s3cret-key".into()),
        ..neighbor(node, 65001)
    };
    lab.start_bird(&[keyed(&a), keyed(&b)], false);
    let right = NodeSpeaker::to_router(&a, 65001, Some("s3cret-key"), false);
    let wrong = NodeSpeaker::to_router(&b, 65001, Some("wrong-key"), false);
    right.speaker().announce(vip(), 1).unwrap();
    wrong.speaker().announce(vip(), 2).unwrap();
    lab.wait_best(VIP_ROUTE, &a);
    assert!(right.peer_becomes(Duration::from_secs(1), |p| p.state
        == PeerState::Established));
    // Asserting an absence: a bounded wait, kept short.
    let established = wrong.peer_becomes(Duration::from_secs(3), |p| {
        p.state == PeerState::Established
    });
    assert!(!established, "a wrong TCP-MD5 key must never establish");
    assert_ne!(lab.bgp_state(&b), "Established");
    // It was the key: the router's kernel dropped the node's segments as badly signed.
    assert!(lab.router_counter("TcpExtTCPMD5Failure") > 0);
    assert!(lab.routes(VIP_ROUTE).iter().all(|r| r.from == a.name));
}

#[test]
fn an_ipv6_host_route_travels_over_an_ipv6_session() {
    let mut lab = Lab::new(1);
    let a = lab.nodes[0].clone();
    let v6 = Neighbor {
        ipv6: true,
        ..neighbor(&a, 65001)
    };
    lab.start_bird(&[v6], false);
    let node = NodeSpeaker::to_router(&a, 65001, None, true);
    let vip6: IpAddr = "fd0a:d5f0::100".parse().unwrap();
    node.speaker().announce(vip6, 9).unwrap();
    let best = lab.wait_best("fd0a:d5f0::100/128", &a);
    assert_eq!(best.med, med_for_epoch(9));
    assert_eq!(best.large_community, Some(community(9)));
    node.speaker().withdraw(vip6);
    lab.wait_gone("fd0a:d5f0::100/128", Duration::from_secs(5));
}

#[test]
fn after_the_router_restarts_the_speaker_comes_back_and_announces_again() {
    let (mut lab, a, node) = one_node();
    node.speaker().announce(vip(), 5).unwrap();
    lab.wait_best(VIP_ROUTE, &a);
    lab.stop_bird();
    assert!(node.peer_becomes(Duration::from_secs(5), |p| p.state
        != PeerState::Established));
    lab.start_bird(&[neighbor(&a, 65001)], false);
    let best = lab.wait_best(VIP_ROUTE, &a);
    assert_eq!(best.med, med_for_epoch(5));
    assert!(node.peer_becomes(Duration::from_secs(1), |p| p.sessions_established == 2));
}

#[test]
fn the_replay_after_a_reconnect_keeps_the_newest_state() {
    let (lab, a, node) = one_node();
    let (x, y, z) = ("10.213.240.101", "10.213.240.102", "10.213.240.103");
    node.speaker().announce(x.parse().unwrap(), 1).unwrap();
    node.speaker().announce(y.parse().unwrap(), 1).unwrap();
    lab.wait_best(&format!("{y}/32"), &a);
    lab.wait_best(&format!("{x}/32"), &a);

    lab.birdc(&["disable", &a.name]);
    assert!(node.peer_becomes(Duration::from_secs(5), |p| p.state
        != PeerState::Established));
    assert!(node.speaker().withdraw(x.parse().unwrap()));
    node.speaker().announce(y.parse().unwrap(), 2).unwrap();
    node.speaker().announce(z.parse().unwrap(), 2).unwrap();
    lab.birdc(&["enable", &a.name]);

    lab.wait_best(&format!("{z}/32"), &a);
    let y_route = lab.wait_best(&format!("{y}/32"), &a);
    assert_eq!(
        y_route.med,
        med_for_epoch(2),
        "the newest epoch, not the first"
    );
    assert!(
        lab.routes(&format!("{x}/32")).is_empty(),
        "withdrawn while down, never sent again"
    );
}
