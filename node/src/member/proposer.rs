//! Batches concurrent client commands into one Raft log entry.
//!
//! Each batch costs one append, one replication message per follower and one fsync on each
//! member, whatever its size; under load that is how puts keep up (etcd batches the same way).
//! At most [`MAX_IN_FLIGHT`] batches are being committed at once; commands that arrive
//! meanwhile wait and form the next batch. A lone command is proposed at once.
//!
//! A batch is bounded by count ([`MAX_BATCH`]) and by encoded size ([`MAX_BATCH_BYTES`]): a
//! log entry must travel in one Raft message (`ballast_proto::MAX_MESSAGE_LEN`), and a small
//! one replicates within a heartbeat (see `replicate.rs`). A command larger than the byte
//! bound forms a batch of its own; no command is larger than [`MAX_COMMAND_BYTES`]
//! (`Node::propose` refuses it).

use std::sync::Arc;

use openraft::errors::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::member::network::ForwardError;
use crate::types::{Batch, Command, CommandResult, Raft};

/// How long a write may wait for commit before the caller is told the outcome is unknown.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Milliseconds since the Unix epoch on this machine's wall clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Most commands in one log entry.
pub const MAX_BATCH: usize = 256;
/// Most encoded bytes of the commands batched into one log entry; a single larger command
/// still forms a batch alone.
pub const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Largest encoded command: the largest backup state a restore carries
/// (`MAX_MESSAGE_LEN / 2`) and room for its envelope, so that its log entry fits one Raft
/// message with room to spare.
pub const MAX_COMMAND_BYTES: u64 = (ballast_proto::MAX_MESSAGE_LEN / 2 + 64 * 1024) as u64;
/// Batches being committed at the same time.
pub const MAX_IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<Result<CommandResult, ForwardError>>;

/// The encoded size of a command in the log.
pub fn command_bytes(cmd: &Command) -> u64 {
    bincode::serialized_size(cmd).expect("commands always encode")
}

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

/// Forms one batch: `first`, then what `next` yields while the batch stays within
/// [`MAX_BATCH`] commands and [`MAX_BATCH_BYTES`]; returns it with the item that did not fit.
fn fill<T>(
    first: T,
    size: impl Fn(&T) -> u64,
    mut next: impl FnMut() -> Option<T>,
) -> (Vec<T>, Option<T>) {
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Some(c) = next() else { break };
        let s = size(&c);
        if bytes + s > MAX_BATCH_BYTES {
            return (batch, Some(c));
        }
        bytes += s;
        batch.push(c);
    }
    (batch, None)
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A command taken from the queue that did not fit the previous batch.
    let mut held: Option<(Command, Reply)> = None;
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.wait_for(|s| *s) => return,
        };
        let first = match held.take() {
            Some(c) => c,
            None => tokio::select! {
                c = rx.recv() => match c { Some(c) => c, None => return },
                _ = stop.wait_for(|s| *s) => return,
            },
        };
        let (batch, rest) = fill(first, |c| command_bytes(&c.0), || rx.try_recv().ok());
        held = rest;
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
                        // openraft 0.10: the leadership changed after the entry was
                        // appended, so it may still commit under the next leader. Not
                        // NotLeader, which would tell the client it was not written; the
                        // client retries with the same request id, which deduplicates.
                        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
                            ForwardError::Unavailable(format!(
                                "outcome unknown, the leadership changed ({f}); retry with the same request id"
                            ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(sizes: &[u64]) -> Vec<Vec<u64>> {
        let mut queue = sizes.iter().copied();
        let mut held = None;
        let mut out = Vec::new();
        while let Some(first) = held.take().or_else(|| queue.next()) {
            let (b, rest) = fill(first, |s| *s, || queue.next());
            held = rest;
            out.push(b);
        }
        out
    }

    #[test]
    fn batches_are_bounded_by_bytes_and_count() {
        let big = MAX_BATCH_BYTES / 3;
        // Three fit, the fourth starts the next batch; nothing is lost or reordered.
        assert_eq!(
            batches(&[big, big, big, big, 1]),
            vec![vec![big, big, big], vec![big, 1]]
        );
        // A command above the bound forms a batch of its own.
        let huge = MAX_COMMAND_BYTES;
        assert_eq!(batches(&[1, huge, 1]), vec![vec![1], vec![huge], vec![1]]);
        // Small commands are bounded by count.
        let many = batches(&vec![10; MAX_BATCH + 1]);
        assert_eq!(
            many.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_BATCH, 1]
        );
    }
}
