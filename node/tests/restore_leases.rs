//! A restored cluster (`restore --from`, and `--force-new-cluster`, which restores a
//! member's own data) must not place a VIP while a node of the old cluster may still answer
//! for it under a lease the old cluster granted. Deterministic: the real state machine,
//! backup encoding, lease book and controller, on a clock the test drives.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_node::leader::book::{LeaseBook, LeaseTerms, World};
use ballast_node::leader::controller::{Action, ControllerConfig, VipView};
use ballast_node::lease::{LeaseConfig, LeaseSettings};
use ballast_node::member::state::StateData;
use ballast_node::model;
use ballast_node::types::{Command, Op, Outcome};
use ballast_proto::v1;

const MS: Duration = Duration::from_millis(1);

fn run(sm: &mut StateData, op: Op) -> Outcome {
    sm.apply_command(&Command {
        request: None,
        now_ms: 1,
        op,
    })
    .0
    .outcome
}

/// The old cluster: nodes 1 and 2 back `web`; VIP `v` is held by node 1 at epoch 1 under a
/// `lease_ms` lease.
fn old_cluster(lease_ms: u64) -> StateData {
    let mut old = StateData::default();
    let settings = LeaseSettings::from_config(&LeaseConfig {
        lease: Duration::from_millis(lease_ms),
        ..LeaseConfig::default()
    });
    let mut ops = vec![Op::SetLease {
        settings,
        if_unset: false,
    }];
    for node_id in [1, 2] {
        ops.push(Op::RegisterAgent {
            node_id,
            addr: String::new(),
        });
    }
    ops.push(Op::ApplyService(model::Service {
        name: "web".into(),
        backends: [1u64, 2]
            .iter()
            .map(|i| (*i, model::Backend::default()))
            .collect(),
        ..Default::default()
    }));
    for node_id in [1, 2] {
        ops.push(Op::ReportHealth {
            node_id,
            service: "web".into(),
            health: model::Health::Healthy,
        });
    }
    ops.push(Op::ApplyVip(vip("v", "10.213.0.100/24")));
    ops.push(Op::AssignVip {
        vip: "v".into(),
        node: 1,
        epoch: 1,
    });
    for op in ops {
        assert_eq!(run(&mut old, op.clone()), Outcome::StateWritten, "{op:?}");
    }
    old
}

/// A new, empty cluster seeded from a backup of `old` (`RestoreHeld`).
fn restored(old: &StateData) -> StateData {
    let mut new = StateData::default();
    let payload = old.backup().encode();
    assert_eq!(
        run(&mut new, Op::RestoreHeld { payload }),
        Outcome::StateWritten
    );
    new
}

/// A VIP of service `web` on eth0.
fn vip(name: &str, address: &str) -> model::Vip {
    model::Vip {
        name: name.into(),
        address: address.into(),
        interface: "eth0".into(),
        service: "web".into(),
        ..Default::default()
    }
}

/// What the new cluster's leader decides at `now`, with the lease
/// settings of its own configuration and the state's wait.
/// Node 2's agent renews (holding nothing) just before each decision; node 1 is silent.
fn decide(book: &mut LeaseBook, s: &StateData, now: Duration) -> Vec<Action> {
    let vips: Vec<VipView> = s.vips.values().map(VipView::of).collect();
    let cfg = ControllerConfig::default();
    let own = LeaseSettings::from_config(&LeaseConfig::default());
    let terms = LeaseTerms::of(s.lease.unwrap_or(own), s.lease_wait_ms);
    let heard = v1::RenewRequest {
        node_id: 2,
        ..Default::default()
    };
    let (_, refused) = book.renew(&s.vips, &heard, None, now, terms);
    assert_eq!(refused, None);
    let w = World {
        nodes: &s.nodes,
        services: &s.services,
        vips: &vips,
        retired: &s.retired,
        leader: 0,
        now,
        now_wall_ms: 0,
        cfg: &cfg,
    };
    book.decide(&w, terms)
}

