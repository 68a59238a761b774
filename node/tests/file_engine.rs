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
/// keeps everything before it, and appends go on after it. Both ways a crash leaves it: the
/// file ending inside the record, and the record's last bytes still the zeros written ahead
/// of it (its page never written back) with the rest of those zeros after it.
#[test]
fn a_torn_last_record_is_cut_off() {
    for zeros_after in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = FileEngine::open(dir.path()).unwrap();
            e.insert_logs((1..=10).map(|i| (i, value(i, 500))).collect())
                .unwrap();
            e.insert_logs(vec![(11, value(11, 500))]).unwrap();
            e.sync().unwrap();
        }
        let seg = dir.path().join(&segments(dir.path())[0]);
        let mut b = std::fs::read(&seg).unwrap();
        // Where the records end: the zeros written ahead follow them.
        let end = b.iter().rposition(|x| *x != 0).unwrap() + 1;
        assert!(
            b.len() > end + 4096,
            "zeros are written ahead of the records ({} bytes, records end at {end})",
            b.len()
        );
        if zeros_after {
            b[end - 100..end].fill(0);
        } else {
            b.truncate(end - 100);
        }
        std::fs::write(&seg, &b).unwrap();
        {
            let e = FileEngine::open(dir.path()).unwrap();
            assert_eq!(indexes(&e), (1..=10).collect::<Vec<_>>(), "{zeros_after}");
            e.insert_logs(vec![(11, value(111, 7))]).unwrap();
            e.sync().unwrap();
        }
        let e = FileEngine::open(dir.path()).unwrap();
        assert_eq!(e.last_log().unwrap(), Some((11, value(111, 7))));
    }
}

/// The zeros written ahead of the newest segment's records survive a reopen (they are what
/// makes its syncs cheap), are written over by later appends, and are cut off when the
/// segment is closed for the next, even when the process that wrote them is not the one that
/// closes it. Anything but zeros after the records is cut at open.
#[test]
fn zeros_ahead_are_kept_across_a_reopen_and_cut_at_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let open = || FileEngine::open_with_segment_bytes(dir.path(), 16 << 10).unwrap();
    let newest_len = || {
        let names = segments(dir.path());
        std::fs::metadata(dir.path().join(names.last().unwrap()))
            .unwrap()
            .len()
    };
    {
        let e = open();
        e.insert_logs(vec![(1, value(1, 1000))]).unwrap();
        e.sync().unwrap();
    }
    let before = newest_len();
    assert_eq!(before, 16 << 10, "zeros up to the segment's size");
    {
        let e = open();
        assert_eq!(newest_len(), before, "the zero tail is kept at open");
        for i in 2..=40u64 {
            e.insert_logs(vec![(i, value(i, 1000))]).unwrap();
        }
        e.sync().unwrap();
    }
    let names = segments(dir.path());
    assert!(names.len() >= 3, "{names:?}");
    for n in &names[..names.len() - 1] {
        let b = std::fs::read(dir.path().join(n)).unwrap();
        assert!(
            b[b.len() - 8..].iter().any(|x| *x != 0),
            "{n}: cut to its records when the next segment was started"
        );
    }
    let e = open();
    assert_eq!(indexes(&e), (1..=40).collect::<Vec<_>>());
    drop(e);
    // Something other than zeros at the very end: not a tail to keep.
    let newest = dir.path().join(segments(dir.path()).last().unwrap());
    let mut b = std::fs::read(&newest).unwrap();
    let records_end = b.iter().rposition(|x| *x != 0).unwrap() + 1;
    assert!(b.len() > records_end, "the newest segment ends in zeros");
    *b.last_mut().unwrap() = 0xab;
    std::fs::write(&newest, &b).unwrap();
    let e = open();
    assert_eq!(indexes(&e), (1..=40).collect::<Vec<_>>());
    drop(e);
    let cut = std::fs::metadata(&newest).unwrap().len();
    assert!(
        cut < b.len() as u64 && cut >= records_end as u64 - 8,
        "cut after the records: {cut} of {}, records end near {records_end}",
        b.len()
    );
}

/// Only the newest segment may end in zeros: an older one was cut to its records before the
/// next was started, so zeros after its records were never written by the engine.
#[test]
fn zeros_after_the_records_of_an_older_segment_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = FileEngine::open_with_segment_bytes(dir.path(), 16 << 10).unwrap();
        for i in 1..=40u64 {
            e.insert_logs(vec![(i, value(i, 2000))]).unwrap();
        }
        e.sync().unwrap();
    }
    let names = segments(dir.path());
    assert!(names.len() >= 3, "{names:?}");
    let first = dir.path().join(&names[0]);
    let b = std::fs::read(&first).unwrap();
    assert!(
        b[b.len() - 8..].iter().any(|x| *x != 0),
        "an older segment ends at its last record, not in zeros"
    );
    let mut padded = b.clone();
    padded.extend_from_slice(&[0; 4096]);
    std::fs::write(&first, &padded).unwrap();
    let err = FileEngine::open(dir.path()).err().expect("refused");
    assert!(err.0.contains("damaged"), "{err}");
    std::fs::write(&first, &b).unwrap();
    FileEngine::open(dir.path()).unwrap();
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

/// A power cut after a segment was started, before any sync of it, can keep its header and
/// lose the copy of the metadata after it; the older segments still hold the values. They
/// are deleted once they hold no live entry: the values must not go with them.
#[test]
fn metadata_outlives_a_torn_copy_in_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let open = || FileEngine::open_with_segment_bytes(dir.path(), 16 << 10).unwrap();
    {
        let e = open();
        e.put_meta("vote", b"v1".to_vec()).unwrap();
        for i in 1..=40u64 {
            e.insert_logs(vec![(i, value(i, 2000))]).unwrap();
        }
        e.sync().unwrap();
    }
    assert!(segments(dir.path()).len() >= 3);
    // The newest segment: its header record (8 + 1 + 20 + 4 bytes) and nothing after it.
    let newest = dir.path().join(segments(dir.path()).last().unwrap());
    let b = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &b[..33]).unwrap();
    {
        let e = open();
        let last = e.last_log().unwrap().unwrap().0;
        e.remove_logs_upto(last).unwrap();
        e.sync().unwrap();
        e.sync().unwrap();
    }
    let e = open();
    assert_eq!(e.get_meta("vote").unwrap(), Some(b"v1".to_vec()));
}
