//! An HTTP client on a lab host that requests a URL over and over and records every answer:
//! what a user of a service behind a VIP sees during failovers and rollouts.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lab::{in_netns, Host, LabError};

/// One request's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub at: Instant,
    /// The body of a 200 answer, or why there was none.
    pub result: Result<String, String>,
}

/// `GET /` once (300 ms limits, like an impatient client); the body of a 200 answer.
pub fn get(addr: Ipv4Addr, port: u16) -> Result<String, String> {
    let mut c =
        TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_millis(300))
            .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut s = String::new();
    c.read_to_string(&mut s).map_err(|e| format!("read: {e}"))?;
    let (head, body) = s.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

/// Requests `http://addr:port/` from `host` every `every` until stopped.
pub struct HttpProber {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpProber {
    pub fn start(
        host: &Host,
        addr: Ipv4Addr,
        port: u16,
        every: Duration,
    ) -> Result<Self, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), answers.clone());
        let thread = in_netns(host, move || {
            while !s.load(Ordering::Relaxed) {
                let at = Instant::now();
                let result = get(addr, port);
                a.lock().unwrap().push(Answer { at, result });
                std::thread::sleep(every.saturating_sub(at.elapsed()));
            }
        })?;
        Ok(HttpProber {
            stop,
            answers,
            thread: Some(thread),
        })
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    /// Stops and returns every answer.
    pub fn stop(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.answers()
    }
}

impl Drop for HttpProber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The longest run of failed answers, from the first failure to the next success.
pub fn longest_failure(answers: &[Answer]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since: Option<Instant> = None;
    for a in answers {
        match (&a.result, since) {
            (Err(_), None) => since = Some(a.at),
            (Ok(_), Some(s)) => {
                longest = longest.max(a.at - s);
                since = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(last)) = (since, answers.last()) {
        longest = longest.max(last.at - s);
    }
    longest
}
