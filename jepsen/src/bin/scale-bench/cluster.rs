//! The members of one step: release `ballastd` processes on loopback, and what /proc says of them.

use super::*;

pub(crate) struct Member {
    pub(crate) id: u64,
    pub(crate) grpc: String,
    pub(crate) http: String,
    pub(crate) child: Option<Child>,
}

pub(crate) struct Cluster {
    pub(crate) dir: PathBuf,
    pub(crate) keep: bool,
    pub(crate) members: Vec<Member>,
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    pub(crate) fn start(bin: &Path, keep: bool, extra: &str, tag: &str) -> Result<Cluster, String> {
        let dir = std::env::temp_dir().join(format!(
            "scale-bench-{}-{tag}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (g, _))| format!("{}=127.0.0.1:{g}", i + 1))
            .collect();
        let mut members = Vec::new();
        for (i, (g, h)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let log = std::fs::File::create(dir.join(format!("member-{id}.log")))
                .map_err(|e| e.to_string())?;
            let mut cmd = Command::new(bin);
            cmd.arg("--node-id")
                .arg(id.to_string())
                .arg("--data-dir")
                .arg(dir.join(format!("member-{id}")))
                .arg("--listen")
                .arg(format!("127.0.0.1:{g}"))
                .arg("--http-listen")
                .arg(format!("127.0.0.1:{h}"))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--cluster-name")
                .arg("scale-bench")
                .args(extra.split_whitespace())
                .stdout(Stdio::null())
                .stderr(log);
            // The members die with this process, however it ends.
            // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            members.push(Member {
                id,
                grpc: format!("127.0.0.1:{g}"),
                http: format!("127.0.0.1:{h}"),
                child: Some(child),
            });
        }
        Ok(Cluster { dir, keep, members })
    }

    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.grpc.clone()).collect()
    }

    pub(crate) fn member(&self, id: u64) -> &Member {
        self.members.iter().find(|m| m.id == id).unwrap()
    }

    pub(crate) fn pid(&self, id: u64) -> Option<u32> {
        self.member(id).child.as_ref().map(|c| c.id())
    }

    pub(crate) fn kill(&mut self, id: u64) {
        if let Some(m) = self.members.iter_mut().find(|m| m.id == id) {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep {
            println!("  (kept {})", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The member that says it leads, with its status.
pub(crate) async fn leader(admin: &Client, c: &Cluster) -> Option<(u64, v1::StatusResponse)> {
    for m in &c.members {
        if m.child.is_none() {
            continue;
        }
        if let Ok(s) = admin.member_status(&m.grpc).await {
            if s.raft_state == "leader" {
                return Some((m.id, s));
            }
        }
    }
    None
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command may hold spaces: fields count from after its closing parenthesis.
    let rest = &s[s.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// VmRSS in MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The leader's count of Renew calls answered OK (`ballast_requests_total`).
pub(crate) fn renewals_answered(http: &str) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(http).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {http}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.lines()
        .find(|l| {
            l.starts_with("ballast_requests_total{")
                && l.contains("method=\"Renew\"")
                && l.contains("code=\"Ok\"")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

// ---------------------------------------------------------------------------------------
// The shared view of the cluster state
