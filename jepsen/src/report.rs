//! Reports of a run, self-contained files next to its history: `timeline.html` (every
//! operation as a bar on its process's row, faults shaded), `latency.svg` (each operation's
//! latency over time) and `availability.svg` (share of operations that succeeded per second,
//! and throughput), both with the faults shaded.

use std::fmt::Write;

use crate::history::{Fault, Line};
use crate::history::{Op, Outcome};

const W: f64 = 1000.0;
const H: f64 = 300.0;
const PAD: f64 = 40.0;

/// The operations to draw (a vip run's probes drawn as operations of process 0: answered by
/// one host ok, by none failed, by two or more "unknown" colour) and the faults.
fn split(lines: &[Line]) -> (Vec<Op>, Vec<&Fault>) {
    let mut ops = Vec::new();
    let mut faults = Vec::new();
    for l in lines {
        match l {
            Line::Op(o) => ops.push(o.clone()),
            Line::Fault(f) => faults.push(f),
            Line::Probe { at, macs, .. } => ops.push(Op {
                process: 0,
                key: format!("vip {}", macs.join(" ")),
                op: crate::history::RegisterOp::Read,
                outcome: match macs.len() {
                    0 => Outcome::Fail,
                    1 => Outcome::Ok(None),
                    _ => Outcome::Unknown,
                },
                call: *at,
                ret: at + 10_000_000,
            }),
            // The release workload: what each node (row 1..) or the VIP (row 0) began to
            // serve, and each rollout request (row 99).
            Line::Served { at, who, release } => ops.push(Op {
                process: who.trim_start_matches('n').parse().unwrap_or(0),
                key: format!("{who} serves {release}"),
                op: crate::history::RegisterOp::Read,
                outcome: Outcome::Ok(None),
                call: *at,
                ret: at + 50_000_000,
            }),
            Line::Activate {
                at,
                release,
                outcome,
                detail,
            } => ops.push(Op {
                process: 99,
                key: format!("activate {release} {detail}"),
                op: crate::history::RegisterOp::Read,
                outcome: match outcome {
                    crate::checker::release::Outcome::Ok => Outcome::Ok(None),
                    crate::checker::release::Outcome::Fail => Outcome::Fail,
                    crate::checker::release::Outcome::Unknown => Outcome::Unknown,
                },
                call: *at,
                ret: at + 100_000_000,
            }),
            _ => {}
        }
    }
    (ops, faults)
}

fn end_ns(ops: &[Op], faults: &[&Fault]) -> u64 {
    ops.iter()
        .map(|o| o.ret.max(o.call))
        .chain(faults.iter().map(|f| f.end))
        .max()
        .unwrap_or(1)
        .max(1)
}

fn color(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok(_) => "#2a9d3f",
        Outcome::Fail => "#d62828",
        Outcome::Unknown => "#f4a020",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The frame, axes and shaded faults of an SVG plot over `[0, end]` ns.
fn svg_frame(title: &str, y_label: &str, y_max: f64, end: u64, faults: &[&Fault]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        W + 2.0 * PAD,
        H + 2.0 * PAD
    );
    let _ = write!(
        s,
        r#"<text x="{PAD}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let x = |t: u64| PAD + W * t as f64 / end as f64;
    for f in faults {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{PAD}" width="{:.1}" height="{H}" fill="#888" fill-opacity="0.18"><title>{}</title></rect>"##,
            x(f.start),
            (x(f.end) - x(f.start)).max(1.0),
            escape(&format!("{:?}: {}", f.nemesis, f.detail))
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" fill="#555">{}</text>"##,
            x(f.start) + 2.0,
            PAD + 12.0,
            escape(&format!("{:?}", f.nemesis))
        );
    }
    let _ = write!(
        s,
        r#"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="black"/>"#,
        b = PAD + H,
        r = PAD + W
    );
    let secs = end as f64 / 1e9;
    let step = (secs / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= secs {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{t}s</text>"#,
            PAD + W * t / secs,
            PAD + H + 15.0
        );
        t += step;
    }
    let _ = write!(
        s,
        r#"<text x="5" y="{}" transform="rotate(-90 12 {})">{}</text><text x="{}" y="{}" text-anchor="end">{y_max:.0}</text>"#,
        PAD + H / 2.0,
        PAD + H / 2.0,
        escape(y_label),
        PAD - 3.0,
        PAD + 4.0
    );
    s
}

