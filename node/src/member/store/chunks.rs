//! Values of any size on a sled tree, each sled record at most [`CHUNK`] bytes.
//!
//! sled 0.34 writes a page (a tree node, or one update to it) that is larger than a quarter
//! of its 512 KiB segment to a separate blob file, which it never fsyncs: an acknowledged
//! value could vanish in a power cut with the node around it, or leave an empty blob that
//! sled cannot open. Keeping every value at most 4 KiB keeps every page far below that: a
//! leaf splits above 16 entries and a merge adds at most 3, so a node holds at most about
//! 20 × (4 KiB + key) ≈ 82 KiB, against the 131,020-byte threshold. `tests/store_suite.rs`
//! writes values of every size and checks that sled made no blob.
//!
//! Layout: a value of at most `CHUNK` bytes is stored under its key as it always was (so
//! directories written before chunking read the same). A longer one is stored under
//! `key ++ sep ++ n` (n a big-endian u32): n = 0 holds the count of chunks and the length,
//! n = 1..=count the bytes. All of it, and the removal of the previous version, is one sled
//! batch, so a value is never seen (or recovered) in part.

use super::engine::EngineError;

/// The largest value stored as one sled record.
pub const CHUNK: usize = 4096;

/// A key of one tree and where its chunks go.
pub struct Slot<'a> {
    pub key: &'a [u8],
    /// Between the key and the chunk number: empty for fixed-length keys (log indexes),
    /// a NUL for metadata names (which never contain one).
    pub sep: &'a [u8],
}

impl Slot<'_> {
    fn prefix(&self) -> Vec<u8> {
        [self.key, self.sep].concat()
    }

    fn chunk_key(&self, n: u32) -> Vec<u8> {
        [self.key, self.sep, &n.to_be_bytes()].concat()
    }

    /// Whether chunks of an earlier value are stored.
    fn has_chunks(&self, tree: &sled::Tree) -> Result<bool, EngineError> {
        let prefix = self.prefix();
        for r in tree.scan_prefix(&prefix) {
            let (k, _) = r.map_err(EngineError::new)?;
            if k.len() == prefix.len() + 4 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds to `batch` the removal of every stored chunk of the key.
    fn remove_chunks(&self, tree: &sled::Tree, batch: &mut sled::Batch) -> Result<(), EngineError> {
        let prefix = self.prefix();
        for r in tree.scan_prefix(&prefix) {
            let (k, _) = r.map_err(EngineError::new)?;
            if k.len() == prefix.len() + 4 {
                batch.remove(k);
            }
        }
        Ok(())
    }

    /// Adds to `batch` the removal of whatever is stored and the writes of `value`.
    pub fn write(
        &self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
        value: Vec<u8>,
    ) -> Result<(), EngineError> {
        self.remove_chunks(tree, &mut *batch)?;
        if value.len() <= CHUNK {
            batch.insert(self.key, value);
            return Ok(());
        }
        batch.remove(self.key);
        let count = value.len().div_ceil(CHUNK) as u32;
        let header = [
            count.to_be_bytes().as_slice(),
            (value.len() as u64).to_be_bytes().as_slice(),
        ]
        .concat();
        batch.insert(self.chunk_key(0), header);
        for (n, c) in value.chunks(CHUNK).enumerate() {
            batch.insert(self.chunk_key(n as u32 + 1), c);
        }
        Ok(())
    }

    /// Stores `value` under the key, replacing what was there, atomically.
    pub fn put(&self, tree: &sled::Tree, value: Vec<u8>) -> Result<(), EngineError> {
        // The common case, a small value where no chunks are: one plain insert (a batch
        // costs sled an extra manifest record).
        if value.len() <= CHUNK && !self.has_chunks(tree)? {
            tree.insert(self.key, value).map_err(EngineError::new)?;
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        self.write(tree, &mut batch, value)?;
        tree.apply_batch(batch).map_err(EngineError::new)
    }

    /// Removes the value under the key and its chunks, atomically.
    pub fn remove(&self, tree: &sled::Tree) -> Result<(), EngineError> {
        let mut batch = sled::Batch::default();
        self.remove_chunks(tree, &mut batch)?;
        batch.remove(self.key);
        tree.apply_batch(batch).map_err(EngineError::new)
    }

    /// The value under the key.
    pub fn get(&self, tree: &sled::Tree) -> Result<Option<Vec<u8>>, EngineError> {
        if let Some(v) = tree.get(self.key).map_err(EngineError::new)? {
            return Ok(Some(v.to_vec()));
        }
        let prefix = self.prefix();
        let mut value = Assembly::default();
        for r in tree.scan_prefix(&prefix) {
            let (k, v) = r.map_err(EngineError::new)?;
            if k.len() == prefix.len() + 4 {
                value.add(&k[prefix.len()..], &v)?;
            }
        }
        value.finish()
    }
}

/// A chunked value being read back in key order: header first, then chunks 1..=count.
#[derive(Default)]
pub struct Assembly {
    /// (count, len) from the header.
    header: Option<(u32, u64)>,
    next: u32,
    bytes: Vec<u8>,
}

impl Assembly {
    /// Takes the record whose key ends in `n` (4 bytes).
    pub fn add(&mut self, n: &[u8], v: &[u8]) -> Result<(), EngineError> {
        let n = u32::from_be_bytes(n.try_into().map_err(|_| bad("chunk number"))?);
        if n == 0 {
            let count =
                u32::from_be_bytes(v.get(..4).ok_or_else(|| bad("header"))?.try_into().unwrap());
            let len = u64::from_be_bytes(
                v.get(4..12)
                    .ok_or_else(|| bad("header"))?
                    .try_into()
                    .unwrap(),
            );
            self.header = Some((count, len));
            self.next = 1;
            self.bytes = Vec::with_capacity(len as usize);
            return Ok(());
        }
        if self.header.is_none() || n != self.next {
            return Err(bad(&format!("chunk {n} out of order")));
        }
        self.bytes.extend_from_slice(v);
        self.next += 1;
        Ok(())
    }

    /// Whether every chunk the header announced has been added.
    pub fn complete(&self) -> bool {
        matches!(self.header, Some((count, _)) if self.next == count + 1)
    }

    /// The value (None if nothing was added), checked against its header.
    pub fn finish(self) -> Result<Option<Vec<u8>>, EngineError> {
        match self.header {
            None => Ok(None),
            Some((count, len)) if self.next == count + 1 && self.bytes.len() as u64 == len => {
                Ok(Some(self.bytes))
            }
            Some((count, len)) => Err(bad(&format!(
                "{} of {count} chunks, {} of {len} bytes",
                self.next - 1,
                self.bytes.len()
            ))),
        }
    }
}

fn bad(what: &str) -> EngineError {
    EngineError(format!("a chunked value is damaged: {what}"))
}
