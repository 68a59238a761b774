//! The real binaries: three `ballastd` processes on port 0 formed by --bootstrap and --join,
//! driven by `ballastctl`, killed with SIGKILL and restarted without losing an acknowledged
//! write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ballast_client::{Client, ClientConfig};
use serde_json::Value;

fn ballastd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ballastd"))
}

/// `ballastctl` lives in the client crate; build it next to ballastd if it is not there yet.
fn ballastctl() -> PathBuf {
    let path = ballastd().with_file_name("ballastctl");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "ballast-client", "--bin", "ballastctl"])
            .status()
            .expect("running cargo build for ballastctl");
        assert!(st.success(), "building ballastctl failed");
    }
    path
}

struct Proc {
    id: u64,
    child: Child,
    args: Vec<String>,
    grpc: String,
    http: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn spawn(dir: &Path, id: u64, args: Vec<String>) -> Proc {
    let addr_file = dir.join(format!("addr-{id}.json"));
    let _ = std::fs::remove_file(&addr_file);
    let log = std::fs::File::create(dir.join(format!("node-{id}.log"))).unwrap();
    let child = Command::new(ballastd())
        .args(&args)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting ballastd");
    let v: Value = wait_until(
        &format!("node {id} to write its addresses"),
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(&addr_file).ok()?;
            serde_json::from_str(&text).ok()
        },
    );
    Proc {
        id,
        child,
        args,
        grpc: v["grpc"].as_str().unwrap().to_string(),
        http: v["http"].as_str().unwrap().to_string(),
    }
}

fn base_args(dir: &Path, id: u64, listen: &str) -> Vec<String> {
    vec![
        "--node-id".into(),
        id.to_string(),
        "--data-dir".into(),
        dir.join(format!("node-{id}")).display().to_string(),
        "--listen".into(),
        listen.into(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
    ]
}

fn ctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new(ballastctl())
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .expect("running ballastctl")
}

fn ctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = ctl(endpoints, args);
    assert!(
        out.status.success(),
        "ballastctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ctl_json(endpoints: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&ctl_ok(endpoints, &a)).unwrap()
}

/// A plain HTTP/1.0 GET, enough for /metrics and the health endpoints.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

fn voters(status: &Value) -> usize {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter" && m["reachable"] == true)
        .count()
}

/// Member 1 bootstraps a cluster, 2 and 3 join it; `extra(id)` adds flags per member.
fn start_three(d: &Path, extra: impl Fn(u64) -> Vec<String>) -> Vec<Proc> {
    let mut a1 = base_args(d, 1, "127.0.0.1:0");
    a1.push("--bootstrap".into());
    a1.extend(extra(1));
    let mut procs = vec![spawn(d, 1, a1)];
    for id in [2, 3] {
        let mut a = base_args(d, id, "127.0.0.1:0");
        a.extend(["--join".into(), procs[0].grpc.clone()]);
        a.extend(extra(id));
        procs.push(spawn(d, id, a));
    }
    procs
}