/// Each operation's latency against its invocation time.
pub fn latency_svg(lines: &[Line]) -> String {
    let (ops, faults) = split(lines);
    let end = end_ns(&ops, &faults);
    let lat_ms = |o: &Op| o.ret.saturating_sub(o.call) as f64 / 1e6;
    let y_max = ops
        .iter()
        .map(&lat_ms)
        .fold(1.0_f64, f64::max)
        .min(10_000.0);
    let mut s = svg_frame("Latency per operation", "latency (ms)", y_max, end, &faults);
    for o in &ops {
        let x = PAD + W * o.call as f64 / end as f64;
        let y = PAD + H - H * (lat_ms(o).min(y_max) / y_max);
        let _ = write!(
            s,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="1.2" fill="{}"/>"#,
            color(&o.outcome)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Per second: the share of operations that succeeded (line) and how many ran (bars).
pub fn availability_svg(lines: &[Line]) -> String {
    let (ops, faults) = split(lines);
    let end = end_ns(&ops, &faults);
    let buckets = (end / 1_000_000_000 + 1) as usize;
    let mut total = vec![0u32; buckets];
    let mut ok = vec![0u32; buckets];
    for o in &ops {
        let b = (o.call / 1_000_000_000) as usize;
        total[b] += 1;
        if matches!(o.outcome, Outcome::Ok(_)) {
            ok[b] += 1;
        }
    }
    let peak = total.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut s = svg_frame(
        "Availability (line: % ok) and throughput (bars: ops/s)",
        "% ok / ops",
        100.0,
        end,
        &faults,
    );
    let bw = W / buckets as f64;
    let mut points = Vec::new();
    for b in 0..buckets {
        let x = PAD + bw * b as f64;
        let hbar = H * total[b] as f64 / peak;
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{hbar:.1}" fill="#4a7fb5" fill-opacity="0.35"><title>{} ops, {} ok</title></rect>"##,
            PAD + H - hbar,
            (bw - 1.0).max(0.5),
            total[b],
            ok[b]
        );
        if total[b] > 0 {
            let pct = ok[b] as f64 / total[b] as f64;
            points.push(format!("{:.1},{:.1}", x + bw / 2.0, PAD + H - H * pct));
        }
    }
    let _ = write!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#2a9d3f" stroke-width="2"/>"##,
        points.join(" ")
    );
    s.push_str("</svg>\n");
    s
}

/// Every operation as a bar on its process's row, faults shaded; hover for details.
pub fn timeline_html(lines: &[Line], title: &str) -> String {
    let (ops, faults) = split(lines);
    let end = end_ns(&ops, &faults);
    let mut processes: Vec<u64> = ops.iter().map(|o| o.process).collect();
    processes.sort();
    processes.dedup();
    let row = |p: u64| processes.binary_search(&p).unwrap_or(0);
    let width = 4000.0;
    let row_h = 16.0;
    let height = row_h * processes.len().max(1) as f64 + 30.0;
    let x = |t: u64| width * t as f64 / end as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;font-size:12px}}\
         #t{{position:relative;width:{width}px;height:{height}px}}\
         .o,.f,.l{{position:absolute}} .o{{height:{h}px;opacity:.85}}\
         .f{{top:0;bottom:0;background:#888;opacity:.18}} .l{{left:0;color:#333}}\
         </style></head><body><h3>{t}</h3>\
         <p>One row per client process (time flows right, {secs:.1} s in all); green: ok, red: \
         failed, orange: unknown (drawn to the end); grey bands: faults. Hover for details.</p>\
         <div id=\"t\">",
        t = escape(title),
        h = row_h - 3.0,
        secs = end as f64 / 1e9
    );
    for f in &faults {
        let _ = write!(
            s,
            "<div class=\"f\" style=\"left:{:.1}px;width:{:.1}px\" title=\"{}\"></div>",
            x(f.start),
            (x(f.end) - x(f.start)).max(1.0),
            escape(&format!("{:?}: {}", f.nemesis, f.detail))
        );
    }
    for (i, p) in processes.iter().enumerate() {
        let _ = write!(
            s,
            "<div class=\"l\" style=\"top:{:.1}px\">p{p}</div>",
            i as f64 * row_h
        );
    }
    for o in &ops {
        let ret = if o.outcome == Outcome::Unknown && !o.key.starts_with("vip") {
            end
        } else {
            o.ret
        };
        let _ = write!(
            s,
            "<div class=\"o\" style=\"left:{:.1}px;width:{:.1}px;top:{:.1}px;background:{}\" title=\"{}\"></div>",
            x(o.call) + 30.0,
            (x(ret) - x(o.call)).max(1.0),
            row(o.process) as f64 * row_h,
            color(&o.outcome),
            escape(&format!(
                "p{} {} {:?} -> {:?} ({:.1} ms)",
                o.process,
                o.key,
                o.op,
                o.outcome,
                o.ret.saturating_sub(o.call) as f64 / 1e6
            ))
        );
    }
    s.push_str("</div></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::RegisterOp;
    use crate::nemesis::Nemesis;

    fn lines() -> Vec<Line> {
        vec![
            Line::Op(Op {
                process: 1,
                key: "k".into(),
                op: RegisterOp::Write(1),
                outcome: Outcome::Ok(None),
                call: 0,
                ret: 5_000_000,
            }),
            Line::Op(Op {
                process: 2,
                key: "k".into(),
                op: RegisterOp::Read,
                outcome: Outcome::Unknown,
                call: 1_000_000_000,
                ret: 2_000_000_000,
            }),
            Line::Fault(Fault {
                nemesis: Nemesis::KillOne,
                detail: "killed <n1>".into(),
                start: 500_000_000,
                end: 1_500_000_000,
            }),
        ]
    }

    #[test]
    fn reports_draw_every_operation_and_fault_and_escape_text() {
        let l = lines();
        let html = timeline_html(&l, "run <1>");
        assert_eq!(html.matches("class=\"o\"").count(), 2);
        assert_eq!(html.matches("class=\"f\"").count(), 1);
        assert!(html.contains("killed &lt;n1&gt;") && html.contains("run &lt;1&gt;"));
        let lat = latency_svg(&l);
        assert_eq!(lat.matches("<circle").count(), 2);
        assert!(lat.starts_with("<svg") && lat.trim_end().ends_with("</svg>"));
        let av = availability_svg(&l);
        assert!(av.contains("<polyline") && av.contains("fill-opacity=\"0.18\""));
    }
}
