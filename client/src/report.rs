//! Where what agents report differs from what the cluster decided: the part of
//! `ballastctl status` that an operator reads first when a VIP misbehaves.

use std::collections::BTreeMap;

use ballast_proto::v1;

/// One line per difference between the decided VIP owners (`vips`) and what the agents told
/// the leader (`leases`). Empty when they agree.
///
/// A difference that lasts a renew interval or two is normal during a move (the new owner has
/// not claimed yet, the old one has not reported its release yet); one that stays is not.
pub fn differences(vips: &[v1::Vip], leases: &v1::LeasesResponse) -> Vec<String> {
    let agents: BTreeMap<u64, &v1::AgentReport> =
        leases.agents.iter().map(|a| (a.node_id, a)).collect();
    let decided: BTreeMap<&str, &v1::Vip> = vips.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut out = Vec::new();
    // What an agent reported longer ago than a lease has expired in its kernel since.
    let fresh = |a: &v1::AgentReport| a.heard && a.last_heard_ms_ago <= leases.lease_ms;
    for v in vips.iter().filter(|v| v.owner != 0 && !v.releasing) {
        match agents.get(&v.owner) {
            Some(a) if fresh(a) => {
                if !a
                    .holding
                    .iter()
                    .any(|h| h.vip == v.name && h.epoch == v.epoch)
                {
                    out.push(format!(
                        "{}: owner node {} (epoch {}) does not report holding it",
                        v.name, v.owner, v.epoch
                    ));
                }
            }
            Some(a) if a.heard => out.push(format!(
                "{}: the agent of owner node {} has not renewed for {} ms",
                v.name, v.owner, a.last_heard_ms_ago
            )),
            _ => out.push(format!(
                "{}: the agent of owner node {} has not renewed with this leader",
                v.name, v.owner
            )),
        }
    }
    for a in leases.agents.iter().filter(|a| fresh(a)) {
        for h in &a.holding {
            match decided.get(h.vip.as_str()) {
                None => out.push(format!(
                    "{}: node {} holds a VIP the cluster does not have",
                    h.vip, a.node_id
                )),
                Some(v) if v.owner != a.node_id || v.epoch != h.epoch => out.push(format!(
                    "{}: node {} holds it at epoch {}, but the cluster gave it to {} at epoch {}",
                    h.vip,
                    a.node_id,
                    h.epoch,
                    if v.owner == 0 {
                        "nobody".to_string()
                    } else {
                        format!("node {}", v.owner)
                    },
                    v.epoch
                )),
                Some(_) => {}
            }
        }
        // VIPs its server cannot place (`ballastd --segment-interface`, `--vip-interface`):
        // the leader places them elsewhere.
        for u in &a.unplaceable {
            out.push(unplaceable(
                a.node_id,
                u,
                decided.get(u.vip.as_str()).copied(),
            ));
        }
        // The agent's HAProxy (`--haproxy-socket`), as of its last renewal.
        if !a.haproxy_error.is_empty() {
            out.push(format!(
                "node {}: cannot drive HAProxy: {}",
                a.node_id, a.haproxy_error
            ));
        }
        for d in &a.haproxy {
            out.push(match d.have.as_str() {
                "missing" => format!(
                    "node {}: HAProxy backend {} has no server {} (the cluster wants it {})",
                    a.node_id, d.backend, d.server, d.want
                ),
                have => format!(
                    "node {}: HAProxy has {}/{} {}, the cluster wants {}",
                    a.node_id, d.backend, d.server, have, d.want
                ),
            });
        }
    }
    out
}

/// The line for a VIP node `node` reported it cannot place; `vip`: the VIP as the cluster
/// defines it (its interface names the segment the server's configuration mapped).
fn unplaceable(node: u64, u: &v1::Unplaceable, vip: Option<&v1::Vip>) -> String {
    let segment = vip
        .filter(|v| v.interface != u.interface)
        .map(|v| format!(" (segment {})", v.interface))
        .unwrap_or_default();
    if u.reason == "no such interface" {
        format!(
            "node {node}: VIP {} cannot be placed: no interface {} here{segment}",
            u.vip, u.interface
        )
    } else {
        format!(
            "node {node}: VIP {} cannot be placed on {}{segment}: {}",
            u.vip, u.interface, u.reason
        )
    }
}

/// Nodes whose agents report holding `vip`, for display.
pub fn held_by(vip: &str, leases: &v1::LeasesResponse) -> Vec<u64> {
    leases
        .agents
        .iter()
        .filter(|a| {
            a.heard
                && a.last_heard_ms_ago <= leases.lease_ms
                && a.holding.iter().any(|h| h.vip == vip)
        })
        .map(|a| a.node_id)
        .collect()
}

/// Among the members' own `Status` answers, the one that speaks for the cluster: the member
/// that calls itself leader in the highest term. Only its members' lag is the truth.
pub fn leading<'a>(
    views: impl IntoIterator<Item = &'a v1::StatusResponse>,
) -> Option<&'a v1::StatusResponse> {
    views
        .into_iter()
        .filter(|v| v.raft_state == "leader")
        .max_by_key(|v| v.term)
}

