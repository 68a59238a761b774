//! The systemd units in deploy/systemd: what the issue requires of them, and
//! `systemd-analyze verify` on each (with ExecStart pointing at the binary just built).

use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    v.sort();
    assert_eq!(
        v.len(),
        2,
        "ballastd.service and ballastd-agent.service: {v:?}"
    );
    v
}

fn setting<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .collect()
}

#[test]
fn units_restart_notify_and_hold_only_the_agents_capabilities() {
    for path in units() {
        let u = std::fs::read_to_string(&path).unwrap();
        let name = path.display();
        assert_eq!(setting(&u, "Type"), ["notify"], "{name}");
        assert_eq!(setting(&u, "Restart"), ["always"], "{name}");
        assert_eq!(setting(&u, "ProtectSystem"), ["strict"], "{name}");
        assert_eq!(setting(&u, "KillSignal"), ["SIGTERM"], "{name}");
        for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
            assert_eq!(
                setting(&u, key),
                ["CAP_NET_ADMIN CAP_NET_RAW"],
                "{name}: {key}"
            );
        }
        assert!(
            setting(&u, "StateDirectory")
                .iter()
                .any(|d| d.split_whitespace().any(|x| x == "ballast-releases")),
            "{name}: the releases directory must stay writable"
        );
        assert!(setting(&u, "User") == ["ballast"], "{name}: not root");
        // Nothing gained through setuid programs or file capabilities, by ballastd or by the
        // checks and hooks it starts (which drop the ambient capabilities, tests/capabilities.rs).
        assert_eq!(setting(&u, "NoNewPrivileges"), ["true"], "{name}");
        assert_eq!(setting(&u, "RestrictSUIDSGID"), ["true"], "{name}");
        for key in ["ExecStart", "ExecReload"] {
            for cmd in setting(&u, key) {
                // '+' and '!' run a command with full privileges.
                assert!(!cmd.starts_with(['+', '!']), "{name}: {key}={cmd}");
            }
        }
        assert!(setting(&u, "SecureBits").is_empty(), "{name}: SecureBits");
    }
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("NOT VERIFIED: systemd-analyze is not installed here; the units were only checked by content");
        return;
    };
    assert!(out.status.success());
    let bin = Path::new(env!("CARGO_BIN_EXE_ballastd"));
    let dir = tempfile::tempdir().unwrap();
    for path in units() {
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/ballastd", &bin.display().to_string());
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !said.contains(copy.file_name().unwrap().to_str().unwrap()),
            "{}: systemd-analyze verify: {said}",
            path.display()
        );
    }
}
