//! Calls of every API method and every Raft method, with the rules a credential must meet:
//! the tables of `tests/auth.rs` (tokens) and `tests/tls_identity.rs` (certificates).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ballast_client::{v1, Client, Error};
use ballast_proto::v1::raft_service_client::RaftServiceClient;
use ballast_proto::v1::RaftMessage;
use tonic::transport::Channel;

pub type Call = Box<dyn Fn(Client) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>>;

macro_rules! call {
    ($c:ident => $e:expr) => {
        Box::new(move |$c: Client| Box::pin(async move { $e.await.map(|_| ()) }))
    };
}

/// What a method is, for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    /// An agent's call about node `n` (the argument of [`methods`]).
    Agent,
    /// Adding, promoting or removing a member.
    Membership,
}

/// Every public method: (name, kind, a call of it); agent calls are about node `n`.
pub fn methods(n: u64) -> Vec<(&'static str, Kind, Call)> {
    use Kind::*;
    vec![
        ("Cluster.Status", Read, call!(c => c.status())),
        (
            "Cluster.AddLearner",
            Membership,
            call!(c => c.add_learner(9, "127.0.0.1:1", false)),
        ),
        (
            "Cluster.PromoteVoter",
            Membership,
            call!(c => c.promote_voter(9)),
        ),
        (
            "Cluster.RemoveNode",
            Membership,
            call!(c => c.remove_node(9)),
        ),
        ("Cluster.Snapshot", Write, call!(c => c.snapshot())),
        ("KV.Get", Read, call!(c => c.get("k", false))),
        ("KV.Range", Read, call!(c => c.range("", 10, false))),
        ("KV.Put", Write, call!(c => c.put("k", "v"))),
        (
            "KV.CompareAndSet",
            Write,
            call!(c => c.compare_and_set(
                "k",
                v1::compare_and_set_request::Expected::ExpectedValue(b"v".to_vec()),
                "w",
            )),
        ),
        ("KV.Delete", Write, call!(c => c.delete("nothing", false))),
        (
            "Watch.Watch",
            Read,
            Box::new(|c: Client| {
                Box::pin(async move {
                    let mut w = c.watch(v1::WatchRequest {
                        key_prefixes: vec![b"k".to_vec()],
                        cluster_state: false,
                        start_revision: 1,
                        ..Default::default()
                    });
                    match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
                        Ok(Err(e)) => Err(e),
                        _ => Ok(()),
                    }
                })
            }),
        ),
        ("State.GetState", Read, call!(c => c.get_state(false))),
        (
            "State.ApplyService",
            Write,
            call!(c => c.apply_service(v1::Service {
                name: "web".into(),
                check: Some(v1::HealthCheck {
                    kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 80 })),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        ),
        (
            "State.DeleteService",
            Write,
            call!(c => c.delete_service("none")),
        ),
        (
            "State.ApplyVip",
            Write,
            call!(c => c.apply_vip(v1::Vip {
                name: "v".into(),
                address: "10.213.0.100/24".into(),
                interface: "eth0".into(),
                service: "none".into(),
                ..Default::default()
            })),
        ),
        ("State.DeleteVip", Write, call!(c => c.delete_vip("none"))),
        (
            "State.SetNodeAdmin",
            Write,
            call!(c => c.set_node_admin(1, v1::AdminState::Active)),
        ),
        ("State.MoveVip", Write, call!(c => c.move_vip("none", 1))),
        (
            "State.RegisterRelease",
            Write,
            call!(c => c.register_release("none", "r1", "/nothing", &"0".repeat(64))),
        ),
        (
            "State.StartRollout",
            Write,
            call!(c => c.start_rollout(v1::StartRolloutRequest {
                service: "none".into(),
                release: "r1".into(),
                ..Default::default()
            })),
        ),
        (
            "State.ControlRollout",
            Write,
            call!(c => c.control_rollout("none", v1::RolloutControl::Pause)),
        ),
        ("State.Rollback", Write, call!(c => c.rollback("none", ""))),
        ("State.ForgetNode", Write, call!(c => c.forget_node(9))),
        (
            "State.SetLease",
            Write,
            call!(c => c.set_lease(v1::LeaseSettings::default())),
        ),
        ("Agent.Renew", Agent, call!(c => c.renew(n, vec![], vec![]))),
        (
            "Agent.ReportHealth",
            Agent,
            call!(c => c.report_health(n, "none", v1::Health::Healthy)),
        ),
        (
            "Agent.ConfirmRelease",
            Agent,
            call!(c => c.confirm_release(n, "none", 1)),
        ),
        (
            "Agent.ReportRelease",
            Agent,
            call!(c => c.report_release(v1::ReportReleaseRequest {
                node_id: n,
                service: "none".into(),
                ..Default::default()
            })),
        ),
        (
            "Agent.Register",
            Agent,
            call!(c => c.register_agent(n, "127.0.0.1:1", true)),
        ),
        ("Agent.Leases", Read, call!(c => c.leases())),
    ]
}

pub type RaftCall = fn(
    RaftServiceClient<Channel>,
    tonic::Request<RaftMessage>,
) -> Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

macro_rules! raft {
    ($m:ident) => {
        |mut c, r| Box::pin(async move { c.$m(r).await.map(|_| ()) })
    };
}

/// Every method of the internal Raft service.
pub fn raft_methods() -> Vec<(&'static str, RaftCall)> {
    vec![
        ("RaftService.AppendEntries", raft!(append_entries)),
        ("RaftService.StreamAppend", |mut c, r| {
            Box::pin(async move {
                let (meta, ext, msg) = r.into_parts();
                let req = tonic::Request::from_parts(meta, ext, tokio_stream::once(msg));
                c.stream_append(req).await.map(|_| ())
            })
        }),
        ("RaftService.Vote", raft!(vote)),
        ("RaftService.PreVote", raft!(pre_vote)),
        ("RaftService.InstallSnapshot", raft!(install_snapshot)),
        ("RaftService.Propose", raft!(propose)),
        ("RaftService.ReadIndex", raft!(read_index)),
        ("RaftService.TimeoutNow", raft!(timeout_now)),
        ("RaftService.TransferLeader", raft!(transfer_leader)),
    ]
}

/// The contract's methods, as `Service.Method`, of the Raft service or of the others.
pub fn contract(raft: bool) -> Vec<String> {
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(v1::FILE_DESCRIPTOR_SET)
        .unwrap();
    let mut methods: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "ballast.v1")
        .flat_map(|f| &f.service)
        .filter(|s| (s.name() == "RaftService") == raft)
        .flat_map(|s| {
            s.method
                .iter()
                .map(move |m| format!("{}.{}", s.name(), m.name()))
        })
        .collect();
    methods.sort();
    methods
}

