//! Conversions between the stored types and the wire types, both ways, field by field and
//! variant by variant by name (never by number): the API's edge.

use ballast_proto::v1;

use super::*;

/// Both directions of an enumeration, by variant name. A wire number the proto does not
/// know reads as the first variant.
macro_rules! wire_enum {
    ($ours:ident <=> $wire:path { $($variant:ident),+ $(,)? }) => {
        impl From<$ours> for $wire {
            fn from(v: $ours) -> Self {
                match v {
                    $($ours::$variant => <$wire>::$variant),+
                }
            }
        }

        impl From<$wire> for $ours {
            fn from(v: $wire) -> Self {
                match v {
                    $(<$wire>::$variant => $ours::$variant),+
                }
            }
        }

        impl $ours {
            /// From the i32 a wire message carries.
            pub fn from_wire(n: i32) -> Self {
                <$wire>::try_from(n).map(Into::into).unwrap_or_default()
            }

            /// The i32 a wire message carries.
            pub fn to_wire(self) -> i32 {
                <$wire>::from(self) as i32
            }

            /// The proto's name of the variant, for messages.
            pub fn as_str_name(self) -> &'static str {
                <$wire>::from(self).as_str_name()
            }
        }
    };
}

wire_enum!(Role <=> v1::Role { Unspecified, Voter, Learner, Agent });
wire_enum!(AdminState <=> v1::AdminState { Unspecified, Active, Draining, Maintenance });
wire_enum!(Health <=> v1::Health { Unknown, Healthy, Unhealthy });
wire_enum!(ReleaseStatus <=> v1::ReleaseStatus { Unspecified, Registered, RollingOut, Active, Retired, Failed });
wire_enum!(RolloutState <=> v1::RolloutState { Unspecified, Running, Paused, Succeeded, RollingBack, RolledBack, Aborted });
wire_enum!(KvEventKind <=> v1::kv_event::Kind { Put, Delete });

impl From<v1::Node> for Node {
    fn from(n: v1::Node) -> Self {
        Node {
            id: n.id,
            addr: n.addr,
            role: Role::from_wire(n.role),
            admin: AdminState::from_wire(n.admin),
            alive: n.alive,
            last_seen_ms: n.last_seen_ms,
            vips_held: n.vips_held,
            releases_active: n.releases_active,
        }
    }
}

impl From<Node> for v1::Node {
    fn from(n: Node) -> Self {
        v1::Node {
            id: n.id,
            addr: n.addr,
            role: n.role.to_wire(),
            admin: n.admin.to_wire(),
            alive: n.alive,
            last_seen_ms: n.last_seen_ms,
            vips_held: n.vips_held,
            releases_active: n.releases_active,
        }
    }
}

impl From<v1::HealthCheck> for HealthCheck {
    fn from(c: v1::HealthCheck) -> Self {
        HealthCheck {
            interval_ms: c.interval_ms,
            timeout_ms: c.timeout_ms,
            rise: c.rise,
            fall: c.fall,
            kind: c.kind.map(|k| match k {
                v1::health_check::Kind::Http(h) => CheckKind::Http(HttpCheck {
                    port: h.port,
                    path: h.path,
                    expect_status_min: h.expect_status_min,
                    expect_status_max: h.expect_status_max,
                    body_contains: h.body_contains,
                }),
                v1::health_check::Kind::Tcp(t) => CheckKind::Tcp(TcpCheck { port: t.port }),
                v1::health_check::Kind::Exec(e) => CheckKind::Exec(ExecCheck { name: e.name }),
            }),
        }
    }
}

impl From<HealthCheck> for v1::HealthCheck {
    fn from(c: HealthCheck) -> Self {
        v1::HealthCheck {
            interval_ms: c.interval_ms,
            timeout_ms: c.timeout_ms,
            rise: c.rise,
            fall: c.fall,
            kind: c.kind.map(|k| match k {
                CheckKind::Http(h) => v1::health_check::Kind::Http(v1::HttpCheck {
                    port: h.port,
                    path: h.path,
                    expect_status_min: h.expect_status_min,
                    expect_status_max: h.expect_status_max,
                    body_contains: h.body_contains,
                }),
                CheckKind::Tcp(t) => v1::health_check::Kind::Tcp(v1::TcpCheck { port: t.port }),
                CheckKind::Exec(e) => v1::health_check::Kind::Exec(v1::ExecCheck { name: e.name }),
            }),
        }
    }
}

impl From<v1::Backend> for Backend {
    fn from(b: v1::Backend) -> Self {
        Backend {
            node_id: b.node_id,
            health: Health::from_wire(b.health),
            changed_ms: b.changed_ms,
            applied_release: b.applied_release,
            applied_ms: b.applied_ms,
            apply_error: b.apply_error,
            release_failed: b.release_failed,
        }
    }
}

