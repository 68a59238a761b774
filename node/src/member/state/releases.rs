//! The release registry and rollout records of a service, as the state machine changes them.
//!
//! Pure and deterministic (time comes in as the leader-stamped `now_ms`). Operators register
//! releases and start, pause, resume, abort or roll back rollouts; agents report what they run;
//! the leader's controller advances a rollout with [`Step`]s computed by `rollout.rs`, applied
//! only if the rollout is still what the controller saw (compare and set).

use crate::model::{self, Control, Finish, Step};

use crate::types::NodeId;

/// A refusal: the field at fault and why. Nothing changed.
pub type Refusal = (&'static str, String);

fn state(r: &model::Rollout) -> model::RolloutState {
    r.state
}

/// Whether a rollout still acts (running, paused or rolling back).
pub fn in_progress(svc: &model::Service) -> bool {
    svc.rollout.as_ref().is_some_and(|r| acts(state(r)))
}

/// Whether a rollout in `state` still acts (running, paused or rolling back).
pub fn acts(state: model::RolloutState) -> bool {
    matches!(
        state,
        model::RolloutState::Running
            | model::RolloutState::Paused
            | model::RolloutState::RollingBack
    )
}

fn set_status(svc: &mut model::Service, id: &str, status: model::ReleaseStatus, failure: &str) {
    if let Some(r) = svc.releases.iter_mut().find(|r| r.id == id) {
        r.status = status;
        r.failure = failure.to_string();
    }
}

/// Registers a release (idempotent for an identical one).
pub fn register(
    svc: &mut model::Service,
    release: &model::Release,
    now_ms: u64,
) -> Result<bool, Refusal> {
    if let Some(old) = svc.releases.iter().find(|r| r.id == release.id) {
        if old.artifact == release.artifact && old.sha256 == release.sha256 {
            return Ok(false);
        }
        return Err((
            "release.id",
            format!(
                "release {:?} of {:?} is already registered with another artifact or checksum",
                release.id, svc.name
            ),
        ));
    }
    svc.releases.push(model::Release {
        id: release.id.clone(),
        artifact: release.artifact.clone(),
        sha256: release.sha256.clone(),
        registered_ms: now_ms,
        status: model::ReleaseStatus::Registered,
        failure: String::new(),
    });
    Ok(true)
}

/// Starts a rollout of a registered release; `deadline_ms` is relative to `now_ms`.
pub fn start(
    svc: &mut model::Service,
    release: &str,
    batch: u32,
    min_healthy_ms: u32,
    deadline_ms: u64,
    canary: bool,
    now_ms: u64,
) -> Result<bool, Refusal> {
    if !svc.releases.iter().any(|r| r.id == release) {
        return Err((
            "release",
            format!("release {release:?} of {:?} is not registered", svc.name),
        ));
    }
    if in_progress(svc) {
        let r = svc.rollout.as_ref().expect("in progress");
        return Err((
            "service",
            format!(
                "a rollout of {:?} is in progress on {:?}: wait, abort it or roll back first",
                r.release, svc.name
            ),
        ));
    }
    if svc.active_release == release {
        return Err((
            "release",
            format!("release {release:?} is already active on {:?}", svc.name),
        ));
    }
    if svc.backends.is_empty() {
        return Err(("service", format!("{:?} has no backends", svc.name)));
    }
    let desired = svc
        .backends
        .keys()
        .map(|id| (*id, svc.active_release.clone()))
        .collect();
    svc.rollout = Some(model::Rollout {
        release: release.to_string(),
        from_release: svc.active_release.clone(),
        batch: batch.max(1),
        min_healthy_ms,
        deadline_ms: now_ms + deadline_ms,
        canary,
        state: model::RolloutState::Running,
        desired,
        message: String::new(),
        started_ms: now_ms,
    });
    set_status(svc, release, model::ReleaseStatus::RollingOut, "");
    Ok(true)
}

/// Pauses, resumes or aborts the rollout in progress.
pub fn control(svc: &mut model::Service, action: Control) -> Result<bool, Refusal> {
    let name = svc.name.clone();
    let Some(r) = svc.rollout.as_mut() else {
        return Err(("service", format!("{name:?} has no rollout")));
    };
    let to = match (state(r), action) {
        (model::RolloutState::Running, Control::Pause) => model::RolloutState::Paused,
        (model::RolloutState::Paused, Control::Resume) => model::RolloutState::Running,
        (model::RolloutState::Running | model::RolloutState::Paused, Control::Abort) => {
            model::RolloutState::Aborted
        }
        (s, a) => {
            return Err((
                "action",
                format!("cannot {a:?} a rollout that is {}", s.as_str_name()),
            ))
        }
    };
    r.state = to;
    r.message = match action {
        Control::Pause => "paused by an operator".into(),
        Control::Resume => String::new(),
        Control::Abort => "aborted by an operator".into(),
    };
    if action == Control::Abort {
        let id = r.release.clone();
        set_status(
            svc,
            &id,
            model::ReleaseStatus::Failed,
            "aborted by an operator",
        );
    }
    Ok(true)
}

/// Sends every backend back to `to` (empty: the previous release, or the running rollout's
/// starting point).
pub fn rollback(svc: &mut model::Service, to: &str, now_ms: u64) -> Result<bool, Refusal> {
    let running = svc.rollout.as_ref().filter(|_| in_progress(svc)).cloned();
    let target = if !to.is_empty() {
        to.to_string()
    } else if let Some(r) = &running {
        r.from_release.clone()
    } else {
        svc.previous_release.clone()
    };
    if target.is_empty() {
        return Err((
            "to",
            format!("{:?} has no earlier release to roll back to", svc.name),
        ));
    }
    if !svc.releases.iter().any(|r| r.id == target) {
        return Err((
            "to",
            format!("release {target:?} of {:?} is not registered", svc.name),
        ));
    }
    let from = match &running {
        Some(r) => {
            set_status(
                svc,
                &r.release,
                model::ReleaseStatus::Failed,
                "rolled back by an operator",
            );
            r.release.clone()
        }
        None => svc.active_release.clone(),
    };
    let desired = svc
        .backends
        .keys()
        .map(|id| (*id, target.clone()))
        .collect();
    svc.rollout = Some(model::Rollout {
        release: from,
        from_release: target,
        batch: svc.backends.len() as u32,
        min_healthy_ms: 0,
        deadline_ms: 0,
        canary: false,
        state: model::RolloutState::RollingBack,
        desired,
        message: "rolled back by an operator".into(),
        started_ms: now_ms,
    });
    Ok(true)
}

/// An agent's report of the release node `node` runs for the service (or failed to activate).
pub fn report(
    svc: &mut model::Service,
    node: NodeId,
    applied: &str,
    failed_release: &str,
    error: &str,
    now_ms: u64,
) -> Result<bool, Refusal> {
    let name = svc.name.clone();
    let Some(b) = svc.backends.get_mut(&node) else {
        return Err((
            "node_id",
            format!("node {node} is not a backend of {name:?}"),
        ));
    };
    if b.applied_release == applied && b.release_failed == failed_release && b.apply_error == error
    {
        return Ok(false);
    }
    if b.applied_release != applied {
        b.applied_release = applied.to_string();
        b.applied_ms = now_ms;
    }
    b.release_failed = failed_release.to_string();
    b.apply_error = error.to_string();
    Ok(true)
}

/// A controller step: applied only if the rollout is the one the controller saw.
pub fn step(svc: &mut model::Service, s: &Step) -> Result<bool, Refusal> {
    if svc.rollout.as_ref() != Some(&s.expected) {
        return Err((
            "rollout",
            "the rollout changed since the step was decided".into(),
        ));
    }
    let next = s.next.clone();
    match s.finish {
        Some(Finish::Succeeded) => {
            let old = std::mem::replace(&mut svc.active_release, next.release.clone());
            if !old.is_empty() {
                set_status(svc, &old, model::ReleaseStatus::Retired, "");
            }
            svc.previous_release = old;
            set_status(svc, &next.release, model::ReleaseStatus::Active, "");
        }
        Some(Finish::RolledBack) => {
            if svc.active_release != next.from_release {
                // An operator's rollback to another release than the active one.
                let old = std::mem::replace(&mut svc.active_release, next.from_release.clone());
                if !old.is_empty() && old != next.release {
                    set_status(svc, &old, model::ReleaseStatus::Retired, "");
                }
            }
            set_status(svc, &next.from_release, model::ReleaseStatus::Active, "");
            if next.release != next.from_release {
                let failure = if next.message.is_empty() {
                    "rolled back".to_string()
                } else {
                    next.message.clone()
                };
                set_status(svc, &next.release, model::ReleaseStatus::Failed, &failure);
            }
        }
        None => {}
    }
    svc.rollout = Some(next);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> model::Service {
        model::Service {
            name: "web".into(),
            backends: (1..=3)
                .map(|i| {
                    (
                        i,
                        model::Backend {
                            node_id: i,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    fn rel(id: &str) -> model::Release {
        model::Release {
            id: id.into(),
            artifact: format!("/srv/{id}.tar.gz"),
            sha256: "ab".repeat(32),
            ..Default::default()
        }
    }

    fn status(s: &model::Service, id: &str) -> model::ReleaseStatus {
        let r = s.releases.iter().find(|r| r.id == id).unwrap();
        r.status
    }

    #[test]
    fn register_is_idempotent_and_refuses_a_changed_artifact() {
        let mut s = svc();
        assert_eq!(register(&mut s, &rel("v1"), 10), Ok(true));
        assert_eq!(register(&mut s, &rel("v1"), 20), Ok(false));
        let mut other = rel("v1");
        other.sha256 = "cd".repeat(32);
        assert!(register(&mut s, &other, 30).is_err());
        assert_eq!(s.releases.len(), 1);
        assert_eq!(s.releases[0].registered_ms, 10);
        assert_eq!(status(&s, "v1"), model::ReleaseStatus::Registered);
    }

    #[test]
    fn a_rollout_needs_a_registered_inactive_release_and_no_other_rollout() {
        let mut s = svc();
        assert!(
            start(&mut s, "v1", 1, 0, 60_000, false, 0).is_err(),
            "unknown"
        );
        register(&mut s, &rel("v1"), 0).unwrap();
        register(&mut s, &rel("v2"), 0).unwrap();
        assert_eq!(start(&mut s, "v1", 0, 1_000, 60_000, false, 5), Ok(true));
        let r = s.rollout.clone().unwrap();
        assert_eq!(r.batch, 1, "a batch is at least one node");
        assert_eq!(r.deadline_ms, 60_005);
        assert_eq!(r.desired.len(), 3);
        assert!(
            r.desired.values().all(|d| d.is_empty()),
            "nobody switched yet"
        );
        assert_eq!(status(&s, "v1"), model::ReleaseStatus::RollingOut);
        let e = start(&mut s, "v2", 1, 0, 60_000, false, 6).unwrap_err();
        assert!(e.1.contains("in progress"), "{e:?}");
    }

    #[test]
    fn controls_follow_the_state_and_abort_fails_the_release() {
        let mut s = svc();
        register(&mut s, &rel("v1"), 0).unwrap();
        assert!(control(&mut s, Control::Pause).is_err(), "no rollout");
        start(&mut s, "v1", 1, 0, 60_000, false, 0).unwrap();
        assert!(control(&mut s, Control::Resume).is_err(), "not paused");
        control(&mut s, Control::Pause).unwrap();
        control(&mut s, Control::Resume).unwrap();
        control(&mut s, Control::Abort).unwrap();
        assert_eq!(status(&s, "v1"), model::ReleaseStatus::Failed);
        assert!(!in_progress(&s));
        assert!(control(&mut s, Control::Resume).is_err());
    }

    #[test]
    fn steps_apply_only_to_the_rollout_they_were_decided_on() {
        let mut s = svc();
        register(&mut s, &rel("v1"), 0).unwrap();
        start(&mut s, "v1", 3, 0, 60_000, false, 0).unwrap();
        let seen = s.rollout.clone().unwrap();
        let mut next = seen.clone();
        next.desired.values_mut().for_each(|d| *d = "v1".into());
        control(&mut s, Control::Pause).unwrap();
        let st = Step {
            expected: seen.clone(),
            next: next.clone(),
            finish: None,
        };
        assert!(step(&mut s, &st).is_err(), "paused since");
        control(&mut s, Control::Resume).unwrap();
        let st = Step {
            expected: s.rollout.clone().unwrap(),
            next: {
                let mut n = next.clone();
                n.state = model::RolloutState::Succeeded;
                n
            },
            finish: Some(Finish::Succeeded),
        };
        step(&mut s, &st).unwrap();
        assert_eq!(s.active_release, "v1");
        assert_eq!(status(&s, "v1"), model::ReleaseStatus::Active);
    }

    #[test]
    fn rollback_returns_to_the_previous_release_and_fails_a_running_one() {
        let mut s = svc();
        for id in ["v1", "v2", "v3"] {
            register(&mut s, &rel(id), 0).unwrap();
        }
        assert!(rollback(&mut s, "", 0).is_err(), "nothing to roll back to");
        s.active_release = "v2".into();
        s.previous_release = "v1".into();
        start(&mut s, "v3", 1, 0, 60_000, false, 0).unwrap();
        // During v3's rollout, rollback goes to where it started (v2) and fails v3.
        rollback(&mut s, "", 1).unwrap();
        let r = s.rollout.clone().unwrap();
        assert_eq!(r.from_release, "v2");
        assert!(r.desired.values().all(|d| d == "v2"));
        assert_eq!(status(&s, "v3"), model::ReleaseStatus::Failed);
        assert!(rollback(&mut s, "v9", 2).is_err(), "unknown target");
    }

    #[test]
    fn reports_record_what_runs_and_since_when() {
        let mut s = svc();
        assert_eq!(report(&mut s, 1, "v1", "", "", 100), Ok(true));
        assert_eq!(report(&mut s, 1, "v1", "", "", 200), Ok(false));
        assert_eq!(s.backends[&1].applied_ms, 100);
        assert_eq!(
            report(&mut s, 1, "v1", "v2", "sha256 mismatch", 300),
            Ok(true)
        );
        assert_eq!(s.backends[&1].applied_ms, 100, "still v1 since 100");
        assert!(report(&mut s, 9, "v1", "", "", 0).is_err());
    }
}
