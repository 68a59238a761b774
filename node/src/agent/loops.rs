//! The agent's side loops, beside the reconcile: health probes of the services this node
//! backs (transitions reported to the cluster), the local HAProxy's server states, and the
//! activation of each service's release. Each reads the cluster state the reconcile loop
//! keeps (or reads it afresh) and acts only on this server.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ballast_client::{v1, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::health::{probe, RiseFall};
use super::settings::AgentConfig;
use crate::types::NodeId;

/// The cluster state the reconcile loop read last, shared with the side loops.
pub(super) type SharedState = Arc<RwLock<Option<v1::GetStateResponse>>>;

/// Every second, the local HAProxy's servers are set to what the cluster decided (see
/// `haproxy.rs`); comparing every time re-applies the states after a reload. The cluster state
/// is read afresh each time (a serializable read from this agent's member), so a missed watch
/// event cannot leave HAProxy behind. A failure is logged when it starts, then every 30 s while
/// it lasts.
pub(super) async fn haproxy_loop(
    h: super::haproxy::HaproxyConfig,
    client: Client,
    view: Arc<std::sync::Mutex<super::haproxy::HaproxyView>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing_since: Option<Instant> = None;
    let mut last_warned: Option<Instant> = None;
    loop {
        let result: Result<super::haproxy::Reconciled, String> = async {
            let state = client.get_state(true).await.map_err(|e| e.to_string())?;
            let mut all = super::haproxy::Reconciled::default();
            for (service, backend) in &h.backends {
                let want = super::haproxy::desired(&state, service);
                let r = super::haproxy::reconcile(&h.socket, backend, &want)
                    .await
                    .map_err(|e| format!("{}: {e}", h.socket.display()))?;
                all.changed.extend(r.changed);
                all.differs.extend(r.differs);
            }
            Ok(all)
        }
        .await;
        let seen = match result {
            Ok(r) => {
                failing_since = None;
                for c in r.changed {
                    tracing::info!(change = %c, "HAProxy server state set");
                }
                super::haproxy::HaproxyView {
                    differs: r.differs,
                    error: String::new(),
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if last_warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(30)) {
                    tracing::warn!(error = %e, failing_for = ?since.elapsed(), "cannot drive HAProxy");
                    last_warned = Some(Instant::now());
                }
                super::haproxy::HaproxyView {
                    differs: Vec::new(),
                    error: e,
                }
            }
        };
        *view.lock().unwrap() = seen;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Probes every service this node backs, at its interval; reports transitions, and reports
/// again when the cluster's view differs from what the probes say.
pub(super) async fn health_loop(
    cfg: AgentConfig,
    client: Client,
    shared: SharedState,
    mut stop: watch::Receiver<bool>,
) {
    let mut trackers: BTreeMap<String, (RiseFall, Instant)> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let Some(state) = shared.read().unwrap().clone() else {
            continue;
        };
        for svc in &state.services {
            let Some(backend) = svc.backends.get(&cfg.node_id) else {
                continue;
            };
            let Some(check) = &svc.check else { continue };
            let (rf, due) = trackers
                .entry(svc.name.clone())
                .or_insert_with(|| (RiseFall::new(check.rise, check.fall), Instant::now()));
            if Instant::now() < *due {
                continue;
            }
            *due = Instant::now() + Duration::from_millis(check.interval_ms.max(10) as u64);
            let ok = probe(check, cfg.check_host, &cfg.exec_checks).await;
            rf.observe(ok);
            let known = rf.health;
            if known != v1::Health::Unknown && backend.health != known as i32 {
                match client.report_health(cfg.node_id, &svc.name, known).await {
                    Ok(_) => {
                        tracing::info!(service = %svc.name, health = known.label(), "health reported")
                    }
                    Err(e) => tracing::debug!(error = %e, "reporting health"),
                }
            }
        }
    }
}

/// The release the cluster wants this node to run for `svc` ("" for none, or "leave it").
fn desired_release(svc: &v1::Service, me: NodeId) -> String {
    match &svc.rollout {
        Some(r)
            if crate::member::state::releases::acts(crate::model::RolloutState::from_wire(
                r.state,
            )) =>
        {
            r.desired.get(&me).cloned().unwrap_or_default()
        }
        Some(r) if r.state == v1::RolloutState::Aborted as i32 => String::new(),
        _ => svc.active_release.clone(),
    }
}

/// Makes each service's release on this server the one the cluster wants (for services with a
/// local release directory), and reports what runs: a Raft write per change, not per tick. A
/// release that failed to activate is not retried until the cluster wants another one.
pub(super) async fn release_loop(
    cfg: AgentConfig,
    client: Client,
    shared: SharedState,
    mut stop: watch::Receiver<bool>,
) {
    let me = cfg.node_id;
    // Service -> (release, error) of the last failed activation.
    let mut failed: BTreeMap<String, (String, String)> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Some(state) = shared.read().unwrap().clone() else {
            continue;
        };
        for svc in &state.services {
            let (Some(site), Some(backend)) =
                (cfg.release_sites.get(&svc.name), svc.backends.get(&me))
            else {
                continue;
            };
            let want = desired_release(svc, me);
            if failed.get(&svc.name).is_some_and(|(id, _)| *id != want) {
                failed.remove(&svc.name); // the cluster moved on
            }
            let s2 = site.clone();
            let mut running = tokio::task::spawn_blocking(move || super::release::current(&s2))
                .await
                .unwrap_or(None)
                .unwrap_or_default();
            if !want.is_empty() && running != want && !failed.contains_key(&svc.name) {
                match svc.releases.iter().find(|r| r.id == want) {
                    None => {
                        failed.insert(
                            svc.name.clone(),
                            (want.clone(), "release not registered".into()),
                        );
                    }
                    Some(r) => {
                        let art = super::release::Artifact {
                            id: r.id.clone(),
                            location: r.artifact.clone(),
                            sha256: r.sha256.clone(),
                        };
                        let s2 = site.clone();
                        let res = tokio::task::spawn_blocking(move || {
                            super::release::activate(&s2, &art)
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                        match res {
                            Ok(()) => {
                                tracing::info!(service = %svc.name, release = %want, "release activated");
                                running = want.clone();
                            }
                            Err(e) => {
                                tracing::error!(service = %svc.name, release = %want, error = %e, "release activation failed");
                                failed.insert(svc.name.clone(), (want.clone(), e));
                            }
                        }
                        // What `current` points to now (a failed hook leaves it switched).
                        let s2 = site.clone();
                        running = tokio::task::spawn_blocking(move || super::release::current(&s2))
                            .await
                            .unwrap_or(None)
                            .unwrap_or(running);
                    }
                }
            }
            let (failed_release, error) = failed.get(&svc.name).cloned().unwrap_or_default();
            if backend.applied_release != running
                || backend.release_failed != failed_release
                || backend.apply_error != error
            {
                let req = v1::ReportReleaseRequest {
                    node_id: me,
                    service: svc.name.clone(),
                    applied: running,
                    failed_release,
                    error,
                    instance: cfg.instance,
                };
                if let Err(e) = client.report_release(req).await {
                    tracing::debug!(error = %e, "reporting the release");
                }
            }
        }
    }
}
