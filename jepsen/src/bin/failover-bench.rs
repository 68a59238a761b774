//! Failover benchmark: Ballast beside keepalived in the same lab, same run, ratios printed.
//! Three `ballastd --agent` on the lab's node hosts go through the scenarios first; then they
//! stop, and keepalived (Debian's 2.2.7) runs on the same hosts with the same VIP at each
//! advert interval asked for. One ARP observer on the client host (a probe every 10 ms)
//! judges both. Needs root; keepalived for the comparison.
//!
//!   cargo build --workspace --bins --release
//!   target/release/failover-bench [--trials 20] [--keepalived-trials 5] [--hold 8]
//!       [--scenarios crash,dead,partition,drain,leader] [--systems ballast,keepalived-1,keepalived-0.1]
//!       [--load 4] [--ballastd-arg=--vip-lease-ms=450 ...] [--ipv6]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jepsen::failover::{self, row, stage_rows, takeover_ratio, Figures, Keepalived, Load, HEADER};
use jepsen::viplab::{VipLab, VipLabOptions};

#[derive(Parser)]
#[command(
    name = "failover-bench",
    about = "VIP failover of Ballast beside keepalived in the same lab: takeover, client outage \
and split-brain time per scenario, and the ratios"
)]
struct Args {
    /// Trials per Ballast scenario.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Trials per keepalived scenario (crash and partition each take --hold seconds).
    #[arg(long, default_value_t = 5)]
    keepalived_trials: usize,
    /// Seconds an isolated owner stays cut off (both systems), and a crashed keepalived is
    /// watched; 0: Ballast's partition heals once the VIP moved.
    #[arg(long, default_value_t = 8)]
    hold: u64,
    /// crash (SIGKILL of the owner's daemon), dead (the owner's server gone: its link down,
    /// then its processes killed), partition (owner cut off from the other nodes, the client
    /// still reaching all), drain (planned move), leader (Ballast only: SIGKILL of a Raft
    /// leader that does not own the VIP), leader-dead (Ballast only: that leader's server
    /// gone, link down then killed).
    #[arg(
        long,
        default_value = "crash,dead,partition,drain,leader,leader-dead",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Clients putting to Ballast's KV store without pause, from the client host, while
    /// Ballast's scenarios run (0: an idle cluster).
    #[arg(long, default_value_t = 4)]
    load: usize,
    /// An extra argument for every ballastd (repeat for several), e.g.
    /// `--ballastd-arg=--vip-lease-ms=450`: to try settings other than the defaults.
    #[arg(long = "ballastd-arg", allow_hyphen_values = true)]
    ballastd_args: Vec<String>,
    /// ballast, keepalived-1 (advert_int 1 s, VRRPv2), keepalived-0.1 (100 ms, VRRPv3).
    #[arg(
        long,
        default_value = "ballast,keepalived-1,keepalived-0.1",
        value_delimiter = ','
    )]
    systems: Vec<String>,
    /// Print every member's log at the end.
    #[arg(long)]
    show_logs: bool,
    /// An IPv6 VIP (fd0a:d500::64/64) for both systems: Ballast announces it with unsolicited
    /// neighbour advertisements and fences it in the ip6 family, keepalived runs VRRPv3 over
    /// IPv6; the observer probes with neighbour solicitations.
    #[arg(long)]
    ipv6: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    for s in &a.scenarios {
        if !failover::SCENARIOS.contains(&s.as_str()) {
            eprintln!("failover-bench: unknown scenario {s:?}");
            return ExitCode::from(2);
        }
    }
    let mut adverts = Vec::new();
    for s in &a.systems {
        match s.strip_prefix("keepalived-") {
            Some(adv) if adv.parse::<f64>().is_ok_and(|x| x > 0.0) => adverts.push(adv.to_string()),
            _ if s == "ballast" => {}
            _ => {
                eprintln!("failover-bench: unknown system {s:?} (ballast, keepalived-SECONDS)");
                return ExitCode::from(2);
            }
        }
    }
    if !adverts.is_empty() && !std::path::Path::new(failover::KEEPALIVED).exists() {
        eprintln!(
            "failover-bench: {} missing (apt-get install keepalived)",
            failover::KEEPALIVED
        );
        return ExitCode::from(2);
    }
    let extra = a.ballastd_args.clone();
    let (mut v, _, _) = VipLab::start_opts(VipLabOptions {
        extra: Some(Box::new(move |_, _| extra.clone())),
        ipv6: a.ipv6,
        ..Default::default()
    });
    println!("VIP {}", v.vip_cidr());
    let mut all: Vec<Figures> = Vec::new();
    let mut violated = false;
    if !a.ballastd_args.is_empty() {
        println!("ballastd {}", a.ballastd_args.join(" "));
    }
    println!("{HEADER}");
    if a.systems.iter().any(|s| s == "ballast") {
        let load = (a.load > 0).then(|| Load::start(&v, a.load));
        for s in &a.scenarios {
            let f = failover::ballast(&mut v, s, a.trials, a.hold);
            println!("{}", row(&f));
            all.push(f);
        }
        if let Some(load) = load {
            println!("load on Ballast: {}", load.stop());
        }
        for f in all.iter().filter(|f| !f.stages.is_empty()) {
            println!("ballast {}: where the takeover's time went", f.scenario);
            for line in stage_rows(&f.stages) {
                println!("{line}");
            }
        }
        let frames: usize = all.iter().map(|f| f.frames).sum();
        let bad: Vec<&String> = all.iter().flat_map(|f| &f.violations).collect();
        violated = !bad.is_empty();
        println!(
            "exact check (fence journals of every node, {frames} frames for the VIP): {}",
            if bad.is_empty() {
                "no two fences ever allowed the VIP at once, no frame outside its sender's lease"
                    .to_string()
            } else {
                format!("VIOLATED: {bad:?}")
            }
        );
    }
    if a.show_logs {
        println!("{}", v.logs());
    }
    // The agents release their VIP on SIGTERM; the lab stays for keepalived.
    for p in v.procs.iter_mut().flatten() {
        p.terminate(Duration::from_secs(5));
    }
    failover::clear_ballast(&v.lab, &v.vip_cidr());
    for adv in &adverts {
        let mut k = Keepalived::start(&v.lab, &v.dir, adv, &v.vip_cidr());
        for s in a.scenarios.iter().filter(|s| !s.starts_with("leader")) {
            let f = k.scenario(s, a.keepalived_trials, a.hold);
            println!("{}", row(&f));
            all.push(f);
        }
        k.stop();
    }
    for f in &all {
        if let Some(n) = &f.note {
            println!("{} {}: {n}", f.system, f.scenario);
        }
    }
    println!();
    println!("takeover p50, Ballast / keepalived (below 1: Ballast faster); longest split brain of any trial");
    for s in &a.scenarios {
        let Some(ours) = all
            .iter()
            .find(|f| f.system == "ballast" && f.scenario == *s)
        else {
            continue;
        };
        let mut line = format!(
            "{s:<10} ballast {:>5.0} ms, split brain {:>5.0} ms",
            failover::ms(failover::pct(&ours.takeover, 0.5)),
            failover::ms(failover::pct(&ours.split_brain, 1.0))
        );
        for f in all
            .iter()
            .filter(|f| f.system != "ballast" && f.scenario == *s)
        {
            line += &format!(
                " | {} {:>5.0} ms ({}), split brain {:>5.0} ms",
                f.system,
                failover::ms(failover::pct(&f.takeover, 0.5)),
                takeover_ratio(ours, f),
                failover::ms(failover::pct(&f.split_brain, 1.0))
            );
        }
        println!("{line}");
    }
    if violated {
        eprintln!("failover-bench: the exact check failed (above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
