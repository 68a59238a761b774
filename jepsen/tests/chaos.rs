//! The chaos runner end to end: short runs of each workload under faults on a real
//! three-member cluster must give valid, stored and re-checkable histories.

use std::time::Duration;

use jepsen::runner::{self, Nemesis, Options};

/// Lease reads (`--read-policy lease`): a leader answers reads without a quorum round
/// while its lease holds. Paused and isolated leaders, one-way partitions and restarted
/// members (which must not vote at once) must not make a read stale.
#[test]
fn a_register_run_with_lease_reads_under_pauses_and_partitions_is_linearizable() {
    let store = tempfile::tempdir().unwrap();
    let o = Options {
        nodes: 3,
        nemeses: vec![
            Nemesis::PauseLeader,
            Nemesis::IsolateLeader,
            Nemesis::OneWay,
            Nemesis::KillOne,
        ],
        time_limit: Duration::from_secs(20),
        seed: 7,
        clients: 4,
        keys: 2,
        store: store.path().to_path_buf(),
        tls: false,
        check_budget: runner::DEFAULT_CHECK_BUDGET,
        read_policy: Some("lease".into()),
        ipv6: false,
    };
    let (_, r) = runner::run_register(&o).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    assert!(r.faults >= 2, "{r:?}");
    assert!(r.ok > 100, "the workload ran: {r:?}");
    assert_eq!(r.valid, Some(true), "{r:?}");
}

/// Over mutual TLS: members, and clients with a client certificate (the plaintext path runs
/// in CI's smoke runs of the binary).
#[test]
fn a_register_run_over_tls_under_partitions_and_kills_is_linearizable_and_rechecks() {
    let store = tempfile::tempdir().unwrap();
    let o = Options {
        nodes: 3,
        nemeses: vec![
            Nemesis::PartitionHalves,
            Nemesis::KillOne,
            Nemesis::PauseLeader,
        ],
        time_limit: Duration::from_secs(15),
        seed: 42,
        clients: 4,
        keys: 2,
        store: store.path().to_path_buf(),
        tls: true,
        check_budget: runner::DEFAULT_CHECK_BUDGET,
        read_policy: None,
        ipv6: false,
    };
    let (dir, r) = runner::run_register(&o).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    assert!(r.faults >= 1, "{r:?}");
    assert!(r.ok > 100, "the workload ran: {r:?}");
    assert_eq!(r.valid, Some(true), "{r:?}");
    for f in [
        "history.jsonl",
        "results.json",
        "timeline.html",
        "latency.svg",
        "availability.svg",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let again = runner::recheck(&dir, runner::DEFAULT_CHECK_BUDGET).unwrap();
    assert_eq!((again.valid, again.ops), (Some(true), r.ops));
    eprintln!("{}: {:?}", dir.display(), r);
}

#[test]
fn a_set_run_through_kill_all_keeps_every_acknowledged_add() {
    let store = tempfile::tempdir().unwrap();
    let o = Options {
        nodes: 3,
        nemeses: vec![Nemesis::KillAll, Nemesis::PartitionHalves],
        time_limit: Duration::from_secs(12),
        seed: 7,
        clients: 4,
        keys: 1,
        store: store.path().to_path_buf(),
        tls: false,
        check_budget: runner::DEFAULT_CHECK_BUDGET,
        read_policy: None,
        ipv6: false,
    };
    let (dir, r) =
        runner::run(&o, runner::Workload::Set).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    assert!(r.faults >= 1 && r.ok > 100, "{r:?}");
    assert_eq!(r.valid, Some(true), "{r:?}");
    assert!(r.verdict.starts_with("set valid"), "{}", r.verdict);
    eprintln!("{}: {}", dir.display(), r.verdict);
}

#[test]
fn a_vip_run_under_faults_never_shows_two_holders() {
    let store = tempfile::tempdir().unwrap();
    let o = Options {
        nodes: 3,
        nemeses: vec![Nemesis::IsolateOne, Nemesis::KillOne, Nemesis::OneWay],
        time_limit: Duration::from_secs(12),
        seed: 11,
        clients: 0,
        keys: 1,
        store: store.path().to_path_buf(),
        tls: false,
        check_budget: runner::DEFAULT_CHECK_BUDGET,
        read_policy: None,
        ipv6: false,
    };
    let (dir, r) =
        runner::run(&o, runner::Workload::Vip).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    assert!(r.faults >= 1, "{r:?}");
    assert_eq!(r.valid, Some(true), "{r:?}");
    assert!(r.verdict.starts_with("vip valid"), "{}", r.verdict);
    eprintln!("{}: {}", dir.display(), r.verdict);
}

#[test]
fn a_release_run_under_faults_ends_on_the_active_release() {
    let store = tempfile::tempdir().unwrap();
    let o = Options {
        nodes: 3,
        nemeses: vec![
            Nemesis::KillOne,
            Nemesis::IsolateLeader,
            Nemesis::PauseOwner,
        ],
        time_limit: Duration::from_secs(22),
        seed: 3,
        clients: 0,
        keys: 1,
        store: store.path().to_path_buf(),
        tls: false,
        check_budget: runner::DEFAULT_CHECK_BUDGET,
        read_policy: None,
        ipv6: false,
    };
    let (dir, r) = runner::run(&o, runner::Workload::Release)
        .unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    assert!(r.faults >= 1, "{r:?}");
    assert_eq!(r.valid, Some(true), "{r:?}");
    assert!(r.verdict.starts_with("release valid"), "{}", r.verdict);
    // At least one rollout really started under the faults.
    assert!(!r.verdict.contains("(0 started"), "{}", r.verdict);
    let again = runner::recheck(&dir, runner::DEFAULT_CHECK_BUDGET).unwrap();
    assert_eq!(again.valid, Some(true));
    eprintln!("{}: {}", dir.display(), r.verdict);
}