/// Found by a cold review: VIPs came back unowned and the new leader placed them at its
/// election (`[Assign { vip: "v", node: 2, epoch: 2 }]`) while node 1, paused or cut off, could
/// still answer for `v` under the old cluster's lease. Now the new leader waits the old
/// cluster's lease wait (carried in the backup, longer than its own here) from its election.
#[test]
fn a_restored_vip_waits_out_the_old_clusters_lease_before_it_is_placed() {
    let old = old_cluster(4_000);
    let old_wait = old.lease_wait_ms;
    assert!(old_wait >= 4_000);
    let payload = old.backup().encode();
    let mut new = StateData::default();
    let own = LeaseSettings::from_config(&LeaseConfig::default());
    assert!(
        own.span_ms() < old_wait,
        "the new cluster's own lease is shorter"
    );
    run(
        &mut new,
        Op::SetLease {
            settings: own,
            if_unset: true,
        },
    );
    assert_eq!(
        run(&mut new, Op::RestoreHeld { payload }),
        Outcome::StateWritten
    );
    assert_eq!(
        new.lease_wait_ms, old_wait,
        "the old cluster's wait came along"
    );
    assert_eq!(new.vips["v"].owner, 0);
    let retired = &new.retired["v"];
    // No owner: no agent's confirmation frees it, only the wait.
    assert_eq!((retired.owner, retired.epoch), (0, 1));
    // Node 1 (the old owner, maybe paused or cut off) is not heard; node 2 is.
    run(
        &mut new,
        Op::SetNodeAlive {
            node_id: 2,
            alive: true,
        },
    );
    let election = 10_000 * MS;
    let mut book = LeaseBook::new(1, election);
    let placed = |a: &[Action]| a.iter().any(|a| matches!(a, Action::Assign { .. }));
    // Nothing placed (or cleared) until the old wait has passed since the election.
    for at in [0, own.span_ms(), old_wait - 1] {
        let actions = decide(&mut book, &new, election + Duration::from_millis(at));
        assert!(
            !placed(&actions)
                && !actions
                    .iter()
                    .any(|a| matches!(a, Action::ClearRetired { .. })),
            "{at} ms after the election: {actions:?}"
        );
    }
    // Then the address is freed, and `v` goes to node 2 with a new epoch.
    let now = election + Duration::from_millis(old_wait);
    let actions = decide(&mut book, &new, now);
    assert!(
        actions.contains(&Action::ClearRetired {
            vip: "v".into(),
            epoch: 1
        }),
        "{actions:?}"
    );
    for a in actions {
        if let Action::ClearRetired { .. } = a {
            assert_eq!(run(&mut new, a.op()), Outcome::StateWritten);
        }
    }
    let actions = decide(&mut book, &new, now);
    assert!(
        actions.contains(&Action::Assign {
            vip: "v".into(),
            node: 2,
            epoch: 2
        }),
        "{actions:?}"
    );
}

/// While a restored VIP's address is retired, the state machine itself refuses to assign it
/// (a decision taken before the restore applied cannot slip through).
#[test]
fn a_restored_vip_cannot_be_assigned_before_its_address_is_cleared() {
    let payload = old_cluster(2_000).backup().encode();
    let mut new = StateData::default();
    assert_eq!(
        run(&mut new, Op::RestoreHeld { payload }),
        Outcome::StateWritten
    );
    let assign = Op::AssignVip {
        vip: "v".into(),
        node: 2,
        epoch: 2,
    };
    assert!(matches!(run(&mut new, assign), Outcome::Rejected { .. }));
}

/// A restore seeds only a new cluster: one still waiting out a deleted VIP's lease is not.
#[test]
fn a_cluster_that_lately_held_vips_is_not_restored_into() {
    let mut c = old_cluster(2_000);
    assert_eq!(
        run(&mut c, Op::DeleteVip("v".into())),
        Outcome::StateWritten
    );
    assert_eq!(
        run(&mut c, Op::DeleteService("web".into())),
        Outcome::StateWritten
    );
    assert!(c.vips.is_empty() && c.services.is_empty() && !c.retired.is_empty());
    let payload = old_cluster(2_000).backup().encode();
    assert!(matches!(
        run(&mut c, Op::RestoreHeld { payload }),
        Outcome::Rejected { .. }
    ));
}

