//! The release workload's checker. Rollouts are started under faults while every node's
//! service (and the VIP) is requested over and over; after healing the cluster is given time
//! to settle, then each node's release and the cluster's active release are read once more.
//!
//! Two promises: no node (and not the VIP) ever serves a release before an activation of it
//! was attempted (a definitely refused activation does not count), and in the end every node
//! serves the same release, the one the cluster says is active.

use std::collections::BTreeMap;

/// How an activation request ended for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// Refused for certain (for example: a rollout was in progress).
    Fail,
    /// No answer: it may or may not have taken effect.
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    /// When the request was sent (ns since the start).
    pub at: u64,
    pub release: String,
    pub outcome: Outcome,
}

/// One answer of a node's service (or of the VIP, `who` = "vip").
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub at: u64,
    pub who: String,
    pub release: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseHistory {
    /// Active before the run started (the setup's own rollout).
    pub initial: String,
    pub activations: Vec<Activation>,
    pub served: Vec<Served>,
    /// The cluster's active release after healing (None: it could not be read).
    pub final_active: Option<String>,
    /// Each node's release after healing (None: the node did not answer).
    pub final_nodes: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// `who` served `release` at `at`, before any activation of it was attempted.
    NeverActivated {
        at: u64,
        who: String,
        release: String,
    },
    /// After healing, the nodes serve different releases (or some serve none).
    Diverged {
        nodes: BTreeMap<String, Option<String>>,
    },
    /// After healing, the nodes agree on a release the cluster does not say is active.
    NotActive {
        active: Option<String>,
        serving: String,
    },
}

pub fn check(h: &ReleaseHistory) -> Vec<Violation> {
    let mut v = Vec::new();
    // The first time an activation of each release was attempted (and not certainly refused).
    let mut since: BTreeMap<&str, u64> = BTreeMap::new();
    since.insert(h.initial.as_str(), 0);
    for a in &h.activations {
        if a.outcome != Outcome::Fail {
            let e = since.entry(a.release.as_str()).or_insert(a.at);
            *e = (*e).min(a.at);
        }
    }
    let mut reported = std::collections::BTreeSet::new();
    for s in &h.served {
        let allowed = since.get(s.release.as_str()).is_some_and(|t| *t <= s.at);
        if !allowed && reported.insert((s.who.clone(), s.release.clone())) {
            v.push(Violation::NeverActivated {
                at: s.at,
                who: s.who.clone(),
                release: s.release.clone(),
            });
        }
    }
    let serving: Vec<&Option<String>> = h.final_nodes.values().collect();
    let agreed = serving.first().and_then(|f| {
        (f.is_some() && serving.iter().all(|s| s == f)).then(|| (*f).clone().unwrap())
    });
    match agreed {
        None => v.push(Violation::Diverged {
            nodes: h.final_nodes.clone(),
        }),
        Some(r) if h.final_active.as_deref() != Some(r.as_str()) => v.push(Violation::NotActive {
            active: h.final_active.clone(),
            serving: r,
        }),
        Some(_) => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(at: u64, who: &str, release: &str) -> Served {
        Served {
            at,
            who: who.into(),
            release: release.into(),
        }
    }

    fn act(at: u64, release: &str, outcome: Outcome) -> Activation {
        Activation {
            at,
            release: release.into(),
            outcome,
        }
    }

    fn ended(active: &str, nodes: &[(&str, Option<&str>)]) -> ReleaseHistory {
        ReleaseHistory {
            initial: "r1".into(),
            final_active: Some(active.into()),
            final_nodes: nodes
                .iter()
                .map(|(n, r)| (n.to_string(), r.map(String::from)))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_rollout_that_converges_is_valid() {
        let mut h = ended(
            "r2",
            &[("n1", Some("r2")), ("n2", Some("r2")), ("n3", Some("r2"))],
        );
        h.activations = vec![
            act(100, "r2", Outcome::Ok),
            act(150, "r3", Outcome::Unknown),
        ];
        h.served = vec![
            served(10, "n1", "r1"),
            served(120, "n1", "r2"),
            served(130, "vip", "r2"),
            // r3's activation timed out but took effect for a while, then rolled back.
            served(200, "n2", "r3"),
        ];
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn a_release_never_activated_is_caught() {
        let mut h = ended("r1", &[("n1", Some("r1")), ("n2", Some("r1"))]);
        h.served = vec![served(10, "n2", "never"), served(11, "n2", "never")];
        assert_eq!(
            check(&h),
            vec![Violation::NeverActivated {
                at: 10,
                who: "n2".into(),
                release: "never".into()
            }]
        );
    }

    #[test]
    fn serving_before_the_activation_or_after_a_refusal_is_caught() {
        let mut h = ended("r1", &[("n1", Some("r1"))]);
        h.activations = vec![act(100, "r2", Outcome::Ok), act(100, "r3", Outcome::Fail)];
        h.served = vec![served(50, "vip", "r2"), served(150, "n1", "r3")];
        let v = check(&h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(matches!(&v[0], Violation::NeverActivated { who, .. } if who == "vip"));
        assert!(matches!(&v[1], Violation::NeverActivated { release, .. } if release == "r3"));
    }

    #[test]
    fn nodes_ending_on_different_releases_are_caught() {
        let h = ended(
            "r2",
            &[("n1", Some("r2")), ("n2", Some("r1")), ("n3", Some("r2"))],
        );
        assert!(matches!(check(&h)[..], [Violation::Diverged { .. }]));
        let silent = ended("r2", &[("n1", Some("r2")), ("n2", None)]);
        assert!(matches!(check(&silent)[..], [Violation::Diverged { .. }]));
    }

    #[test]
    fn agreeing_on_a_release_that_is_not_active_is_caught() {
        let h = ended("r3", &[("n1", Some("r2")), ("n2", Some("r2"))]);
        assert_eq!(
            check(&h),
            vec![Violation::NotActive {
                active: Some("r3".into()),
                serving: "r2".into()
            }]
        );
    }
}
