//! Linearizability of a register history, per key (a register per key is independent, so the
//! history splits into one check per key: P-compositionality).
//!
//! The search is Wing & Gong's with Lowe's memoisation (as in Jepsen's knossos and Porcupine):
//! an operation may be linearized next if no operation still to linearize completed before it
//! was invoked; the state after a set of linearized operations is remembered, so each
//! (set, value) configuration is explored once. Operations with an unknown outcome are
//! concurrent with everything after their invocation and may be left out (they may never have
//! happened). The search has a time budget: past it the answer is "unknown", never a hang.
//!
//! When a key is not linearizable the checker shrinks its history to a small failing
//! sub-history (a prefix, then single operations removed while it still fails) to print.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::history::{Op, Outcome, RegisterOp};

/// The judgement of a whole history.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Linearizable,
    /// `witness` is a small sub-history of `key` that is not linearizable on its own.
    NotLinearizable {
        key: String,
        witness: Vec<Op>,
    },
    /// The budget ran out on `key` before an answer.
    Unknown {
        key: String,
    },
}

/// Checks every key of `history`, within `budget` in all.
pub fn check(history: &[Op], budget: Duration) -> Verdict {
    let deadline = Instant::now() + budget;
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let mut unknown = None;
    for (key, ops) in by_key {
        match linearizable(&ops, deadline) {
            Some(true) => {}
            Some(false) => {
                let witness = shrink(&ops, deadline + budget / 2);
                return Verdict::NotLinearizable {
                    key: key.to_string(),
                    witness,
                };
            }
            None => unknown = unknown.or(Some(key.to_string())),
        }
    }
    match unknown {
        Some(key) => Verdict::Unknown { key },
        None => Verdict::Linearizable,
    }
}

/// One operation as the search sees it.
#[derive(Clone)]
struct Entry {
    op: RegisterOp,
    /// None: unknown outcome (optional, never blocks others).
    result: Option<Option<i64>>,
    call: u64,
    ret: u64,
}

/// The register after `e` is applied to `state`, if `e` is possible there.
fn step(e: &Entry, state: Option<i64>) -> Option<Option<i64>> {
    match (&e.op, &e.result) {
        (RegisterOp::Read, Some(v)) => (*v == state).then_some(state),
        (RegisterOp::Read, None) => Some(state),
        (RegisterOp::Write(x), _) => Some(Some(*x)),
        (RegisterOp::Cas(from, to), Some(Some(1))) | (RegisterOp::Cas(from, to), None) => {
            (state == Some(*from)).then_some(Some(*to))
        }
        (RegisterOp::Cas(from, _), Some(_)) => (state != Some(*from)).then_some(state),
    }
}

fn entries(ops: &[Op]) -> Vec<Entry> {
    let mut v: Vec<Entry> = ops
        .iter()
        .filter_map(|o| match (&o.outcome, &o.op) {
            (Outcome::Fail, _) => None,
            // A read that never answered constrains nothing.
            (Outcome::Unknown, RegisterOp::Read) => None,
            (Outcome::Unknown, op) => Some(Entry {
                op: op.clone(),
                result: None,
                call: o.call,
                ret: u64::MAX,
            }),
            (Outcome::Ok(v), op) => Some(Entry {
                op: op.clone(),
                result: Some(*v),
                call: o.call,
                ret: o.ret,
            }),
        })
        .collect();
    v.sort_by_key(|e| (e.call, e.ret));
    v
}

type Bits = Vec<u64>;

fn has(b: &Bits, i: usize) -> bool {
    b[i / 64] >> (i % 64) & 1 == 1
}

fn with(b: &Bits, i: usize) -> Bits {
    let mut c = b.clone();
    c[i / 64] |= 1 << (i % 64);
    c
}

