//! The speaker against a scripted router on 127.0.0.1: the session rules, and what a broken
//! or hostile peer gets. No root, no daemon; the router is this file, written with the
//! crate's own codec, and every wait is on a message or a state with a deadline.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ballast_bgp::wire::{self, Message, Notification, Open, Update};
use ballast_bgp::{
    AnnounceError, Family, PeerConfig, PeerState, Speaker, SpeakerConfig, WithholdReason, MAX_EPOCH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

const ROUTER_AS: u32 = 65000;
const NODE_AS: u32 = 65001;
const WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A router that listens on a free port of 127.0.0.1.
struct Router {
    listener: TcpListener,
}

impl Router {
    async fn new() -> Router {
        Router {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    /// A speaker whose only peer is this router, with hold time `hold`.
    fn speaker(&self, hold: u16) -> Speaker {
        let mut peer = PeerConfig::new(ip("127.0.0.1"), ROUTER_AS);
        peer.port = self.listener.local_addr().unwrap().port();
        peer.hold_time_secs = hold;
        Speaker::start(SpeakerConfig {
            local_asn: NODE_AS,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            community_asn: ROUTER_AS,
            peers: vec![peer],
        })
        .unwrap()
    }

    async fn accept(&self) -> Conn {
        let (stream, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("the speaker connects")
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            rib: BTreeMap::new(),
        }
    }

    /// Accepts, reads the speaker's OPEN and answers with `open`.
    async fn answer(&self, open: Open) -> Conn {
        let mut c = self.accept().await;
        assert!(matches!(c.next().await, Some(Message::Open(_))));
        c.send(&open.encode()).await;
        c
    }

    /// Accepts and brings the session up with an OPEN of `hold` seconds.
    async fn establish(&self, hold: u16) -> Conn {
        let mut c = self.accept().await;
        c.handshake(hold).await;
        c
    }
}

/// The router's end of one connection, and the routes it learned on it.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    rib: BTreeMap<IpAddr, u32>,
}

impl Conn {
    /// The next whole message, raw; `None` when the speaker closed the connection.
    async fn next_raw(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((_, used)) = wire::decode(&self.buf).unwrap() {
                return Some(self.buf.drain(..used).collect());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("a message from the speaker")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn next(&mut self) -> Option<Message> {
        let raw = self.next_raw().await?;
        Some(wire::decode(&raw).unwrap().unwrap().0)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn handshake(&mut self, hold: u16) -> Open {
        let Some(Message::Open(open)) = self.next().await else {
            panic!("the speaker starts with an OPEN");
        };
        let mut ours = Open::ours(ROUTER_AS, hold, Ipv4Addr::new(10, 0, 0, 1));
        ours.multiprotocol.truncate(1); // a router with IPv4 only
        self.send(&ours.encode()).await;
        self.send(&wire::keepalive()).await;
        assert_eq!(self.next().await, Some(Message::Keepalive));
        open
    }

    /// Reads UPDATEs into the RIB (skipping keepalives) until `done` holds for one.
    async fn updates_until(&mut self, mut done: impl FnMut(&Update) -> bool) {
        loop {
            let raw = self.next_raw().await.expect("the session stays up");
            let Ok(u) = Update::decode(&raw) else {
                continue; // a KEEPALIVE
            };
            for a in &u.withdrawn {
                self.rib.remove(a);
            }
            for a in &u.announced {
                let epoch = u.large_communities[0][2];
                assert_eq!(u.med, Some(4_294_967_294 - epoch), "MED follows the epoch");
                self.rib.insert(*a, epoch);
            }
            if done(&u) {
                return;
            }
        }
    }

    /// Reads until the IPv4 End-of-RIB marker, which closes the first full announcement.
    async fn until_end_of_rib(&mut self) {
        self.updates_until(is_end_of_rib).await;
    }

    /// Reads until the speaker closes, and returns the NOTIFICATION it sent before.
    async fn notification(&mut self) -> Notification {
        let mut last = None;
        while let Some(m) = self.next().await {
            if let Message::Notification(n) = m {
                last = Some(n);
            }
        }
        last.expect("a NOTIFICATION before the close")
    }
}

fn is_end_of_rib(u: &Update) -> bool {
    u.announced.is_empty() && u.withdrawn.is_empty() && !u.mp_unreach
}

/// Waits until the speaker's first peer's last error contains `text`.
async fn until_error(speaker: &Speaker, text: &str) {
    until_peer(speaker, |p| {
        p.last_error.as_deref().is_some_and(|e| e.contains(text))
    })
    .await;
}

/// Waits until the speaker's first peer satisfies `f`.
async fn until_peer(speaker: &Speaker, f: impl Fn(&ballast_bgp::PeerStatus) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f(&speaker.peers()[0]) {
        assert!(Instant::now() < deadline, "peer: {:?}", speaker.peers()[0]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_session_sends_the_table_then_each_change_with_the_epoch_med() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    speaker.announce(ip("10.213.240.100"), 5).unwrap();
    let mut c = router.accept().await;
    let open = c.handshake(3).await;
    assert_eq!(open.asn(), NODE_AS);
    assert_eq!(open.hold_time, 9);
    c.until_end_of_rib().await;
    assert_eq!(c.rib, BTreeMap::from([(ip("10.213.240.100"), 5)]));
    until_peer(&speaker, |p| p.state == PeerState::Established).await;
    assert_eq!(speaker.peers()[0].hold_time_secs, Some(3));

    speaker.announce(ip("10.213.240.101"), 6).unwrap();
    c.updates_until(|u| !u.announced.is_empty()).await;
    assert_eq!(c.rib.get(&ip("10.213.240.101")), Some(&6));
    assert!(speaker.withdraw(ip("10.213.240.100")));
    assert!(!speaker.withdraw(ip("10.213.240.100")), "already withdrawn");
    c.updates_until(|u| !u.withdrawn.is_empty()).await;
    assert_eq!(c.rib, BTreeMap::from([(ip("10.213.240.101"), 6)]));
    until_peer(&speaker, |p| p.routes_sent == 1 && p.updates_sent == 4).await;
    speaker.shutdown().await;
}

#[tokio::test]
async fn shutdown_says_cease_administrative_shutdown_and_closes() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    speaker.shutdown().await;
    let n = c.notification().await;
    assert_eq!((n.code, n.subcode), (6, 2));
    assert!(n.to_string().contains("shutting down"), "{n}");
}

#[tokio::test]
async fn the_replay_after_a_reconnect_is_the_table_as_it_is_then() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    speaker.announce(ip("10.0.0.1"), 1).unwrap();
    speaker.announce(ip("10.0.0.2"), 1).unwrap();
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    drop(c); // the router goes away
    until_peer(&speaker, |p| p.state != PeerState::Established).await;
    assert!(speaker.withdraw(ip("10.0.0.1")));
    speaker.announce(ip("10.0.0.2"), 2).unwrap();
    speaker.announce(ip("10.0.0.3"), 2).unwrap();

    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    assert_eq!(
        c.rib,
        BTreeMap::from([(ip("10.0.0.2"), 2), (ip("10.0.0.3"), 2)]),
        "nothing withdrawn while down is sent, nothing announced is missed"
    );
    let status = &speaker.peers()[0];
    assert_eq!(status.sessions_established, 2);
    assert!(status.last_error.as_deref().unwrap().contains("closed"));
    speaker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_racing_with_reconnects_leave_the_router_with_exactly_the_table() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let router = Router::new().await;
    let speaker = Arc::new(router.speaker(9));
    let done = Arc::new(AtomicBool::new(false));
    // Announce and withdraw on another thread the whole time the router drops sessions.
    let churn = {
        let (speaker, done) = (speaker.clone(), done.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !done.load(Ordering::Relaxed) {
                let addr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, (i % 23) as u8));
                if i.is_multiple_of(3) {
                    speaker.withdraw(addr);
                } else {
                    speaker.announce(addr, u64::from(i)).unwrap();
                }
                i += 1;
                if i.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            i
        })
    };
    for round in 0..4u32 {
        let mut c = router.establish(3).await;
        // Cut some sessions during the replay, some after it.
        if round.is_multiple_of(2) {
            c.until_end_of_rib().await;
            c.updates_until(|_| true).await;
        }
    }
    done.store(true, Ordering::Relaxed);
    let changes = churn.await.unwrap();
    assert!(changes > 100, "{changes} changes");
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    let want: BTreeMap<IpAddr, u32> = speaker
        .announced()
        .into_iter()
        .map(|(a, e)| (a, e as u32))
        .collect();
    // Changes made during the replay may still be on their way.
    let deadline = Instant::now() + WAIT;
    while c.rib != want {
        assert!(
            Instant::now() < deadline,
            "router {:?} != {:?}",
            c.rib,
            want
        );
        c.updates_until(|_| true).await;
    }
}

#[tokio::test]
async fn garbage_from_the_peer_is_answered_with_connection_not_synchronized() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    c.send(&[0u8; 19]).await;
    let n = c.notification().await;
    assert_eq!((n.code, n.subcode), (1, 1));
    // And it comes back.
    let mut again = router.establish(3).await;
    again.until_end_of_rib().await;
    until_peer(&speaker, |p| p.state == PeerState::Established).await;
    until_error(&speaker, "malformed").await;
}

#[tokio::test]
async fn a_message_longer_than_4096_is_refused_from_its_header() {
    let router = Router::new().await;
    let _speaker = router.speaker(9);
    let mut c = router.establish(3).await;
    let mut header = vec![0xff; 16];
    header.extend_from_slice(&5000u16.to_be_bytes());
    header.push(2);
    c.send(&header).await; // and never the 4981 octets it announces
    let n = c.notification().await;
    assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0x13, 0x88]));
}

