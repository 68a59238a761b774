//! Where a run is kept: `STORE/<workload>/<timestamp>/`, with `results.json` and the reports
//! (`timeline.html`, `latency.svg`, `availability.svg`, drawn by `crate::report`) beside the
//! history; and `jepsen check`, which re-checks a stored run and rewrites them. What a verdict
//! says is `verdict.rs`'s; writing `history.jsonl` is `crate::history`'s.

use std::path::Path;
use std::time::Duration;

use super::verdict::{check_lines, Results};
use crate::history::{read_history, Line};
use crate::report;

pub(super) fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{:03}", d.as_secs(), d.subsec_millis())
}

pub(super) fn write_results(dir: &Path, r: &Results) -> Result<(), String> {
    let text = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.json"), text).map_err(|e| e.to_string())
}

/// timeline.html, latency.svg and availability.svg next to the history.
pub(super) fn write_reports(dir: &Path, lines: &[Line], r: &Results) -> Result<(), String> {
    let title = format!("{} — {}", dir.display(), r.verdict);
    let w = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    w("timeline.html", report::timeline_html(lines, &title))?;
    w("latency.svg", report::latency_svg(lines))?;
    w("availability.svg", report::availability_svg(lines))
}

/// Re-runs the checkers on a saved run and rewrites its results.
pub fn recheck(dir: &Path, budget: Duration) -> Result<Results, String> {
    let lines = read_history(dir)?;
    let seed = std::fs::read_to_string(dir.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Results>(&t).ok())
        .map_or(0, |r| r.seed);
    let r = check_lines(&lines, seed, budget);
    write_results(dir, &r)?;
    write_reports(dir, &lines, &r)?;
    Ok(r)
}