fn endpoints_of(procs: &[Proc]) -> String {
    procs
        .iter()
        .map(|p| p.grpc.clone())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn three_processes_form_serve_survive_sigkill_and_refuse_bad_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // 1. One member bootstraps a cluster; two join it. Everyone listens on port 0.
    let mut procs = start_three(d, |_| Vec::new());
    let endpoints = endpoints_of(&procs);
    wait_until("three reachable voters", Duration::from_secs(30), || {
        let out = ctl(&endpoints, &["status", "-o", "json", "--timeout", "2"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (voters(&v) == 3 && v["leader_id"].as_u64()? > 0).then_some(())
    });
    let table = ctl_ok(&endpoints, &["status"]);
    assert!(table.contains("LAG") && table.contains("voter"), "{table}");

    // 2. ballastctl against the processes.
    ctl_ok(&endpoints, &["kv", "put", "app/a", "1"]);
    ctl_ok(&endpoints, &["kv", "put", "app/b", "2"]);
    assert_eq!(ctl_ok(&endpoints, &["kv", "get", "app/a"]).trim(), "1");
    let ls = ctl_json(&endpoints, &["kv", "ls", "app/"]);
    assert_eq!(ls["kvs"].as_array().unwrap().len(), 2);
    let rev = ls["kvs"][0]["mod_revision"].as_u64().unwrap().to_string();
    ctl_ok(
        &endpoints,
        &["kv", "cas", "app/a", "10", "--expect-rev", &rev],
    );
    let failed = ctl(
        &endpoints,
        &["kv", "cas", "app/a", "11", "--expect-value", "1"],
    );
    assert!(!failed.status.success(), "a CAS on a stale value must fail");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("compare failed"));
    ctl_ok(&endpoints, &["kv", "del", "app/b"]);
    let missing = ctl(&endpoints, &["kv", "get", "app/b"]);
    assert_eq!(missing.status.code(), Some(4), "absent key exits 4");
    let bad = ctl(&endpoints, &["kv", "put", "", "x"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid key"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // A value above the kernel's limit for one argument (128 KiB) goes through stdin.
    let big: String = (0..200_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut put = Command::new(ballastctl())
        .args(["--endpoints", &endpoints, "kv", "put", "app/big"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running ballastctl");
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), big.as_bytes()).unwrap();
    let out = put.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ctl_ok(&endpoints, &["kv", "get", "app/big"]).trim_end(),
        big
    );
    let members = ctl_json(&endpoints, &["member", "list"]);
    assert_eq!(members.as_array().unwrap().len(), 3);
    let state = ctl_json(&endpoints, &["state", "show"]);
    assert_eq!(state["nodes"].as_array().unwrap().len(), 3);

    // 3. HTTP endpoints of every member.
    for p in &procs {
        assert_eq!(http_get(&p.http, "/healthz").0, 200);
        let (code, body) = http_get(&p.http, "/readyz");
        assert_eq!(code, 200, "node {} not ready: {body}", p.id);
        let (code, metrics) = http_get(&p.http, "/metrics");
        assert_eq!(code, 200);
        for m in [
            "ballast_raft_term",
            "ballast_raft_commit_index",
            "ballast_apply_duration_seconds",
            "ballast_requests_total",
        ] {
            assert!(metrics.contains(m), "node {} lacks {m}", p.id);
        }
    }

    // 4. 200 acknowledged writes, then SIGKILL of every process at once.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let eps: Vec<String> = procs.iter().map(|p| p.grpc.clone()).collect();
    rt.block_on(async {
        let c = Client::new(ClientConfig::new(eps.clone()));
        for i in 0..200 {
            c.put(format!("durable/{i:03}"), format!("{i}"))
                .await
                .unwrap();
        }
    });
    let restart: Vec<(u64, Vec<String>, String)> = procs
        .iter()
        .map(|p| (p.id, p.args.clone(), p.grpc.clone()))
        .collect();
    for p in &mut procs {
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
    }
    drop(procs);

    // 5. Restart on the same ports (peers know each other by address) and data directories.
    let mut procs = Vec::new();
    for (id, mut args, grpc) in restart {
        let i = args.iter().position(|a| a == "--listen").unwrap();
        args[i + 1] = grpc;
        // --bootstrap and --join only matter for an empty data directory.
        procs.push(spawn(d, id, args));
    }
    rt.block_on(async {
        let c = Client::new(ClientConfig::new(eps.clone()));
        let r = c.range("durable/", 0, false).await.unwrap();
        assert_eq!(
            r.kvs.len(),
            200,
            "every acknowledged write survived SIGKILL of all members"
        );
        assert_eq!(r.kvs[199].value, b"199");
        assert_eq!(
            c.get("app/a", false).await.unwrap().kv.unwrap().value,
            b"10"
        );
    });

    // 6. Starts that must be refused, with a message that says why.
    let wrong_node = Command::new(ballastd())
        .args(["--node-id", "5", "--data-dir"])
        .arg(d.join("node-1"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "off"])
        .output()
        .unwrap();
    assert!(!wrong_node.status.success());
    let msg = String::from_utf8_lossy(&wrong_node.stderr);
    assert!(msg.contains("belongs to node 1"), "{msg}");
    let other_cluster = Command::new(ballastd())
        .args(["--node-id", "1", "--data-dir"])
        .arg(d.join("node-1"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--cluster-name",
            "other",
        ])
        .args(["--initial-cluster", "1=127.0.0.1:7999"])
        .output()
        .unwrap();
    assert!(!other_cluster.status.success());
    let msg = String::from_utf8_lossy(&other_cluster.stderr);
    assert!(
        msg.contains("belongs to cluster") && msg.contains("\"other\""),
        "{msg}"
    );
    let bad_timing = Command::new(ballastd())
        .args([
            "--node-id",
            "1",
            "--heartbeat-ms",
            "500",
            "--election-timeout-min-ms",
            "400",
        ])
        .output()
        .unwrap();
    assert_eq!(bad_timing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_timing.stderr).contains("must be above heartbeat-ms"));
    let help = Command::new(ballastd()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for opt in [
        "--initial-cluster",
        "--join",
        "--bootstrap",
        "--log-format",
        "BALLAST_DATA_DIR",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}

/// `ballastctl snapshot save|inspect` and `ballastd restore --from` as operators run them.
#[test]
fn snapshot_save_inspect_and_restore_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = base_args(dir.path(), 1, "127.0.0.1:0");
    a.push("--bootstrap".into());
    let mut p1 = spawn(dir.path(), 1, a);
    let ep = p1.grpc.clone();
    wait_until("a leader", Duration::from_secs(20), || {
        ctl(&ep, &["kv", "put", "greeting", "hello"])
            .status
            .success()
            .then_some(())
    });
    let file = dir.path().join("cluster.bak");
    let file_s = file.display().to_string();
    // A backup holds every key and value: it is written 0600 whatever the umask, and never
    // through a file or symlink found at a temporary name (here one pointing elsewhere).
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    for tmp in ["cluster.part", "cluster.tmp", ".cluster.bak.tmp"] {
        std::os::unix::fs::symlink(&victim, dir.path().join(tmp)).unwrap();
    }
    let out = {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(ballastctl());
        c.args(["--endpoints", &ep, "snapshot", "save", &file_s]);
        // SAFETY: umask is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        c.output().unwrap()
    };
    let saved = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && saved.starts_with("saved "),
        "{saved} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(&file).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.mode() & 0o7777, 0o600, "the backup's mode");
    }
    let info = ctl_json(&ep, &["snapshot", "inspect", &file_s]);
    assert!(info["revision"].as_u64().unwrap() >= 1, "{info}");
    // A truncated copy is refused by inspect (exit 1, says why) and by restore (exit 1).
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.bak");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = ctl(&ep, &["snapshot", "inspect", &cut.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    let mut r = vec![
        "restore".to_string(),
        "--from".into(),
        cut.display().to_string(),
    ];
    r.extend(base_args(dir.path(), 2, "127.0.0.1:0"));
    r.push("--bootstrap".into());
    let out = Command::new(ballastd()).args(&r).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `restore --from` without a way to form a cluster: a configuration error (exit 2).
    let mut r = vec!["restore".to_string(), "--from".into(), file_s.clone()];
    r.extend(base_args(dir.path(), 3, "127.0.0.1:0"));
    let out = Command::new(ballastd()).args(&r).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("restore-from"));
    p1.child.kill().unwrap();
    let _ = p1.child.wait();

    // The good file seeds a new cluster.
    let mut r = vec!["restore".to_string(), "--from".into(), file_s];
    r.extend(base_args(dir.path(), 4, "127.0.0.1:0"));
    r.push("--bootstrap".into());
    let mut p4 = spawn(dir.path(), 4, r);
    let ep4 = p4.grpc.clone();
    let v = wait_until("the restored value", Duration::from_secs(20), || {
        let out = ctl(&ep4, &["kv", "get", "greeting"]);
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    });
    assert_eq!(v.trim(), "hello");
    p4.child.kill().unwrap();
    let _ = p4.child.wait();
}

