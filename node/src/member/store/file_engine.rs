//! The `LogEngine` `ballastd` runs on: the log and the metadata as records appended to
//! segment files, made durable by fdatasync, read back through an index kept in memory; the
//! snapshot a file beside them (as on sled, [`SNAPSHOT_FILE`]).
//!
//! Why not sled: sled 0.34 writes every batch under one lock that all other writes wait for,
//! stores values above 4 KiB only as chunks (`chunks.rs`: its blob files are never fsynced),
//! and makes its writes stable with `sync_file_range`, so a sync cost sled's flush and our
//! fdatasync. Here an append of a batch of entries is one `pwrite`, a sync one `fdatasync`.
//!
//! # Files
//!
//! `log-NNNNNNNNNNNNNNNNNNNN` (the segment's sequence number, 20 digits) hold records:
//! `[u32 body length][u32 CRC-32 of the body][body]`, little-endian, the body a kind byte and
//! its fields (see [`Rec`]). Every segment starts with a header record, then a copy of every
//! metadata value, so only the newest segment is needed for metadata. Appends go to the
//! newest segment only; a new one is started (after the old one and the directory are
//! synced) when it passes [`SEGMENT_BYTES`]. The newest segment ends in zeros written ahead
//! of its records ([`ZERO_AHEAD`]: a sync then finds its blocks allocated and the file's size
//! unchanged); an old one is cut to its last record before the next is started. Nothing is ever written in place: a truncation
//! is a record (entries from an index on are gone), a purge too (entries up to an index), and
//! whole segments are deleted from the front, one at a time, by a sync that began after they
//! held no live entry (so the records that ended their entries are durable first).
//!
//! # Recovery
//!
//! Opening reads every segment in order and replays its records into the index. A record
//! that does not check out (short, bad length, bad CRC) is where the last writes before a
//! crash stopped: allowed only in the newest segment (the older ones were synced before
//! the next was started), where the file is cut there, unless all that follows is zeros (the
//! ones written ahead, which appends then overwrite). Anywhere else it is damage to synced
//! data, and the engine refuses to open (so does a gap in the segments' numbers). What was
//! replayed is synced before the engine is used: a killed process may have left it in the
//! page cache only, and from now on the member stands by it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::engine::{EngineError, LogEngine};
use super::file_records::{
    bad, parse, push_entry, push_marker, push_meta, push_record, Rec, FORMAT_VERSION, HEADER_MAGIC,
    K_HEADER, K_PURGE, K_TRUNCATE,
};
use super::sled_engine::{
    check_sync_failed_marker, mark_sync_failed, read_snapshot_file,
    remove_unfinished_snapshot_files, store_snapshot_file,
};
use super::sled_files::create_durable_dir;

/// A segment is closed and a new one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Zeros written ahead of the records, so that most syncs find their blocks allocated and the
/// file's size unchanged: ext4 then syncs the data without a journal commit. A 4 KiB append
/// synced into a growing file took twice as long as into written zeros with three members
/// on one disk (docs/benchmarks.md, "The 4 KiB lone put"). One sync in this many bytes
/// flushes the zeros too.
const ZERO_AHEAD: u64 = 1 << 20;
/// A buffer of zeros for that.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
/// The lock file: held (flock) while the engine is open.
const LOCK_FILE: &str = "LOCK";
const SEGMENT_PREFIX: &str = "log-";

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Where an entry's payload is.
#[derive(Clone, Copy)]
struct Loc {
    seq: u64,
    at: u64,
    len: u32,
}

struct Segment {
    file: Arc<File>,
    /// Bytes written (the offset of the next record).
    len: u64,
    /// Zeros were written from `len` to here (see [`ZERO_AHEAD`]); at least the file's
    /// length (after a failed write of zeros, the segment's size: none are written again).
    /// Never less than `len`.
    zeroed: u64,
    /// Live entries held (segments are deleted from the front once this is 0).
    live: u64,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    index: BTreeMap<u64, Loc>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Segments written since the last sync.
    dirty: BTreeSet<u64>,
    /// A segment was created since the last sync: the directory needs an fsync.
    dir_dirty: bool,
    /// Set when a write failed: what is on disk after the failure is unknown, so nothing is
    /// written after it (a later record behind a torn one would be dropped at recovery).
    failed: Option<String>,
}

