//! The power-loss model, without FUSE: a tree of directories and files that keeps, beside
//! what programs see now, what a disk would still hold after a power cut.
//!
//! - A file's data and size become durable when the file is fsynced (`fsync` or `fdatasync`
//!   of any handle of it); until then a cut takes every write and truncation since the last
//!   one. A file that was never fsynced is empty after a cut (if its name survives).
//! - A directory's entries (create, mkdir, unlink, rmdir, rename) become durable when the
//!   directory itself is fsynced. A rename touches two directories when it moves an entry
//!   between them; each side becomes durable with its own directory's fsync.
//! - A cut makes the durable state current: names and data that were not made durable are
//!   gone, inodes no longer reachable from the root are dropped, and every open handle dies
//!   (its next use is EIO).
//!
//! Not modelled: torn or reordered writes between two fsyncs (a cut loses all of them, as
//! LazyFS's default does, never a part), hard links, symbolic links, extended attributes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// Files are kept in pages of this size, shared between the current and the durable copy
/// until one of them changes (copy on write), so an fsync copies only the pages it dirtied.
const PAGE: u64 = 16 * 1024;

/// An errno.
pub type Errno = i32;
pub type Res<T> = Result<T, Errno>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What `stat` shows of an inode.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// A file's bytes: a size and the pages that are not all zeros.
#[derive(Debug, Clone, Default)]
struct Data {
    size: u64,
    pages: BTreeMap<u64, Arc<Vec<u8>>>,
}

impl Data {
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        if offset >= self.size {
            return Vec::new();
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = vec![0u8; (end - offset) as usize];
        for (idx, page) in self.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let start = idx * PAGE;
            let from = offset.max(start);
            let to = end.min(start + PAGE);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - start) as usize..(to - start) as usize]);
        }
        out
    }

    fn write(&mut self, offset: u64, buf: &[u8], dirty: &mut BTreeSet<u64>) {
        let mut at = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let idx = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = rest.len().min(PAGE as usize - within);
            let page = self
                .pages
                .entry(idx)
                .or_insert_with(|| Arc::new(vec![0; PAGE as usize]));
            Arc::make_mut(page)[within..within + n].copy_from_slice(&rest[..n]);
            dirty.insert(idx);
            at += n as u64;
            rest = &rest[n..];
        }
        self.size = self.size.max(offset + buf.len() as u64);
    }

    fn truncate(&mut self, size: u64, dirty: &mut BTreeSet<u64>) {
        if size < self.size {
            // Pages wholly past the end go; the tail of the last one is zeroed, so that
            // growing the file again shows zeros.
            let first_gone = size.div_ceil(PAGE);
            let gone: Vec<u64> = self.pages.range(first_gone..).map(|(k, _)| *k).collect();
            for idx in gone {
                self.pages.remove(&idx);
                dirty.insert(idx);
            }
            if !size.is_multiple_of(PAGE) {
                if let Some(page) = self.pages.get_mut(&(size / PAGE)) {
                    Arc::make_mut(page)[(size % PAGE) as usize..].fill(0);
                    dirty.insert(size / PAGE);
                }
            }
        }
        self.size = size;
    }
}

