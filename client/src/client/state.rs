//! The State service: the cluster state (nodes, services, VIPs, releases, lease settings) and
//! every write an operator makes to it, each with a request id. It only sends what it is
//! given: checks of the values are the cluster's.

use ballast_proto::v1::{self, state_client::StateClient};
use ballast_proto::MAX_MESSAGE_LEN;

use super::{consistency, Client};
use crate::auth_channel::AuthChannel;
use crate::error::Error;

impl Client {
    fn state(ch: AuthChannel) -> StateClient<AuthChannel> {
        StateClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN)
    }

    pub async fn get_state(&self, serializable: bool) -> Result<v1::GetStateResponse, Error> {
        let req = v1::GetStateRequest {
            consistency: consistency(serializable),
        };
        self.call("get state", |ch| async move {
            Self::state(ch).get_state(req).await
        })
        .await
    }

    pub async fn apply_service(
        &self,
        service: v1::Service,
    ) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::ApplyServiceRequest {
            service: Some(service),
            request_id: Some(t.id),
        };
        self.call("apply service", |ch| {
            let req = req.clone();
            async move { Self::state(ch).apply_service(req).await }
        })
        .await
    }

    pub async fn delete_service(&self, name: &str) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::DeleteServiceRequest {
            name: name.to_string(),
            request_id: Some(t.id),
        };
        self.call("delete service", |ch| {
            let req = req.clone();
            async move { Self::state(ch).delete_service(req).await }
        })
        .await
    }

    pub async fn apply_vip(&self, vip: v1::Vip) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::ApplyVipRequest {
            vip: Some(vip),
            request_id: Some(t.id),
        };
        self.call("apply vip", |ch| {
            let req = req.clone();
            async move { Self::state(ch).apply_vip(req).await }
        })
        .await
    }

    pub async fn delete_vip(&self, name: &str) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::DeleteVipRequest {
            name: name.to_string(),
            request_id: Some(t.id),
        };
        self.call("delete vip", |ch| {
            let req = req.clone();
            async move { Self::state(ch).delete_vip(req).await }
        })
        .await
    }

    pub async fn set_node_admin(
        &self,
        node_id: u64,
        admin: v1::AdminState,
    ) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::SetNodeAdminRequest {
            node_id,
            admin: admin as i32,
            request_id: Some(t.id),
        };
        self.call("set node admin", |ch| async move {
            Self::state(ch).set_node_admin(req).await
        })
        .await
    }

    /// Registers a release (`id`, `artifact`, `sha256`) of `service`.
    pub async fn register_release(
        &self,
        service: &str,
        id: &str,
        artifact: &str,
        sha256: &str,
    ) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::RegisterReleaseRequest {
            service: service.into(),
            release: Some(v1::Release {
                id: id.into(),
                artifact: artifact.into(),
                sha256: sha256.into(),
                ..Default::default()
            }),
            request_id: Some(t.id),
        };
        self.call("register release", |ch| {
            let req = req.clone();
            async move { Self::state(ch).register_release(req).await }
        })
        .await
    }

    /// Starts a rollout (0 for a default: batch 1, 10 s healthy, 5 min deadline).
    pub async fn start_rollout(
        &self,
        req: v1::StartRolloutRequest,
    ) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::StartRolloutRequest {
            request_id: Some(t.id),
            ..req
        };
        self.call("start rollout", |ch| {
            let req = req.clone();
            async move { Self::state(ch).start_rollout(req).await }
        })
        .await
    }

    pub async fn control_rollout(
        &self,
        service: &str,
        action: v1::RolloutControl,
    ) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::ControlRolloutRequest {
            service: service.into(),
            action: action as i32,
            request_id: Some(t.id),
        };
        self.call("control rollout", |ch| {
            let req = req.clone();
            async move { Self::state(ch).control_rollout(req).await }
        })
        .await
    }

    /// Every backend of `service` back to `to` (empty: the previous release).
    pub async fn rollback(&self, service: &str, to: &str) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::RollbackRequest {
            service: service.into(),
            to: to.into(),
            request_id: Some(t.id),
        };
        self.call("rollback", |ch| {
            let req = req.clone();
            async move { Self::state(ch).rollback(req).await }
        })
        .await
    }

    /// Sets the cluster's VIP lease settings; fields left 0 keep their current value.
    pub async fn set_lease(
        &self,
        settings: v1::LeaseSettings,
    ) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::SetLeaseRequest {
            settings: Some(settings),
            request_id: Some(t.id),
        };
        self.call("set lease", |ch| async move {
            Self::state(ch).set_lease(req).await
        })
        .await
    }

    /// Removes a standalone agent's node record.
    pub async fn forget_node(&self, node_id: u64) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::ForgetNodeRequest {
            node_id,
            request_id: Some(t.id),
        };
        self.call("forget node", |ch| async move {
            Self::state(ch).forget_node(req).await
        })
        .await
    }

    /// Asks the controller to move a VIP to `to_node` (planned, break-before-make).
    pub async fn move_vip(
        &self,
        name: &str,
        to_node: u64,
    ) -> Result<v1::StateWriteResponse, Error> {
        let t = self.ticket();
        let req = v1::MoveVipRequest {
            name: name.to_string(),
            to_node,
            request_id: Some(t.id),
        };
        self.call("move vip", |ch| {
            let req = req.clone();
            async move { Self::state(ch).move_vip(req).await }
        })
        .await
    }
}