/// [`LogEngine`] on segment files (see the module's documentation).
pub struct FileEngine {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Held through each sync, so that syncs never overlap: holds the first failure, which
    /// every later one reports too (see `sync`).
    sync_failed: Mutex<Option<String>>,
    /// A segment is closed once it holds this many bytes ([`SEGMENT_BYTES`]).
    segment_bytes: u64,
    /// The directory, open for its fsyncs (no open that could fail with EMFILE on the way).
    dir_file: File,
    /// Holds the directory's lock while open.
    _lock: File,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{seq:020}"))
}

pub(super) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |e| EngineError(format!("{}: {e}", path.display()))
}

/// How long opening waits for another holder of the directory's lock (a member reopened in
/// the same process, whose sync thread still holds the engine for a moment).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn lock_dir(dir: &Path) -> Result<File, EngineError> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
        let r = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if r == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock || std::time::Instant::now() >= deadline {
            return Err(EngineError(format!(
                "locking {}: {e} (is another ballastd using this data directory?)",
                path.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl FileEngine {
    /// Opens (or creates) the engine in `dir`, replaying every segment (see the module's
    /// documentation).
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// [`FileEngine::open`] with segments of another size (tests use small ones, to see many
    /// segments started and deleted).
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<Self, EngineError> {
        create_durable_dir(dir)?;
        check_sync_failed_marker(dir)?;
        let lock = lock_dir(dir)?;
        remove_unfinished_snapshot_files(dir)?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let name = entry.map_err(io_err(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix(SEGMENT_PREFIX) {
                let seq: u64 = n
                    .parse()
                    .map_err(|_| bad(format!("{}: unexpected file {name}", dir.display())))?;
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut inner = Inner {
            segments: BTreeMap::new(),
            index: BTreeMap::new(),
            meta: BTreeMap::new(),
            dirty: BTreeSet::new(),
            dir_dirty: false,
            failed: None,
        };
        // Segments go only from the front, so the ones left are numbered without a gap.
        if let Some(w) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(bad(format!(
                "{}: log segments {} and {} with none between: a segment is missing; replace \
                 this member (wipe the directory and join it again)",
                dir.display(),
                w[0],
                w[1]
            )));
        }
        for (n, &seq) in seqs.iter().enumerate() {
            let newest = n + 1 == seqs.len();
            let path = segment_path(dir, seq);
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data).map_err(io_err(&path))?;
            let end = replay(&mut inner, seq, &data)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            // Zeros after the last record were written ahead of the records (`ZERO_AHEAD`): no
            // record parses from them. Anything else there is a torn write, or damage.
            let zero_tail = data[end as usize..].iter().all(|b| *b == 0);
            let mut zeroed = data.len() as u64;
            // A segment without a record is cut to nothing before it is removed (below): were
            // it left all zeros, a newer segment made after its removal could reach the disk
            // before the removal does, and then it would be an older segment ending in zeros.
            let keep_zeros = newest && zero_tail && end > 0;
            if end < data.len() as u64 && !keep_zeros {
                if !newest {
                    return Err(bad(format!(
                        "{}: damaged at byte {end} of {} (not the newest segment, so this was \
                         synced data): replace this member (wipe the directory and join it again)",
                        path.display(),
                        data.len()
                    )));
                }
                tracing::warn!(segment = %path.display(), at = end, dropped = data.len() as u64 - end, "the log's last writes before a crash were incomplete; cut there");
                file.set_len(end).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                zeroed = end;
            }
            if end == 0 {
                // Created, but a crash came before its header was written: nothing in it.
                drop(file);
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            // What a killed process wrote may be in the page cache only: replayed here, it
            // is what this member now stands by, so the sync at the end of `open` makes it
            // durable (and the directory: a segment may have been created, or removed above).
            inner.dirty.insert(seq);
            inner.dir_dirty = true;
            inner.segments.insert(
                seq,
                Segment {
                    file: Arc::new(file),
                    len: end,
                    zeroed,
                    live: 0,
                },
            );
        }
        for loc in inner.index.values() {
            if let Some(s) = inner.segments.get_mut(&loc.seq) {
                s.live += 1;
            }
        }
        let engine = FileEngine {
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
            sync_failed: Mutex::new(None),
            segment_bytes,
            dir_file: File::open(dir).map_err(io_err(dir))?,
            _lock: lock,
        };
        {
            let mut inner = engine.lock()?;
            if inner.segments.is_empty() {
                let next = seqs.last().map_or(1, |s| s + 1);
                engine.start_segment(&mut inner, next)?;
            } else if inner.segments.len() > 1 {
                // The newest segment's copy of the metadata may be incomplete: its first
                // write, never synced, torn by a power cut, while older segments still hold
                // what it lacks. Those are deleted once they hold no live entry, taking the
                // values with them (cold review). A new segment gets every value replayed.
                engine.rotate(&mut inner)?;
            }
        }
        engine.sync()?;
        Ok(engine)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, EngineError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &inner.failed {
            return Err(bad(format!("an earlier write failed: {f}")));
        }
        Ok(inner)
    }

    /// Creates segment `seq` with its header and a copy of every metadata value.
    fn start_segment(&self, inner: &mut Inner, seq: u64) -> Result<(), EngineError> {
        let path = segment_path(&self.dir, seq);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut buf = Vec::new();
        push_record(
            &mut buf,
            &[&[K_HEADER], HEADER_MAGIC, &FORMAT_VERSION.to_le_bytes()],
        );
        for (k, v) in &inner.meta {
            push_meta(&mut buf, k, Some(v))?;
        }
        inner.segments.insert(
            seq,
            Segment {
                file: Arc::new(file),
                len: 0,
                zeroed: 0,
                live: 0,
            },
        );
        inner.dir_dirty = true;
        self.write(inner, seq, &buf)
    }

    /// Appends `buf` to segment `seq`, then zeros ahead of it when the written zeros run out
    /// (up to [`ZERO_AHEAD`], not past the segment's size). A failure to write the record
    /// poisons the engine (see `Inner::failed`); one to write zeros only ends them for this
    /// segment (they are never read as records).
    fn write(&self, inner: &mut Inner, seq: u64, buf: &[u8]) -> Result<(), EngineError> {
        let limit = self.segment_bytes;
        let seg = inner.segments.get_mut(&seq).expect("segment exists");
        match seg.file.write_all_at(buf, seg.len) {
            Ok(()) => {
                seg.len += buf.len() as u64;
                seg.zeroed = seg.zeroed.max(seg.len);
                if seg.zeroed < limit && seg.zeroed - seg.len < ZERO_AHEAD / 2 {
                    let to = (seg.len + ZERO_AHEAD).min(limit);
                    if let Err(e) = write_zeros(&seg.file, seg.zeroed, to) {
                        tracing::warn!(segment = seq, error = %e, "writing zeros ahead of the log; going on without");
                        // Never tried again in this segment.
                        seg.zeroed = limit;
                    } else {
                        seg.zeroed = to;
                    }
                }
                inner.dirty.insert(seq);
                Ok(())
            }
            Err(e) => {
                let why = format!("writing log segment {seq}: {e}");
                inner.failed = Some(why.clone());
                Err(bad(why))
            }
        }
    }

    /// The newest segment, after starting a new one if it is full (the full one synced
    /// first, and the directory if it holds a segment not yet synced in it, so that only the
    /// newest segment can ever end in a torn record and no older one can be missing).
    fn current(&self, inner: &mut Inner, adding: u64) -> Result<u64, EngineError> {
        let (&seq, seg) = inner.segments.last_key_value().expect("a segment is open");
        if seg.len + adding <= self.segment_bytes || seg.live == 0 {
            return Ok(seq);
        }
        self.rotate(inner)
    }

    /// Closes the newest segment and starts the next (see [`FileEngine::current`]).
    fn rotate(&self, inner: &mut Inner) -> Result<u64, EngineError> {
        let (&seq, seg) = inner.segments.last_key_value().expect("a segment is open");
        // The zeros written ahead are cut off first, so that only the newest segment can
        // end in anything but a record (opening refuses an older one that does), always,
        // whatever `zeroed` says: a cut made by an earlier process killed before its sync may
        // still be in the page cache only (cold review). Then the segment's data and size are
        // synced (once per segment), and the directory too, always: a concurrent sync may
        // have taken `dir_dirty` for the old segment's name and not fsynced it yet.
        let r = seg
            .file
            .set_len(seg.len)
            .and_then(|()| seg.file.sync_all())
            .and_then(|()| self.dir_file.sync_all());
        if let Err(e) = r {
            // Sticky: `sync` reports it too (a sync racing with this one on the same file
            // would not see the write-back error again).
            let why = format!("syncing log segment {seq}: {e}");
            inner.failed = Some(why.clone());
            mark_sync_failed(&self.dir, &why);
            return Err(bad(why));
        }
        inner.dirty.remove(&seq);
        self.start_segment(inner, seq + 1)?;
        Ok(seq + 1)
    }

    /// Drops entries with index in `range` from the index.
    fn drop_entries(inner: &mut Inner, range: impl std::ops::RangeBounds<u64>) {
        let gone: Vec<u64> = inner.index.range(range).map(|(i, _)| *i).collect();
        for i in gone {
            if let Some(loc) = inner.index.remove(&i) {
                if let Some(s) = inner.segments.get_mut(&loc.seq) {
                    s.live -= 1;
                }
            }
        }
    }

    fn append_marker(&self, kind: u8, index: u64) -> Result<(), EngineError> {
        let mut inner = self.lock()?;
        let mut buf = Vec::new();
        push_marker(&mut buf, kind, index);
        let seq = self.current(&mut inner, buf.len() as u64)?;
        self.write(&mut inner, seq, &buf)?;
        match kind {
            K_TRUNCATE => Self::drop_entries(&mut inner, index..),
            _ => Self::drop_entries(&mut inner, ..=index),
        }
        Ok(())
    }

    /// Segments from the front that hold no live entry, but never the newest (whose metadata
    /// copy replaces theirs).
    fn dead_front(inner: &Inner) -> Vec<u64> {
        let newest = *inner
            .segments
            .keys()
            .next_back()
            .expect("a segment is open");
        inner
            .segments
            .iter()
            .take_while(|(&seq, s)| seq < newest && s.live == 0)
            .map(|(&seq, _)| seq)
            .collect()
    }

    /// Deletes `dead` (from [`FileEngine::dead_front`] when a sync began, after that sync
    /// succeeded): one at a time from the front, each unlink made durable before the next, so
    /// that no crash leaves an older segment without a newer one that it preceded.
    fn delete_segments(&self, dead: Vec<u64>) -> Result<(), String> {
        for seq in dead {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.segments.first_key_value().map(|(s, _)| *s) != Some(seq) {
                return Ok(());
            }
            inner.segments.remove(&seq);
            inner.dirty.remove(&seq);
            drop(inner);
            let path = segment_path(&self.dir, seq);
            // A segment left behind replays to nothing live (the records that ended its
            // entries are durable), but the ones after it must stay too (no gap): stop.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "removing a log segment failed; it stays until the next start");
                return Ok(());
            }
            self.dir_file
                .sync_all()
                .map_err(|e| format!("syncing {}: {e}", self.dir.display()))?;
        }
        Ok(())
    }
}

/// Replays one segment's records into `inner`; returns where the intact records end.
fn replay(inner: &mut Inner, seq: u64, data: &[u8]) -> Result<u64, String> {
    let mut at = 0usize;
    while let Some((rec, next)) = parse(data, at) {
        match rec {
            Rec::Header { version } => {
                if at != 0 {
                    return Err(format!("a segment header at byte {at}"));
                }
                if version != FORMAT_VERSION {
                    return Err(format!(
                        "segment format {version}, this ballastd reads {FORMAT_VERSION}: a newer \
                         ballastd wrote it"
                    ));
                }
            }
            _ if at == 0 => return Err("no segment header".into()),
            Rec::Entry {
                index,
                payload_at,
                len,
            } => {
                // An entry replaces what was at its index, nothing else (a truncation is a
                // record of its own).
                inner.index.insert(
                    index,
                    Loc {
                        seq,
                        at: payload_at as u64,
                        len: len as u32,
                    },
                );
            }
            Rec::MetaPut { key, value } => {
                inner.meta.insert(key.to_string(), value.to_vec());
            }
            Rec::MetaRemove { key } => {
                inner.meta.remove(key);
            }
            Rec::Truncate { from } => {
                let gone: Vec<u64> = inner.index.range(from..).map(|(i, _)| *i).collect();
                for i in gone {
                    inner.index.remove(&i);
                }
            }
            Rec::Unknown { kind } => {
                return Err(format!(
                    "a record of kind {kind} at byte {at}: a newer ballastd wrote it"
                ))
            }
            Rec::Purge { upto } => {
                let gone: Vec<u64> = inner.index.range(..=upto).map(|(i, _)| *i).collect();
                for i in gone {
                    inner.index.remove(&i);
                }
            }
        }
        at = next;
    }
    Ok(at as u64)
}

impl LogEngine for FileEngine {
    fn insert_logs(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), EngineError> {
        if entries.is_empty() {
            return Ok(());
        }
        // Encoded (and checksummed) before the lock: readers and syncs wait for it.
        let mut buf = Vec::with_capacity(entries.iter().map(|(_, v)| v.len() + 17).sum());
        let mut placed = Vec::with_capacity(entries.len());
        for (i, v) in &entries {
            placed.push((*i, push_entry(&mut buf, *i, v)?, v.len() as u32));
        }
        let mut inner = self.lock()?;
        let seq = self.current(&mut inner, buf.len() as u64)?;
        let base = inner.segments[&seq].len;
        self.write(&mut inner, seq, &buf)?;
        // Each entry replaces only what was at its index (as replay does).
        for (i, at, len) in placed {
            let loc = Loc {
                seq,
                at: base + at as u64,
                len,
            };
            if let Some(old) = inner.index.insert(i, loc) {
                if let Some(s) = inner.segments.get_mut(&old.seq) {
                    s.live -= 1;
                }
            }
            inner.segments.get_mut(&seq).expect("segment").live += 1;
        }
        Ok(())
    }

    fn read_logs(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (locs, files) = {
            let inner = self.lock()?;
            let locs: Vec<(u64, Loc)> = inner
                .index
                .range(start..end)
                .map(|(i, l)| (*i, *l))
                .collect();
            let files: BTreeMap<u64, Arc<File>> = locs
                .iter()
                .map(|(_, l)| (l.seq, inner.segments[&l.seq].file.clone()))
                .collect();
            (locs, files)
        };
        let mut out = Vec::with_capacity(locs.len());
        for (i, l) in locs {
            let mut v = vec![0u8; l.len as usize];
            files[&l.seq]
                .read_exact_at(&mut v, l.at)
                .map_err(|e| bad(format!("reading log entry {i}: {e}")))?;
            out.push((i, v));
        }
        Ok(out)
    }

    fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, EngineError> {
        let (i, l, file) = {
            let inner = self.lock()?;
            match inner.index.last_key_value() {
                Some((i, l)) => (*i, *l, inner.segments[&l.seq].file.clone()),
                None => return Ok(None),
            }
        };
        let mut v = vec![0u8; l.len as usize];
        file.read_exact_at(&mut v, l.at)
            .map_err(|e| bad(format!("reading log entry {i}: {e}")))?;
        Ok(Some((i, v)))
    }

    fn first_log_index(&self) -> Result<Option<u64>, EngineError> {
        Ok(self.lock()?.index.keys().next().copied())
    }

    fn remove_logs_from(&self, start: u64) -> Result<(), EngineError> {
        if self.lock()?.index.range(start..).next().is_none() {
            return Ok(());
        }
        self.append_marker(K_TRUNCATE, start)
    }

    /// Records the purge; segments at the front that hold no live entry any more are
    /// deleted by the next sync (which makes the purge durable first), run here if there are
    /// any.
    fn remove_logs_upto(&self, end: u64) -> Result<(), EngineError> {
        if self.lock()?.index.range(..=end).next().is_none() {
            return Ok(());
        }
        self.append_marker(K_PURGE, end)?;
        if !Self::dead_front(&*self.lock()?).is_empty() {
            self.sync()?;
        }
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.lock()?.meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), EngineError> {
        let mut inner = self.lock()?;
        let mut buf = Vec::new();
        push_meta(&mut buf, key, Some(&value))?;
        let seq = self.current(&mut inner, buf.len() as u64)?;
        self.write(&mut inner, seq, &buf)?;
        inner.meta.insert(key.to_string(), value);
        Ok(())
    }

    fn remove_meta(&self, key: &str) -> Result<(), EngineError> {
        let mut inner = self.lock()?;
        if !inner.meta.contains_key(key) {
            return Ok(());
        }
        let mut buf = Vec::new();
        push_meta(&mut buf, key, None)?;
        let seq = self.current(&mut inner, buf.len() as u64)?;
        self.write(&mut inner, seq, &buf)?;
        inner.meta.remove(key);
        Ok(())
    }

    fn put_snapshot(&self, value: &[u8]) -> Result<(), EngineError> {
        store_snapshot_file(&self.dir, value)
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, EngineError> {
        read_snapshot_file(&self.dir)
    }

    /// fdatasyncs every segment written since the last sync (and the directory if a segment
    /// was created), without holding appends up meanwhile. As on sled: syncs never overlap,
    /// and once one failed every later one fails (Linux reports a failed write-back to one
    /// fsync only), with a `SYNC-FAILED` marker that makes the next open refuse.
    fn sync(&self) -> Result<(), EngineError> {
        let mut failed = self.sync_failed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(first) = failed.as_ref() {
            return Err(EngineError(format!("an earlier sync failed: {first}")));
        }
        let (files, dir, dead) = {
            let mut inner = self.lock()?;
            // Dead now: every record that ended their entries was written before this point,
            // so this sync makes it durable before they go.
            let dead = Self::dead_front(&inner);
            let dirty = std::mem::take(&mut inner.dirty);
            let files: Vec<(u64, Arc<File>)> = dirty
                .into_iter()
                .filter_map(|s| inner.segments.get(&s).map(|g| (s, g.file.clone())))
                .collect();
            (files, std::mem::take(&mut inner.dir_dirty), dead)
        };
        let mut r: Result<(), String> = Ok(());
        for (seq, f) in &files {
            if let Err(e) = f.sync_data() {
                r = Err(format!("syncing log segment {seq}: {e}"));
                break;
            }
        }
        if r.is_ok() && dir {
            r = self
                .dir_file
                .sync_all()
                .map_err(|e| format!("syncing {}: {e}", self.dir.display()));
        }
        if r.is_ok() {
            // A rollover's own sync that failed (see `current`) counts here too.
            if let Err(e) = self.lock() {
                r = Err(e.0);
            }
        }
        if r.is_ok() && !dead.is_empty() {
            r = self.delete_segments(dead);
        }
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                mark_sync_failed(&self.dir, &e);
                *failed = Some(e.clone());
                Err(EngineError(e))
            }
        }
    }
}