#[tokio::test]
async fn a_peer_that_never_answers_the_open_is_given_up_at_the_hold_time() {
    let router = Router::new().await;
    let speaker = router.speaker(3);
    let mut c = router.accept().await;
    let started = Instant::now();
    assert!(matches!(c.next().await, Some(Message::Open(_))));
    let n = c.notification().await; // silence until the speaker gives up
    assert_eq!((n.code, n.subcode), (4, 0));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
    until_error(&speaker, "OpenSent").await;
    router.establish(3).await; // it tries again
}

#[tokio::test]
async fn a_silent_established_peer_is_dropped_at_the_hold_time_and_called_again() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    speaker.announce(ip("10.0.0.1"), 1).unwrap();
    // Hold 3 s: the speaker's keepalives come each second; this router sends none (as if its
    // host vanished, leaving a half-open connection).
    let mut c = router.establish(3).await;
    let up = Instant::now();
    let mut keepalives = 0;
    let n = loop {
        match c.next().await.expect("a NOTIFICATION before the close") {
            Message::Keepalive => keepalives += 1,
            Message::Notification(n) => break n,
            _ => {}
        }
    };
    assert_eq!((n.code, n.subcode), (4, 0));
    let held = up.elapsed();
    assert!(
        held >= Duration::from_millis(2900) && held < Duration::from_secs(7),
        "{held:?}"
    );
    assert!(keepalives >= 2, "keepalives every hold/3: {keepalives}");
    let mut again = router.establish(3).await;
    again.until_end_of_rib().await;
    assert_eq!(again.rib.len(), 1, "the replay");
}

