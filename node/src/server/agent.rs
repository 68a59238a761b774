//! The Agent service: lease renewals, health transitions and release confirmations from the
//! agents, answered by the leader. Every call about a node is refused (PERMISSION_DENIED)
//! unless the caller's credentials name that node or a member (`auth::agent_may_act_for`):
//! the request's `node_id` says which node the call is about, never who is calling.

use std::sync::Arc;

use ballast_proto::v1::{self, agent_server::Agent};
use tonic::{Request, Response, Status};

use crate::auth::agent_may_act_for;
use crate::config::ReadPolicy;
use crate::error::ApiError;
use crate::node::Node;
use crate::server::call::{instrument, write_outcome};
use crate::types::{Op, Outcome};
use crate::validate;
use openraft::async_runtime::WatchReceiver;

#[derive(Clone)]
pub struct AgentSvc {
    node: Arc<Node>,
}

impl AgentSvc {
    pub fn new(node: Arc<Node>) -> Self {
        AgentSvc { node }
    }

    /// Proposes an agent's write and answers with the revision it made.
    async fn write(&self, op: Op) -> Result<v1::AgentResponse, ApiError> {
        let cr = self.node.propose(None, op).await?;
        self.answer(cr)
    }

    fn answer(&self, cr: crate::types::CommandResult) -> Result<v1::AgentResponse, ApiError> {
        match write_outcome(cr)? {
            (rev, Outcome::StateWritten) => Ok(v1::AgentResponse {
                header: Some(self.node.header_at(rev)),
            }),
            (_, o) => Err(ApiError::Internal(format!("unexpected outcome {o:?}"))),
        }
    }

    /// Refuses the call of agent process `instance` for `node` when the state binds the
    /// node's leases to another process (a second agent started with the same node id).
    fn bound_process(&self, node: u64, instance: u64) -> Result<(), ApiError> {
        let bound = self.node.sm.read().agents.get(&node).copied();
        match bound {
            Some(b) if b != instance => Err(ApiError::FailedPrecondition(format!(
                "node {node}'s leases are bound to another agent process ({b:x}, not {instance:x}): two agents with one node id?"
            ))),
            _ => Ok(()),
        }
    }

    /// Only the leader answers (it holds the lease book).
    fn leader_only(&self) -> Result<(), ApiError> {
        let (leader, addr) = self.node.leader();
        if leader != Some(self.node.id) {
            return Err(ApiError::NotLeader {
                leader_id: leader,
                leader_addr: addr,
            });
        }
        Ok(())
    }

    /// Binds `node`'s leases to agent process `instance`, if the process bound now holds
    /// nothing the leader still counts as held. Decided by this leader's book and proposed
    /// here, in its term, only (never forwarded: another leader has not made the check).
    async fn bind(&self, node: u64, instance: u64) -> Result<(), ApiError> {
        let term = self.confirmed_term().await?;
        let ticket = {
            let data = self.node.sm.read();
            if data.agents.get(&node) == Some(&instance) {
                return Ok(());
            }
            if !data.nodes.contains_key(&node) {
                return Err(ApiError::InvalidArgument {
                    field: "node_id".into(),
                    message: format!("unknown node {node}"),
                });
            }
            let terms = self.node.lease_terms(&data);
            let mut book = self.node.book();
            if book.term() != term {
                return Err(ApiError::Unavailable(
                    "the leadership changed; retry".into(),
                ));
            }
            let now = self.node.mono_now();
            let bound = data.agents.get(&node).copied();
            book.begin_rebind(node, instance, bound, &data.vips, &data.retired, now, terms)
                .map_err(ApiError::FailedPrecondition)?
        };
        let op = Op::BindAgent {
            node_id: node,
            instance,
        };
        let r = crate::leader::loops::propose_decided(&self.node, term, op).await;
        // Committed (applied or refused): settled. A failure leaves the outcome unknown (the
        // proposal may commit later), so the book keeps refusing the node's processes until
        // the state shows the binding (a retried Register finds it there).
        if r.is_ok() {
            let mut book = self.node.book();
            if book.term() == term {
                book.rebound(node, ticket);
            }
        }
        match write_outcome(r?)? {
            (_, Outcome::StateWritten) => Ok(()),
            (_, o) => Err(ApiError::Internal(format!("unexpected outcome {o:?}"))),
        }
    }