impl From<Backend> for v1::Backend {
    fn from(b: Backend) -> Self {
        v1::Backend {
            node_id: b.node_id,
            health: b.health.to_wire(),
            changed_ms: b.changed_ms,
            applied_release: b.applied_release,
            applied_ms: b.applied_ms,
            apply_error: b.apply_error,
            release_failed: b.release_failed,
        }
    }
}

impl From<v1::Release> for Release {
    fn from(r: v1::Release) -> Self {
        Release {
            id: r.id,
            artifact: r.artifact,
            sha256: r.sha256,
            registered_ms: r.registered_ms,
            status: ReleaseStatus::from_wire(r.status),
            failure: r.failure,
        }
    }
}

impl From<Release> for v1::Release {
    fn from(r: Release) -> Self {
        v1::Release {
            id: r.id,
            artifact: r.artifact,
            sha256: r.sha256,
            registered_ms: r.registered_ms,
            status: r.status.to_wire(),
            failure: r.failure,
        }
    }
}

impl From<v1::Rollout> for Rollout {
    fn from(r: v1::Rollout) -> Self {
        Rollout {
            release: r.release,
            from_release: r.from_release,
            batch: r.batch,
            min_healthy_ms: r.min_healthy_ms,
            deadline_ms: r.deadline_ms,
            canary: r.canary,
            state: RolloutState::from_wire(r.state),
            desired: r.desired,
            message: r.message,
            started_ms: r.started_ms,
        }
    }
}

impl From<Rollout> for v1::Rollout {
    fn from(r: Rollout) -> Self {
        v1::Rollout {
            release: r.release,
            from_release: r.from_release,
            batch: r.batch,
            min_healthy_ms: r.min_healthy_ms,
            deadline_ms: r.deadline_ms,
            canary: r.canary,
            state: r.state.to_wire(),
            desired: r.desired,
            message: r.message,
            started_ms: r.started_ms,
        }
    }
}

impl From<v1::Service> for Service {
    fn from(s: v1::Service) -> Self {
        Service {
            name: s.name,
            check: s.check.map(Into::into),
            backends: s.backends.into_iter().map(|(k, b)| (k, b.into())).collect(),
            active_release: s.active_release,
            releases: s.releases.into_iter().map(Into::into).collect(),
            previous_release: s.previous_release,
            rollout: s.rollout.map(Into::into),
        }
    }
}

impl From<Service> for v1::Service {
    fn from(s: Service) -> Self {
        v1::Service {
            name: s.name,
            check: s.check.map(Into::into),
            backends: s.backends.into_iter().map(|(k, b)| (k, b.into())).collect(),
            active_release: s.active_release,
            releases: s.releases.into_iter().map(Into::into).collect(),
            previous_release: s.previous_release,
            rollout: s.rollout.map(Into::into),
        }
    }
}

impl From<v1::Vip> for Vip {
    fn from(v: v1::Vip) -> Self {
        Vip {
            name: v.name,
            address: v.address,
            interface: v.interface,
            service: v.service,
            placement: v.placement.map(|p| Placement {
                preempt: p.preempt,
                preempt_delay_ms: p.preempt_delay_ms,
                priorities: p.priorities,
            }),
            owner: v.owner,
            epoch: v.epoch,
            releasing: v.releasing,
            move_to: v.move_to,
        }
    }
}

impl From<Vip> for v1::Vip {
    fn from(v: Vip) -> Self {
        v1::Vip {
            name: v.name,
            address: v.address,
            interface: v.interface,
            service: v.service,
            placement: v.placement.map(|p| v1::Placement {
                preempt: p.preempt,
                preempt_delay_ms: p.preempt_delay_ms,
                priorities: p.priorities,
            }),
            owner: v.owner,
            epoch: v.epoch,
            releasing: v.releasing,
            move_to: v.move_to,
        }
    }
}

