use std::path::Path;

use super::engine::{EngineError, LogEngine};

/// [`LogEngine`] on sled: one tree for the log (big-endian index keys, so sled's order is the
/// log's order) and one for metadata.
#[derive(Clone)]
pub struct SledEngine {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    /// sled's data file, for the fdatasync that sled itself does not do.
    data_file: std::sync::Arc<std::fs::File>,
}

impl SledEngine {
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // sled's own periodic flush is not what makes us durable; `sync` is.
            .flush_every_ms(None)
            .open()
            .map_err(|e| EngineError(format!("opening sled at {}: {e}", dir.display())))?;
        let logs = db.open_tree("logs").map_err(EngineError::new)?;
        let meta = db.open_tree("meta").map_err(EngineError::new)?;
        let data_file = std::fs::File::open(dir.join("db"))
            .map_err(|e| EngineError(format!("opening {}/db: {e}", dir.display())))?;
        Ok(SledEngine {
            db,
            logs,
            meta,
            data_file: std::sync::Arc::new(data_file),
        })
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(k: &[u8]) -> Result<u64, EngineError> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| EngineError(format!("log key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(b))
}

impl LogEngine for SledEngine {
    fn insert_logs(&self, mut entries: Vec<(u64, Vec<u8>)>) -> Result<(), EngineError> {
        // A batch costs sled an extra manifest record (and IO buffer) to be atomic; a single
        // entry needs none.
        if entries.len() == 1 {
            let (i, v) = entries.pop().expect("one entry");
            self.logs.insert(key(i), v).map_err(EngineError::new)?;
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (i, v) in entries {
            batch.insert(&key(i), v);
        }
        self.logs.apply_batch(batch).map_err(EngineError::new)
    }

    fn read_logs(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.logs
            .range(key(start)..key(end))
            .map(|r| {
                let (k, v) = r.map_err(EngineError::new)?;
                Ok((index_of(&k)?, v.to_vec()))
            })
            .collect()
    }

    fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, EngineError> {
        match self.logs.last().map_err(EngineError::new)? {
            Some((k, v)) => Ok(Some((index_of(&k)?, v.to_vec()))),
            None => Ok(None),
        }
    }

    fn remove_logs_from(&self, start: u64) -> Result<(), EngineError> {
        let mut batch = sled::Batch::default();
        for r in self.logs.range(key(start)..) {
            let (k, _) = r.map_err(EngineError::new)?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch).map_err(EngineError::new)
    }

    fn remove_logs_upto(&self, end: u64) -> Result<(), EngineError> {
        let mut batch = sled::Batch::default();
        for r in self.logs.range(..=key(end)) {
            let (k, _) = r.map_err(EngineError::new)?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch).map_err(EngineError::new)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self
            .meta
            .get(key.as_bytes())
            .map_err(EngineError::new)?
            .map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), EngineError> {
        self.meta
            .insert(key.as_bytes(), value)
            .map_err(EngineError::new)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db.flush().map_err(EngineError::new)?;
        // sled 0.34 makes its writes stable with sync_file_range, which neither writes file
        // metadata nor flushes the drive's cache: enough for a killed process, not for a
        // power loss. fdatasync makes them durable.
        self.data_file.sync_data().map_err(EngineError::new)?;
        Ok(())
    }
}
