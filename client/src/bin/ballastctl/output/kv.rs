//! How `kv` answers look: a key as JSON, `kv ls` as a table or JSON, and the lines of
//! `kv watch`. Part of `output`: it builds text and JSON, asks no cluster and prints nothing.

use ballast_client::v1;
use serde_json::{json, Value};

use super::{pretty, revision, table, text, Output};

pub(super) fn kv_json(kv: &v1::KeyValue) -> Value {
    json!({
        "key": text(&kv.key),
        "value": text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

/// `kv get -o json`: the revision read at and the key, null when absent.
pub(crate) fn get_json(r: &v1::GetResponse) -> Value {
    json!({"revision": revision(r.header.as_ref()), "kv": r.kv.as_ref().map(kv_json)})
}

/// `kv cas -o json`: whether it was written, and the key as it is now.
pub(crate) fn cas_json(r: &v1::CompareAndSetResponse) -> Value {
    json!({"succeeded": r.succeeded, "revision": revision(r.header.as_ref()), "kv": r.kv.as_ref().map(kv_json)})
}

/// `kv ls`: the keys and values, and a note when the limit cut the list.
pub(crate) fn range_out(r: &v1::RangeResponse, out: Output) -> String {
    if out == Output::Json {
        let kvs: Vec<Value> = r.kvs.iter().map(kv_json).collect();
        return pretty(
            &json!({"revision": revision(r.header.as_ref()), "kvs": kvs, "more": r.more}),
        );
    }
    let rows = r
        .kvs
        .iter()
        .map(|kv| vec![text(&kv.key), text(&kv.value), kv.mod_revision.to_string()])
        .collect();
    let mut s = table(&["KEY", "VALUE", "REVISION"], rows);
    if r.more {
        s += "(more keys; raise --limit)\n";
    }
    s
}

/// `kv watch`: one line per event of a revision (one compact JSON object per line in JSON).
pub(crate) fn watch_lines(r: &v1::WatchResponse, out: Output) -> String {
    let mut s = String::new();
    for e in &r.events {
        match &e.event {
            Some(v1::event::Event::Kv(k)) => {
                let kind = if k.kind == v1::kv_event::Kind::Delete as i32 {
                    "DELETE"
                } else {
                    "PUT"
                };
                let kv = k.kv.clone().unwrap_or_default();
                s += &if out == Output::Json {
                    format!(
                        "{}\n",
                        json!({"revision": r.revision, "type": kind, "kv": kv_json(&kv)})
                    )
                } else {
                    format!(
                        "{} {} {} {}\n",
                        r.revision,
                        kind,
                        text(&kv.key),
                        text(&kv.value)
                    )
                };
            }
            Some(v1::event::Event::State(st)) => {
                s += &if out == Output::Json {
                    format!(
                        "{}\n",
                        json!({"revision": r.revision, "type": "STATE", "kind": st.kind, "name": st.name, "deleted": st.deleted})
                    )
                } else {
                    format!(
                        "{} STATE {} {}{}\n",
                        r.revision,
                        st.kind,
                        st.name,
                        if st.deleted { " deleted" } else { "" }
                    )
                };
            }
            None => {}
        }
    }
    s
}

/// `kv watch`: the line that says changes before `resume_at` were lost to compaction.
pub(crate) fn resync_line(resume_at: u64, out: Output) -> String {
    if out == Output::Json {
        format!("{}\n", json!({"revision": resume_at, "type": "RESYNC"}))
    } else {
        format!("{resume_at} RESYNC (changes before this revision were lost to compaction: read the keys again)\n")
    }
}