#[tokio::test]
async fn keepalives_from_the_peer_keep_the_session_past_the_hold_time() {
    let router = Router::new().await;
    let speaker = router.speaker(3);
    let mut c = router.establish(3).await;
    let up = Instant::now();
    let mut from_speaker = 0;
    // Answer each of the speaker's keepalives with one, until the session has lived two hold
    // times.
    while up.elapsed() < Duration::from_secs(6) {
        match c.next().await.expect("the session stays up") {
            Message::Keepalive => {
                from_speaker += 1;
                c.send(&wire::keepalive()).await;
            }
            Message::Notification(n) => panic!("session ended: {n}"),
            _ => {}
        }
    }
    assert!(
        from_speaker >= 5,
        "{from_speaker} keepalives in 6 s at hold 3"
    );
    assert_eq!(speaker.peers()[0].state, PeerState::Established);
    assert_eq!(speaker.peers()[0].sessions_established, 1);
}

#[tokio::test]
async fn a_peer_of_another_as_is_refused_with_bad_peer_as() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    let mut c = router
        .answer(Open::ours(65099, 3, Ipv4Addr::new(10, 0, 0, 1)))
        .await;
    let n = c.notification().await;
    assert_eq!((n.code, n.subcode), (2, 2));
    until_error(&speaker, "AS 65099").await;
}

