//! Batches concurrent client commands into one Raft log entry.
//!
//! Each batch costs one append, one replication message per follower and one fsync on each
//! member, whatever its size; under load that is how puts keep up (etcd batches the same way).
//! At most [`MAX_IN_FLIGHT`] batches are being committed at once; commands that arrive
//! meanwhile wait and form the next batch. A lone command is proposed at once.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::network::ForwardError;
use crate::node::{now_ms, WRITE_TIMEOUT};
use crate::types::{Batch, Command, CommandResult, Raft};

/// Most commands in one log entry.
pub const MAX_BATCH: usize = 256;
/// Batches being committed at the same time.
pub const MAX_IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<Result<CommandResult, ForwardError>>;

pub struct Proposer {
    tx: mpsc::Sender<(Command, Reply)>,
}

impl Proposer {
    pub fn spawn(raft: Raft, stop: watch::Receiver<bool>) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(raft, rx, stop));
        Proposer { tx }
    }

    /// Proposes `cmd` on this member; refuses with a leader hint when it is not the leader.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ForwardError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((cmd, reply))
            .await
            .map_err(|_| ForwardError::Unavailable("member is stopping".into()))?;
        match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
            Err(_) => Err(ForwardError::Unavailable(
                "timed out waiting for the write to commit; its outcome is unknown (retry with the same request id)".into(),
            )),
            Ok(Err(_)) => Err(ForwardError::Unavailable("member is stopping".into())),
            Ok(Ok(r)) => r,
        }
    }
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.wait_for(|s| *s) => return,
        };
        let first = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            // The leader's clock stamps every command; followers only suggest.
            let now = now_ms();
            let (commands, replies): (Vec<Command>, Vec<Reply>) = batch
                .into_iter()
                .map(|(mut c, r)| {
                    c.now_ms = now;
                    (c, r)
                })
                .unzip();
            let res = raft.client_write(Batch { commands }).await;
            drop(permit);
            match res {
                Ok(resp) => {
                    for (reply, r) in replies.into_iter().zip(resp.data.results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    let err = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                            ForwardError::NotLeader {
                                leader_id: f.leader_id,
                                leader_addr: f.leader_node.map(|n| n.addr),
                            }
                        }
                        e => ForwardError::Unavailable(e.to_string()),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}
