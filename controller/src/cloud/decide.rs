//! What to do for one cloud environment, given its record and the
//! instances tagged with its id. Pure: no clock (it comes in), no I/O.

use jiff::Timestamp;
use metrom_protocol::messages::env::EnvState;

use super::provider::{Instance, InstanceState, TAG_BUILD};
use crate::store::{Desired, EnvRecord};

/// The steps for one environment in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Launch the current build's instance.
    pub launch: bool,
    pub start: Vec<String>,
    pub stop: Vec<String>,
    pub terminate: Vec<String>,
    /// Record this instance (of the current build) on the environment.
    pub adopt: Option<String>,
    /// Record an observed state.
    pub mark: Option<EnvState>,
    /// Events to record: (kind, message).
    pub events: Vec<(String, String)>,
}

impl Plan {
    /// Whether it calls the provider.
    pub fn calls(&self) -> bool {
        self.launch || !self.start.is_empty() || !self.stop.is_empty() || !self.terminate.is_empty()
    }
}

/// Whether an environment needs nothing until the next full sync: it is
/// where its owner wants it, or failed with nothing to retry.
pub fn settled(env: &EnvRecord, now: Timestamp) -> bool {
    let retry_at = env.cloud.as_ref().and_then(|c| c.retry_at);
    if env.state == EnvState::Deleted || retry_at.is_some_and(|t| t > now) {
        return true;
    }
    match (&env.state, env.desired) {
        (EnvState::Running, Desired::Running) | (EnvState::Stopped, Desired::Stopped) => true,
        // Failed for good (nothing to retry) until the owner acts.
        (EnvState::Failed(_), Desired::Running | Desired::Stopped) => retry_at.is_none(),
        _ => false,
    }
}

/// Decides the next steps. `instances` are the ones tagged with the
/// environment's id (any build, any state), as just listed.
pub fn decide(env: &EnvRecord, instances: &[&Instance], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(cloud) = &env.cloud else {
        return plan;
    };
    if env.state == EnvState::Deleted {
        return plan;
    }
    let waiting = cloud.retry_at.is_some_and(|t| t > now);
    let alive: Vec<&Instance> = instances
        .iter()
        .copied()
        .filter(|i| i.state.alive())
        .collect();

    if env.desired == Desired::Deleted {
        if alive.is_empty() {
            plan.mark = Some(EnvState::Deleted);
        } else if !waiting {
            plan.terminate = alive.iter().map(|i| i.id.clone()).collect();
        }
        return plan;
    }

    let build = env.build.to_string();
    let of_build = |i: &&Instance| i.tag(TAG_BUILD) == Some(build.as_str());
    // Instances of older builds (a rebuild replaces them) go.
    let stale: Vec<String> = alive
        .iter()
        .filter(|i| !of_build(i))
        .map(|i| i.id.clone())
        .collect();
    // Of the current build, one instance: the recorded one, else the oldest;
    // a second one (a launch retried where the token was not honoured) goes.
    let mut current: Vec<&Instance> = alive.iter().copied().filter(of_build).collect();
    current.sort_by(|a, b| {
        let recorded = |i: &Instance| cloud.instance_id.as_deref() != Some(i.id.as_str());
        recorded(a)
            .cmp(&recorded(b))
            .then(a.launched_at.cmp(&b.launched_at))
            .then(a.id.cmp(&b.id))
    });
    if waiting {
        return plan;
    }
    plan.terminate = stale;
    for extra in current.iter().skip(1) {
        plan.terminate.push(extra.id.clone());
        plan.events.push((
            "duplicate".into(),
            format!(
                "terminating {}: a second instance of build {}",
                extra.id, env.build
            ),
        ));
    }

    let Some(inst) = current.first() else {
        // No live instance of this build.
        let recorded_gone = cloud.instance_build == env.build && cloud.instance_id.is_some();
        let id = cloud.instance_id.clone().unwrap_or_default();
        let listed = instances.iter().find(|i| i.id == id);
        // EC2 lists a new instance a moment after launching it: one never
        // seen yet is not gone.
        let unseen =
            listed.is_none() && matches!(env.state, EnvState::Scheduled | EnvState::Provisioning);
        if recorded_gone && unseen {
            return plan;
        }
        if recorded_gone {
            let state = listed.map(|i| i.state.as_str()).unwrap_or("gone");
            let failed = EnvState::Failed(format!(
                "its instance {id} was terminated outside Metrom ({state}); launch a new one with `metrom env rebuild {}`",
                env.name
            ));
            if env.state != failed {
                plan.events.push((
                    "drift".into(),
                    format!("instance {id} is {state}: terminated outside Metrom"),
                ));
                plan.mark = Some(failed);
            }
        } else if env.desired == Desired::Running {
            plan.launch = true;
        } else if env.state != EnvState::Stopped {
            // Stopped before it was ever launched: nothing to launch yet.
            plan.mark = Some(EnvState::Stopped);
        }
        return plan;
    };

    if cloud.instance_id.as_deref() != Some(inst.id.as_str()) || cloud.instance_build != env.build {
        plan.adopt = Some(inst.id.clone());
    }
    let want_running = env.desired == Desired::Running;
    match inst.state {
        InstanceState::Pending if want_running => {
            mark(&mut plan, env, EnvState::Provisioning);
        }
        InstanceState::Running if want_running => mark(&mut plan, env, EnvState::Running),
        InstanceState::Pending | InstanceState::Running => {
            if env.state == EnvState::Stopped {
                plan.events.push((
                    "drift".into(),
                    format!(
                        "instance {} was started outside Metrom; stopping it again",
                        inst.id
                    ),
                ));
            }
            plan.stop.push(inst.id.clone());
        }
        InstanceState::Stopped if want_running => {
            if env.state == EnvState::Running {
                plan.events.push((
                    "drift".into(),
                    format!(
                        "instance {} was stopped outside Metrom; starting it again",
                        inst.id
                    ),
                ));
            }
            plan.start.push(inst.id.clone());
        }
        InstanceState::Stopped => mark(&mut plan, env, EnvState::Stopped),
        // On its way: look again next pass.
        InstanceState::Stopping | InstanceState::Unknown => {}
        InstanceState::ShuttingDown | InstanceState::Terminated => {}
    }
    plan
}