#[tokio::test]
async fn a_hold_time_of_two_seconds_is_refused() {
    let router = Router::new().await;
    let _speaker = router.speaker(9);
    let mut c = router
        .answer(Open::ours(ROUTER_AS, 2, Ipv4Addr::new(10, 0, 0, 1)))
        .await;
    let n = c.notification().await;
    assert_eq!((n.code, n.subcode), (2, 6));
}

#[tokio::test]
async fn a_notification_from_the_peer_ends_the_session_and_is_reported() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    c.send(&Notification::cease_shutdown("maintenance window").encode())
        .await;
    while let Some(m) = c.next().await {
        assert!(
            !matches!(m, Message::Notification(_)),
            "no answer to a NOTIFICATION"
        );
    }
    until_error(&speaker, "\"maintenance window\"").await;
}

#[tokio::test]
async fn an_ipv6_route_without_a_next_hop_is_withheld_and_the_status_says_why() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    speaker.announce(ip("fd0a:d5f0::100"), 1).unwrap();
    speaker.announce(ip("10.0.0.1"), 1).unwrap();
    let mut c = router.establish(3).await; // this router offers IPv4 only
    c.until_end_of_rib().await;
    assert_eq!(c.rib.keys().collect::<Vec<_>>(), vec![&ip("10.0.0.1")]);
    until_peer(&speaker, |p| p.withheld.len() == 1).await;
    let w = &speaker.peers()[0].withheld[0];
    assert_eq!(
        (w.family, w.routes, w.reason),
        (Family::Ipv6, 1, WithholdReason::NotNegotiated)
    );
}

#[tokio::test]
async fn epochs_past_the_largest_med_are_refused_and_change_nothing() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    let vip = ip("10.0.0.1");
    speaker.announce(vip, MAX_EPOCH).unwrap();
    for epoch in [MAX_EPOCH + 1, u64::from(u32::MAX), u64::MAX] {
        assert_eq!(
            speaker.announce(vip, epoch),
            Err(AnnounceError::EpochTooLarge { addr: vip, epoch })
        );
    }
    assert_eq!(speaker.announced(), BTreeMap::from([(vip, MAX_EPOCH)]));
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    assert_eq!(c.rib, BTreeMap::from([(vip, MAX_EPOCH as u32)]));
    for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.5", "::", "ff02::1"] {
        assert_eq!(
            speaker.announce(ip(bad), 1),
            Err(AnnounceError::NotUnicast(ip(bad)))
        );
    }
}

