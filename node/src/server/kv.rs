//! The KV service: get and range (linearizable or serializable), put, compare-and-set and
//! delete, each a Raft write with the client's request id for exactly-once retries.

use ballast_proto::v1;
use tonic::{Request, Response, Status};

use crate::types::{ClientRequest, Expected, Op, Outcome};
use crate::validate::{self, invalid};

use super::api::Api;
use super::call::{instrument, unexpected, write_outcome};

#[tonic::async_trait]
impl v1::kv_server::Kv for Api {
    async fn get(&self, req: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let r = req.into_inner();
        instrument("Get", async {
            validate::key("key", &r.key)?;
            self.node.read_barrier(r.consistency).await?;
            let data = self.node.sm.read();
            Ok(v1::GetResponse {
                header: Some(self.node.header_at(data.revision)),
                kv: data.kv.get(&r.key).map(|e| e.to_proto(&r.key)),
            })
        })
        .await
    }

    async fn range(
        &self,
        req: Request<v1::RangeRequest>,
    ) -> Result<Response<v1::RangeResponse>, Status> {
        let r = req.into_inner();
        instrument("Range", async {
            validate::prefix("prefix", &r.prefix)?;
            self.node.read_barrier(r.consistency).await?;
            let data = self.node.sm.read();
            let limit = if r.limit == 0 {
                usize::MAX
            } else {
                r.limit as usize
            };
            let mut kvs = Vec::new();
            let mut more = false;
            for (k, e) in data.kv.range(r.prefix.clone()..) {
                if !k.starts_with(&r.prefix) {
                    break;
                }
                if kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(e.to_proto(k));
            }
            Ok(v1::RangeResponse {
                header: Some(self.node.header_at(data.revision)),
                kvs,
                more,
            })
        })
        .await
    }

    async fn put(&self, req: Request<v1::PutRequest>) -> Result<Response<v1::PutResponse>, Status> {
        let r = req.into_inner();
        instrument("Put", async {
            validate::key("key", &r.key)?;
            validate::value("value", &r.value)?;
            let cr = self
                .node
                .propose(
                    ClientRequest::from_proto(r.request_id.as_ref()),
                    Op::Put {
                        key: r.key,
                        value: r.value,
                    },
                )
                .await?;
            match write_outcome(cr)? {
                (rev, Outcome::Put { prev }) => Ok(v1::PutResponse {
                    header: Some(self.node.header_at(rev)),
                    prev_kv: prev.map(Into::into),
                }),
                (_, o) => Err(unexpected(o)),
            }
        })
        .await
    }

    async fn compare_and_set(
        &self,
        req: Request<v1::CompareAndSetRequest>,
    ) -> Result<Response<v1::CompareAndSetResponse>, Status> {
        let r = req.into_inner();
        instrument("CompareAndSet", async {
            validate::key("key", &r.key)?;
            validate::value("new_value", &r.new_value)?;
            let expected = match r.expected {
                Some(v1::compare_and_set_request::Expected::ExpectedValue(v)) => Expected::Value(v),
                Some(v1::compare_and_set_request::Expected::ExpectedModRevision(m)) => {
                    Expected::ModRevision(m)
                }
                None => {
                    return Err(invalid(
                        "expected",
                        "one of expected_value or expected_mod_revision is required",
                    )
                    .into())
                }
            };
            let cr = self
                .node
                .propose(
                    ClientRequest::from_proto(r.request_id.as_ref()),
                    Op::CompareAndSet {
                        key: r.key,
                        expected,
                        new_value: r.new_value,
                    },
                )
                .await?;
            match write_outcome(cr)? {
                (rev, Outcome::CompareAndSet { succeeded, kv }) => Ok(v1::CompareAndSetResponse {
                    header: Some(self.node.header_at(rev)),
                    succeeded,
                    kv: kv.map(Into::into),
                }),
                (_, o) => Err(unexpected(o)),
            }
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let r = req.into_inner();
        instrument("Delete", async {
            if r.prefix {
                validate::prefix("key", &r.key)?;
            } else {
                validate::key("key", &r.key)?;
            }
            let cr = self
                .node
                .propose(
                    ClientRequest::from_proto(r.request_id.as_ref()),
                    Op::Delete {
                        key: r.key,
                        prefix: r.prefix,
                    },
                )
                .await?;
            match write_outcome(cr)? {
                (rev, Outcome::Delete { deleted }) => Ok(v1::DeleteResponse {
                    header: Some(self.node.header_at(rev)),
                    deleted,
                }),
                (_, o) => Err(unexpected(o)),
            }
        })
        .await
    }
}
