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
            Some(Kind::Tcp(t)) => {
                tokio::net::TcpStream::connect(SocketAddr::new(host, t.port as u16))
                    .await
                    .is_ok()
            }
            Some(Kind::Http(h)) => http(host, h).await.unwrap_or(false),
            Some(Kind::Exec(e)) => match exec.get(&e.name) {
                Some(argv) if !argv.is_empty() => tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                // Not configured on this server: it cannot pass.
                _ => false,
            },
            None => false,
        }
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or(false)
}

async fn http(host: IpAddr, h: &v1::HttpCheck) -> std::io::Result<bool> {
    let mut s = tokio::net::TcpStream::connect(SocketAddr::new(host, h.port as u16)).await?;
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ballast-agent\r\n\r\n",
        h.path
    );
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