/// `ballastctl certs` for a CA in `dir/<ca>`, certificates into the same directory.
fn certs_ok(args: &[&str]) {
    let out = Command::new(ballastctl())
        .arg("certs")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ballastctl certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The certificate a member shows to a new TLS connection (made with a client certificate).
fn presented_cert(addr: &str, ca: &Path, cert: &Path, key: &Path) -> Vec<u8> {
    use ballast_client::tls;
    let roots = tls::load_roots(ca).unwrap();
    let (chain, key) = tls::load_identity(cert, key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn log_of(dir: &Path, id: u64) -> String {
    std::fs::read_to_string(dir.join(format!("node-{id}.log"))).unwrap_or_default()
}

#[test]
fn mutual_tls_cluster_refuses_strangers_and_reloads_certificates_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: PathBuf| p.display().to_string();
    let (ca, other) = (d.join("ca"), d.join("other-ca"));
    certs_ok(&["init", "--dir", &s(ca.clone())]);
    certs_ok(&["init", "--dir", &s(other.clone())]);
    // Member certificates n1..n3 for loopback, naming their member, written to `out`.
    let issue_nodes = |out: &Path| {
        for id in 1..=3 {
            let name = format!("n{id}");
            let (ca_dir, out) = (s(ca.clone()), s(out.to_path_buf()));
            certs_ok(&[
                "issue",
                &name,
                "--ca-dir",
                &ca_dir,
                "--out",
                &out,
                "--san",
                "127.0.0.1,localhost",
                "--member",
                &id.to_string(),
            ]);
        }
    };
    issue_nodes(&ca);
    certs_ok(&["issue", "ops", "--client", "--ca-dir", &s(ca.clone())]);
    certs_ok(&["issue", "ops", "--client", "--ca-dir", &s(other.clone())]);
    // An agent-only server's certificate names its node; without --san it only calls.
    certs_ok(&["issue", "ag4", "--node", "4", "--ca-dir", &s(ca.clone())]);
    for (file, want) in [
        (
            "n1.pem",
            Some(ballast_client::identity::CertIdentity::Member(1)),
        ),
        (
            "ag4.pem",
            Some(ballast_client::identity::CertIdentity::Node(4)),
        ),
        ("ops.pem", None),
    ] {
        let der = ballast_client::tls::load_certs(&ca.join(file)).unwrap();
        assert_eq!(
            ballast_client::identity::identity_of(&der[0]),
            Ok(want),
            "{file}"
        );
    }
    let tls_args = |id: u64| -> Vec<String> {
        vec![
            "--tls-ca".into(),
            s(ca.join("ca.pem")),
            "--tls-cert".into(),
            s(ca.join(format!("n{id}.pem"))),
            "--tls-key".into(),
            s(ca.join(format!("n{id}-key.pem"))),
            "--token-file".into(),
            s(d.join("tokens")),
        ]
    };
    std::fs::write(
        d.join("tokens"),
        "member tls-test-member-token-001\nadmin tls-test-admin-token-0001\n",
    )
    .unwrap();

    // 1. Three members that speak only mutual TLS, with API tokens, form a cluster (Raft
    //    over TLS too; joining calls the cluster with the member's certificate and token).
    let mut procs = start_three(d, tls_args);
    let endpoints = endpoints_of(&procs);
    let good = [
        "--cacert".to_string(),
        s(ca.join("ca.pem")),
        "--cert".into(),
        s(ca.join("ops.pem")),
        "--key".into(),
        s(ca.join("ops-key.pem")),
        "--token".into(),
        "tls-test-admin-token-0001".into(),
    ];
    let with = |tls: &[String], args: &[&str]| -> Output {
        let mut a: Vec<&str> = tls.iter().map(String::as_str).collect();
        a.extend(args);
        ctl(&endpoints, &a)
    };
    wait_until(
        "three reachable voters over TLS",
        Duration::from_secs(30),
        || {
            let out = with(&good, &["status", "-o", "json", "--timeout", "2"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (voters(&v) == 3 && v["leader_id"].as_u64()? > 0).then_some(())
        },
    );
    let put = |k: &str| {
        let out = with(&good, &["kv", "put", k, "v"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    put("before");

    // 2. Strangers are refused: plaintext, TLS without a certificate, another CA's
    //    certificate, and a certificate the server does not trust the client CA of.
    let no_cert = ["--cacert".to_string(), s(ca.join("ca.pem"))];
    let other_cert = [
        "--cacert".to_string(),
        s(ca.join("ca.pem")),
        "--cert".into(),
        s(other.join("ops.pem")),
        "--key".into(),
        s(other.join("ops-key.pem")),
    ];
    for (what, tls) in [
        ("plaintext", &[][..]),
        ("no client certificate", &no_cert[..]),
        ("a certificate from another CA", &other_cert[..]),
    ] {
        let out = with(tls, &["kv", "get", "before", "--timeout", "2"]);
        assert!(!out.status.success(), "{what}: the call must be refused");
        assert!(out.stdout.is_empty(), "{what}: nothing may be answered");
    }
    assert!(
        log_of(d, 1).contains("TLS handshake refused"),
        "refusals are logged"
    );
    // Its own certificate names it and the token file has a member line: it checks both.
    for warning in ["names no member", "has no `member` line"] {
        assert!(!log_of(d, 1).contains(warning), "{warning}");
    }

    // 3. Rotation: new certificates moved into place, SIGHUP to every member. New
    //    connections get the new certificate, the cluster keeps committing throughout.
    let shown = |addr: &str| {
        presented_cert(
            addr,
            &ca.join("ca.pem"),
            &ca.join("ops.pem"),
            &ca.join("ops-key.pem"),
        )
    };
    let old = shown(&procs[0].grpc);
    let rotated = d.join("rotated");
    issue_nodes(&rotated);
    for id in 1..=3 {
        for f in [format!("n{id}.pem"), format!("n{id}-key.pem")] {
            std::fs::rename(rotated.join(&f), ca.join(&f)).unwrap();
        }
    }
    for p in &procs {
        unsafe { libc::kill(p.child.id() as i32, libc::SIGHUP) };
    }
    let want_first = ballast_client::tls::load_certs(&ca.join("n1.pem")).unwrap()[0].to_vec();
    for p in &procs {
        wait_until("the reload to be logged", Duration::from_secs(10), || {
            log_of(d, p.id)
                .contains("reloaded its TLS certificates")
                .then_some(())
        });
        let now = shown(&p.grpc);
        let want = ballast_client::tls::load_certs(&ca.join(format!("n{}.pem", p.id))).unwrap();
        assert!(
            now == want[0].to_vec(),
            "node {} shows its new certificate",
            p.id
        );
    }
    assert!(old != want_first, "the certificate changed");
    put("after-rotation");

    // 4. A broken file on reload changes nothing: the member says why and keeps serving.
    std::fs::write(ca.join("n2.pem"), "not a certificate").unwrap();
    unsafe { libc::kill(procs[1].child.id() as i32, libc::SIGHUP) };
    wait_until(
        "the failed reload to be logged",
        Duration::from_secs(10),
        || log_of(d, 2).contains("TLS reload failed").then_some(()),
    );
    put("after-bad-reload");

    // 5. After the rotation the cluster still fails over: with the leader killed, the other
    //    two elect a new one and keep every write.
    let status = with(&good, &["status", "-o", "json"]);
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let leader = v["leader_id"].as_u64().unwrap();
    let idx = procs.iter().position(|p| p.id == leader).unwrap();
    let mut gone = procs.remove(idx);
    gone.child.kill().unwrap();
    let _ = gone.child.wait();
    wait_until(
        "a write after the leader's death",
        Duration::from_secs(30),
        || {
            with(
                &good,
                &["kv", "put", "after-failover", "v", "--timeout", "2"],
            )
            .status
            .success()
            .then_some(())
        },
    );
    for k in [
        "before",
        "after-rotation",
        "after-bad-reload",
        "after-failover",
    ] {
        let out = with(&good, &["kv", "get", k]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v", "{k}");
    }
}
