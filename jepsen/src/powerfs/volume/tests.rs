//! The power-loss model's rules, each tested both ways on a [`Volume`] without FUSE: what a
//! cut keeps and what it drops. Through the kernel, the same rules are `tests/powerfs.rs`'s.

use super::*;

fn n(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Creates `name` in the root with `content`, returning (ino, open handle).
fn file(v: &mut Volume, name: &str, content: &[u8]) -> (u64, u64) {
    let (a, _) = v.create(ROOT, n(name), 0o644, 0, 0, true).unwrap();
    let fh = v.open(a.ino).unwrap();
    v.write(fh, a.ino, 0, content).unwrap();
    (a.ino, fh)
}

fn content(v: &mut Volume, name: &str) -> Option<Vec<u8>> {
    let a = v.lookup(ROOT, n(name)).ok()?;
    let fh = v.open(a.ino).unwrap();
    let c = v.read(fh, a.ino, 0, usize::MAX).unwrap();
    v.release(fh);
    Some(c)
}

#[test]
fn a_write_without_fsync_is_gone_after_a_cut() {
    let mut v = Volume::default();
    file(&mut v, "a", b"hello");
    v.fsyncdir(ROOT).unwrap();
    assert_eq!(content(&mut v, "a").unwrap(), b"hello");
    v.cut();
    assert_eq!(content(&mut v, "a").unwrap(), b"", "name durable, data not");
}

#[test]
fn fsync_of_file_and_directory_keeps_both() {
    let mut v = Volume::default();
    let (ino, fh) = file(&mut v, "a", b"hello");
    v.fsync(fh, ino).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.write(fh, ino, 5, b" world").unwrap();
    v.cut();
    assert_eq!(content(&mut v, "a").unwrap(), b"hello");
}

#[test]
fn a_file_fsynced_without_its_directory_loses_its_name() {
    let mut v = Volume::default();
    let (ino, fh) = file(&mut v, "a", b"hello");
    v.fsync(fh, ino).unwrap();
    let r = v.cut();
    assert!(content(&mut v, "a").is_none());
    assert_eq!(r.inodes_dropped, 1);
    assert_eq!(r.handles_closed, 1);
}

#[test]
fn a_rename_is_durable_only_after_the_directory_fsync() {
    let mut v = Volume::default();
    let (ino, fh) = file(&mut v, "tmp", b"new");
    v.fsync(fh, ino).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.rename(ROOT, n("tmp"), ROOT, n("final"), false).unwrap();
    v.cut();
    assert_eq!(content(&mut v, "tmp").unwrap(), b"new");
    assert!(content(&mut v, "final").is_none());
    v.rename(ROOT, n("tmp"), ROOT, n("final"), false).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.cut();
    assert!(content(&mut v, "tmp").is_none());
    assert_eq!(content(&mut v, "final").unwrap(), b"new");
}

#[test]
fn an_unlink_without_directory_fsync_comes_back_with_its_durable_data() {
    let mut v = Volume::default();
    let (ino, fh) = file(&mut v, "a", b"kept");
    v.fsync(fh, ino).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.write(fh, ino, 0, b"lost").unwrap();
    v.release(fh);
    v.unlink(ROOT, n("a")).unwrap();
    assert!(content(&mut v, "a").is_none());
    v.cut();
    assert_eq!(content(&mut v, "a").unwrap(), b"kept");
    v.unlink(ROOT, n("a")).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.cut();
    assert!(content(&mut v, "a").is_none());
    assert_eq!(v.inodes.len(), 1, "only the root is left");
}

#[test]
fn truncation_and_growth_follow_the_same_rule() {
    let mut v = Volume::default();
    let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let (ino, fh) = file(&mut v, "a", &big);
    v.fsync(fh, ino).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.set_size(ino, 10).unwrap();
    v.set_size(ino, 40_000).unwrap();
    let mut expect = big[..10].to_vec();
    expect.resize(40_000, 0);
    assert_eq!(v.read(fh, ino, 0, usize::MAX).unwrap(), expect);
    v.cut();
    assert_eq!(
        content(&mut v, "a").unwrap(),
        big,
        "the truncation was not synced"
    );
    let a = v.lookup(ROOT, n("a")).unwrap();
    let fh = v.open(a.ino).unwrap();
    v.set_size(a.ino, 10).unwrap();
    v.fsync(fh, a.ino).unwrap();
    v.cut();
    assert_eq!(content(&mut v, "a").unwrap(), &big[..10]);
}

#[test]
fn a_directory_needs_its_parent_fsynced_and_its_entries_its_own() {
    let mut v = Volume::default();
    let d = v.mkdir(ROOT, n("d"), 0o755, 0, 0).unwrap();
    let (f, _) = v.create(d.ino, n("f"), 0o644, 0, 0, true).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.cut();
    let d2 = v.lookup(ROOT, n("d")).unwrap();
    assert_eq!(d2.ino, d.ino);
    assert!(v.lookup(d.ino, n("f")).is_err(), "d was never fsynced");
    assert!(v.getattr(f.ino).is_err());
}

#[test]
fn a_handle_from_before_a_cut_fails_with_eio() {
    let mut v = Volume::default();
    let (ino, fh) = file(&mut v, "a", b"x");
    v.fsync(fh, ino).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.cut();
    assert_eq!(v.write(fh, ino, 0, b"y"), Err(libc::EIO));
    assert_eq!(v.fsync(fh, ino), Err(libc::EIO));
    assert_eq!(v.cuts(), 1);
}

#[test]
fn pages_shared_with_the_durable_copy_are_copied_on_write() {
    let mut v = Volume::default();
    let (ino, fh) = file(&mut v, "a", &[1u8; 40_000]);
    v.fsync(fh, ino).unwrap();
    v.fsyncdir(ROOT).unwrap();
    v.write(fh, ino, 20_000, &[2u8; 10]).unwrap();
    let now = v.read(fh, ino, 19_995, 20).unwrap();
    assert_eq!(&now[..5], &[1; 5]);
    assert_eq!(&now[5..15], &[2; 10]);
    v.cut();
    assert_eq!(content(&mut v, "a").unwrap(), vec![1u8; 40_000]);
}

#[test]
fn rename_refuses_what_rename_2_refuses() {
    let mut v = Volume::default();
    let d = v.mkdir(ROOT, n("d"), 0o755, 0, 0).unwrap();
    v.mkdir(d.ino, n("e"), 0o755, 0, 0).unwrap();
    file(&mut v, "f", b"");
    assert_eq!(
        v.rename(ROOT, n("d"), d.ino, n("x"), false),
        Err(libc::EINVAL)
    );
    assert_eq!(
        v.rename(ROOT, n("f"), ROOT, n("d"), false),
        Err(libc::EISDIR)
    );
    assert_eq!(
        v.rename(ROOT, n("d"), ROOT, n("f"), false),
        Err(libc::ENOTDIR)
    );
    assert_eq!(
        v.rename(ROOT, n("f"), ROOT, n("d"), true),
        Err(libc::EEXIST)
    );
    assert_eq!(v.rmdir(ROOT, n("d")), Err(libc::ENOTEMPTY));
    assert_eq!(v.unlink(ROOT, n("d")), Err(libc::EISDIR));
}
