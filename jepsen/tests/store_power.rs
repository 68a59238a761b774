//! The storage engines under power cuts: a child process writes log entries and metadata of
//! every size through `FileEngine` (with 1 MiB segments, so that segments are started and
//! deleted all the time) or `SledEngine` on the power-loss file system, printing each operation
//! before it makes it and `synced` after each `sync`; it is SIGKILLed at a random moment
//! (also while it opens the engine) and the file system cut. A new child then opens the
//! engine and prints what it finds, which must be the state after some prefix of the
//! operations that includes everything before the last `synced`: nothing acknowledged lost,
//! nothing torn. The snapshot (`put_snapshot`, durable on its own when it returns) must be
//! the last one stored or the one being stored when the cut came. Needs root and /dev/fuse.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_node::member::store::{FileEngine, LogEngine, SledEngine};
use jepsen::powerfs::PowerFs;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const META_KEYS: [&str; 4] = ["vote", "committed", "last_purged", "snapshot"];

/// What the engine holds, as hashes of the values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    logs: BTreeMap<u64, u64>,
    metas: BTreeMap<String, u64>,
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `len` bytes that depend on `tag` (so an overwrite differs from what it replaces).
fn content(tag: u64, len: usize) -> Vec<u8> {
    jepsen::runner::pseudo_random_bytes(tag, len)
}

/// Sizes from 64 bytes to 300 KiB, most small, a fifth above sled's 128 KiB blob threshold.
fn entry_size(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..10) {
        0..=5 => rng.gen_range(64..4096),
        6..=7 => rng.gen_range(4096..128 * 1024),
        _ => rng.gen_range(128 * 1024..300 * 1024),
    }
}

/// The child: opens the engine, prints what it holds, then writes until killed.
#[test]
#[ignore = "the child process of engine_keeps_what_it_synced_across_power_cuts"]
fn engine_writer_child() {
    let dir = std::env::var("POWER_CHILD_DIR").expect("run by the power-cut test");
    let round: u64 = std::env::var("POWER_CHILD_ROUND").unwrap().parse().unwrap();
    let mut out = std::io::stdout().lock();
    let mut say = |s: String| {
        writeln!(out, "@{s}").unwrap();
        out.flush().unwrap();
    };
    let engine: Box<dyn LogEngine> = match std::env::var("POWER_CHILD_ENGINE").as_deref() {
        Ok("sled") => {
            Box::new(SledEngine::open(&Path::new(&dir).join("raft")).expect("engine opens"))
        }
        _ => Box::new(
            FileEngine::open_with_segment_bytes(&Path::new(&dir).join("log"), 1 << 20)
                .expect("engine opens"),
        ),
    };
    for (i, v) in engine.read_logs(0, u64::MAX).unwrap() {
        say(format!("have log {i} {}", fnv(&v)));
    }
    for k in META_KEYS {
        if let Some(v) = engine.get_meta(k).unwrap() {
            say(format!("have meta {k} {}", fnv(&v)));
        }
    }
    if let Some(v) = engine.get_snapshot().unwrap() {
        say(format!("have snapshot {}", fnv(&v)));
    }
    say("ready".into());
    let mut rng = StdRng::seed_from_u64(round);
    let mut tag = round << 32;
    loop {
        let last = engine.last_log().unwrap().map_or(0, |(i, _)| i);
        let first = engine
            .read_logs(0, u64::MAX)
            .unwrap()
            .first()
            .map_or(last + 1, |(i, _)| *i);
        tag += 1;
        match rng.gen_range(0..21) {
            0..=9 => {
                let n = if rng.gen_bool(0.3) {
                    rng.gen_range(2..5)
                } else {
                    1
                };
                let batch: Vec<(u64, Vec<u8>)> = (1..=n)
                    .map(|k| (last + k, content(tag * 8 + k, entry_size(&mut rng))))
                    .collect();
                let desc: Vec<String> = batch
                    .iter()
                    .map(|(i, v)| format!("{i}:{}:{}", fnv(v), v.len()))
                    .collect();
                say(format!("op insert {}", desc.join(",")));
                engine.insert_logs(batch).unwrap();
            }
            10 if last > first => {
                let from = rng.gen_range(first + 1..=last);
                say(format!("op remove_from {from}"));
                engine.remove_logs_from(from).unwrap();
            }
            11 if last > first + 20 => {
                let upto = rng.gen_range(first..last - 10);
                say(format!("op remove_upto {upto}"));
                engine.remove_logs_upto(upto).unwrap();
            }
            12..=13 => {
                let k = META_KEYS[rng.gen_range(0..META_KEYS.len())];
                let len = if k == "snapshot" {
                    rng.gen_range(100_000..3_000_000)
                } else {
                    rng.gen_range(8..64)
                };
                let v = content(tag, len);
                say(format!("op meta {k} {}", fnv(&v)));
                engine.put_meta(k, v).unwrap();
            }
            14 => {
                let v = content(tag, rng.gen_range(100_000..3_000_000));
                say(format!("op snapshot {}", fnv(&v)));
                engine.put_snapshot(&v).unwrap();
                say(format!("snapshot stored {}", fnv(&v)));
            }
            _ => {
                engine.sync().unwrap();
                say("synced".into());
            }
        }
    }
}