fn mark(plan: &mut Plan, env: &EnvRecord, state: EnvState) {
    if env.state != state {
        plan.mark = Some(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::CloudPlacement;
    use crate::cloud::provider::TAG_ENV;
    use metrom_protocol::messages::env::RuntimeKind;

    fn env(desired: Desired, state: EnvState, build: u64) -> EnvRecord {
        EnvRecord {
            runtime: RuntimeKind::Cloud,
            host: None,
            build,
            cloud: Some(CloudPlacement {
                account: "a".into(),
                provider: "aws".into(),
                region: "r".into(),
                instance_type: "t3.micro".into(),
                image: "ami-1".into(),
                hourly: 0.01,
                instance_id: None,
                instance_build: 0,
                launch_sent: false,
                retry_at: None,
                addresses: vec![],
            }),
            ..EnvRecord::sample(desired, state)
        }
    }

    fn inst(id: &str, env: &EnvRecord, build: u64, state: InstanceState) -> Instance {
        Instance {
            id: id.into(),
            state,
            instance_type: "t3.micro".into(),
            image: "ami-1".into(),
            launched_at: Some(Timestamp::now()),
            tags: [
                (TAG_ENV.to_string(), env.id.to_string()),
                (TAG_BUILD.to_string(), build.to_string()),
            ]
            .into(),
            private_ip: None,
            public_ip: None,
        }
    }

    fn recorded(mut e: EnvRecord, id: &str) -> EnvRecord {
        let c = e.cloud.as_mut().unwrap();
        c.instance_id = Some(id.into());
        c.instance_build = e.build;
        c.launch_sent = true;
        e
    }

    #[test]
    fn a_new_environment_is_launched_then_followed_to_running() {
        let now = Timestamp::now();
        let e = env(Desired::Running, EnvState::Scheduled, 1);
        assert!(decide(&e, &[], now).launch);
        let i = inst("i-1", &e, 1, InstanceState::Pending);
        let p = decide(&e, &[&i], now);
        assert!(!p.launch);
        assert_eq!(p.adopt.as_deref(), Some("i-1"));
        assert_eq!(p.mark, Some(EnvState::Provisioning));
        let e = recorded(e, "i-1");
        let i = inst("i-1", &e, 1, InstanceState::Running);
        let p = decide(&e, &[&i], now);
        assert_eq!((p.adopt, p.mark), (None, Some(EnvState::Running)));
    }

    #[test]
    fn stop_start_and_delete_map_to_instance_calls() {
        let now = Timestamp::now();
        let e = recorded(env(Desired::Stopped, EnvState::Running, 1), "i-1");
        let running = inst("i-1", &e, 1, InstanceState::Running);
        assert_eq!(decide(&e, &[&running], now).stop, vec!["i-1".to_string()]);
        let stopped = inst("i-1", &e, 1, InstanceState::Stopped);
        assert_eq!(decide(&e, &[&stopped], now).mark, Some(EnvState::Stopped));

        let e = recorded(env(Desired::Running, EnvState::Stopped, 1), "i-1");
        let p = decide(&e, &[&stopped], now);
        assert_eq!(p.start, vec!["i-1".to_string()]);
        assert!(p.events.is_empty(), "a requested start is no drift");

        let e = recorded(env(Desired::Deleted, EnvState::Stopped, 1), "i-1");
        assert_eq!(
            decide(&e, &[&stopped], now).terminate,
            vec!["i-1".to_string()]
        );
        let gone = inst("i-1", &e, 1, InstanceState::Terminated);
        assert_eq!(decide(&e, &[&gone], now).mark, Some(EnvState::Deleted));
        assert_eq!(decide(&e, &[], now).mark, Some(EnvState::Deleted));
    }

    #[test]
    fn a_rebuild_replaces_the_instance() {
        let now = Timestamp::now();
        let mut e = recorded(env(Desired::Running, EnvState::Scheduled, 1), "i-1");
        e.build = 2;
        let old = inst("i-1", &e, 1, InstanceState::Running);
        let p = decide(&e, &[&old], now);
        assert_eq!(p.terminate, vec!["i-1".to_string()]);
        assert!(p.launch);
    }

    #[test]
    fn drift_is_corrected_and_reported() {
        let now = Timestamp::now();
        let e = recorded(env(Desired::Running, EnvState::Running, 1), "i-1");
        let stopped = inst("i-1", &e, 1, InstanceState::Stopped);
        let p = decide(&e, &[&stopped], now);
        assert_eq!(p.start, vec!["i-1".to_string()]);
        assert_eq!(p.events[0].0, "drift");

        let e = recorded(env(Desired::Stopped, EnvState::Stopped, 1), "i-1");
        let running = inst("i-1", &e, 1, InstanceState::Running);
        let p = decide(&e, &[&running], now);
        assert_eq!(p.stop, vec!["i-1".to_string()]);
        assert_eq!(p.events[0].0, "drift");

        // Terminated behind Metrom's back: failed, with what to do; no relaunch.
        let e = recorded(env(Desired::Running, EnvState::Running, 1), "i-1");
        let gone = inst("i-1", &e, 1, InstanceState::Terminated);
        let p = decide(&e, &[&gone], now);
        assert!(!p.launch);
        match p.mark {
            Some(EnvState::Failed(r)) => assert!(r.contains("metrom env rebuild dev"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicates_of_a_build_are_terminated_keeping_the_recorded_one() {
        let now = Timestamp::now();
        let e = recorded(env(Desired::Running, EnvState::Provisioning, 1), "i-2");
        let a = inst("i-1", &e, 1, InstanceState::Running);
        let b = inst("i-2", &e, 1, InstanceState::Running);
        let p = decide(&e, &[&a, &b], now);
        assert_eq!(p.terminate, vec!["i-1".to_string()]);
        assert_eq!(p.adopt, None);
        assert_eq!(p.mark, Some(EnvState::Running));
    }

    #[test]
    fn failures_wait_for_their_retry_time() {
        let now = Timestamp::now();
        let mut e = env(Desired::Running, EnvState::Failed("x".into()), 1);
        e.cloud.as_mut().unwrap().retry_at = Some(now + jiff::SignedDuration::from_secs(30));
        assert!(settled(&e, now));
        assert!(!decide(&e, &[], now).launch);
        let later = now + jiff::SignedDuration::from_secs(31);
        assert!(!settled(&e, later));
        assert!(decide(&e, &[], later).launch);
        // Stopped before any launch: nothing to launch.
        let s = env(Desired::Stopped, EnvState::Scheduled, 1);
        let p = decide(&s, &[], now);
        assert!(!p.launch && p.mark == Some(EnvState::Stopped));
    }
}