/// Epochs never go backwards: a name this cluster used before continues after its epoch (a
/// confirmation the leader holds for that epoch must not free the restored address).
#[test]
fn a_restored_vip_keeps_the_higher_epoch_of_its_name() {
    let mut b = old_cluster(2_000).backup();
    b.vips.get_mut("v").unwrap().epoch = 1;
    let mut new = StateData {
        vip_epochs: BTreeMap::from([("v".to_string(), 7)]),
        ..StateData::default()
    };
    assert_eq!(
        run(
            &mut new,
            Op::RestoreHeld {
                payload: b.encode()
            }
        ),
        Outcome::StateWritten
    );
    assert_eq!(new.vips["v"].epoch, 8);
    assert_eq!(new.retired["v"].epoch, 8);
}

/// Found by a second cold review: the backup names node 1 as `v`'s owner, but the old
/// cluster may have moved `v` to node 2 after the backup; node 1's new agent, holding
/// nothing, confirmed the retired address at once and `v` was placed 1 ms after the
/// election. A restored address names no owner, so no confirmation counts.
#[test]
fn no_agent_can_confirm_a_restored_address_away() {
    use ballast_node::agent::plan;
    let payload = old_cluster(4_000).backup().encode();
    let mut new = StateData::default();
    assert_eq!(
        run(&mut new, Op::RestoreHeld { payload }),
        Outcome::StateWritten
    );
    let r = new.retired["v"].clone();
    let election = 10_000 * MS;
    let mut book = LeaseBook::new(1, election);
    for node in [1, 2] {
        // What a fresh agent of the node reads and would confirm.
        let state = v1::GetStateResponse {
            retired: vec![r.to_proto("v")],
            ..Default::default()
        };
        assert!(plan::confirms_not_held(&state, &BTreeMap::new(), &[], node).is_empty());
        assert!(!book.confirm_release(&new.vips, &new.retired, node, "v", r.epoch));
    }
    run(
        &mut new,
        Op::SetNodeAlive {
            node_id: 2,
            alive: true,
        },
    );
    let actions = decide(&mut book, &new, election + MS);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Assign { .. } | Action::ClearRetired { .. })),
        "{actions:?}"
    );
}

/// A log written before `RestoreHeld` holds `Restore`: a member replaying it now computes
/// what the members that applied it then did (VIPs unowned and free, nothing retired, no
/// wait raised), or the states would differ.
#[test]
fn an_old_restore_entry_replays_as_it_applied_then() {
    let old = old_cluster(4_000);
    let payload = old.backup().encode();
    let mut new = StateData {
        vip_epochs: BTreeMap::from([("v".to_string(), 7)]),
        ..StateData::default()
    };
    assert_eq!(
        run(&mut new, Op::Restore { payload }),
        Outcome::StateWritten
    );
    assert!(new.retired.is_empty());
    assert_eq!(new.lease_wait_ms, 0);
    assert_eq!((new.vips["v"].owner, new.vips["v"].epoch), (0, 1));
    assert_eq!(new.vip_epochs.get("v"), Some(&7));
}

/// Found by a third cold review: a backup did not carry the old cluster's retired addresses,
/// so a VIP given a deleted VIP's address right after the restore was placed 1 ms after the
/// election while the deleted VIP's last owner could still answer for it. Payload format 3
/// carries them (and the deleted VIPs' epochs).
#[test]
fn an_address_the_old_cluster_held_back_is_held_back_after_a_restore() {
    let mut old = old_cluster(4_000);
    let old_wait = old.lease_wait_ms;
    assert_eq!(
        run(&mut old, Op::DeleteVip("v".into())),
        Outcome::StateWritten
    );
    assert_eq!(
        old.retired["v"].owner, 1,
        "node 1 may still answer for .100"
    );
    let mut new = restored(&old);
    assert_eq!(
        new.vip_epochs.get("v"),
        Some(&1),
        "v made again continues at 2"
    );
    // The operator gives the address to a new VIP at once.
    let w = vip("w", "10.213.0.100/24");
    assert_eq!(run(&mut new, Op::ApplyVip(w)), Outcome::StateWritten);
    run(
        &mut new,
        Op::SetNodeAlive {
            node_id: 2,
            alive: true,
        },
    );
    let assign = Op::AssignVip {
        vip: "w".into(),
        node: 2,
        epoch: 1,
    };
    assert!(matches!(run(&mut new, assign), Outcome::Rejected { .. }));
    let election = 10_000 * MS;
    let mut book = LeaseBook::new(1, election);
    for at in [1, old_wait - 1] {
        let actions = decide(&mut book, &new, election + Duration::from_millis(at));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Assign { .. })),
            "{at} ms after the election: {actions:?}"
        );
    }
}