/// Replays the child's lines on `state`: the states after each operation since the last
/// `synced` (the first is what was synced last).
fn candidates(state: &State, lines: &[String], sizes: &mut BTreeMap<u64, usize>) -> Vec<State> {
    let mut cur = state.clone();
    let mut out = vec![cur.clone()];
    for l in lines {
        let words: Vec<&str> = l.split(' ').collect();
        match words.as_slice() {
            ["synced"] => out = vec![cur.clone()],
            ["op", "insert", list] => {
                for item in list.split(',') {
                    let mut f = item.split(':');
                    let (i, h, len) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
                    cur.logs.insert(i.parse().unwrap(), h.parse().unwrap());
                    sizes.insert(i.parse().unwrap(), len.parse().unwrap());
                }
                out.push(cur.clone());
            }
            ["op", "remove_from", i] => {
                let i: u64 = i.parse().unwrap();
                cur.logs.retain(|k, _| *k < i);
                out.push(cur.clone());
            }
            ["op", "remove_upto", i] => {
                let i: u64 = i.parse().unwrap();
                cur.logs.retain(|k, _| *k > i);
                out.push(cur.clone());
            }
            ["op", "meta", k, h] => {
                cur.metas.insert(k.to_string(), h.parse().unwrap());
                out.push(cur.clone());
            }
            _ => {}
        }
    }
    out
}

fn differences(expected: &State, found: &State, sizes: &BTreeMap<u64, usize>) -> String {
    let mut d = Vec::new();
    for (i, h) in &expected.logs {
        let len = sizes.get(i).copied().unwrap_or(0);
        match found.logs.get(i) {
            None => d.push(format!("log {i} ({len} bytes) missing")),
            Some(x) if x != h => d.push(format!("log {i} ({len} bytes) differs")),
            _ => {}
        }
    }
    for i in found.logs.keys().filter(|i| !expected.logs.contains_key(i)) {
        d.push(format!("log {i} unexpected"));
    }
    for (k, h) in &expected.metas {
        match found.metas.get(k) {
            None => d.push(format!("meta {k} missing")),
            Some(x) if x != h => d.push(format!("meta {k} differs")),
            _ => {}
        }
    }
    d.truncate(8);
    d.join(", ")
}

#[test]
fn engine_keeps_what_it_synced_across_power_cuts() {
    power_cuts("file");
}

#[test]
fn sled_engine_keeps_what_it_synced_across_power_cuts() {
    power_cuts("sled");
}