/// A member's Raft state as `ballastctl status` shows it. A member that calls itself leader
/// in a lower term than `highest_term` (the highest any member answered with) is a `stale
/// leader`: cut off from the others, or unable to hear them, it is not the leader.
pub fn member_state(view: &v1::StatusResponse, highest_term: u64) -> String {
    if view.raft_state == "leader" && view.term < highest_term {
        "stale leader".into()
    } else {
        view.raft_state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(name: &str, owner: u64, epoch: u64) -> v1::Vip {
        v1::Vip {
            name: name.into(),
            owner,
            epoch,
            ..Default::default()
        }
    }

    fn agent(id: u64, holding: &[(&str, u64)]) -> v1::AgentReport {
        v1::AgentReport {
            node_id: id,
            heard: true,
            last_heard_ms_ago: 50,
            holding: holding
                .iter()
                .map(|(v, e)| v1::VipClaim {
                    vip: v.to_string(),
                    epoch: *e,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn leases(agents: Vec<v1::AgentReport>) -> v1::LeasesResponse {
        v1::LeasesResponse {
            agents,
            lease_ms: 800,
            ..Default::default()
        }
    }

    #[test]
    fn agreement_reports_nothing() {
        let vips = [vip("a", 1, 3), vip("b", 0, 2)];
        let l = leases(vec![agent(1, &[("a", 3)]), agent(2, &[])]);
        assert!(differences(&vips, &l).is_empty());
        assert_eq!(held_by("a", &l), vec![1]);
    }

    #[test]
    fn a_missing_holder_a_stale_holder_and_a_silent_owner_are_reported() {
        let vips = [vip("a", 1, 3), vip("b", 2, 1)];
        let mut silent = agent(2, &[]);
        silent.heard = false;
        let l = leases(vec![
            agent(1, &[]),
            silent,
            agent(3, &[("a", 2), ("gone", 1)]),
        ]);
        let d = differences(&vips, &l);
        assert_eq!(d.len(), 4, "{d:#?}");
        assert!(d[0].contains("owner node 1 (epoch 3) does not report holding it"));
        assert!(d[1].contains("owner node 2 has not renewed"));
        assert!(d[2].contains("node 3 holds it at epoch 2, but the cluster gave it to node 1"));
        assert!(d[3].contains("gone: node 3 holds a VIP the cluster does not have"));
    }

    #[test]
    fn haproxy_disagreements_and_errors_are_reported() {
        let diff = |server: &str, want: &str, have: &str| v1::HaproxyDiff {
            backend: "be_web".into(),
            server: server.into(),
            want: want.into(),
            have: have.into(),
        };
        let mut one = agent(1, &[]);
        one.haproxy = vec![diff("n3", "maint", "missing"), diff("n2", "drain", "ready")];
        let mut two = agent(2, &[]);
        two.haproxy_error = "/run/haproxy.sock: connection refused".into();
        let mut old = agent(3, &[]);
        old.last_heard_ms_ago = 5_000;
        old.haproxy_error = "long ago".into();
        let d = differences(&[], &leases(vec![one, two, old]));
        assert_eq!(
            d,
            [
                "node 1: HAProxy backend be_web has no server n3 (the cluster wants it maint)",
                "node 1: HAProxy has be_web/n2 ready, the cluster wants drain",
                "node 2: cannot drive HAProxy: /run/haproxy.sock: connection refused",
            ]
        );
    }

    #[test]
    fn vips_a_server_cannot_place_are_reported_with_their_segment() {
        let u = |vip: &str, interface: &str, reason: &str| v1::Unplaceable {
            vip: vip.into(),
            interface: interface.into(),
            reason: reason.into(),
        };
        let mut web = vip("web-vip", 0, 0);
        web.interface = "eth0".into();
        let mut lan = vip("lan-vip", 0, 0);
        lan.interface = "lan2".into();
        let mut three = agent(3, &[]);
        three.unplaceable = vec![
            u("lan-vip", "lan2", "no such interface"),
            u("web-vip", "ens3", "no such interface"),
            u("gone-vip", "eth9", "down"),
        ];
        let mut old = agent(1, &[]);
        old.last_heard_ms_ago = 5_000;
        old.unplaceable = vec![u("web-vip", "eth0", "no such interface")];
        let d = differences(&[web, lan], &leases(vec![three, old]));
        assert_eq!(
            d,
            [
                "node 3: VIP lan-vip cannot be placed: no interface lan2 here",
                "node 3: VIP web-vip cannot be placed: no interface ens3 here (segment eth0)",
                "node 3: VIP gone-vip cannot be placed on eth9: down",
            ]
        );
    }

    #[test]
    fn what_a_silent_agent_reported_long_ago_has_expired() {
        let vips = [vip("a", 2, 4)];
        let mut old = agent(1, &[("a", 3)]);
        old.last_heard_ms_ago = 5_000;
        let mut owner = agent(2, &[("a", 4)]);
        owner.last_heard_ms_ago = 900;
        let l = leases(vec![old, owner]);
        let d = differences(&vips, &l);
        assert_eq!(
            d,
            vec!["a: the agent of owner node 2 has not renewed for 900 ms"]
        );
        assert!(held_by("a", &l).is_empty());
    }

    #[test]
    fn a_release_in_progress_is_not_a_difference_for_the_owner() {
        let mut v = vip("a", 1, 3);
        v.releasing = true;
        let l = leases(vec![agent(1, &[])]);
        assert!(differences(&[v], &l).is_empty());
    }

    #[test]
    fn a_leader_of_an_older_term_is_shown_stale_and_does_not_speak() {
        let view = |node_id, raft_state: &str, term| v1::StatusResponse {
            node_id,
            raft_state: raft_state.into(),
            term,
            ..Default::default()
        };
        let views = [
            view(1, "leader", 2),
            view(2, "follower", 5),
            view(3, "leader", 5),
        ];
        assert_eq!(leading(&views).map(|v| v.node_id), Some(3));
        let states: Vec<String> = views.iter().map(|v| member_state(v, 5)).collect();
        assert_eq!(states, ["stale leader", "follower", "leader"]);
        // No member calls itself leader: nobody speaks for the cluster.
        assert!(leading(&[view(1, "candidate", 6), view(2, "follower", 5)]).is_none());
    }
}
