//! A connected session's two directions. A reader task takes in everything the peer sends,
//! even while the session is busy writing, and notes when it last heard from the peer: so a
//! router that floods UPDATEs never blocks on us, a slow write never hides the router's
//! keepalives, and the hold timer reads one timestamp. Writes have deadlines, so a peer that
//! stops reading (a half-open connection) ends the session instead of stalling it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SessionError;
use crate::wire::{self, Message, MAX_MESSAGE_LEN};

/// Messages waiting for the session. KEEPALIVEs and UPDATEs beyond this are dropped.
const INBOX: usize = 8;

pub(crate) struct Conn {
    write: OwnedWriteHalf,
    inbox: mpsc::Receiver<Result<Message, SessionError>>,
    heard: Arc<Mutex<Instant>>,
    reader: JoinHandle<()>,
    /// Our end of the connection: the default next hop.
    pub local: SocketAddr,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Result<Conn, SessionError> {
        let local = stream.local_addr().map_err(SessionError::Io)?;
        let (read, write) = stream.into_split();
        let (tx, inbox) = mpsc::channel(INBOX);
        let heard = Arc::new(Mutex::new(Instant::now()));
        let reader = tokio::spawn(read_loop(read, tx, heard.clone()));
        Ok(Conn {
            write,
            inbox,
            heard,
            reader,
            local,
        })
    }

    /// Writes whole messages, or fails if that takes longer than `within`. After a failure the
    /// stream may hold part of a message: the session must end without another word.
    pub(crate) async fn send(
        &mut self,
        bytes: &[u8],
        within: Duration,
    ) -> Result<(), SessionError> {
        match tokio::time::timeout(within, self.write.write_all(bytes)).await {
            Ok(r) => r.map_err(SessionError::Io),
            Err(_) => Err(SessionError::WriteTimeout(within)),
        }
    }

    /// The next message, or why there will be none. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<Message, SessionError> {
        match self.inbox.recv().await {
            Some(m) => m,
            None => Err(SessionError::Closed),
        }
    }

    /// When the last whole message (of any type) arrived.
    pub(crate) fn last_heard(&self) -> Instant {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    mut read: OwnedReadHalf,
    tx: mpsc::Sender<Result<Message, SessionError>>,
    heard: Arc<Mutex<Instant>>,
) {
    let mut buf = Vec::with_capacity(2 * MAX_MESSAGE_LEN);
    let mut chunk = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        // Every whole message in the buffer first: a peer's last words before it closes
        // (a NOTIFICATION) are delivered before the close.
        loop {
            match wire::decode(&buf) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    *heard.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    match msg {
                        // Liveness, which `heard` already records, or an UPDATE, whose
                        // contents nobody reads: dropped rather than waited for when the
                        // session is busy, so a flood never stops the reading. The session
                        // still sees one that comes before Established, which is an error.
                        Message::Update | Message::Keepalive => {
                            let _ = tx.try_send(Ok(msg));
                        }
                        other => {
                            if tx.send(Ok(other)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(SessionError::Wire(e))).await;
                    return;
                }
            }
        }
        let error = match read.read(&mut chunk).await {
            Ok(0) => SessionError::Closed,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
            Err(e) => SessionError::Io(e),
        };
        let _ = tx.send(Err(error)).await;
        return;
    }
}
