//! The gRPC server of a member: the internal Raft service and the public API on one port,
//! with the gRPC health service and reflection.

mod agent;
mod api;
mod call;
mod cluster;
mod hint;
mod kv;
mod raft;
mod state;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use ballast_proto::v1;
use ballast_proto::MAX_MESSAGE_LEN;
use tokio::net::TcpListener;

use crate::node::Node;

pub use api::Api;

/// Serves until `stop` turns true.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let api = Api::new(node.clone());
    let raft = raft::RaftSvc::new(node.clone());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in [
        "ballast.v1.KV",
        "ballast.v1.Cluster",
        "ballast.v1.Watch",
        "ballast.v1.State",
    ] {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    // Both reflection versions: older grpcurl and tools only speak v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .expect("reflection descriptors are valid");
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .expect("reflection descriptors are valid");

    macro_rules! limits {
        ($svc:expr) => {
            $svc.max_decoding_message_size(MAX_MESSAGE_LEN)
                .max_encoding_message_size(MAX_MESSAGE_LEN)
        };
    }

    // Plain or TLS, with Nagle off on every connection (see `tls.rs`).
    let incoming = crate::tls::incoming(listener, node.tls.clone());
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .concurrency_limit_per_connection(1024)
        .layer(crate::auth::AuthLayer {
            tokens: node.tokens.clone(),
        })
        .layer(hint::LeaderHintLayer { node: node.clone() })
        .add_service(limits!(v1::raft_service_server::RaftServiceServer::new(
            raft
        )))
        .add_service(limits!(v1::cluster_server::ClusterServer::new(api.clone())))
        .add_service(limits!(v1::kv_server::KvServer::new(api.clone())))
        .add_service(limits!(v1::watch_server::WatchServer::new(api.clone())))
        .add_service(limits!(v1::state_server::StateServer::new(api)))
        .add_service(limits!(v1::agent_server::AgentServer::new(
            agent::AgentSvc::new(node.clone())
        )))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server failed");
    }
}
