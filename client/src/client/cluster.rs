//! The Cluster service: a member's status (the preferred member's, or one member's without
//! failover), Raft membership changes, and whole-cluster backups checked before they are
//! returned. It does not interpret what members answer (see `crate::report`).

use std::time::Duration;

use ballast_proto::v1::{self, cluster_client::ClusterClient};
use ballast_proto::MAX_MESSAGE_LEN;

use super::{channel, normalize, Client};
use crate::auth_channel::AuthChannel;
use crate::error::Error;

impl Client {
    pub(crate) fn cluster(ch: AuthChannel) -> ClusterClient<AuthChannel> {
        ClusterClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN)
    }

    /// The status as seen by the preferred member.
    pub async fn status(&self) -> Result<v1::StatusResponse, Error> {
        self.call("status", |ch| async move {
            Self::cluster(ch).status(v1::StatusRequest {}).await
        })
        .await
    }

    /// The status as seen by one member, without failover.
    pub async fn member_status(&self, endpoint: &str) -> Result<v1::StatusResponse, Error> {
        let ch = channel(&normalize(endpoint), &self.inner.cfg)?;
        let mut req = tonic::Request::new(v1::StatusRequest {});
        req.set_timeout(self.inner.cfg.attempt_timeout.min(Duration::from_secs(2)));
        Self::cluster(self.wrap(ch))
            .status(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Error::from_status(&s))
    }

    /// A consistent backup of the whole cluster state: the bytes of a backup file (see
    /// [`crate::backup`]), checked before they are returned.
    pub async fn snapshot(&self) -> Result<Vec<u8>, Error> {
        let mut stream = self
            .call("snapshot", |ch| async move {
                Self::cluster(ch).snapshot(v1::SnapshotRequest {}).await
            })
            .await?;
        let mut out = Vec::new();
        while let Some(c) = stream.message().await.map_err(|s| Error::from_status(&s))? {
            out.extend(c.data);
        }
        crate::backup::decode(&out)
            .map_err(|e| Error::Other(format!("the backup received is not whole: {e}")))?;
        Ok(out)
    }

    pub async fn add_learner(
        &self,
        node_id: u64,
        addr: &str,
        wait_caught_up: bool,
    ) -> Result<v1::MembershipResponse, Error> {
        let req = v1::AddLearnerRequest {
            node_id,
            addr: addr.to_string(),
            wait_caught_up,
        };
        self.call("add learner", |ch| {
            let req = req.clone();
            async move { Self::cluster(ch).add_learner(req).await }
        })
        .await
    }

    pub async fn promote_voter(&self, node_id: u64) -> Result<v1::MembershipResponse, Error> {
        self.call("promote voter", |ch| async move {
            Self::cluster(ch)
                .promote_voter(v1::PromoteVoterRequest { node_id })
                .await
        })
        .await
    }

    pub async fn remove_node(&self, node_id: u64) -> Result<v1::MembershipResponse, Error> {
        self.call("remove node", |ch| async move {
            Self::cluster(ch)
                .remove_node(v1::RemoveNodeRequest { node_id })
                .await
        })
        .await
    }
}