impl From<KeyValue> for v1::KeyValue {
    fn from(kv: KeyValue) -> Self {
        v1::KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

impl From<Event> for v1::Event {
    fn from(e: Event) -> Self {
        v1::Event {
            event: e.event.map(|k| match k {
                EventKind::Kv(kv) => v1::event::Event::Kv(v1::KvEvent {
                    kind: kv.kind.to_wire(),
                    kv: kv.kv.map(Into::into),
                }),
                EventKind::State(s) => v1::event::Event::State(v1::StateEvent {
                    kind: s.kind,
                    name: s.name,
                    deleted: s.deleted,
                }),
            }),
        }
    }
}

impl From<Changes> for v1::WatchResponse {
    fn from(c: Changes) -> Self {
        v1::WatchResponse {
            revision: c.revision,
            events: c.events.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored types are laid out exactly as the wire types they replaced were (which is
    /// what every file written before them holds): each encodes to the same bytes.
    #[test]
    fn stored_types_encode_as_the_wire_types_they_replaced() {
        let svc = v1::Service {
            name: "web".into(),
            check: Some(v1::HealthCheck {
                kind: Some(v1::health_check::Kind::Http(v1::HttpCheck {
                    port: 8080,
                    path: "/h".into(),
                    expect_status_min: 200,
                    expect_status_max: 299,
                    body_contains: "ok".into(),
                })),
                interval_ms: 500,
                timeout_ms: 100,
                rise: 2,
                fall: 3,
            }),
            backends: [(
                2,
                v1::Backend {
                    node_id: 2,
                    health: v1::Health::Unhealthy as i32,
                    changed_ms: 7,
                    applied_release: "r1".into(),
                    applied_ms: 8,
                    apply_error: "e".into(),
                    release_failed: "r0".into(),
                },
            )]
            .into(),
            active_release: "r1".into(),
            releases: vec![v1::Release {
                id: "r1".into(),
                artifact: "/a".into(),
                sha256: "00".into(),
                registered_ms: 9,
                status: v1::ReleaseStatus::Failed as i32,
                failure: "f".into(),
            }],
            previous_release: "r0".into(),
            rollout: Some(v1::Rollout {
                release: "r1".into(),
                from_release: "r0".into(),
                batch: 2,
                min_healthy_ms: 10,
                deadline_ms: 11,
                canary: true,
                state: v1::RolloutState::RolledBack as i32,
                desired: [(2, "r1".to_string())].into(),
                message: "m".into(),
                started_ms: 12,
            }),
        };
        let ours = Service::from(svc.clone());
        assert_eq!(
            bincode::serialize(&ours).unwrap(),
            bincode::serialize(&svc).unwrap()
        );
        assert_eq!(v1::Service::from(ours), svc);
        for kind in [
            v1::health_check::Kind::Tcp(v1::TcpCheck { port: 1 }),
            v1::health_check::Kind::Exec(v1::ExecCheck { name: "x".into() }),
        ] {
            let c = v1::HealthCheck {
                kind: Some(kind),
                ..Default::default()
            };
            let ours = HealthCheck::from(c.clone());
            assert_eq!(
                bincode::serialize(&ours).unwrap(),
                bincode::serialize(&c).unwrap()
            );
        }

        let vip = v1::Vip {
            name: "v".into(),
            address: "10.213.0.1/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            placement: Some(v1::Placement {
                preempt: true,
                preempt_delay_ms: 5,
                priorities: [(1, -3)].into(),
            }),
            owner: 1,
            epoch: 4,
            releasing: true,
            move_to: 2,
        };
        let ours = Vip::from(vip.clone());
        assert_eq!(
            bincode::serialize(&ours).unwrap(),
            bincode::serialize(&vip).unwrap()
        );
        assert_eq!(v1::Vip::from(ours), vip);

        let node = v1::Node {
            id: 3,
            addr: "10.213.0.3:7400".into(),
            role: v1::Role::Agent as i32,
            admin: v1::AdminState::Maintenance as i32,
            alive: true,
            last_seen_ms: 13,
            vips_held: vec!["v".into()],
            releases_active: [("web".to_string(), "r1".to_string())].into(),
        };
        let ours = Node::from(node.clone());
        assert_eq!(
            bincode::serialize(&ours).unwrap(),
            bincode::serialize(&node).unwrap()
        );
        assert_eq!(v1::Node::from(ours), node);

        let changes = Changes {
            revision: 5,
            events: vec![
                Event {
                    event: Some(EventKind::Kv(KvEvent {
                        kind: KvEventKind::Delete,
                        kv: Some(KeyValue {
                            key: b"k".to_vec(),
                            value: b"v".to_vec(),
                            create_revision: 1,
                            mod_revision: 2,
                            version: 3,
                        }),
                    })),
                },
                Event {
                    event: Some(EventKind::State(StateEvent {
                        kind: "vip".into(),
                        name: "v".into(),
                        deleted: true,
                    })),
                },
                Event { event: None },
            ],
        };
        let wire = v1::WatchResponse::from(changes.clone());
        assert_eq!(
            bincode::serialize(&changes).unwrap(),
            bincode::serialize(&wire).unwrap()
        );
    }

    /// A number the stored enumeration does not know reads as its first variant.
    #[test]
    fn an_unknown_stored_number_reads_as_unspecified() {
        let bytes = bincode::serialize(&9i32).unwrap();
        let a: AdminState = bincode::deserialize(&bytes).unwrap();
        assert_eq!(a, AdminState::Unspecified);
        assert_eq!(AdminState::from_wire(9), AdminState::Unspecified);
        assert_eq!(
            AdminState::Draining.to_wire(),
            v1::AdminState::Draining as i32
        );
    }
}