#[derive(Debug, Default)]
struct File {
    cur: Data,
    /// As of the last fsync (empty if never).
    dur: Data,
    /// Pages changed since the last fsync.
    dirty: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct Dir {
    cur: BTreeMap<OsString, u64>,
    /// As of the last fsync of this directory.
    dur: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Node {
    File(File),
    Dir(Dir),
}

#[derive(Debug)]
struct Inode {
    node: Node,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Inode {
    fn new(node: Node, perm: u16, uid: u32, gid: u32) -> Self {
        let now = SystemTime::now();
        Inode {
            node,
            perm,
            uid,
            gid,
            mtime: now,
            ctime: now,
        }
    }

    fn touch(&mut self) {
        self.mtime = SystemTime::now();
        self.ctime = self.mtime;
    }
}

/// What a cut dropped, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Pages of file data written since their file's last fsync.
    pub dirty_pages: usize,
    /// Inodes that were reachable before and are gone after.
    pub inodes_dropped: usize,
    /// Handles that were open (they now fail with EIO).
    pub handles_closed: usize,
}

/// The whole file system: inodes, open handles, and the number of cuts so far.
#[derive(Debug)]
pub struct Volume {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Open handles: handle -> inode. A cut clears them.
    handles: HashMap<u64, u64>,
    next_handle: u64,
    cuts: u64,
}

impl Default for Volume {
    fn default() -> Self {
        Self::new(0, 0)
    }
}

impl Volume {
    /// An empty volume whose root belongs to `uid`/`gid`. The empty root is durable.
    pub fn new(uid: u32, gid: u32) -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(ROOT, Inode::new(Node::Dir(Dir::default()), 0o755, uid, gid));
        Volume {
            inodes,
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_handle: 1,
            cuts: 0,
        }
    }

    /// How many cuts this volume went through.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    fn inode(&self, ino: u64) -> Res<&Inode> {
        self.inodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Res<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn dir(&self, ino: u64) -> Res<&Dir> {
        match &self.inode(ino)?.node {
            Node::Dir(d) => Ok(d),
            Node::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Res<&mut Dir> {
        match &mut self.inode_mut(ino)?.node {
            Node::Dir(d) => Ok(d),
            Node::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Res<&mut File> {
        match &mut self.inode_mut(ino)?.node {
            Node::File(f) => Ok(f),
            Node::Dir(_) => Err(libc::EISDIR),
        }
    }

    pub fn getattr(&self, ino: u64) -> Res<Attr> {
        let i = self.inode(ino)?;
        let (kind, size) = match &i.node {
            Node::File(f) => (Kind::File, f.cur.size),
            Node::Dir(d) => (Kind::Dir, d.cur.len() as u64),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            perm: i.perm,
            uid: i.uid,
            gid: i.gid,
            mtime: i.mtime,
            ctime: i.ctime,
        })
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Res<Attr> {
        let ino = *self.dir(parent)?.cur.get(name).ok_or(libc::ENOENT)?;
        self.getattr(ino)
    }

    /// Creates a file, or with `exclusive` false opens an existing one. Returns its
    /// attributes and whether it was created.
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
        exclusive: bool,
    ) -> Res<(Attr, bool)> {
        if let Some(&ino) = self.dir(parent)?.cur.get(name) {
            if exclusive {
                return Err(libc::EEXIST);
            }
            let a = self.getattr(ino)?;
            if a.kind == Kind::Dir {
                return Err(libc::EISDIR);
            }
            return Ok((a, false));
        }
        let ino = self.add(parent, name, Node::File(File::default()), perm, uid, gid)?;
        Ok((self.getattr(ino)?, true))
    }

    pub fn mkdir(&mut self, parent: u64, name: &OsStr, perm: u16, uid: u32, gid: u32) -> Res<Attr> {
        if self.dir(parent)?.cur.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.add(parent, name, Node::Dir(Dir::default()), perm, uid, gid)?;
        self.getattr(ino)
    }

    fn add(
        &mut self,
        parent: u64,
        name: &OsStr,
        node: Node,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Res<u64> {
        if name.len() > 255 {
            return Err(libc::ENAMETOOLONG);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(node, perm, uid, gid));
        self.dir_mut(parent)?.cur.insert(name.to_owned(), ino);
        self.inode_mut(parent)?.touch();
        Ok(ino)
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let ino = *self.dir(parent)?.cur.get(name).ok_or(libc::ENOENT)?;
        if self.getattr(ino)?.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        self.dir_mut(parent)?.cur.remove(name);
        self.inode_mut(parent)?.touch();
        self.collect();
        Ok(())
    }

    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let ino = *self.dir(parent)?.cur.get(name).ok_or(libc::ENOENT)?;
        if !self.dir(ino)?.cur.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.dir_mut(parent)?.cur.remove(name);
        self.inode_mut(parent)?.touch();
        self.collect();
        Ok(())
    }

    /// rename(2); with `noreplace` an existing target is EEXIST.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        noreplace: bool,
    ) -> Res<()> {
        let ino = *self.dir(parent)?.cur.get(name).ok_or(libc::ENOENT)?;
        let moving = self.getattr(ino)?.kind;
        if let Some(&target) = self.dir(newparent)?.cur.get(newname) {
            if target == ino {
                return Ok(());
            }
            if noreplace {
                return Err(libc::EEXIST);
            }
            match (moving, self.getattr(target)?.kind) {
                (Kind::Dir, Kind::File) => return Err(libc::ENOTDIR),
                (Kind::File, Kind::Dir) => return Err(libc::EISDIR),
                (Kind::Dir, Kind::Dir) if !self.dir(target)?.cur.is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                _ => {}
            }
        }
        if moving == Kind::Dir && self.is_within(newparent, ino) {
            return Err(libc::EINVAL);
        }
        self.dir_mut(parent)?.cur.remove(name);
        self.dir_mut(newparent)?.cur.insert(newname.to_owned(), ino);
        self.inode_mut(parent)?.touch();
        self.inode_mut(newparent)?.touch();
        self.collect();
        Ok(())
    }

    /// Whether `ino` is `ancestor` or below it in the current tree.
    fn is_within(&self, ino: u64, ancestor: u64) -> bool {
        if ino == ancestor {
            return true;
        }
        let Ok(d) = self.dir(ancestor) else {
            return false;
        };
        d.cur.values().any(|c| self.is_within(ino, *c))
    }

    pub fn readdir(&self, ino: u64) -> Res<Vec<(OsString, u64, Kind)>> {
        let d = self.dir(ino)?;
        d.cur
            .iter()
            .map(|(n, i)| Ok((n.clone(), *i, self.getattr(*i)?.kind)))
            .collect()
    }

    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Res<()> {
        let i = self.inode_mut(ino)?;
        i.perm = perm;
        i.ctime = SystemTime::now();
        Ok(())
    }

    /// truncate(2) and ftruncate(2).
    pub fn set_size(&mut self, ino: u64, size: u64) -> Res<()> {
        let f = self.file_mut(ino)?;
        f.cur.truncate(size, &mut f.dirty);
        self.inode_mut(ino)?.touch();
        Ok(())
    }

    /// Opens a handle on `ino`.
    pub fn open(&mut self, ino: u64) -> Res<u64> {
        self.inode(ino)?;
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, ino);
        Ok(fh)
    }

    /// Closes a handle (a handle a cut already closed is ignored).
    pub fn release(&mut self, fh: u64) {
        if self.handles.remove(&fh).is_some() {
            self.collect();
        }
    }

    /// The inode of a live handle: EIO for a handle from before a cut.
    fn handle(&self, fh: u64, ino: u64) -> Res<()> {
        match self.handles.get(&fh) {
            Some(i) if *i == ino => Ok(()),
            Some(_) => Err(libc::EBADF),
            None => Err(libc::EIO),
        }
    }

    pub fn read(&self, fh: u64, ino: u64, offset: u64, len: usize) -> Res<Vec<u8>> {
        self.handle(fh, ino)?;
        match &self.inode(ino)?.node {
            Node::File(f) => Ok(f.cur.read(offset, len)),
            Node::Dir(_) => Err(libc::EISDIR),
        }
    }

    pub fn write(&mut self, fh: u64, ino: u64, offset: u64, buf: &[u8]) -> Res<usize> {
        self.handle(fh, ino)?;
        let f = self.file_mut(ino)?;
        f.cur.write(offset, buf, &mut f.dirty);
        self.inode_mut(ino)?.touch();
        Ok(buf.len())
    }

    /// fsync(2) or fdatasync(2) of a file: its data and size become durable.
    pub fn fsync(&mut self, fh: u64, ino: u64) -> Res<()> {
        self.handle(fh, ino)?;
        let f = self.file_mut(ino)?;
        for idx in std::mem::take(&mut f.dirty) {
            match f.cur.pages.get(&idx) {
                Some(p) => f.dur.pages.insert(idx, p.clone()),
                None => f.dur.pages.remove(&idx),
            };
        }
        f.dur.size = f.cur.size;
        Ok(())
    }

    /// fsync(2) of a directory: its entries become durable.
    pub fn fsyncdir(&mut self, ino: u64) -> Res<()> {
        let d = self.dir_mut(ino)?;
        d.dur = d.cur.clone();
        self.collect();
        Ok(())
    }

    /// The power cut: only what was made durable stays.
    pub fn cut(&mut self) -> CutReport {
        let before = self.reachable(true).len();
        let mut report = CutReport {
            handles_closed: self.handles.len(),
            ..Default::default()
        };
        self.handles.clear();
        for i in self.inodes.values_mut() {
            match &mut i.node {
                Node::File(f) => {
                    report.dirty_pages += f.dirty.len();
                    f.cur = f.dur.clone();
                    f.dirty.clear();
                }
                Node::Dir(d) => d.cur = d.dur.clone(),
            }
        }
        self.collect();
        report.inodes_dropped = before.saturating_sub(self.inodes.len());
        self.cuts += 1;
        report
    }

    /// Inodes reachable from the root through current entries (and with `durable` also
    /// through durable ones).
    fn reachable(&self, durable: bool) -> HashSet<u64> {
        let mut seen = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if let Some(Inode {
                node: Node::Dir(d), ..
            }) = self.inodes.get(&ino)
            {
                let durable_entries = durable.then_some(&d.dur);
                for c in d
                    .cur
                    .values()
                    .chain(durable_entries.into_iter().flatten().map(|(_, v)| v))
                {
                    if seen.insert(*c) {
                        todo.push(*c);
                    }
                }
            }
        }
        seen
    }

    /// Drops inodes that no name (current or durable) reaches and no handle holds.
    fn collect(&mut self) {
        let mut keep = self.reachable(true);
        keep.extend(self.handles.values().copied());
        self.inodes.retain(|ino, _| keep.contains(ino));
    }
}

#[cfg(test)]
mod tests;
