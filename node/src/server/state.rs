//! The State service: the cluster state (services, VIPs, nodes, releases) read and changed by
//! operators; each change is one Raft operation checked by `validate.rs` first.

use ballast_proto::v1;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::types::{ClientRequest, Op, Outcome};
use crate::validate::{self, invalid};

use super::api::Api;
use super::call::{instrument, unexpected, write_outcome};

#[tonic::async_trait]
impl v1::state_server::State for Api {
    async fn get_state(
        &self,
        req: Request<v1::GetStateRequest>,
    ) -> Result<Response<v1::GetStateResponse>, Status> {
        let r = req.into_inner();
        instrument("GetState", async {
            self.node.read_barrier(r.consistency).await?;
            let data = self.node.sm.read();
            Ok(v1::GetStateResponse {
                header: Some(self.node.header_at(data.revision)),
                nodes: data.nodes.values().cloned().map(Into::into).collect(),
                services: data.services.values().cloned().map(Into::into).collect(),
                vips: data.vips.values().cloned().map(Into::into).collect(),
                lease: data.lease.map(|l| v1::LeaseSettings {
                    lease_ms: l.lease_ms,
                    renew_ms: l.renew_ms,
                    drift_ms: l.drift_ms,
                    margin_ms: l.margin_ms,
                    wait_ms: data.lease_wait_ms,
                }),
                retired: data
                    .retired
                    .iter()
                    .map(|(name, r)| r.to_proto(name))
                    .collect(),
            })
        })
        .await
    }

    async fn set_lease(
        &self,
        req: Request<v1::SetLeaseRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("SetLease", async {
            let given = r
                .settings
                .ok_or_else(|| invalid("settings", "is required"))?;
            // Fields left 0 keep the cluster's current values.
            self.node
                .read_barrier(v1::ReadConsistency::Linearizable as i32)
                .await?;
            let current = {
                let data = self.node.sm.read();
                self.node.lease_settings(&data)
            };
            let or = |v: u64, cur: u64| if v == 0 { cur } else { v };
            let settings = crate::lease::LeaseSettings {
                lease_ms: or(given.lease_ms, current.lease_ms),
                renew_ms: or(given.renew_ms, current.renew_ms),
                drift_ms: or(given.drift_ms, current.drift_ms),
                margin_ms: or(given.margin_ms, current.margin_ms),
            };
            self.node.check_lease_settings(&settings)?;
            self.state_write(
                r.request_id,
                Op::SetLease {
                    settings,
                    if_unset: false,
                },
            )
            .await
        })
        .await
    }

    async fn apply_service(
        &self,
        req: Request<v1::ApplyServiceRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("ApplyService", async {
            let mut svc = r.service.ok_or_else(|| invalid("service", "is required"))?;
            validate::service(&mut svc)?;
            self.state_write(r.request_id, Op::ApplyService(svc.into()))
                .await
        })
        .await
    }

    async fn delete_service(
        &self,
        req: Request<v1::DeleteServiceRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("DeleteService", async {
            validate::name("name", &r.name)?;
            self.state_write(r.request_id, Op::DeleteService(r.name))
                .await
        })
        .await
    }

    async fn apply_vip(
        &self,
        req: Request<v1::ApplyVipRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("ApplyVip", async {
            let mut vip = r.vip.ok_or_else(|| invalid("vip", "is required"))?;
            validate::vip(&mut vip)?;
            self.state_write(r.request_id, Op::ApplyVip(vip.into()))
                .await
        })
        .await
    }

    async fn delete_vip(
        &self,
        req: Request<v1::DeleteVipRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("DeleteVip", async {
            validate::name("name", &r.name)?;
            self.state_write(r.request_id, Op::DeleteVip(r.name)).await
        })
        .await
    }

    async fn move_vip(
        &self,
        req: Request<v1::MoveVipRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("MoveVip", self.move_vip_inner(r)).await
    }

