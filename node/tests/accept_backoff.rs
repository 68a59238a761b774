//! The gRPC accept loop out of file descriptors (EMFILE): it must back off, not spin.
//!
//! A binary of its own: it lowers this process's RLIMIT_NOFILE and fills the descriptor table,
//! which no other test may share. The connection waiting in the listener's backlog makes every
//! `accept` fail at once with EMFILE; a loop that retries without pausing burns a core. The
//! test measures the process's CPU time while the table is full, then frees the descriptors
//! and waits for the waiting connection to be accepted.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_node::tls::{incoming, NodeTls, NodeTlsFiles};
use futures::StreamExt;

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    assert_eq!(r, 0);
    // SAFETY: filled above.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Lowers the soft descriptor limit just above what is open and opens /dev/null until the
/// table is full. The returned files hold it full.
fn fill_descriptor_table() -> Vec<std::fs::File> {
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = (highest + 32).min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let mut files = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return files,
            Err(e) => panic!("filling the descriptor table: {e}"),
        }
    }
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn out_of_descriptors(tls: Option<Arc<NodeTls>>) {
    let name = if tls.is_some() { "tls" } else { "plain" };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let mut conns = incoming(listener, tls.clone());
    let consumer = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(c) = conns.next().await {
                // Errors are what tonic would log and skip.
                if let Ok(c) = c {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    held.push(c);
                }
            }
        })
    };

    let mut fillers = fill_descriptor_table();
    // One descriptor for the client; then the table is full again and the connection waits
    // in the backlog, so every accept fails with EMFILE.
    drop(fillers.pop());
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "the table is full"
    );

    let errors = || ballast_node::metrics::ACCEPT_ERRORS.get();
    let before = errors();
    wait_for(
        "the accept loop to meet EMFILE",
        Duration::from_secs(5),
        || (errors() > before).then_some(()),
    )
    .await;
    let window = Duration::from_secs(2);
    let (cpu0, t0, errors0) = (cpu_time(), Instant::now(), errors());
    tokio::time::sleep(window).await; // the measuring window, not a wait for an event
    let (cpu, wall, failed) = (cpu_time() - cpu0, t0.elapsed(), errors() - errors0);
    eprintln!(
        "{name}: {failed} failed accepts and {cpu:?} of CPU in {wall:?} with the descriptor table full"
    );
    // Pauses of 5, 10, 20, ... ms up to 1 s: about ten attempts in two seconds.
    assert!(failed <= 15, "{name}: {failed} failed accepts in {wall:?}");
    assert!(
        cpu < Duration::from_millis(150),
        "{name}: the accept loop used {cpu:?} of CPU in {wall:?} while out of descriptors: it spins"
    );

    // Descriptors free again: the waiting connection is accepted within the longest pause.
    drop(fillers);
    if tls.is_none() {
        wait_for(
            "the waiting connection to be accepted",
            Duration::from_secs(5),
            || (accepted.load(Ordering::Relaxed) == 1).then_some(()),
        )
        .await;
    } else {
        // Not TLS: once accepted, the handshake fails; the server answers with an alert and
        // closes the connection. Before the accept, the read times out.
        client.write_all(b"not TLS\r\n\r\n").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 64];
        let t = Instant::now();
        let r = client.read(&mut b);
        assert!(
            r.as_ref()
                .map_or_else(|e| e.kind() != std::io::ErrorKind::WouldBlock, |_| true),
            "{name}: the waiting connection was not accepted and closed within 5 s: {r:?} after {:?}",
            t.elapsed()
        );
    }
    // Everything of this round closed before the next one fills the table again.
    consumer.abort();
    let _ = consumer.await;
    drop(client);
    wait_for("the listener to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    })
    .await;
}

#[test]
fn an_accept_loop_out_of_descriptors_backs_off_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    ballast_client::certs::init_ca(dir.path(), "test CA", 1).unwrap();
    let (cert, key) = ballast_client::certs::issue(
        dir.path(),
        dir.path(),
        "n1",
        &["127.0.0.1".into()],
        ballast_client::certs::Kind::Node,
        None,
        1,
    )
    .unwrap();
    let tls = NodeTls::load(NodeTlsFiles {
        ca: dir.path().join(ballast_client::certs::CA_CERT),
        cert,
        key,
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        out_of_descriptors(None).await;
        out_of_descriptors(Some(tls)).await;
    });
}
