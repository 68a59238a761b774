//! Validation of API input that needs no state. Every error names the offending field.
//!
//! Checks that depend on the state (unknown node, unknown service) run again inside the
//! state machine, where they are decided deterministically at apply time.

use std::net::{IpAddr, SocketAddr};

use ballast_proto::v1;
use ballast_proto::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// Input refused before it reaches the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidInput {
    pub field: String,
    pub message: String,
}

pub fn invalid(field: &str, message: impl Into<String>) -> InvalidInput {
    InvalidInput {
        field: field.to_string(),
        message: message.into(),
    }
}

pub type Result<T = ()> = std::result::Result<T, InvalidInput>;

/// Default probe interval (HAProxy's `inter`).
pub const DEFAULT_INTERVAL_MS: u32 = 2000;
/// Default probe timeout.
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
/// Default consecutive successes to become healthy (HAProxy's `rise`).
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to become unhealthy (HAProxy's `fall`).
pub const DEFAULT_FALL: u32 = 3;

pub fn key(field: &str, key: &[u8]) -> Result {
    if key.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(
            field,
            format!("is {} bytes; at most {MAX_KEY_LEN} are allowed", key.len()),
        ));
    }
    Ok(())
}

pub fn value(field: &str, value: &[u8]) -> Result {
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(
            field,
            format!(
                "is {} bytes; at most {MAX_VALUE_LEN} are allowed",
                value.len()
            ),
        ));
    }
    Ok(())
}

pub fn prefix(field: &str, prefix: &[u8]) -> Result {
    if prefix.len() > MAX_KEY_LEN {
        return Err(invalid(
            field,
            format!(
                "is {} bytes; at most {MAX_KEY_LEN} are allowed",
                prefix.len()
            ),
        ));
    }
    Ok(())
}