/// A VIP whose address was changing when the backup was taken: both its new address (the
/// restored VIP's) and its old one (the old cluster's retired entry, kept under `v/EPOCH`)
/// are held back.
#[test]
fn both_addresses_of_a_changing_vip_are_held_back() {
    let mut old = old_cluster(2_000);
    let moved = vip("v", "10.213.0.101/24");
    assert_eq!(run(&mut old, Op::ApplyVip(moved)), Outcome::StateWritten);
    assert_eq!(old.retired["v"].address, "10.213.0.100/24");
    let new = restored(&old);
    let held: Vec<(&str, &str, u64)> = new
        .retired
        .iter()
        .map(|(k, r)| (k.as_str(), r.address.as_str(), r.owner))
        .collect();
    assert_eq!(
        held,
        [("v", "10.213.0.101/24", 0), ("v/1", "10.213.0.100/24", 0)]
    );
    for address in ["10.213.0.100/24", "10.213.0.101/24"] {
        let mut s = new.clone();
        if address == "10.213.0.100/24" {
            let u = vip("u", address);
            assert_eq!(run(&mut s, Op::ApplyVip(u)), Outcome::StateWritten);
        }
        let name = if address == "10.213.0.100/24" {
            "u"
        } else {
            "v"
        };
        let epoch = s.vips[name].epoch + 1;
        let assign = Op::AssignVip {
            vip: name.into(),
            node: 2,
            epoch,
        };
        assert!(
            matches!(run(&mut s, assign), Outcome::Rejected { .. }),
            "{address}"
        );
    }
}

/// Found by a fourth cold review: this cluster's own VIP `v` was released at epoch 1 and
/// confirmed (the leader keeps `released[v] = 1`), then a backup whose old cluster had
/// retired its own `v` at epoch 1 was restored: the carried entry was freed at once by that
/// confirmation. An entry with no owner is now freed only by the wait.
#[test]
fn a_confirmation_in_this_cluster_does_not_free_a_carried_address() {
    let mut old = old_cluster(4_000);
    assert_eq!(
        run(&mut old, Op::DeleteVip("v".into())),
        Outcome::StateWritten
    );
    let payload = old.backup().encode();
    // This cluster: v at epoch 1 on node 1, deleted, confirmed, cleared; web deleted.
    let mut new = old_cluster(4_000);
    assert_eq!(
        run(&mut new, Op::DeleteVip("v".into())),
        Outcome::StateWritten
    );
    let election = 10_000 * MS;
    let mut book = LeaseBook::new(1, election);
    assert!(book.confirm_release(&new.vips, &new.retired, 1, "v", 1));
    let clear = Op::ClearRetired {
        vip: "v".into(),
        epoch: 1,
    };
    assert_eq!(run(&mut new, clear), Outcome::StateWritten);
    assert_eq!(
        run(&mut new, Op::DeleteService("web".into())),
        Outcome::StateWritten
    );
    new.kv.clear();
    assert_eq!(
        run(&mut new, Op::RestoreHeld { payload }),
        Outcome::StateWritten
    );
    assert_eq!((new.retired["v"].owner, new.retired["v"].epoch), (0, 1));
    let actions = decide(&mut book, &new, election + MS);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ClearRetired { .. } | Action::Assign { .. })),
        "{actions:?}"
    );
}
