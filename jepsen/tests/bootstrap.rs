//! `deploy/bootstrap.sh` against three lab hosts that run Debian's openssh-server on their lab
//! addresses with a test key: checks that refuse bad hosts before changing anything, a dry run
//! that changes nothing, a real run that forms a mutual-TLS cluster whose VIP answers, and a
//! second run that changes nothing. The lab has no systemd, so the script runs ballastd as a
//! plain process (`--no-systemd`) under a per-host prefix (the hosts share one filesystem).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use jepsen::{ballast_bin, Lab, LabProcess};

const SSHD: &str = "/usr/sbin/sshd";
const VIP: &str = "10.213.0.100";

/// Kills the members the script started (they outlive sshd), before the lab goes.
struct Members(Vec<PathBuf>);

impl Drop for Members {
    fn drop(&mut self) {
        for pidfile in &self.0 {
            if let Some(pid) = pid_in(pidfile) {
                // SAFETY: kill(2) on a pid the script recorded for a process it started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn pid_in(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (openssh-client)");
    assert!(st.success());
}

/// sshd on every node host, accepting root with the test key.
fn start_sshd(lab: &Lab, dir: &Path) -> Vec<LabProcess> {
    keygen(&dir.join("key"));
    keygen(&dir.join("hostkey"));
    std::fs::copy(dir.join("key.pub"), dir.join("authorized_keys")).unwrap();
    // sshd insists on its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let mut procs = Vec::new();
    for h in lab.nodes() {
        let cfg = dir.join(format!("sshd-{}.conf", h.name));
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress {addr}\nPort 22\nHostKey {d}/hostkey\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile {d}/sshd-{name}.pid\n\
                 Subsystem sftp internal-sftp\n",
                addr = h.addr,
                d = dir.display(),
                name = h.name
            ),
        )
        .unwrap();
        let args: Vec<String> = vec![
            "-D".into(),
            "-e".into(),
            "-f".into(),
            cfg.display().to_string(),
        ];
        procs.push(
            lab.spawn(
                h,
                Path::new(SSHD),
                &args,
                &dir.join(format!("sshd-{}.log", h.name)),
            )
            .expect("sshd starts"),
        );
    }
    for h in lab.nodes() {
        let key = dir.join("key").display().to_string();
        let target = format!("root@{}", h.addr);
        lab.wait_for(Duration::from_secs(10), || {
            let args = [
                "-i",
                &key,
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=1",
                &target,
                "true",
            ];
            lab.exec(lab.client(), "ssh", &args)
                .ok()
                .filter(|o| o.status.success())
        })
        .unwrap_or_else(|| panic!("sshd on {} never answered", h.name));
    }
    procs
}

struct Run<'a> {
    lab: &'a Lab,
    dir: &'a Path,
}

