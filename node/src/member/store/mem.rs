//! The in-memory engine: the reference the storage suite compares the sled engine with, and a
//! fast store for tests that do not restart members. Not durable; never used by `ballastd`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::engine::{EngineError, LogEngine};

/// [`LogEngine`] in memory: the reference implementation the suite compares against, and a
/// fast store for tests that do not restart members.
#[derive(Default)]
pub struct MemEngine {
    logs: Mutex<BTreeMap<u64, Vec<u8>>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
    snapshot: Mutex<Option<Vec<u8>>>,
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl LogEngine for MemEngine {
    fn insert_logs(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), EngineError> {
        let mut logs = self.logs.lock().unwrap();
        logs.extend(entries);
        Ok(())
    }

    fn read_logs(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let logs = self.logs.lock().unwrap();
        Ok(logs
            .range(start..end)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, EngineError> {
        let logs = self.logs.lock().unwrap();
        Ok(logs.iter().next_back().map(|(k, v)| (*k, v.clone())))
    }

    fn first_log_index(&self) -> Result<Option<u64>, EngineError> {
        Ok(self.logs.lock().unwrap().keys().next().copied())
    }

    fn remove_logs_from(&self, start: u64) -> Result<(), EngineError> {
        self.logs.lock().unwrap().split_off(&start);
        Ok(())
    }

    fn remove_logs_upto(&self, end: u64) -> Result<(), EngineError> {
        let mut logs = self.logs.lock().unwrap();
        *logs = logs.split_off(&(end.saturating_add(1)));
        if end == u64::MAX {
            logs.clear();
        }
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.meta.lock().unwrap().get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), EngineError> {
        self.meta.lock().unwrap().insert(key.to_string(), value);
        Ok(())
    }

    fn remove_meta(&self, key: &str) -> Result<(), EngineError> {
        self.meta.lock().unwrap().remove(key);
        Ok(())
    }

    fn put_snapshot(&self, value: &[u8]) -> Result<(), EngineError> {
        *self.snapshot.lock().unwrap() = Some(value.to_vec());
        Ok(())
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.snapshot.lock().unwrap().clone())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }
}
