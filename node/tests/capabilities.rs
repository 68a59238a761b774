//! Exec health checks and release activation hooks start with no capabilities, even when
//! ballastd holds CAP_NET_ADMIN as an ambient capability (as the systemd units give it): with
//! it they could flush the VIP fence.
//!
//! A binary of its own: it changes the capabilities of its test thread. Two ways ballastd runs:
//! - as root (the lab, a server without the units): the test thread raises CAP_NET_ADMIN into
//!   its ambient set, then runs a check and a hook;
//! - as the units run it: this test binary is started again by `setpriv` as user nobody with
//!   CAP_NET_ADMIN and CAP_NET_RAW ambient, bounded to those two, no new privileges, and runs
//!   a check and a hook there.
//!
//! The check and the hook are shell scripts that copy their own `Cap*` and `NoNewPrivs` lines
//! of /proc/self/status (shell builtins only, so the lines are the script's own) to a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ballast_node::agent::health::probe;
use ballast_node::agent::release::{activate, digest_dir, Artifact, ReleaseSite};
use ballast_proto::v1;

const CAP_NET_ADMIN: u32 = 12;
const CHILD: &str = "BALLAST_CAPS_TEST_CHILD";

/// A script that writes its own capability lines to `out`.
fn reporter(out: &Path) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        r#"while read -r k v; do case "$k" in Cap*|NoNewPrivs*) echo "$k $v";; esac; done </proc/self/status >"$0""#.into(),
        out.display().to_string(),
    ]
}

fn read_caps(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the script did not run?)", path.display()));
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(k, v)| (k.trim_end_matches(':').to_string(), v.trim().to_string()))
        .collect()
}

fn assert_no_capabilities(what: &str, caps: &BTreeMap<String, String>) {
    for k in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            caps.get(k).map(String::as_str),
            Some("0000000000000000"),
            "{what}: {k} in {caps:?}"
        );
    }
    assert_eq!(
        caps.get("NoNewPrivs").map(String::as_str),
        Some("1"),
        "{what}: {caps:?}"
    );
}

/// Runs an exec check and a release hook the way the agent does, from this thread; each
/// reports its capabilities into `out`.
fn run_check_and_hook(out: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = v1::HealthCheck {
        kind: Some(v1::health_check::Kind::Exec(v1::ExecCheck {
            name: "caps".into(),
        })),
        timeout_ms: 10_000,
        interval_ms: 10_000,
        rise: 1,
        fall: 1,
    };
    let exec = BTreeMap::from([("caps".to_string(), reporter(&out.join("check")))]);
    let ok = rt.block_on(probe(&check, "127.0.0.1".parse().unwrap(), &exec));
    assert!(ok, "the exec check failed");

    let art = out.join("artifact");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(art.join("index.html"), "v1").unwrap();
    let site = ReleaseSite {
        dir: out.join("site"),
        hook: Some(reporter(&out.join("hook"))),
        hook_timeout: Duration::from_secs(10),
        keep: 2,
    };
    let a = Artifact {
        id: "v1".into(),
        location: art.display().to_string(),
        sha256: digest_dir(&art).unwrap(),
    };
    activate(&site, &a).unwrap();
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Puts CAP_NET_ADMIN into this thread's inheritable and ambient sets (root holds it
/// permitted), as systemd's AmbientCapabilities= does for a service.
fn raise_ambient_net_admin() {
    let mut hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget/capset/prctl on this thread with correctly sized arguments.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
            0
        );
        assert!(
            data[0].permitted & (1 << CAP_NET_ADMIN) != 0,
            "the test must run as root (it holds no CAP_NET_ADMIN)"
        );
        data[0].inheritable |= 1 << CAP_NET_ADMIN;
        assert_eq!(libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                CAP_NET_ADMIN as libc::c_ulong,
                0,
                0
            ),
            0,
            "raising the ambient capability: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn private_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    (dir, out)
}

#[test]
fn checks_and_hooks_start_without_capabilities() {
    if let Ok(out) = std::env::var(CHILD) {
        // Started by the test below under setpriv: report what this process holds, then run.
        let out = Path::new(&out);
        let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        std::fs::write(out.join("parent"), own).unwrap();
        // The fence starts `nft` as a plain command: it keeps CAP_NET_ADMIN.
        let nft_like = reporter(&out.join("nft"));
        assert!(Command::new(&nft_like[0])
            .args(&nft_like[1..])
            .status()
            .unwrap()
            .success());
        run_check_and_hook(out);
        return;
    }

    // 1. As root, with CAP_NET_ADMIN ambient on this thread.
    let (_keep, out) = private_dir();
    raise_ambient_net_admin();
    // Control: a command started without the agent's care inherits it.
    let st = Command::new(&reporter(&out.join("plain"))[0])
        .args(&reporter(&out.join("plain"))[1..])
        .status()
        .unwrap();
    assert!(st.success());
    let plain = read_caps(&out.join("plain"));
    assert_eq!(
        u64::from_str_radix(&plain["CapAmb"], 16).unwrap(),
        1 << CAP_NET_ADMIN,
        "the control command inherits the ambient capability: {plain:?}"
    );
    run_check_and_hook(&out);
    for what in ["check", "hook"] {
        let caps = read_caps(&out.join(what));
        assert_no_capabilities(&format!("as root: the {what}"), &caps);
        // Root holds CAP_SETPCAP: the bounding set is emptied too, so not even a setuid
        // program started by the script gets a capability back.
        assert_eq!(caps["CapBnd"], "0000000000000000", "as root: the {what}");
    }

    // 2. As the systemd units run ballastd: user nobody, CAP_NET_ADMIN and CAP_NET_RAW
    // ambient and bounding, no new privileges.
    let (keep, out) = private_dir();
    {
        use std::os::unix::fs::PermissionsExt;
        for d in [keep.path(), &out] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
    let me = std::env::current_exe().unwrap();
    let st = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+net_admin,+net_raw",
            "--ambient-caps=-all,+net_admin,+net_raw",
            "--bounding-set=-all,+net_admin,+net_raw",
            "--no-new-privs",
        ])
        .arg(&me)
        .args([
            "--exact",
            "checks_and_hooks_start_without_capabilities",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, &out)
        .status()
        .expect("setpriv (util-linux) must be installed");
    assert!(st.success(), "the test run under setpriv failed: {st}");
    let parent = read_caps(&out.join("parent"));
    assert_eq!(
        u64::from_str_radix(&parent["CapAmb"], 16).unwrap(),
        (1 << CAP_NET_ADMIN) | (1 << 13),
        "under setpriv the agent's process holds CAP_NET_ADMIN and CAP_NET_RAW ambient: {parent:?}"
    );
    let nft = read_caps(&out.join("nft"));
    assert_eq!(
        u64::from_str_radix(&nft["CapEff"], 16).unwrap(),
        (1 << CAP_NET_ADMIN) | (1 << 13),
        "a command started as the fence starts nft keeps both: {nft:?}"
    );
    for what in ["check", "hook"] {
        assert_no_capabilities(
            &format!("as the units: the {what}"),
            &read_caps(&out.join(what)),
        );
    }
}