    async fn register_release(
        &self,
        req: Request<v1::RegisterReleaseRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("RegisterRelease", async {
            validate::name("service", &r.service)?;
            let rel = r
                .release
                .ok_or_else(|| validate::invalid("release", "is required"))?;
            validate::release(&rel)?;
            self.state_write(
                r.request_id,
                Op::RegisterRelease {
                    service: r.service,
                    release: rel.into(),
                },
            )
            .await
        })
        .await
    }

    async fn start_rollout(
        &self,
        req: Request<v1::StartRolloutRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("StartRollout", async {
            validate::name("service", &r.service)?;
            validate::name("release", &r.release)?;
            validate::rollout_deadline("deadline_ms", r.deadline_ms)?;
            self.state_write(
                r.request_id,
                Op::StartRollout {
                    service: r.service,
                    release: r.release,
                    batch: r.batch.max(1),
                    min_healthy_ms: if r.min_healthy_ms == 0 {
                        10_000
                    } else {
                        r.min_healthy_ms
                    },
                    deadline_ms: if r.deadline_ms == 0 {
                        300_000
                    } else {
                        r.deadline_ms
                    },
                    canary: r.canary,
                },
            )
            .await
        })
        .await
    }

    async fn control_rollout(
        &self,
        req: Request<v1::ControlRolloutRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("ControlRollout", async {
            validate::name("service", &r.service)?;
            let action = match v1::RolloutControl::try_from(r.action) {
                Ok(v1::RolloutControl::Pause) => crate::model::Control::Pause,
                Ok(v1::RolloutControl::Resume) => crate::model::Control::Resume,
                Ok(v1::RolloutControl::Abort) => crate::model::Control::Abort,
                _ => {
                    return Err(
                        validate::invalid("action", "must be pause, resume or abort").into(),
                    )
                }
            };
            self.state_write(
                r.request_id,
                Op::ControlRollout {
                    service: r.service,
                    action,
                },
            )
            .await
        })
        .await
    }

    async fn rollback(
        &self,
        req: Request<v1::RollbackRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("Rollback", async {
            validate::name("service", &r.service)?;
            if !r.to.is_empty() {
                validate::name("to", &r.to)?;
            }
            self.state_write(
                r.request_id,
                Op::Rollback {
                    service: r.service,
                    to: r.to,
                },
            )
            .await
        })
        .await
    }

    async fn forget_node(
        &self,
        req: Request<v1::ForgetNodeRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        instrument("ForgetNode", self.forget_node_inner(req.into_inner())).await
    }

    async fn set_node_admin(
        &self,
        req: Request<v1::SetNodeAdminRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("SetNodeAdmin", async {
            validate::node_id("node_id", r.node_id)?;
            let admin = validate::admin_state("admin", r.admin)?;
            self.state_write(
                r.request_id,
                Op::SetNodeAdmin {
                    node_id: r.node_id,
                    admin: admin.into(),
                },
            )
            .await
        })
        .await
    }
}

impl Api {
    async fn forget_node_inner(
        &self,
        r: v1::ForgetNodeRequest,
    ) -> Result<v1::StateWriteResponse, ApiError> {
        validate::node_id("node_id", r.node_id)?;
        self.state_write(r.request_id, Op::ForgetAgent { node_id: r.node_id })
            .await
    }

    async fn move_vip_inner(
        &self,
        r: v1::MoveVipRequest,
    ) -> Result<v1::StateWriteResponse, ApiError> {
        validate::name("name", &r.name)?;
        validate::node_id("to_node", r.to_node)?;
        self.state_write(
            r.request_id,
            Op::MoveVip {
                vip: r.name,
                to: r.to_node,
            },
        )
        .await
    }

    async fn state_write(
        &self,
        request_id: Option<v1::RequestId>,
        op: Op,
    ) -> Result<v1::StateWriteResponse, ApiError> {
        let cr = self
            .node
            .propose(ClientRequest::from_proto(request_id.as_ref()), op)
            .await?;
        match write_outcome(cr)? {
            (rev, Outcome::StateWritten) => Ok(v1::StateWriteResponse {
                header: Some(self.node.header_at(rev)),
            }),
            (_, o) => Err(unexpected(o)),
        }
    }
}
