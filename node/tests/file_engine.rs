//! The file engine's own rules (`member/store/file_engine.rs`): segments started and deleted
//! with metadata kept, truncations and purges as records across a reopen, and what opening
//! does with a torn or damaged segment. The power-cut version is `jepsen/tests/store_power.rs`.

use std::path::Path;

use ballast_node::member::store::{FileEngine, LogEngine};

fn value(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u64 ^ i.wrapping_mul(131)) as u8)
        .collect()
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("log-"))
        .collect();
    v.sort();
    v
}

fn indexes(e: &FileEngine) -> Vec<u64> {
    e.read_logs(0, u64::MAX)
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// Entries over many small segments; a purge deletes the front segments (their metadata
/// copies replaced by the newer segments'), a truncation and an overwrite hold across a
/// reopen.
#[test]
fn segments_roll_over_and_go_from_the_front_with_metadata_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = FileEngine::open_with_segment_bytes(dir.path(), 64 << 10).unwrap();
        e.put_meta("vote", b"v1".to_vec()).unwrap();
        for i in 1..=200u64 {
            e.insert_logs(vec![(i, value(i, 3000))]).unwrap();
        }
        e.put_meta("vote", b"v2".to_vec()).unwrap();
        e.put_meta("gone", b"x".to_vec()).unwrap();
        e.remove_meta("gone").unwrap();
        e.sync().unwrap();
        assert!(
            segments(dir.path()).len() >= 9,
            "{:?}",
            segments(dir.path())
        );
        e.remove_logs_upto(150).unwrap();
        e.remove_logs_from(191).unwrap();
        e.insert_logs(vec![(191, value(9191, 10))]).unwrap();
        e.sync().unwrap();
        let left = segments(dir.path());
        assert!(left.len() <= 3, "front segments not deleted: {left:?}");
        assert_eq!(indexes(&e), (151..=191).collect::<Vec<_>>());
    }
    let e = FileEngine::open_with_segment_bytes(dir.path(), 64 << 10).unwrap();
    assert_eq!(indexes(&e), (151..=191).collect::<Vec<_>>());
    assert_eq!(e.get_meta("vote").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(e.get_meta("gone").unwrap(), None);
    assert_eq!(e.last_log().unwrap(), Some((191, value(9191, 10))));
    assert_eq!(e.read_logs(160, 161).unwrap()[0].1, value(160, 3000));
    assert_eq!(e.first_log_index().unwrap(), Some(151));
}

/// The newest segment's last record cut short (a crash mid-write): opening cuts it off and
/// keeps everything before it, and appends go on after it.
#[test]
fn a_torn_last_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = FileEngine::open(dir.path()).unwrap();
        e.insert_logs((1..=10).map(|i| (i, value(i, 500))).collect())
            .unwrap();
        e.insert_logs(vec![(11, value(11, 500))]).unwrap();
        e.sync().unwrap();
    }
    let seg = dir.path().join(&segments(dir.path())[0]);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    {
        let e = FileEngine::open(dir.path()).unwrap();
        assert_eq!(indexes(&e), (1..=10).collect::<Vec<_>>());
        e.insert_logs(vec![(11, value(111, 7))]).unwrap();
        e.sync().unwrap();
    }
    let e = FileEngine::open(dir.path()).unwrap();
    assert_eq!(e.last_log().unwrap(), Some((11, value(111, 7))));
}

/// Damage anywhere but at the end of the newest segment was synced data: refused, as is a
/// segment missing between two others.
#[test]
fn damage_to_synced_segments_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = FileEngine::open_with_segment_bytes(dir.path(), 16 << 10).unwrap();
        for i in 1..=40u64 {
            e.insert_logs(vec![(i, value(i, 2000))]).unwrap();
        }
        e.sync().unwrap();
    }
    let names = segments(dir.path());
    assert!(names.len() >= 4, "{names:?}");
    // A flipped byte in the middle of the first segment.
    let first = dir.path().join(&names[0]);
    let mut b = std::fs::read(&first).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&first, &b).unwrap();
    let err = FileEngine::open(dir.path()).err().expect("refused");
    assert!(err.0.contains("damaged"), "{err}");
    b[mid] ^= 0xff;
    std::fs::write(&first, &b).unwrap();
    FileEngine::open(dir.path()).unwrap();
    // A segment gone from the middle.
    std::fs::remove_file(dir.path().join(&names[1])).unwrap();
    let err = FileEngine::open(dir.path()).err().expect("refused");
    assert!(err.0.contains("missing"), "{err}");
}