/// A plaintext channel to `addr`.
pub async fn plain_channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn raft_client(addr: &str) -> RaftServiceClient<Channel> {
    RaftServiceClient::new(plain_channel(addr).await)
}

/// A Raft-service request with `token` and the cluster's id.
pub fn raft_request(
    payload: Vec<u8>,
    token: Option<&str>,
    cluster_id: &str,
) -> tonic::Request<RaftMessage> {
    let mut r = tonic::Request::new(RaftMessage { payload });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r.metadata_mut().insert(
        ballast_proto::CLUSTER_ID_HEADER,
        cluster_id.parse().unwrap(),
    );
    r
}

pub fn is_auth(e: &Error) -> bool {
    matches!(e, Error::Unauthenticated(_) | Error::PermissionDenied(_))
}

pub fn is_auth_status(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

/// What a role may do: Ok(()) allowed (any answer but an auth error), Err(code) refused so.
pub type Rule = fn(Kind) -> Result<(), tonic::Code>;

/// Runs every public method (agent calls about `n`) as `who` and lists where the answer
/// differs from `rule`.
pub async fn check_public(who: &str, c: &Client, n: u64, rule: Rule, failures: &mut Vec<String>) {
    for (name, kind, call) in methods(n) {
        let got = call(c.clone()).await;
        let ok = match (rule(kind), &got) {
            (Ok(()), Err(e)) => !is_auth(e),
            (Ok(()), Ok(())) => true,
            (Err(tonic::Code::Unauthenticated), Err(Error::Unauthenticated(_))) => true,
            (Err(tonic::Code::PermissionDenied), Err(Error::PermissionDenied(_))) => true,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "{name} ({kind:?}, node {n}) as {who}: {got:?}, want {:?}",
                rule(kind)
            ));
        }
    }
}

/// Runs every Raft method as `token` over `channel`; `want`: None allowed (any answer but an
/// auth error), Some(code) refused so.
pub async fn check_raft(
    who: &str,
    channel: &Channel,
    cluster_id: &str,
    token: Option<&str>,
    want: Option<tonic::Code>,
    failures: &mut Vec<String>,
) {
    for (name, call) in raft_methods() {
        // Not a valid message: an allowed caller gets a decoding error, never a change.
        let req = raft_request(b"junk".to_vec(), token, cluster_id);
        let got = call(RaftServiceClient::new(channel.clone()), req).await;
        let ok = match (&want, &got) {
            (None, Err(s)) => !is_auth_status(s),
            (None, Ok(())) => true,
            (Some(code), Err(s)) => s.code() == *code,
            (Some(_), Ok(())) => false,
        };
        if !ok {
            failures.push(format!("{name} as {who}: {got:?}, want {want:?}"));
        }
    }
}

/// Waits until `client`'s cluster has a leader; returns the cluster's id.
pub async fn formed(client: &Client) -> String {
    super::wait_for("a leader", Duration::from_secs(20), || async {
        client
            .status()
            .await
            .ok()
            .filter(|s| s.leader_id != 0)
            .map(|s| s.cluster_id)
    })
    .await
}
