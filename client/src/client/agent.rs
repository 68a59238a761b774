//! The Agent service: what an agent sends the leader (lease renewals, health, released VIPs,
//! applied releases, its registration), each naming this client's agent process
//! (`ClientConfig::agent_instance`), and the leader's view of leases that `ballastctl status`
//! shows. The agent's logic is in `ballastd`, not here.

use ballast_proto::v1::{self, agent_client::AgentClient};
use ballast_proto::MAX_MESSAGE_LEN;

use super::Client;
use crate::auth_channel::AuthChannel;
use crate::error::Error;

impl Client {
    /// Claims the leases of `claims`, VIPs assigned to `node_id` (and reports the agent
    /// alive); `holding` is what the agent answers for right now. Sent to the leader; a grant
    /// holds for `lease_ms` from the moment this call was made.
    pub async fn renew(
        &self,
        node_id: u64,
        claims: Vec<v1::VipClaim>,
        holding: Vec<v1::VipClaim>,
    ) -> Result<v1::RenewResponse, Error> {
        self.renew_report(v1::RenewRequest {
            node_id,
            claims,
            holding,
            ..Default::default()
        })
        .await
    }

    /// A renewal as the agent sends it, with everything it reports (what it holds, its
    /// HAProxy's view); it names this client's agent process (`agent_instance`).
    pub async fn renew_report(
        &self,
        mut req: v1::RenewRequest,
    ) -> Result<v1::RenewResponse, Error> {
        req.instance = self.inner.cfg.agent_instance;
        self.call("renew", |ch| {
            let req = req.clone();
            async move { Self::agent(ch).renew(req).await }
        })
        .await
    }

    pub async fn report_health(
        &self,
        node_id: u64,
        service: &str,
        health: v1::Health,
    ) -> Result<v1::AgentResponse, Error> {
        let req = v1::ReportHealthRequest {
            node_id,
            service: service.to_string(),
            health: health as i32,
            instance: self.inner.cfg.agent_instance,
        };
        self.call("report health", |ch| {
            let req = req.clone();
            async move { Self::agent(ch).report_health(req).await }
        })
        .await
    }

    pub async fn confirm_release(
        &self,
        node_id: u64,
        vip: &str,
        epoch: u64,
    ) -> Result<v1::AgentResponse, Error> {
        let req = v1::ConfirmReleaseRequest {
            node_id,
            vip: vip.to_string(),
            epoch,
            instance: self.inner.cfg.agent_instance,
        };
        self.call("confirm release", |ch| {
            let req = req.clone();
            async move { Self::agent(ch).confirm_release(req).await }
        })
        .await
    }

    /// An agent's report of the release it runs for `service` (or failed to activate).
    pub async fn report_release(
        &self,
        mut req: v1::ReportReleaseRequest,
    ) -> Result<v1::AgentResponse, Error> {
        req.instance = self.inner.cfg.agent_instance;
        self.call("report release", |ch| {
            let req = req.clone();
            async move { Self::agent(ch).report_release(req).await }
        })
        .await
    }

    /// A standalone agent announces its process (the node's leases are bound to it) and
    /// creates or updates its node record, or announces its stop (`leaving`).
    pub async fn register_agent(
        &self,
        node_id: u64,
        addr: &str,
        leaving: bool,
    ) -> Result<v1::AgentResponse, Error> {
        self.register(v1::RegisterRequest {
            node_id,
            addr: addr.to_string(),
            leaving,
            ..Default::default()
        })
        .await
    }

    /// An agent's registration as given (see `RegisterRequest`); it names this client's agent
    /// process.
    pub async fn register(&self, mut req: v1::RegisterRequest) -> Result<v1::AgentResponse, Error> {
        req.instance = self.inner.cfg.agent_instance;
        self.call("register", |ch| {
            let req = req.clone();
            async move { Self::agent(ch).register(req).await }
        })
        .await
    }

    /// The leader's view of VIP leases and of what each agent reports holding.
    pub async fn leases(&self) -> Result<v1::LeasesResponse, Error> {
        self.call("leases", |ch| async move {
            Self::agent(ch).leases(v1::LeasesRequest {}).await
        })
        .await
    }

    fn agent(ch: AuthChannel) -> AgentClient<AuthChannel> {
        AgentClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN)
    }
}
