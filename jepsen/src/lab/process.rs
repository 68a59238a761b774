//! Programs on lab hosts: [`LabProcess`] (killed, paused, resumed, terminated; killed when
//! dropped), starting a program in a host's namespace, `ballastd` as a member or a standalone
//! agent, where the workspace's binaries are, and the monotonic clock all hosts share. The
//! network they run in is `network.rs`'s; faults on links are `cuts.rs`'s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::network::{Host, Lab, LabError};

/// A process running on a lab host.
pub struct LabProcess {
    pub host: String,
    child: Child,
}

impl LabProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and up to `grace` for it to exit; then SIGKILL. Reaped either way.
    pub fn terminate(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }

    /// SIGSTOP: the process stays, frozen.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Whether it is still running (or stopped), not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Lab {
    /// Starts a long-running process on a host, its stdout and stderr appended to `log`.
    pub fn spawn(
        &self,
        h: &Host,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<LabProcess, LabError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        // `ip netns exec` execs the program, so the child's pid is the program's.
        let child = Command::new("ip")
            .args(["netns", "exec", &h.netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(LabProcess {
            host: h.name.clone(),
            child,
        })
    }

    /// Starts `ballastd` as member `id` (1-based) of a cluster of every node host: gRPC on
    /// port 7400 and HTTP on 7480 of the host's address, data and log under `dir`, default
    /// timing, then `extra` arguments.
    pub fn spawn_ballastd(
        &self,
        id: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<LabProcess, LabError> {
        self.spawn_member(id, self.nodes.len(), dir, extra)
    }

    /// The gRPC endpoints of the first `members` node hosts.
    pub fn member_endpoints(&self, members: usize) -> Vec<String> {
        self.nodes[..members]
            .iter()
            .map(|h| format!("{}:7400", h.addr))
            .collect()
    }

    /// Starts `ballastd agent` (the agent alone, not a Raft member) as node `id` on node host
    /// `id`, talking to the first `members` hosts; log under `dir`, then `extra` arguments.
    pub(crate) fn spawn_standalone_agent(
        &self,
        id: usize,
        members: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<LabProcess, LabError> {
        let h = self.node(id);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--node-id".into(),
            id.to_string(),
            "--endpoints".into(),
            self.member_endpoints(members).join(","),
            "--advertise".into(),
            format!("{}:7400", h.addr),
        ];
        args.extend_from_slice(extra);
        self.spawn_logged_ballastd(id, &args, dir)
    }

    /// Runs `ballastd ARGS` on node host `id`, logging to `dir/nID.log`.
    fn spawn_logged_ballastd(
        &self,
        id: usize,
        args: &[String],
        dir: &Path,
    ) -> Result<LabProcess, LabError> {
        self.spawn(
            self.node(id),
            &ballast_bin("ballastd"),
            args,
            &dir.join(format!("n{id}.log")),
        )
    }

    /// Starts `ballastd` as member `id` of a cluster of the first `members` node hosts (see
    /// [`Lab::spawn_ballastd`]).
    pub(crate) fn spawn_member(
        &self,
        id: usize,
        members: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<LabProcess, LabError> {
        let h = self.node(id);
        let members: Vec<String> = self.nodes[..members]
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{}={}:7400", i + 1, h.addr))
            .collect();
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.join(format!("n{id}")).display().to_string(),
            "--listen".into(),
            format!("{}:7400", h.addr),
            "--http-listen".into(),
            format!("{}:7480", h.addr),
            "--initial-cluster".into(),
            members.join(","),
        ];
        args.extend_from_slice(extra);
        self.spawn_logged_ballastd(id, &args, dir)
    }
}

/// Path of a workspace binary (`ballastd`, `ballastctl`) next to the running test or program:
/// `target/<profile>/<name>`.
pub fn ballast_bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("BALLAST_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock every lab host shares, and that the members'
/// fence journals (`ballastd --fence-journal`) are written on.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
