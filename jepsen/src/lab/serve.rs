//! Tiny TCP and HTTP servers on every node host, for tests of what a VIP reaches (each
//! host's name, or a file standing in for a service's release), and a one-shot TCP read from
//! a host. They stop when the lab is dropped. Real programs are `process.rs`'s.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::network::{in_netns, Host, Lab, LabError};

impl Lab {
    /// Serves TCP on `[::]:port` (IPv4 too) in every node host until the lab is dropped: each
    /// connection is answered with the host's name and closed. Shows which server a TCP client
    /// of a VIP reached.
    pub fn serve_names(&self, port: u16) -> Result<(), LabError> {
        self.serve_each(port, |h| {
            let name = h.name.clone();
            move |mut c: std::net::TcpStream| {
                use std::io::Write;
                let _ = c.write_all(name.as_bytes());
            }
        })
    }

    /// Serves HTTP on `[::]:port` (IPv4 too) in every node host until the lab is dropped, a tiny
    /// stand-in for a real service: `GET` answers 200 with the content of `file(host)`, or 503
    /// when the file is missing or starts with "broken".
    pub(crate) fn serve_files(
        &self,
        port: u16,
        file: impl Fn(&Host) -> PathBuf,
    ) -> Result<(), LabError> {
        self.serve_each(port, |h| {
            let path = file(h);
            move |mut c: std::net::TcpStream| {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let mut req = [0u8; 1024];
                let _ = c.read(&mut req);
                let (code, body) = match std::fs::read_to_string(&path) {
                    Ok(b) if !b.starts_with("broken") => ("200 OK", b),
                    _ => ("503 Service Unavailable", "unavailable".to_string()),
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
    }

    /// Listens on `[::]:port` (IPv4 too) in every node host, one thread each, until the lab is
    /// dropped; `handler(host)` answers each connection of that host, one at a time.
    fn serve_each<H: FnMut(std::net::TcpStream) + Send + 'static>(
        &self,
        port: u16,
        handler: impl Fn(&Host) -> H,
    ) -> Result<(), LabError> {
        for h in &self.nodes {
            let mut handle = handler(h);
            let stop = self.stop_servers.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            in_netns(h, move || {
                // Dual stack: the lab's sysctls leave IPv4-mapped addresses on.
                let l = match std::net::TcpListener::bind(("::", port)) {
                    Ok(l) => l,
                    Err(e) => return ready_tx.send(Err(e.to_string())).unwrap_or(()),
                };
                l.set_nonblocking(true).expect("nonblocking listener");
                let _ = ready_tx.send(Ok(()));
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            let _ = c.set_nonblocking(false);
                            handle(c);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })?;
            ready_rx
                .recv()
                .map_err(|e| LabError::Setup(e.to_string()))?
                .map_err(|e| LabError::Setup(format!("serving on {port} in {}: {e}", h.name)))?;
        }
        Ok(())
    }

    /// Connects from `from` to `addr:port` (1 s limit) and returns what the server sent.
    pub fn tcp_read(
        &self,
        from: &Host,
        addr: impl Into<IpAddr>,
        port: u16,
    ) -> Result<String, LabError> {
        let addr: IpAddr = addr.into();
        self.run_in(from, move || -> Result<String, String> {
            use std::io::Read;
            let mut c = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((addr, port)),
                Duration::from_secs(1),
            )
            .map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
            let mut s = String::new();
            c.read_to_string(&mut s).map_err(|e| e.to_string())?;
            Ok(s)
        })?
        .map_err(LabError::Setup)
    }
}