    /// The term in which this member's leadership was just confirmed by a quorum (and the
    /// state applied up to that point); fails if the term changed meanwhile.
    async fn confirmed_term(&self) -> Result<u64, ApiError> {
        let term = self.node.raft.metrics().borrow_watched().current_term;
        self.node.read_index_local(ReadPolicy::ReadIndex).await?;
        if self.node.raft.metrics().borrow_watched().current_term != term {
            return Err(ApiError::Unavailable(
                "the leadership changed; retry".into(),
            ));
        }
        Ok(term)
    }

    /// Proposes a decision of this leader's, taken in `term`, here only.
    async fn decided(&self, term: u64, op: Op) -> Result<(), ApiError> {
        let r = crate::leader::loops::propose_decided(&self.node, term, op).await?;
        match write_outcome(r)? {
            (_, Outcome::StateWritten) => Ok(()),
            (_, o) => Err(ApiError::Internal(format!("unexpected outcome {o:?}"))),
        }
    }

    fn known_node(&self, id: u64) -> Result<(), ApiError> {
        validate::node_id("node_id", id)?;
        if !self.node.sm.read().nodes.contains_key(&id) {
            return Err(ApiError::InvalidArgument {
                field: "node_id".into(),
                message: format!("unknown node {id}"),
            });
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Agent for AgentSvc {
    async fn renew(
        &self,
        req: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::RenewResponse>, Status> {
        let allowed = agent_may_act_for(&req, req.get_ref().node_id);
        let r = req.into_inner();
        instrument("Renew", async {
            allowed?;
            self.known_node(r.node_id)?;
            // Leadership confirmed by a quorum after the request arrived, and the state applied
            // up to that point: only then is a grant safe. The grant is decided in the lease
            // book of that same term, which refuses any lease the controller already decided
            // is over (a book of a later term would not know the earlier term's decisions).
            let term = self.confirmed_term().await?;
            let data = self.node.sm.read();
            let terms = self.node.lease_terms(&data);
            let bound = data.agents.get(&r.node_id).copied();
            let (grants, refused) = {
                let mut book = self.node.book();
                if book.term() != term {
                    return Err(ApiError::Unavailable(
                        "the leadership changed; retry".into(),
                    ));
                }
                let now = self.node.mono_now();
                book.renew(&data.vips, &r, bound, now, terms)
            };
            Ok(v1::RenewResponse {
                header: Some(self.node.header_at(data.revision)),
                grants,
                lease_ms: terms.settings.lease_ms as u32,
                drift_ms: terms.settings.drift_ms as u32,
                // Spaced out when many agents renew (`lease::paced_renew_ms`).
                renew_ms: crate::lease::paced_renew_ms(
                    &terms.settings,
                    data.agents.len(),
                    self.node.controller_cfg.election_timeout_max,
                ) as u32,
                refused: refused.unwrap_or_default(),
            })
        })
        .await
    }

    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::AgentResponse>, Status> {
        let allowed = agent_may_act_for(&req, req.get_ref().node_id);
        let r = req.into_inner();
        instrument("Register", async {
            allowed?;
            validate::node_id("node_id", r.node_id)?;
            if !r.addr.is_empty() {
                validate::member_addr("addr", &r.addr)?;
            }
            self.leader_only()?;
            if r.leaving {
                // The process stops. It is unbound now; the next one is bound once every lease
                // the stopped one may hold is over at this leader (confirmed released or run
                // out): its drops on the way out need not have reached us.
                let term = self.confirmed_term().await?;
                let bound = self.node.sm.read().agents.get(&r.node_id).copied();
                // Its own bind committed: a mark left by that bind's timed-out proposal is moot.
                self.node.book().settle_mark(r.node_id, bound);
                if r.instance != 0 && bound == Some(r.instance) {
                    let op = Op::BindAgent {
                        node_id: r.node_id,
                        instance: 0,
                    };
                    self.decided(term, op).await?;
                }
                return Ok(v1::AgentResponse {
                    header: Some(self.node.header()),
                });
            }
            let mut resp = None;
            if r.in_member {
                // The agent inside a member binds its process, nothing more.
                let member = self
                    .node
                    .sm
                    .read()
                    .nodes
                    .get(&r.node_id)
                    .is_some_and(|n| n.role != crate::model::Role::Agent);
                if !member {
                    return Err(validate::invalid(
                        "node_id",
                        format!("node {} is not a Raft member", r.node_id),
                    )
                    .into());
                }
            } else {
                // A standalone agent's node record (refused for a Raft member's id).
                resp = Some(
                    self.write(Op::RegisterAgent {
                        node_id: r.node_id,
                        addr: r.addr.clone(),
                    })
                    .await?,
                );
            }
            if r.instance != 0 {
                self.bind(r.node_id, r.instance).await?;
            }
            Ok(resp.unwrap_or_else(|| v1::AgentResponse {
                header: Some(self.node.header()),
            }))
        })
        .await
    }

    async fn report_health(
        &self,
        req: Request<v1::ReportHealthRequest>,
    ) -> Result<Response<v1::AgentResponse>, Status> {
        let allowed = agent_may_act_for(&req, req.get_ref().node_id);
        let r = req.into_inner();
        instrument("ReportHealth", async {
            allowed?;
            self.known_node(r.node_id)?;
            self.bound_process(r.node_id, r.instance)?;
            validate::name("service", &r.service)?;
            validate::reported_health("health", r.health)?;
            let op = Op::ReportHealth {
                node_id: r.node_id,
                service: r.service,
                health: crate::model::Health::from_wire(r.health),
            };
            self.write(op).await
        })
        .await
    }

    async fn report_release(
        &self,
        req: Request<v1::ReportReleaseRequest>,
    ) -> Result<Response<v1::AgentResponse>, Status> {
        let allowed = agent_may_act_for(&req, req.get_ref().node_id);
        let r = req.into_inner();
        instrument("ReportRelease", async {
            allowed?;
            self.known_node(r.node_id)?;
            self.bound_process(r.node_id, r.instance)?;
            validate::name("service", &r.service)?;
            validate::report_error("error", &r.error)?;
            self.write(Op::ReportRelease {
                node_id: r.node_id,
                service: r.service,
                applied: r.applied,
                failed_release: r.failed_release,
                error: r.error,
            })
            .await
        })
        .await
    }

    async fn confirm_release(
        &self,
        req: Request<v1::ConfirmReleaseRequest>,
    ) -> Result<Response<v1::AgentResponse>, Status> {
        let allowed = agent_may_act_for(&req, req.get_ref().node_id);
        let r = req.into_inner();
        instrument("ConfirmRelease", async {
            allowed?;
            self.known_node(r.node_id)?;
            validate::name("vip", &r.vip)?;
            self.leader_only()?;
            // Only the process the leases are bound to knows what it let go.
            self.bound_process(r.node_id, r.instance)?;
            let data = self.node.sm.read();
            let owned = self.node.book().confirm_release(
                &data.vips,
                &data.retired,
                r.node_id,
                &r.vip,
                r.epoch,
            );
            if owned {
                // The next owner can be assigned now, not at the next tick.
                self.node.controller_wake.notify_one();
            }
            Ok(v1::AgentResponse {
                header: Some(self.node.header_at(data.revision)),
            })
        })
        .await
    }

    async fn leases(
        &self,
        _req: Request<v1::LeasesRequest>,
    ) -> Result<Response<v1::LeasesResponse>, Status> {
        instrument("Leases", async {
            self.leader_only()?;
            let now = self.node.mono_now();
            let data = self.node.sm.read();
            let terms = self.node.lease_terms(&data);
            let mut book = self.node.book();
            let lease = terms.lease;
            let ms = |d: std::time::Duration| d.as_millis().min(u32::MAX as u128) as u32;
            let leases = data
                .vips
                .values()
                .map(|v| {
                    let remaining = if v.owner == 0 {
                        std::time::Duration::ZERO
                    } else {
                        book.remaining(&v.name, v.epoch, now, terms)
                    };
                    v1::VipLease {
                        vip: v.name.clone(),
                        owner: v.owner,
                        epoch: v.epoch,
                        remaining_ms: ms(remaining),
                    }
                })
                .collect();
            let obs = book.obs();
            let agents = data
                .nodes
                .keys()
                .map(|id| {
                    let seen = obs.agent_seen.get(id);
                    let (haproxy, haproxy_error) = obs.haproxy.get(id).cloned().unwrap_or_default();
                    v1::AgentReport {
                        node_id: *id,
                        heard: seen.is_some(),
                        last_heard_ms_ago: seen.map_or(0, |s| ms(now.saturating_sub(*s))),
                        holding: obs
                            .holding
                            .get(id)
                            .into_iter()
                            .flatten()
                            .map(|(vip, epoch)| v1::VipClaim {
                                vip: vip.clone(),
                                epoch: *epoch,
                            })
                            .collect(),
                        haproxy,
                        haproxy_error,
                        unplaceable: obs
                            .unplaceable
                            .get(id)
                            .into_iter()
                            .flat_map(|u| u.values().cloned())
                            .collect(),
                    }
                })
                .collect();
            Ok(v1::LeasesResponse {
                header: Some(self.node.header_at(data.revision)),
                leases,
                agents,
                lease_ms: ms(lease),
            })
        })
        .await
    }
}