/// Names of services and VIPs: 1 to 63 characters of `a-z 0-9 - _ .`, starting with a letter
/// or digit.
pub fn name(field: &str, name: &str) -> Result {
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.len() > 63 {
        return Err(invalid(field, "is longer than 63 characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if !name.chars().all(ok_char)
        || !name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(invalid(
            field,
            format!("{name:?} must be lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// A release to register: id like a name, artifact an absolute path or an http(s) URL,
/// sha256 as 64 lowercase hex digits.
pub fn release(r: &v1::Release) -> Result {
    name("release.id", &r.id)?;
    let a = r.artifact.as_str();
    if a.is_empty() || a.len() > 2048 {
        return Err(invalid("release.artifact", "must be 1 to 2048 characters"));
    }
    if !(a.starts_with('/') || a.starts_with("http://") || a.starts_with("https://")) {
        return Err(invalid(
            "release.artifact",
            format!("{a:?} is neither an absolute path on the servers nor an http(s) URL"),
        ));
    }
    if a.chars().any(|c| c.is_control()) {
        return Err(invalid("release.artifact", "contains control characters"));
    }
    if r.sha256.len() != 64
        || !r
            .sha256
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(invalid(
            "release.sha256",
            "must be 64 lowercase hex digits (sha256sum's output)",
        ));
    }
    Ok(())
}

pub fn node_id(field: &str, id: u64) -> Result {
    if id == 0 {
        return Err(invalid(field, "node ids start at 1"));
    }
    Ok(())
}

/// A member address as peers dial it: `host:port`, with a port.
pub fn member_addr(field: &str, addr: &str) -> Result {
    if addr.parse::<SocketAddr>().is_ok() {
        if addr
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return Err(invalid(
                field,
                format!("{addr:?} is not an address peers can dial"),
            ));
        }
        return Ok(());
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(())
        }
        _ => Err(invalid(field, format!("{addr:?} is not host:port"))),
    }
}

/// A VIP's address with prefix length: IPv4 (`10.213.0.100/24`) or IPv6
/// (`fd0a:d500::100/64`), only in its one canonical spelling (IPv6 as RFC 5952 writes it, the
/// form Rust prints: lower case, no leading zeros, the longest run of zero groups as `::`), so
/// that two spellings of one address never pass as two VIPs.
pub fn vip_cidr(field: &str, s: &str) -> Result<(IpAddr, u8)> {
    let Some((ip, len)) = s.split_once('/') else {
        return Err(invalid(
            field,
            format!(
                "{s:?} must be an address with a prefix length, like 10.0.0.10/24 or fd00::10/64"
            ),
        ));
    };
    let text = ip;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| invalid(field, format!("{ip:?} is not an IPv4 or IPv6 address")))?;
    if ip.to_string() != text {
        return Err(invalid(
            field,
            format!("write {text:?} as {ip} (one spelling per address)"),
        ));
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        // Only the canonical spelling: "08" or "+8" would name the same prefix as "8".
        .filter(|l: &u8| (1..=max).contains(l) && l.to_string() == len)
        .ok_or_else(|| invalid(field, format!("prefix length {len:?} is not in 1..={max}")))?;
    let refused = match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.is_loopback()
        }
        // Link-local addresses belong to one link and need a scope; an IPv4-mapped one is an
        // IPv4 address in disguise (the fence would govern it in the wrong family).
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_loopback()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some()
        }
    };
    if refused {
        return Err(invalid(field, format!("{ip} cannot be a virtual IP")));
    }
    Ok((ip, len))
}

/// A Linux interface name (IFNAMSIZ is 16 with the terminating NUL).
pub fn interface(field: &str, s: &str) -> Result {
    if s.is_empty() || s.len() > 15 {
        return Err(invalid(field, "must be 1 to 15 characters"));
    }
    if s.chars().any(|c| c == '/' || c.is_whitespace() || c == ':') {
        return Err(invalid(field, format!("{s:?} is not an interface name")));
    }
    Ok(())
}

fn port(field: &str, p: u32) -> Result {
    if p == 0 || p > 65535 {
        return Err(invalid(field, format!("port {p} is not in 1..=65535")));
    }
    Ok(())
}

/// The path of an http check, sent as the request target of `GET <path> HTTP/1.0`: it starts
/// with '/' and holds printable ASCII only (at most 2048 bytes), so nothing in it can end the
/// request line or add a header. The agent checks it again before every probe.
pub fn http_path(field: &str, path: &str) -> Result {
    if !path.starts_with('/') {
        return Err(invalid(field, "must start with '/'"));
    }
    if path.len() > 2048 {
        return Err(invalid(field, "is longer than 2048 bytes"));
    }
    for (at, c) in path.char_indices() {
        let why = if c.is_control() {
            format!("contains a control character ({c:?} at byte {at}); CR, LF and the like would end the request line")
        } else if c == ' ' {
            format!("contains a space at byte {at}; percent-encode it (%20)")
        } else if !c.is_ascii() {
            format!("contains a non-ASCII character ({c:?} at byte {at}); percent-encode it")
        } else {
            continue;
        };
        return Err(invalid(field, why));
    }
    Ok(())
}

/// Checks a health check and fills in defaults for unset timings.
pub fn health_check(field: &str, check: &mut v1::HealthCheck) -> Result {
    use v1::health_check::Kind;
    match &mut check.kind {
        None => {
            return Err(invalid(
                &format!("{field}.kind"),
                "one of http, tcp or exec is required",
            ))
        }
        Some(Kind::Http(h)) => {
            port(&format!("{field}.http.port"), h.port)?;
            if h.path.is_empty() {
                h.path = "/".into();
            }
            http_path(&format!("{field}.http.path"), &h.path)?;
            if h.expect_status_min == 0 && h.expect_status_max == 0 {
                h.expect_status_min = 200;
                h.expect_status_max = 399;
            }
            if !(100..=599).contains(&h.expect_status_min)
                || !(100..=599).contains(&h.expect_status_max)
                || h.expect_status_min > h.expect_status_max
            {
                return Err(invalid(
                    &format!("{field}.http.expect_status"),
                    format!(
                        "{}..={} is not a range of HTTP status codes",
                        h.expect_status_min, h.expect_status_max
                    ),
                ));
            }
        }
        Some(Kind::Tcp(t)) => port(&format!("{field}.tcp.port"), t.port)?,
        Some(Kind::Exec(e)) => name(&format!("{field}.exec.name"), &e.name)?,
    }
    if check.interval_ms == 0 {
        check.interval_ms = DEFAULT_INTERVAL_MS;
    }
    if check.timeout_ms == 0 {
        check.timeout_ms = DEFAULT_TIMEOUT_MS.min(check.interval_ms);
    }
    if check.rise == 0 {
        check.rise = DEFAULT_RISE;
    }
    if check.fall == 0 {
        check.fall = DEFAULT_FALL;
    }
    if check.interval_ms > 3_600_000 {
        return Err(invalid(
            &format!("{field}.interval_ms"),
            "must be at most one hour",
        ));
    }
    if check.timeout_ms > check.interval_ms {
        return Err(invalid(
            &format!("{field}.timeout_ms"),
            format!(
                "{} ms exceeds the interval of {} ms",
                check.timeout_ms, check.interval_ms
            ),
        ));
    }
    if check.rise > 100 {
        return Err(invalid(&format!("{field}.rise"), "must be in 1..=100"));
    }
    if check.fall > 100 {
        return Err(invalid(&format!("{field}.fall"), "must be in 1..=100"));
    }
    Ok(())
}

/// Checks a service definition and normalises it (defaults, backend ids from map keys).
pub fn service(svc: &mut v1::Service) -> Result {
    name("service.name", &svc.name)?;
    let check = svc
        .check
        .as_mut()
        .ok_or_else(|| invalid("service.check", "a health check is required"))?;
    health_check("service.check", check)?;
    for (id, b) in svc.backends.iter_mut() {
        node_id("service.backends", *id)?;
        if b.node_id != 0 && b.node_id != *id {
            return Err(invalid(
                "service.backends",
                format!("entry {id} names node {}", b.node_id),
            ));
        }
        // Health, releases applied and their errors are what agents report: an operator's
        // definition carries none (a backend declared healthy would be placed on unchecked).
        *b = v1::Backend {
            node_id: *id,
            ..Default::default()
        };
    }
    Ok(())
}

/// Checks a VIP definition.
pub fn vip(vip: &mut v1::Vip) -> Result {
    name("vip.name", &vip.name)?;
    let (ip, len) = vip_cidr("vip.address", &vip.address)?;
    vip.address = format!("{ip}/{len}");
    interface("vip.interface", &vip.interface)?;
    name("vip.service", &vip.service)?;
    let p = vip.placement.get_or_insert_with(Default::default);
    if p.preempt_delay_ms > 3_600_000 {
        return Err(invalid(
            "vip.placement.preempt_delay_ms",
            "must be at most one hour",
        ));
    }
    for id in p.priorities.keys() {
        node_id("vip.placement.priorities", *id)?;
    }
    Ok(())
}

pub fn admin_state(field: &str, admin: i32) -> Result<v1::AdminState> {
    match v1::AdminState::try_from(admin) {
        Ok(v1::AdminState::Unspecified) | Err(_) => {
            Err(invalid(field, "must be active, draining or maintenance"))
        }
        Ok(a) => Ok(a),
    }
}

/// A health transition an agent reports: healthy or unhealthy.
pub fn reported_health(field: &str, health: i32) -> Result {
    match v1::Health::try_from(health) {
        Ok(v1::Health::Healthy | v1::Health::Unhealthy) => Ok(()),
        _ => Err(invalid(field, "must be healthy or unhealthy")),
    }
}

/// The error text an agent reports with a failed release.
pub fn report_error(field: &str, error: &str) -> Result {
    if error.len() > 4096 {
        return Err(invalid(field, "is longer than 4096 bytes"));
    }
    Ok(())
}

/// A rollout's deadline, in milliseconds.
pub fn rollout_deadline(field: &str, ms: u64) -> Result {
    if ms > 7 * 24 * 3_600_000 {
        return Err(invalid(field, "must be at most a week"));
    }
    Ok(())
}

/// Every check above for the operation `op` carries, as the public API and the agent
/// service make them before proposing it; for a write forwarded to the leader (the Raft
/// service's `Propose`), which checks it again. Operations only a leader's own loops propose
/// pass unchecked here: `Op::leader_only` refuses them before this is called.
pub fn op(op: &mut crate::types::Op) -> Result {
    use crate::types::Op;
    match op {
        Op::Put { key: k, value: v } => {
            key("key", k)?;
            value("value", v)
        }
        Op::CompareAndSet {
            key: k, new_value, ..
        } => {
            key("key", k)?;
            value("new_value", new_value)
        }
        Op::Delete { key: k, prefix: p } => {
            if *p {
                prefix("key", k)
            } else {
                key("key", k)
            }
        }
        Op::ApplyService(svc) => {
            let mut wire = v1::Service::from(svc.clone());
            service(&mut wire)?;
            *svc = wire.into();
            Ok(())
        }
        Op::DeleteService(n) | Op::DeleteVip(n) => name("name", n),
        Op::ApplyVip(v) => {
            let mut wire = v1::Vip::from(v.clone());
            vip(&mut wire)?;
            *v = wire.into();
            Ok(())
        }
        Op::SetNodeAdmin { node_id: id, admin } => {
            node_id("node_id", *id)?;
            admin_state("admin", admin.to_wire()).map(|_| ())
        }
        Op::ReportHealth {
            node_id: id,
            service,
            health,
        } => {
            node_id("node_id", *id)?;
            name("service", service)?;
            reported_health("health", health.to_wire())
        }
        Op::MoveVip { vip, to } => {
            name("name", vip)?;
            node_id("to_node", *to)
        }
        Op::RegisterAgent { node_id: id, addr } => {
            node_id("node_id", *id)?;
            if addr.is_empty() {
                return Ok(());
            }
            member_addr("addr", addr)
        }
        Op::ForgetAgent { node_id: id } => node_id("node_id", *id),
        Op::RegisterRelease {
            service,
            release: r,
        } => {
            name("service", service)?;
            release(&v1::Release::from(r.clone()))
        }
        Op::StartRollout {
            service,
            release,
            batch,
            deadline_ms,
            ..
        } => {
            name("service", service)?;
            name("release", release)?;
            if *batch == 0 {
                return Err(invalid("batch", "must be at least 1"));
            }
            rollout_deadline("deadline_ms", *deadline_ms)
        }
        Op::ControlRollout { service, .. } => name("service", service),
        Op::Rollback { service, to } => {
            name("service", service)?;
            if to.is_empty() {
                return Ok(());
            }
            name("to", to)
        }
        Op::ReportRelease {
            node_id: id,
            service,
            error,
            ..
        } => {
            node_id("node_id", *id)?;
            name("service", service)?;
            report_error("error", error)
        }
        // Checked whole when restored (`backup.rs`, the state machine), like lease settings
        // (`Node::check_lease_settings`, which needs this member's configuration).
        Op::Restore { .. } | Op::RestoreHeld { .. } | Op::SetLease { .. } => Ok(()),
        Op::AssignVip { .. }
        | Op::ReleaseVip { .. }
        | Op::RevokeVip { .. }
        | Op::SetNodeAlive { .. }
        | Op::StepRollout { .. }
        | Op::SettleLease { .. }
        | Op::BindAgent { .. }
        | Op::ClearRetired { .. }
        | Op::Decided { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(key("key", b"").unwrap_err().field, "key");
        assert!(key("key", &vec![b'a'; MAX_KEY_LEN]).is_ok());
        assert!(key("key", &vec![b'a'; MAX_KEY_LEN + 1]).is_err());
        assert!(value("value", &vec![0; MAX_VALUE_LEN]).is_ok());
        assert_eq!(
            value("value", &vec![0; MAX_VALUE_LEN + 1])
                .unwrap_err()
                .field,
            "value"
        );
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            vip_cidr("a", "10.213.0.10/24").unwrap(),
            ("10.213.0.10".parse().unwrap(), 24)
        );
        assert_eq!(
            vip_cidr("a", "fd0a:d500::10/64").unwrap(),
            ("fd0a:d500::10".parse().unwrap(), 64)
        );
        assert_eq!(
            vip_cidr("a", "fd0a:d500::10/128").unwrap().1,
            128,
            "a host route's prefix"
        );
        for bad in [
            "10.213.0.10",
            "10.213.0.300/24",
            "10.213.0.1/33",
            "10.213.0.1/0",
            "0.0.0.0/8",
            "127.0.0.1/8",
            "x/24",
            "fd0a:d500::10",
            "fd0a:d500::10/129",
            "fd0a:d500::10/064",
            "fd0a:d500:0::10/64",
            "FD0A:d500::10/64",
            "::/64",
            "::1/128",
            "ff02::1/64",
            "fe80::1/64",
            "::ffff:10.213.0.1/120",
        ] {
            assert!(vip_cidr("a", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names_and_addrs() {
        assert!(name("n", "web-1.prod").is_ok());
        for bad in ["", "Web", "-web", "a b", &"a".repeat(64)] {
            assert!(name("n", bad).is_err(), "{bad:?} accepted");
        }
        assert!(member_addr("a", "127.0.0.1:7400").is_ok());
        assert!(member_addr("a", "node-1.example:7400").is_ok());
        for bad in [
            "127.0.0.1",
            "0.0.0.0:7400",
            "127.0.0.1:0",
            ":7400",
            "host:x",
        ] {
            assert!(member_addr("a", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn health_check_defaults_and_limits() {
        let mut c = v1::HealthCheck {
            kind: Some(v1::health_check::Kind::Http(v1::HttpCheck {
                port: 8080,
                ..Default::default()
            })),
            ..Default::default()
        };
        health_check("check", &mut c).unwrap();
        assert_eq!(
            (c.interval_ms, c.timeout_ms, c.rise, c.fall),
            (2000, 1000, 2, 3)
        );
        let Some(v1::health_check::Kind::Http(h)) = &c.kind else {
            unreachable!()
        };
        assert_eq!(
            (h.path.as_str(), h.expect_status_min, h.expect_status_max),
            ("/", 200, 399)
        );

        c.timeout_ms = 5000;
        assert_eq!(
            health_check("check", &mut c).unwrap_err().field,
            "check.timeout_ms"
        );
        let mut none = v1::HealthCheck::default();
        assert_eq!(
            health_check("check", &mut none).unwrap_err().field,
            "check.kind"
        );
    }

    #[test]
    fn http_check_paths_cannot_smuggle_header_lines() {
        let check = |path: &str| {
            let mut c = v1::HealthCheck {
                kind: Some(v1::health_check::Kind::Http(v1::HttpCheck {
                    port: 8080,
                    path: path.into(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            health_check("service.check", &mut c)
        };
        check("/healthz?full=1&x=%20").unwrap();
        for (bad, says) in [
            ("/x\r\nHost: evil", "control character"),
            ("/x\nX-Injected: 1", "control character"),
            ("/x\0", "control character"),
            ("/x\u{7f}", "control character"),
            ("/a b", "space"),
            ("/a\tb", "control character"),
            ("/caf\u{e9}", "non-ASCII"),
        ] {
            let e = check(bad).unwrap_err();
            assert_eq!(e.field, "service.check.http.path", "{bad:?}");
            assert!(e.message.contains(says), "{bad:?}: {e}");
        }
        let long = format!("/{}", "a".repeat(2048));
        assert_eq!(check(&long).unwrap_err().field, "service.check.http.path");
    }

    #[test]
    fn vips() {
        let mut v = v1::Vip {
            name: "web".into(),
            address: "10.213.0.100/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        };
        vip(&mut v).unwrap();
        v.interface = "this-name-is-too-long".into();
        assert_eq!(vip(&mut v).unwrap_err().field, "vip.interface");
    }

    /// Found by a cold review: `service apply` passed a backend's health through, so a new,
    /// never-checked backend could be declared healthy and get a VIP.
    #[test]
    fn a_service_definition_carries_no_reported_health() {
        let mut svc = v1::Service {
            name: "web".into(),
            check: Some(v1::HealthCheck {
                kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 80 })),
                ..Default::default()
            }),
            backends: [(
                4,
                v1::Backend {
                    health: v1::Health::Healthy as i32,
                    changed_ms: 1,
                    applied_release: "r1".into(),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        service(&mut svc).unwrap();
        assert_eq!(
            svc.backends[&4],
            v1::Backend {
                node_id: 4,
                ..Default::default()
            }
        );
    }
}
