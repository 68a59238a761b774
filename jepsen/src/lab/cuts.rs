//! Faults on the lab's links, from outside the processes: one-way cuts, partitions,
//! isolation and random loss, all as DROP rules in each receiving host's iptables chain
//! (links stay up, as in a real partition), healing, and the count of what was dropped.
//! Killing and pausing processes is `process.rs`'s ([`super::LabProcess`]).

use super::network::{Host, Lab, LabError, CHAIN};

impl Lab {
    /// Drops every packet from `from` at `to` (one way: `to` stops hearing `from`). The link
    /// stays up.
    pub fn cut(&self, from: &Host, to: &Host) -> Result<(), LabError> {
        self.iptables(
            to,
            &["-A", CHAIN, "-s", &from.addr.to_string(), "-j", "DROP"],
        )?;
        Ok(())
    }

    /// Drops a random `percent` of the packets from `from` at `to` (iptables `statistic`; the
    /// kernel here has no netem). Healed by [`Lab::heal`].
    pub(crate) fn lossy(&self, from: &Host, to: &Host, percent: u32) -> Result<(), LabError> {
        let p = format!("{:.2}", percent.min(100) as f64 / 100.0);
        self.iptables(
            to,
            &[
                "-A",
                CHAIN,
                "-s",
                &from.addr.to_string(),
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )?;
        Ok(())
    }

    /// Cuts both ways between every host of `a` and every host of `b`.
    pub(crate) fn partition(&self, a: &[&Host], b: &[&Host]) -> Result<(), LabError> {
        for x in a {
            for y in b {
                self.cut(x, y)?;
                self.cut(y, x)?;
            }
        }
        Ok(())
    }

    /// Cuts `h` off from every other node host, both ways; the client still reaches all.
    pub fn isolate(&self, h: &Host) -> Result<(), LabError> {
        let others: Vec<&Host> = self.nodes.iter().filter(|n| n.name != h.name).collect();
        self.partition(&[h], &others)
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<(), LabError> {
        for h in self.hosts() {
            self.iptables(h, &["-F", CHAIN])?;
        }
        Ok(())
    }

    /// Packets dropped by cuts on `h` so far.
    pub fn dropped_at(&self, h: &Host) -> u64 {
        let Ok(out) = self.iptables(h, &["-L", CHAIN, "-v", "-n", "-x"]) else {
            return 0;
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}
