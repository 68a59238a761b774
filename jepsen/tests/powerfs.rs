//! The power-loss file system through the kernel: real syscalls on a FUSE mount, then a cut.
//! Needs root and /dev/fuse (fails loudly without them).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use jepsen::powerfs::PowerFs;

fn mount() -> (tempfile::TempDir, PowerFs) {
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount(&dir.path().join("mnt"))
        .unwrap_or_else(|e| panic!("POWERFS SETUP FAILED: {e}"));
    (dir, fs)
}

fn fsync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

fn read(p: &Path) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    File::open(p).ok()?.read_to_end(&mut v).unwrap();
    Some(v)
}

#[test]
fn a_write_without_fsync_is_gone_after_a_cut_and_with_fsync_it_stays() {
    let (_t, fs) = mount();
    let root = fs.path();
    let mut f = File::create(root.join("a")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    fsync_dir(root);
    f.write_all(b" and more").unwrap();
    // Written through to the file system (no kernel write-back cache): another handle sees it.
    assert_eq!(read(&root.join("a")).unwrap(), b"durable and more");
    let mut g = File::create(root.join("b")).unwrap();
    g.write_all(b"never synced").unwrap();
    let report = fs.cut();
    assert!(report.dirty_pages >= 1, "{report:?}");
    assert_eq!(read(&root.join("a")).unwrap(), b"durable");
    assert!(
        read(&root.join("b")).is_none(),
        "b's name was never made durable"
    );
    // Handles from before the cut are dead.
    let e = f.write_all(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(fs.cuts(), 1);
}

#[test]
fn fdatasync_counts_and_sync_file_range_does_not() {
    let (_t, fs) = mount();
    let root = fs.path();
    let mut f = File::create(root.join("data")).unwrap();
    fsync_dir(root);
    f.write_all(b"first").unwrap();
    f.sync_data().unwrap();
    f.write_all(b" second").unwrap();
    // What sled 0.34 calls after each write: no FUSE request, nothing durable.
    // SAFETY: sync_file_range on an open fd.
    let rc = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            0,
            0,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    fs.cut();
    assert_eq!(read(&root.join("data")).unwrap(), b"first");
}

#[test]
fn a_file_fsynced_without_its_directory_loses_its_name() {
    let (_t, fs) = mount();
    let root = fs.path();
    fs::create_dir(root.join("d")).unwrap();
    fsync_dir(root);
    let mut f = File::create(root.join("d/f")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    fs.cut();
    assert!(root.join("d").is_dir(), "d's own name was made durable");
    assert!(read(&root.join("d/f")).is_none());
    assert_eq!(fs::read_dir(root.join("d")).unwrap().count(), 0);
}

#[test]
fn a_rename_is_durable_only_after_its_directory_is_fsynced() {
    let (_t, fs) = mount();
    let root = fs.path();
    let write_tmp = |content: &[u8]| {
        let mut f = File::create(root.join("conf.tmp")).unwrap();
        f.write_all(content).unwrap();
        f.sync_all().unwrap();
    };
    write_tmp(b"v1");
    fs::rename(root.join("conf.tmp"), root.join("conf")).unwrap();
    fsync_dir(root);
    write_tmp(b"v2");
    fs::rename(root.join("conf.tmp"), root.join("conf")).unwrap();
    assert_eq!(read(&root.join("conf")).unwrap(), b"v2");
    fs.cut();
    assert_eq!(read(&root.join("conf")).unwrap(), b"v1");
    assert!(read(&root.join("conf.tmp")).is_none());
    write_tmp(b"v3");
    fs::rename(root.join("conf.tmp"), root.join("conf")).unwrap();
    fsync_dir(root);
    fs.cut();
    assert_eq!(read(&root.join("conf")).unwrap(), b"v3");
}

#[test]
fn unlink_and_truncate_are_undone_unless_made_durable() {
    let (_t, fs) = mount();
    let root = fs.path();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut f = File::create(root.join("big")).unwrap();
    f.write_all(&big).unwrap();
    f.sync_all().unwrap();
    fsync_dir(root);
    f.set_len(1000).unwrap();
    drop(f);
    fs::remove_file(root.join("big")).unwrap();
    fs.cut();
    assert_eq!(read(&root.join("big")).unwrap(), big);
    let f = OpenOptions::new()
        .write(true)
        .open(root.join("big"))
        .unwrap();
    f.set_len(1000).unwrap();
    f.sync_all().unwrap();
    fs.cut();
    assert_eq!(read(&root.join("big")).unwrap(), &big[..1000]);
}

#[test]
fn what_sled_needs_works_on_it() {
    // sled opens its db with an exclusive flock, reads and writes at offsets, grows the file.
    let (_t, fs) = mount();
    let root = fs.path();
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(root.join("db"))
        .unwrap();
    // SAFETY: flock on an open fd.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[7u8; 4096], 1 << 20).unwrap();
    let mut buf = [1u8; 8];
    f.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(buf, [0; 8], "a hole reads as zeros");
    assert_eq!(f.metadata().unwrap().len(), (1 << 20) + 4096);
    let names: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["db"]);
}
