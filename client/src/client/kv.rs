//! The KV service: linearizable or serializable reads of a key or a prefix, and writes (put,
//! compare-and-set, delete) that carry a request id, so that a retried write is applied at
//! most once. Failover and retries are [`Client::call`]'s; watches are `crate::watch`'s.

use ballast_proto::v1::{self, kv_client::KvClient};
use ballast_proto::MAX_MESSAGE_LEN;

use super::{consistency, Client};
use crate::auth_channel::AuthChannel;
use crate::error::Error;

impl Client {
    fn kv(ch: AuthChannel) -> KvClient<AuthChannel> {
        KvClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN)
    }

    /// Linearizable get (`serializable = false`) or a possibly stale local read.
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        serializable: bool,
    ) -> Result<v1::GetResponse, Error> {
        let c = if serializable {
            v1::ReadConsistency::Serializable
        } else {
            v1::ReadConsistency::Linearizable
        };
        self.get_with(key, c).await
    }

    /// A get with the consistency named: `Linearizable` (the member's `--read-policy`),
    /// `ReadIndex` or `Lease` (both linearizable, see `ReadConsistency`), `Serializable`.
    pub async fn get_with(
        &self,
        key: impl Into<Vec<u8>>,
        consistency: v1::ReadConsistency,
    ) -> Result<v1::GetResponse, Error> {
        let req = v1::GetRequest {
            key: key.into(),
            consistency: consistency as i32,
        };
        self.call("get", |ch| {
            let req = req.clone();
            async move { Self::kv(ch).get(req).await }
        })
        .await
    }

    pub async fn range(
        &self,
        prefix: impl Into<Vec<u8>>,
        limit: u32,
        serializable: bool,
    ) -> Result<v1::RangeResponse, Error> {
        let req = v1::RangeRequest {
            prefix: prefix.into(),
            limit,
            consistency: consistency(serializable),
        };
        self.call("range", |ch| {
            let req = req.clone();
            async move { Self::kv(ch).range(req).await }
        })
        .await
    }

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<v1::PutResponse, Error> {
        let t = self.ticket();
        let req = v1::PutRequest {
            key: key.into(),
            value: value.into(),
            request_id: Some(t.id),
        };
        self.put_with_request(req).await
    }

    /// Sends a put with a caller-chosen request id (retries of one logical write reuse it).
    pub async fn put_with_request(&self, req: v1::PutRequest) -> Result<v1::PutResponse, Error> {
        self.call("put", |ch| {
            let req = req.clone();
            async move { Self::kv(ch).put(req).await }
        })
        .await
    }

    /// Compare-and-set against the current value (`Some(value)`) or mod revision.
    pub async fn compare_and_set(
        &self,
        key: impl Into<Vec<u8>>,
        expected: v1::compare_and_set_request::Expected,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<v1::CompareAndSetResponse, Error> {
        let t = self.ticket();
        let req = v1::CompareAndSetRequest {
            key: key.into(),
            expected: Some(expected),
            new_value: new_value.into(),
            request_id: Some(t.id),
        };
        self.call("compare-and-set", |ch| {
            let req = req.clone();
            async move { Self::kv(ch).compare_and_set(req).await }
        })
        .await
    }

    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        prefix: bool,
    ) -> Result<v1::DeleteResponse, Error> {
        let t = self.ticket();
        let req = v1::DeleteRequest {
            key: key.into(),
            prefix,
            request_id: Some(t.id),
        };
        self.call("delete", |ch| {
            let req = req.clone();
            async move { Self::kv(ch).delete(req).await }
        })
        .await
    }
}
