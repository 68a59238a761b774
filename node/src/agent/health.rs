//! Health checks with HAProxy-like rise and fall, and the probes (http, tcp, exec).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ballast_proto::v1::{self, health_check::Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Turns probe results into health transitions: `rise` consecutive successes make a backend
/// healthy, `fall` consecutive failures unhealthy. Starts unknown.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    ok_streak: u32,
    fail_streak: u32,
    pub health: v1::Health,
}

impl RiseFall {
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            ok_streak: 0,
            fail_streak: 0,
            health: v1::Health::Unknown,
        }
    }

    /// Records one probe; returns the new health on a transition.
    pub fn observe(&mut self, ok: bool) -> Option<v1::Health> {
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
            if self.ok_streak >= self.rise && self.health != v1::Health::Healthy {
                self.health = v1::Health::Healthy;
                return Some(self.health);
            }
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
            if self.fail_streak >= self.fall && self.health != v1::Health::Unhealthy {
                self.health = v1::Health::Unhealthy;
                return Some(self.health);
            }
        }
        None
    }
}

/// Runs one probe against `host`; exec checks name commands in `exec` (local configuration).
pub async fn probe(
    check: &v1::HealthCheck,
    host: IpAddr,
    exec: &BTreeMap<String, Vec<String>>,
) -> bool {
    let timeout = Duration::from_millis(check.timeout_ms.max(1) as u64);
    let fut = async {
        match &check.kind {
            Some(Kind::Tcp(t)) => match port(t.port) {
                Some(p) => tokio::net::TcpStream::connect(SocketAddr::new(host, p))
                    .await
                    .is_ok(),
                None => false,
            },
            Some(Kind::Http(h)) => http(host, h).await.unwrap_or(false),
            Some(Kind::Exec(e)) => match exec.get(&e.name) {
                Some(argv) if !argv.is_empty() => {
                    tokio::process::Command::from(super::caps::command(argv))
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .status()
                        .await
                        .is_ok_and(|s| s.success())
                }
                // Not configured on this server: it cannot pass.
                _ => false,
            },
            None => false,
        }
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or(false)
}

/// A port of a check, if it is one (the API refuses others; a check from an older state
/// might not have been).
fn port(p: u32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// The request of an http check, or why it cannot be sent. The path is checked again here,
/// whatever the API accepted when the check was defined: a CR or LF in it would let the check
/// add header lines or a second request.
pub fn http_request(host: IpAddr, h: &v1::HttpCheck) -> Result<(SocketAddr, String), String> {
    let addr = SocketAddr::new(
        host,
        port(h.port).ok_or_else(|| format!("port {} is not in 1..=65535", h.port))?,
    );
    crate::validate::http_path("http.path", &h.path).map_err(|e| e.to_string())?;
    // `Host` names the port and brackets an IPv6 address, as SocketAddr displays them.
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: ballast-agent\r\n\r\n",
        h.path
    );
    Ok((addr, req))
}

async fn http(host: IpAddr, h: &v1::HttpCheck) -> std::io::Result<bool> {
    let (addr, req) = match http_request(host, h) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "http check not sent");
            return Ok(false);
        }
    };
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let code: u32 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((h.expect_status_min..=h.expect_status_max).contains(&code)
        && (h.body_contains.is_empty() || body.contains(&h.body_contains)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_like_haproxy() {
        let mut r = RiseFall::new(2, 3);
        assert_eq!(r.observe(true), None);
        assert_eq!(r.observe(true), Some(v1::Health::Healthy));
        assert_eq!(r.observe(true), None);
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(true), None, "a success resets the failure streak");
        for _ in 0..2 {
            assert_eq!(r.observe(false), None);
        }
        assert_eq!(r.observe(false), Some(v1::Health::Unhealthy));
        assert_eq!(r.observe(true), None);
        assert_eq!(r.observe(true), Some(v1::Health::Healthy));
    }

    /// A listener that answers 200 and hands over each request it read.
    async fn recording_server(addr: &str) -> (u32, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let port = l.local_addr().unwrap().port() as u32;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = vec![0u8; 4096];
                let n = s.read(&mut b).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&b[..n]).into_owned());
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nok").await;
            }
        });
        (port, rx)
    }

    fn http_check(port: u32, path: &str) -> v1::HealthCheck {
        v1::HealthCheck {
            kind: Some(Kind::Http(v1::HttpCheck {
                port,
                path: path.into(),
                expect_status_min: 200,
                expect_status_max: 399,
                body_contains: String::new(),
            })),
            timeout_ms: 2000,
            interval_ms: 2000,
            rise: 1,
            fall: 1,
        }
    }

    /// A check held in the state from before paths were validated (or altered on the way)
    /// still cannot put a header line into the request, nor reach a port it does not name.
    #[tokio::test]
    async fn the_checker_sends_only_a_well_formed_request() {
        let (port, mut seen) = recording_server("127.0.0.1:0").await;
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let none = BTreeMap::new();
        assert!(probe(&http_check(port, "/healthz"), host, &none).await);
        let req = seen.recv().await.unwrap();
        assert!(
            req.starts_with(&format!(
                "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
            )),
            "{req:?}"
        );
        for bad in ["/x\r\nX-Injected: 1", "/x\nX-Injected: 1", "/a b"] {
            assert!(!probe(&http_check(port, bad), host, &none).await, "{bad:?}");
        }
        // A port beyond 65535 fails instead of wrapping around to another one.
        let wrapped = port + 65536;
        assert!(!probe(&http_check(wrapped, "/"), host, &none).await);
        let tcp = v1::HealthCheck {
            kind: Some(Kind::Tcp(v1::TcpCheck { port: wrapped })),
            ..http_check(0, "/")
        };
        assert!(!probe(&tcp, host, &none).await);
        // Nothing reached the server after the good request.
        assert!(seen.try_recv().is_err(), "{:?}", seen.try_recv());

        // IPv6: the Host header brackets the address.
        let (port6, mut seen6) = recording_server("[::1]:0").await;
        let host6: IpAddr = "::1".parse().unwrap();
        assert!(probe(&http_check(port6, "/"), host6, &none).await);
        let req = seen6.recv().await.unwrap();
        assert!(
            req.contains(&format!("\r\nHost: [::1]:{port6}\r\n")),
            "{req:?}"
        );
    }

    #[tokio::test]
    async fn tcp_and_http_probes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port() as u32;
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nrelease v2").await;
            }
        });
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let check = |kind| v1::HealthCheck {
            kind: Some(kind),
            timeout_ms: 1000,
            interval_ms: 1000,
            rise: 1,
            fall: 1,
        };
        let none = BTreeMap::new();
        assert!(probe(&check(Kind::Tcp(v1::TcpCheck { port })), host, &none).await);
        let http = |body: &str, min, max| {
            Kind::Http(v1::HttpCheck {
                port,
                path: "/".into(),
                expect_status_min: min,
                expect_status_max: max,
                body_contains: body.into(),
            })
        };
        assert!(probe(&check(http("v2", 200, 399)), host, &none).await);
        assert!(!probe(&check(http("v3", 200, 399)), host, &none).await);
        assert!(!probe(&check(http("", 300, 399)), host, &none).await);
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port() as u32
        };
        assert!(!probe(&check(Kind::Tcp(v1::TcpCheck { port: dead })), host, &none).await);
        let exec = BTreeMap::from([("ok".to_string(), vec!["true".to_string()])]);
        assert!(
            probe(
                &check(Kind::Exec(v1::ExecCheck { name: "ok".into() })),
                host,
                &exec
            )
            .await
        );
        assert!(
            !probe(
                &check(Kind::Exec(v1::ExecCheck {
                    name: "missing".into()
                })),
                host,
                &exec
            )
            .await
        );
    }
}