fn power_cuts(engine: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount(&tmp.path().join("mnt"))
        .unwrap_or_else(|e| panic!("POWERFS SETUP FAILED: {e}"));
    let seed: u64 = std::env::var("POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rounds: u64 = std::env::var("POWER_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let mut rng = StdRng::seed_from_u64(seed);
    // The last round ended in a kill without a cut: this one cuts as soon as the child has
    // opened the engine, before it writes or syncs anything of its own.
    let mut cut_at_ready = false;
    // What the engine must hold at the start of each round, and the child's lines since.
    let mut state = State::default();
    let mut pending: Vec<String> = Vec::new();
    // The snapshot stored last (its hash), and how many were stored.
    let mut snapshot: Option<u64> = None;
    let mut snapshots = 0usize;
    // Entry sizes by index, for the failure message.
    let mut sizes: BTreeMap<u64, usize> = BTreeMap::new();
    let (mut synced, mut ops, mut while_opening) = (0usize, 0usize, 0usize);
    for round in 1..=rounds + 1 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["engine_writer_child", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env("POWER_CHILD_DIR", fs.path())
            .env("POWER_CHILD_ENGINE", engine)
            .env("POWER_CHILD_ROUND", (seed * 1000 + round).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let reader = {
            let (out, lines) = (child.stdout.take().unwrap(), lines.clone());
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    // libtest may print its "test ... " before our first line.
                    if let Some(at) = l.find('@') {
                        lines.lock().unwrap().push(l[at + 1..].to_string());
                    }
                }
            })
        };
        // The last round only checks what survived.
        let kill_after = if round > rounds {
            Duration::from_secs(60)
        } else {
            Duration::from_millis(rng.gen_range(20..1200))
        };
        let deadline = std::time::Instant::now() + kill_after;
        while std::time::Instant::now() < deadline
            && !((round > rounds || cut_at_ready)
                && lines.lock().unwrap().iter().any(|l| l == "ready"))
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let exited = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        reader.join().unwrap();
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
        // Most rounds end in a power cut; the others in the kill alone, so that the next
        // child opens what only the page cache held, and must make it durable before it
        // reports it (the round after cuts right after that).
        let opened = lines.lock().unwrap().iter().any(|l| l == "ready");
        if round > rounds || cut_at_ready || !opened || rng.gen_bool(0.7) {
            fs.cut();
            cut_at_ready = false;
        } else {
            cut_at_ready = true;
        }
        let lines = std::mem::take(&mut *lines.lock().unwrap());
        if let Some(status) = exited {
            panic!(
                "round {round} (seed {seed}): the child ended by itself ({status}), the engine \
                 did not survive the last cut: {}",
                stderr
                    .lines()
                    .skip_while(|l| !l.contains("panicked"))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        let Some(ready) = lines.iter().position(|l| l == "ready") else {
            // Killed while opening: nothing written this round, the same state must be
            // found next time.
            while_opening += 1;
            continue;
        };
        let mut found = State::default();
        let mut found_snapshot = None;
        for l in &lines[..ready] {
            let w: Vec<&str> = l.split(' ').collect();
            match w.as_slice() {
                ["have", "log", i, h] => {
                    found.logs.insert(i.parse().unwrap(), h.parse().unwrap());
                }
                ["have", "meta", k, h] => {
                    found.metas.insert(k.to_string(), h.parse().unwrap());
                }
                ["have", "snapshot", h] => found_snapshot = Some(h.parse::<u64>().unwrap()),
                _ => {}
            }
        }
        let allowed = candidates(&state, &pending, &mut sizes);
        assert!(
            allowed.contains(&found),
            "round {round} (seed {seed}): after the cut the engine holds a state that is no \
             prefix of what was written since the last sync; against the last synced state: \
             {}",
            differences(&allowed[0], &found, &sizes)
        );
        // The snapshot: the one last stored, or the one whose storing the cut interrupted.
        let mut allowed_snapshots = vec![snapshot];
        for l in &pending {
            match l.split(' ').collect::<Vec<_>>().as_slice() {
                ["op", "snapshot", h] => allowed_snapshots.push(Some(h.parse().unwrap())),
                ["snapshot", "stored", h] => allowed_snapshots = vec![Some(h.parse().unwrap())],
                _ => {}
            }
        }
        assert!(
            allowed_snapshots.contains(&found_snapshot),
            "round {round} (seed {seed}): after the cut the snapshot is {found_snapshot:?}, \
             expected one of {allowed_snapshots:?}"
        );
        snapshot = found_snapshot;
        state = found;
        pending = lines[ready + 1..].to_vec();
        snapshots += pending
            .iter()
            .filter(|l| l.starts_with("snapshot stored"))
            .count();
        synced += pending.iter().filter(|l| *l == "synced").count();
        ops += pending.iter().filter(|l| l.starts_with("op ")).count();
    }
    assert!(
        synced >= rounds as usize && ops >= 2 * rounds as usize && snapshots >= 1,
        "the children did too little to prove anything: {synced} syncs, {ops} operations, \
         {snapshots} snapshots stored"
    );
    eprintln!(
        "{engine}: {rounds} cuts (seed {seed}, {while_opening} before the engine was open): {ops} \
         operations, {synced} syncs; at the end {} log entries, {} metadata values",
        state.logs.len(),
        state.metas.len()
    );
}