impl Run<'_> {
    /// Runs the script from the lab's client host with the test's SSH settings, as the
    /// lab needs it (no systemd, a directory per host) unless `systemd`.
    fn script_with(&self, hosts: &str, bin_dir: &Path, systemd: bool, extra: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bootstrap.sh");
        let d = self.dir.display().to_string();
        let vip = format!("{VIP}/24");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.lab.client().netns, "bash"])
            .arg(script)
            .args(["--hosts", hosts, "--vip", &vip, "--interface", "eth0"])
            .args(["--identity", &format!("{d}/key")])
            .args(["--ssh-option", "StrictHostKeyChecking=no"])
            .args(["--ssh-option", "UserKnownHostsFile=/dev/null"])
            .args(["--ssh-option", "LogLevel=ERROR"])
            .args(["--certs", &format!("{d}/certs"), "--timeout", "60"])
            .arg("--bin-dir")
            .arg(bin_dir);
        if !systemd {
            cmd.args(["--no-systemd", "--prefix", &format!("{d}/hosts/{{host}}")]);
        }
        let out = cmd.args(extra).output().expect("bash runs");
        eprintln!(
            "--- bootstrap {extra:?} exit {:?}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn script(&self, hosts: &str, bin_dir: &Path, extra: &[&str]) -> Output {
        self.script_with(hosts, bin_dir, false, extra)
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bootstrap_over_ssh_forms_a_cluster_holds_the_vip_and_a_second_run_changes_nothing() {
    assert!(
        Path::new(SSHD).exists(),
        "OPENSSH SERVER MISSING: apt-get install openssh-server (CI installs it)"
    );
    let lab = Lab::new(3).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    // A short path: ssh control sockets live under it.
    let tmp = tempfile::Builder::new()
        .prefix("bs")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path();
    let _sshd = start_sshd(&lab, dir);
    let run = Run { lab: &lab, dir };
    let bins = ballast_bin("ballastd").parent().unwrap().to_path_buf();
    let hosts = "10.213.0.1,10.213.0.2,10.213.0.3";
    let members = Members(
        (1..=3)
            .map(|i| dir.join(format!("hosts/10.213.0.{i}/run/ballastd.pid")))
            .collect(),
    );
    let nothing_installed = || !dir.join("hosts").exists();

    // 1. Hosts that cannot take it are refused before anything changes: one unreachable...
    let out = run.script("10.213.0.1,10.213.0.2,10.213.0.9", &bins, &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("10.213.0.9: unreachable over SSH"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(nothing_installed());

    // ...binaries for another architecture...
    let fake = dir.join("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    let other: u16 = if std::env::consts::ARCH == "aarch64" {
        62
    } else {
        183
    };
    elf[18..20].copy_from_slice(&other.to_le_bytes());
    for b in ["ballastd", "ballastctl"] {
        std::fs::write(fake.join(b), &elf).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(fake.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = run.script(hosts, &fake, &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("wrong architecture"), "{err}");
    assert!(nothing_installed());

    // ...and, where systemd does not run (the lab), a run that wants it.
    if !Path::new("/run/systemd/system").exists() {
        let out = run.script_with(hosts, &bins, true, &[]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("systemd is not running"), "{err}");
    }

    // 2. A dry run says what it would do and does none of it.
    let out = run.script(hosts, &bins, &["--dry-run"]);
    let (so, _) = text(&out);
    assert!(out.status.success());
    for want in [
        "would: make a cluster CA",
        "would: issue the certificate of member 3 (10.213.0.3)",
        "would: 10.213.0.2: install 7 file(s)",
        "would: 10.213.0.1: start ballastd",
        "dry run: nothing was changed",
    ] {
        assert!(so.contains(want), "dry run lacks {want:?}");
    }
    assert!(nothing_installed() && !dir.join("certs").exists());

    // 3. The real run: installed, started, formed, the VIP defined and held.
    let out = run.script(hosts, &bins, &[]);
    let (so, _) = text(&out);
    assert!(out.status.success(), "bootstrap failed");
    assert!(so.contains("is held by node"), "{so}");
    assert!(so.contains("done: 3 host(s) updated, 3 started"), "{so}");
    assert!(
        lab.wait_for(Duration::from_secs(10), || lab
            .can_ping_addr(lab.client(), VIP.parse::<std::net::IpAddr>().unwrap())
            .then_some(()))
            .is_some(),
        "the VIP answers from the client host"
    );
    let pids: Vec<Option<i32>> = members.0.iter().map(|p| pid_in(p)).collect();
    assert!(pids.iter().all(Option::is_some), "{pids:?}");
    // Identities: member certificates name their member, the token file has a member line,
    // so the members check both (they warn when they cannot).
    let certs = dir.join("certs");
    for id in 1..=3u64 {
        let der = ballast_client::tls::load_certs(&certs.join(format!("n{id}.pem"))).unwrap();
        let named = ballast_client::identity::identity_of(&der[0]).unwrap();
        assert_eq!(
            named,
            Some(ballast_client::identity::CertIdentity::Member(id))
        );
        let log =
            std::fs::read_to_string(dir.join(format!("hosts/10.213.0.{id}/var/log/ballastd.log")))
                .unwrap();
        assert!(log.contains("member started"), "{log}");
        for warning in ["names no member", "has no `member` line"] {
            assert!(
                !log.contains(warning),
                "member {id} warns {warning:?}:\n{log}"
            );
        }
    }
    let tokens = std::fs::read_to_string(certs.join("tokens")).unwrap();
    assert!(tokens.lines().any(|l| l.starts_with("member ")), "{tokens}");

    // 4. Again: nothing to do, and no member was restarted.
    let out = run.script(hosts, &bins, &[]);
    let (so, _) = text(&out);
    assert!(out.status.success(), "second bootstrap failed");
    assert!(so.contains("no change:"), "{so}");
    assert!(
        !so.contains("install") && !so.contains("start ballastd"),
        "{so}"
    );
    let again: Vec<Option<i32>> = members.0.iter().map(|p| pid_in(p)).collect();
    assert_eq!(pids, again, "members kept running");
    for pid in again.into_iter().flatten() {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "member {pid} runs"
        );
    }

    // 5. A re-issued certificate is reloaded in place (SIGHUP), nothing restarts.
    for f in ["n2.pem", "n2-key.pem"] {
        std::fs::remove_file(dir.join("certs").join(f)).unwrap();
    }
    let out = run.script(hosts, &bins, &[]);
    let (so, _) = text(&out);
    assert!(
        out.status.success(),
        "bootstrap with a new certificate failed"
    );
    assert!(
        so.contains("10.213.0.2: reload the certificates (SIGHUP)"),
        "{so}"
    );
    assert!(
        so.contains("1 host(s) updated, 0 started, 0 restarted, 1 reloaded"),
        "{so}"
    );
    let reloaded: Vec<Option<i32>> = members.0.iter().map(|p| pid_in(p)).collect();
    assert_eq!(pids, reloaded, "a certificate change restarts no member");

    // 6. A configuration change restarts the members one at a time; the VIP is held after.
    let out = run.script(hosts, &bins, &["--http-port", "7481"]);
    let (so, _) = text(&out);
    assert!(
        out.status.success(),
        "bootstrap with a new configuration failed"
    );
    assert!(
        so.contains("3 host(s) updated, 0 started, 3 restarted"),
        "{so}"
    );
    assert!(so.contains("is held by node"), "{so}");
    let restarted: Vec<Option<i32>> = members.0.iter().map(|p| pid_in(p)).collect();
    for (a, b) in pids.iter().zip(&restarted) {
        assert_ne!(a, b, "every member restarted");
    }
    drop(members);
}
