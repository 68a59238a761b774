//! The state machine's key-value operations: put, compare-and-set, delete (one key or a
//! prefix), each at one revision with its watch events. Deterministic like the rest of
//! `StateData::apply`: no clock, no IO.

use crate::member::state::{kv_event, Applied, StateData};
use crate::model;
use crate::model::KvEntry;
use crate::types::{Expected, Outcome};

impl StateData {
    /// Writes `value` at `key` (revision `rev`).
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], rev: u64) -> Applied {
        let prev = self.kv.get(key).cloned();
        let entry = self.put_key(key, value.to_vec(), rev);
        (
            Outcome::Put {
                prev: prev.map(|p| p.to_stored(key)),
            },
            vec![kv_event(model::KvEventKind::Put, entry.to_stored(key))],
        )
    }

    /// Writes `new_value` at `key` if its value or revision is what the caller expected.
    pub(crate) fn compare_and_set(
        &mut self,
        key: &[u8],
        expected: &Expected,
        new_value: &[u8],
        rev: u64,
    ) -> Applied {
        let current = self.kv.get(key);
        let matches = match (expected, current) {
            (Expected::Value(v), Some(c)) => &c.value == v,
            (Expected::Value(_), None) => false,
            (Expected::ModRevision(0), None) => true,
            (Expected::ModRevision(r), Some(c)) => c.mod_revision == *r,
            (Expected::ModRevision(_), None) => false,
        };
        if !matches {
            return (
                Outcome::CompareAndSet {
                    succeeded: false,
                    kv: current.map(|c| c.to_stored(key)),
                },
                Vec::new(),
            );
        }
        let entry = self.put_key(key, new_value.to_vec(), rev);
        let kv = entry.to_stored(key);
        (
            Outcome::CompareAndSet {
                succeeded: true,
                kv: Some(kv.clone()),
            },
            vec![kv_event(model::KvEventKind::Put, kv)],
        )
    }

    /// Deletes `key`, or every key under it as a prefix, all at revision `rev`.
    pub(crate) fn delete(&mut self, key: &[u8], prefix: bool, rev: u64) -> Applied {
        let keys: Vec<Vec<u8>> = if prefix {
            self.kv
                .range(key.to_vec()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(k, _)| k.clone())
                .collect()
        } else if self.kv.contains_key(key) {
            vec![key.to_vec()]
        } else {
            Vec::new()
        };
        let mut events = Vec::with_capacity(keys.len());
        for k in &keys {
            if let Some(old) = self.kv.remove(k) {
                events.push(kv_event(
                    model::KvEventKind::Delete,
                    model::KeyValue {
                        key: k.clone(),
                        value: Vec::new(),
                        create_revision: old.create_revision,
                        mod_revision: rev,
                        version: 0,
                    },
                ));
            }
        }
        (
            Outcome::Delete {
                deleted: keys.len() as u64,
            },
            events,
        )
    }

    /// Stores `value` at `key` as written at revision `rev` (a new key is created at it).
    fn put_key(&mut self, key: &[u8], value: Vec<u8>, rev: u64) -> KvEntry {
        let entry = match self.kv.get(key) {
            Some(old) => KvEntry {
                value,
                create_revision: old.create_revision,
                mod_revision: rev,
                version: old.version + 1,
            },
            None => KvEntry {
                value,
                create_revision: rev,
                mod_revision: rev,
                version: 1,
            },
        };
        self.kv.insert(key.to_vec(), entry.clone());
        entry
    }
}
