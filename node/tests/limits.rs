//! Abusive clients: a message above the size limit is refused with an error, garbage on the
//! gRPC port gets its connection closed, and the member keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use ballast_client::v1;
use common::{no_tune, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_messages_and_garbage_get_errors_and_others_are_served() {
    let c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    client.put("before", "1").await.unwrap();
    let leader = c.leader().await;
    let addr = c.addrs[&leader].clone();

    // A put of 17 MiB, sent by a client that does not limit itself: refused by the server's
    // 16 MiB decoding limit, nothing applied.
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = v1::kv_client::KvClient::new(ch).max_encoding_message_size(usize::MAX);
    let err = raw
        .put(v1::PutRequest {
            key: b"huge".to_vec(),
            value: vec![7u8; 17 << 20],
            request_id: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    assert!(client.get("huge", false).await.unwrap().kv.is_none());

    // Garbage instead of HTTP/2, and a valid preface followed by garbage frames: the member
    // closes those connections.
    let addr2 = addr.clone();
    tokio::task::spawn_blocking(move || {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for first in [Vec::new(), preface] {
            let mut s = std::net::TcpStream::connect(&addr2).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut junk = first;
            junk.extend((0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
            let _ = s.write_all(&junk);
            // Read until the server closes (EOF or reset); a timeout means it kept it open.
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        panic!("the member kept a garbage connection open")
                    }
                    Err(_) => break,
                }
            }
        }
    })
    .await
    .unwrap();

    // Everyone else is served as before.
    client.put("after", "2").await.unwrap();
    assert_eq!(
        client.get("before", false).await.unwrap().kv.unwrap().value,
        b"1"
    );
    c.shutdown().await;
}

/// A write whose command would not fit one Raft message with room to spare (here a service
/// with 150,000 backends: 1 MB on the wire, 9 MB in the log) is refused before it is
/// proposed, with the limit named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_too_large_for_the_log_is_refused() {
    let c = TestCluster::start(1, no_tune).await;
    let client = c.client();
    let svc = v1::Service {
        name: "wide".into(),
        check: Some(v1::HealthCheck {
            kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 80 })),
            ..Default::default()
        }),
        backends: (1..=150_000).map(|i| (i, v1::Backend::default())).collect(),
        ..Default::default()
    };
    match client.apply_service(svc).await {
        Err(ballast_client::Error::InvalidArgument(m)) => {
            assert!(m.contains("a write may take at most"), "{m}")
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    let st = client.get_state(false).await.unwrap();
    assert!(st.services.is_empty());
    c.shutdown().await;
}