#[tokio::test]
async fn an_unreachable_peer_is_retried_with_growing_waits() {
    // A port nobody listens on: each connect is refused at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut peer = PeerConfig::new(ip("127.0.0.1"), ROUTER_AS);
    peer.port = port;
    let speaker = Speaker::start(SpeakerConfig {
        local_asn: NODE_AS,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        community_asn: ROUTER_AS,
        peers: vec![peer],
    })
    .unwrap();
    until_error(&speaker, "refused").await;
    assert_ne!(speaker.peers()[0].state, PeerState::Established);
    // Shutdown does not wait out the backoff.
    timeout(Duration::from_secs(1), speaker.shutdown())
        .await
        .expect("shutdown is prompt");
}

#[tokio::test]
async fn an_update_before_established_is_a_state_machine_error() {
    let router = Router::new().await;
    let _speaker = router.speaker(9);
    let mut c = router
        .answer(Open::ours(ROUTER_AS, 3, Ipv4Addr::new(10, 0, 0, 1)))
        .await;
    let mut update = Vec::new();
    wire::end_of_rib(&mut update, Family::Ipv4);
    c.send(&update).await; // where a KEEPALIVE belongs
    let n = c.notification().await;
    assert_eq!((n.code, n.subcode, n.data), (5, 2, vec![2]));
}

#[tokio::test]
async fn a_router_flooding_updates_neither_stalls_nor_ends_the_session() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    // 20,000 UPDATEs (a full table's worth of messages) in one burst.
    let mut burst = Vec::new();
    for _ in 0..20_000 {
        wire::end_of_rib(&mut burst, Family::Ipv4);
    }
    c.send(&burst).await;
    speaker.announce(ip("10.0.0.1"), 1).unwrap();
    c.updates_until(|u| !u.announced.is_empty()).await;
    assert_eq!(speaker.peers()[0].state, PeerState::Established);
    assert_eq!(speaker.peers()[0].sessions_established, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_never_stops_sending_still_gets_keepalives_and_updates() {
    let router = Router::new().await;
    let speaker = router.speaker(9);
    let c = router.establish(3).await;
    let (mut rd, mut wr) = c.stream.into_split();
    // Four seconds of UPDATEs without pause: longer than the hold time of 3 s.
    let flood = tokio::spawn(async move {
        let mut burst = Vec::new();
        for _ in 0..500 {
            wire::end_of_rib(&mut burst, Family::Ipv4);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            wr.write_all(&burst).await.unwrap();
        }
        wr
    });
    let mut announced = false;
    let mut keepalives = 0;
    let mut buf = c.buf;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        if let Some((msg, used)) = wire::decode(&buf).unwrap() {
            let raw: Vec<u8> = buf.drain(..used).collect();
            match msg {
                Message::Keepalive => keepalives += 1,
                Message::Update => {
                    let u = Update::decode(&raw).unwrap();
                    announced |= u.announced.contains(&ip("10.0.0.1"));
                }
                Message::Notification(n) => panic!("session ended: {n}"),
                Message::Open(_) => panic!("OPEN"),
            }
            continue;
        }
        if started.elapsed() > Duration::from_secs(1) {
            speaker.announce(ip("10.0.0.1"), 1).unwrap();
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, rd.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "the speaker closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    flood.await.unwrap();
    assert!(keepalives >= 3, "{keepalives} keepalives in 4 s at hold 3");
    assert!(announced, "the announcement got through the flood");
    assert_eq!(speaker.peers()[0].sessions_established, 1);
}

#[tokio::test]
async fn the_notification_reaches_a_peer_whose_garbage_is_still_unread() {
    let router = Router::new().await;
    let _speaker = router.speaker(9);
    let mut c = router.establish(3).await;
    c.until_end_of_rib().await;
    // The speaker closes with the junk unread, which resets the connection (RST, not FIN):
    // the NOTIFICATION, written before, still arrives ahead of the reset.
    let mut junk = vec![0u8; 19];
    junk.extend_from_slice(&[0xab; 60_000]);
    c.send(&junk).await;
    let n = c.notification().await;
    assert_eq!((n.code, n.subcode), (1, 1));
}