/// Some(true/false), or None when the deadline passed first.
fn linearizable(ops: &[Op], deadline: Instant) -> Option<bool> {
    let es = entries(ops);
    let n = es.len();
    let required: Vec<usize> = (0..n).filter(|i| es[*i].result.is_some()).collect();
    let done = |lin: &Bits| required.iter().all(|i| has(lin, *i));
    // Operations that may come next: invoked before every pending operation returned.
    let candidates = |lin: &Bits| -> Vec<usize> {
        let min_ret = (0..n)
            .filter(|i| !has(lin, *i))
            .map(|i| es[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        (0..n)
            .filter(|i| !has(lin, *i) && es[*i].call <= min_ret)
            .collect()
    };
    struct Frame {
        lin: Bits,
        state: Option<i64>,
        cands: Vec<usize>,
        next: usize,
    }
    let root: Bits = vec![0; n.div_ceil(64).max(1)];
    if done(&root) {
        return Some(true);
    }
    let mut seen: HashSet<(Bits, Option<i64>)> = HashSet::new();
    let mut stack = vec![Frame {
        cands: candidates(&root),
        lin: root,
        state: None,
        next: 0,
    }];
    let mut steps = 0u64;
    while let Some(f) = stack.last_mut() {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return None;
        }
        if f.next >= f.cands.len() {
            stack.pop();
            continue;
        }
        let i = f.cands[f.next];
        f.next += 1;
        let Some(state) = step(&es[i], f.state) else {
            continue;
        };
        let lin = with(&f.lin, i);
        if done(&lin) {
            return Some(true);
        }
        if seen.insert((lin.clone(), state)) {
            let cands = candidates(&lin);
            stack.push(Frame {
                lin,
                state,
                cands,
                next: 0,
            });
        }
    }
    Some(false)
}

/// A small failing sub-history of a non-linearizable `ops`: the shortest failing prefix (by
/// invocation), then operations removed one by one while it still fails.
fn shrink(ops: &[Op], deadline: Instant) -> Vec<Op> {
    let mut sorted = ops.to_vec();
    sorted.sort_by_key(|o| (o.call, o.ret));
    let fails = |h: &[Op]| linearizable(h, deadline) == Some(false);
    // Shortest failing prefix, by bisection (each candidate is checked, so the result fails).
    let (mut lo, mut hi) = (0usize, sorted.len());
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fails(&sorted[..mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let mut w: Vec<Op> = sorted[..hi].to_vec();
    let mut i = 0;
    while i < w.len() && Instant::now() < deadline {
        let mut without = w.clone();
        without.remove(i);
        if fails(&without) {
            w = without;
        } else {
            i += 1;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(p: u64, op: RegisterOp, outcome: Outcome, call: u64, ret: u64) -> Op {
        Op {
            process: p,
            key: "k".into(),
            op,
            outcome,
            call,
            ret,
        }
    }

    fn w(p: u64, v: i64, call: u64, ret: u64) -> Op {
        op(p, RegisterOp::Write(v), Outcome::Ok(None), call, ret)
    }

    fn r(p: u64, v: Option<i64>, call: u64, ret: u64) -> Op {
        op(p, RegisterOp::Read, Outcome::Ok(v), call, ret)
    }

    const B: Duration = Duration::from_secs(5);

    #[test]
    fn valid_histories_are_accepted() {
        // Sequential.
        let h = [
            w(1, 1, 0, 10),
            r(2, Some(1), 20, 30),
            w(1, 2, 40, 50),
            r(2, Some(2), 60, 70),
        ];
        assert_eq!(check(&h, B), Verdict::Linearizable);
        // A read concurrent with a write may see either value.
        let h = [
            w(1, 1, 0, 10),
            w(1, 2, 20, 50),
            r(2, Some(1), 30, 40),
            r(3, Some(2), 30, 60),
        ];
        assert_eq!(check(&h, B), Verdict::Linearizable);
        // Nothing written yet reads as absent.
        assert_eq!(check(&[r(1, None, 0, 1)], B), Verdict::Linearizable);
        // An unknown write may have happened late, or never.
        let h = [
            op(1, RegisterOp::Write(5), Outcome::Unknown, 0, 1),
            r(2, None, 10, 20),
            r(2, Some(5), 30, 40),
        ];
        assert_eq!(check(&h, B), Verdict::Linearizable);
        let h = [
            op(1, RegisterOp::Write(5), Outcome::Unknown, 0, 1),
            r(2, None, 10, 20),
        ];
        assert_eq!(check(&h, B), Verdict::Linearizable);
        // CAS: swapped and refused.
        let h = [
            w(1, 1, 0, 10),
            op(2, RegisterOp::Cas(1, 2), Outcome::Ok(Some(1)), 20, 30),
            op(3, RegisterOp::Cas(1, 3), Outcome::Ok(Some(0)), 40, 50),
            r(1, Some(2), 60, 70),
        ];
        assert_eq!(check(&h, B), Verdict::Linearizable);
        // A failed write did not happen.
        let h = [
            w(1, 1, 0, 10),
            op(2, RegisterOp::Write(9), Outcome::Fail, 20, 30),
            r(1, Some(1), 40, 50),
        ];
        assert_eq!(check(&h, B), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_rejected_with_a_small_witness() {
        // Lots of valid traffic, then a read of the old value after the new one was
        // acknowledged and read.
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..50 {
            h.push(w(1, i, t, t + 5));
            h.push(r(2, Some(i), t + 6, t + 9));
            t += 10;
        }
        h.push(w(1, 100, t, t + 5));
        h.push(r(2, Some(100), t + 6, t + 9));
        h.push(r(3, Some(49), t + 10, t + 12)); // stale
        match check(&h, B) {
            Verdict::NotLinearizable { key, witness } => {
                assert_eq!(key, "k");
                assert!(witness.len() <= 3, "{witness:#?}");
                assert!(witness.contains(&r(3, Some(49), t + 10, t + 12)));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_lost_write_is_rejected() {
        // Acknowledged write of 2, then a read that still sees 1.
        let h = [w(1, 1, 0, 10), w(2, 2, 20, 30), r(3, Some(1), 40, 50)];
        assert!(matches!(check(&h, B), Verdict::NotLinearizable { .. }));
        // A value that was never written.
        let h = [w(1, 1, 0, 10), r(3, Some(7), 40, 50)];
        assert!(matches!(check(&h, B), Verdict::NotLinearizable { .. }));
        // A CAS that claims success from a value the register did not hold.
        let h = [
            w(1, 1, 0, 10),
            op(2, RegisterOp::Cas(5, 6), Outcome::Ok(Some(1)), 20, 30),
        ];
        assert!(matches!(check(&h, B), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn keys_are_independent() {
        let mut h = vec![w(1, 1, 0, 10)];
        let mut other = r(2, Some(1), 20, 30);
        other.key = "other".into(); // reads 1 on a key nobody wrote
        h.push(other);
        match check(&h, B) {
            Verdict::NotLinearizable { key, .. } => assert_eq!(key, "other"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn an_exhausted_budget_says_unknown() {
        // Many fully concurrent writes and reads: a large search.
        let mut h = Vec::new();
        for p in 0..14 {
            h.push(w(p, p as i64, 0, 1_000));
            h.push(r(100 + p, Some(((p + 1) % 14) as i64), 0, 1_000));
        }
        h.push(r(999, Some(-1), 2_000, 2_001)); // impossible, but only after the search
        let v = check(&h, Duration::from_millis(50));
        assert_eq!(v, Verdict::Unknown { key: "k".into() });
    }
}
