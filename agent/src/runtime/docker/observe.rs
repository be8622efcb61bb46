//! What an environment's containers say: its build, whether it runs, whether
//! it is ready, and the detail `env show` prints (services, ports, addresses).

use std::collections::BTreeSet;

use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum, RestartPolicyNameEnum};
use bollard::query_parameters::InspectContainerOptions;
use metrom_protocol::messages::env::{EnvDetail, EnvSpec, PortMapping, ServiceStatus};
use metrom_protocol::template::{Compose, Condition, Manifest, Protocol};

use super::lifecycle::{self, build_of, service_of};
use super::plan::{Names, proto};
use super::{DockerRuntime, api_error, is_not_found, label, ports};
use crate::runtime::{Observed, RuntimeError};

/// One service's container as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub service: String,
    /// "created", "running", "exited", "restarting", …
    pub state: String,
    /// "healthy", "unhealthy", "starting", or "" without a healthcheck.
    pub health: String,
    pub exit_code: i64,
    /// Restart policy `no` or `on-failure`: an exit 0 is the service's end.
    pub may_complete: bool,
    pub ports: Vec<(u16, Protocol, u16)>,
    pub address: Option<String>,
}

pub(super) async fn observe(rt: &DockerRuntime, spec: &EnvSpec) -> Result<Observed, RuntimeError> {
    let list = lifecycle::containers(rt, &spec.env_id).await?;
    let Some(build) = list.iter().filter_map(build_of).max() else {
        return Ok(Observed::Missing);
    };
    let names = Names::of(spec);
    let mut states = Vec::new();
    for c in list.iter().filter(|c| build_of(c) == Some(build)) {
        let Some(service) = service_of(c) else {
            continue;
        };
        let id = c.id.clone().unwrap_or_default();
        let i = match rt
            .docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(api_error(&format!("container {id}"), e)),
        };
        let state = i.state.unwrap_or_default();
        let restart = i
            .host_config
            .and_then(|h| h.restart_policy)
            .and_then(|r| r.name);
        let labels = i.config.and_then(|c| c.labels).unwrap_or_default();
        states.push(ServiceState {
            service: service.to_string(),
            state: state
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| ContainerStateStatusEnum::EMPTY.to_string()),
            health: match state.health.and_then(|h| h.status) {
                Some(HealthStatusEnum::HEALTHY) => "healthy".into(),
                Some(HealthStatusEnum::UNHEALTHY) => "unhealthy".into(),
                Some(HealthStatusEnum::STARTING) => "starting".into(),
                _ => String::new(),
            },
            exit_code: state.exit_code.unwrap_or(0),
            may_complete: matches!(
                restart,
                None | Some(RestartPolicyNameEnum::NO)
                    | Some(RestartPolicyNameEnum::EMPTY)
                    | Some(RestartPolicyNameEnum::ON_FAILURE)
            ),
            ports: labels
                .get(label::PORTS)
                .map(|t| ports::parse_label(t))
                .unwrap_or_default(),
            address: i
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|n| n.get(&names.project).cloned())
                .and_then(|e| e.ip_address)
                .filter(|a| !a.is_empty()),
        });
    }
    // The services to expect come from the spec when it is of this build.
    let resolved = if build == spec.build {
        lifecycle::resolve(rt, spec).ok()
    } else {
        None
    };
    let (compose, manifest) = match &resolved {
        Some(r) => (Some(&r.compose), Some(&r.manifest)),
        None => (None, None),
    };
    let mut detail = detail_of(&names, &states, compose, manifest);
    let running = states
        .iter()
        .any(|s| s.state == "running" || s.state == "restarting");
    if !running {
        return Ok(Observed::Stopped { build, detail });
    }
    let (ready, message) = readiness(&states, compose);
    detail.message = message;
    Ok(Observed::Running {
        build,
        ready,
        detail,
    })
}

/// Whether every service is usable, and if not, what is awaited. A service
/// is usable when it runs (and is healthy, if it has a healthcheck), or when
/// it completed (exit 0) and is meant to: others wait for it to complete, or
/// its restart policy lets it end.
pub fn readiness(states: &[ServiceState], compose: Option<&Compose>) -> (bool, String) {
    let expected: Vec<String> = match compose {
        Some(c) => c.startup_order().into_iter().map(String::from).collect(),
        None => states.iter().map(|s| s.service.clone()).collect(),
    };
    let completes: BTreeSet<&str> = compose
        .map(|c| {
            c.services
                .values()
                .flat_map(|s| s.depends_on.iter())
                .filter(|(_, c)| **c == Condition::ServiceCompletedSuccessfully)
                .map(|(n, _)| n.as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut waiting = Vec::new();
    for name in &expected {
        let Some(s) = states.iter().find(|s| &s.service == name) else {
            waiting.push(format!("{name} has no container"));
            continue;
        };
        match s.state.as_str() {
            "running" => match s.health.as_str() {
                "starting" => waiting.push(format!("waiting for {name} to be healthy")),
                "unhealthy" => waiting.push(format!("{name} is unhealthy")),
                _ => {}
            },
            "exited"
                if s.exit_code == 0 && (completes.contains(name.as_str()) || s.may_complete) => {}
            "exited" | "dead" => waiting.push(format!("{name} exited with code {}", s.exit_code)),
            "created" => waiting.push(format!("{name} is not started yet")),
            other => waiting.push(format!("{name} is {other}")),
        }
    }
    (waiting.is_empty(), waiting.join("; "))
}

/// Services, ports and addresses for `env show`.
pub fn detail_of(
    names: &Names,
    states: &[ServiceState],
    compose: Option<&Compose>,
    manifest: Option<&Manifest>,
) -> EnvDetail {
    let order: Vec<String> = match compose {
        Some(c) => c.startup_order().into_iter().map(String::from).collect(),
        None => states.iter().map(|s| s.service.clone()).collect(),
    };
    let mut services = Vec::new();
    let mut ports = Vec::new();
    let mut addresses = Vec::new();
    for name in &order {
        let Some(s) = states.iter().find(|s| &s.service == name) else {
            services.push(ServiceStatus {
                name: name.clone(),
                state: "missing".into(),
                health: String::new(),
            });
            continue;
        };
        services.push(ServiceStatus {
            name: name.clone(),
            state: s.state.clone(),
            health: s.health.clone(),
        });
        if let Some(a) = &s.address {
            addresses.push(a.clone());
        }
        for (target, protocol, host) in &s.ports {
            ports.push(PortMapping {
                name: port_name(name, *target, *protocol, compose, manifest),
                guest_port: *target,
                host_port: *host,
                protocol: proto(*protocol).into(),
            });
        }
    }
    EnvDetail {
        runtime: "docker".into(),
        instance: names.project.clone(),
        addresses,
        ports,
        services,
        message: String::new(),
    }
}

/// The name of a published port: the template's `[[ports]]` entry it serves
/// (matched on the port the compose file publishes, as inside a VM), else
/// `<service>-<target>`.
fn port_name(
    service: &str,
    target: u16,
    protocol: Protocol,
    compose: Option<&Compose>,
    manifest: Option<&Manifest>,
) -> String {
    let published = compose
        .and_then(|c| c.services.get(service))
        .and_then(|s| {
            s.ports
                .iter()
                .find(|p| p.target == target && p.protocol == protocol)
        })
        .map(|p| p.published.unwrap_or(target));
    let named = manifest.and_then(|m| {
        let p = published?;
        m.ports
            .iter()
            .find(|mp| mp.port == p && mp.protocol == protocol)
            .map(|mp| mp.name.clone())
    });
    named.unwrap_or_else(|| match protocol {
        Protocol::Tcp => format!("{service}-{target}"),
        Protocol::Udp => format!("{service}-{target}-udp"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(service: &str, state: &str, health: &str, exit: i64) -> ServiceState {
        ServiceState {
            service: service.into(),
            state: state.into(),
            health: health.into(),
            exit_code: exit,
            may_complete: false,
            ports: vec![],
            address: None,
        }
    }

    fn compose() -> Compose {
        Compose::parse(
            "services:\n  web:\n    image: w\n    ports: [\"8080:80\"]\n    depends_on:\n      db: {condition: service_healthy}\n      init: {condition: service_completed_successfully}\n  db:\n    image: d\n  init:\n    image: i\n",
            "compose.yaml",
        )
        .unwrap()
    }

    #[test]
    fn ready_when_every_service_runs_healthy_or_completed() {
        let c = compose();
        let all = [
            st("db", "running", "healthy", 0),
            st("init", "exited", "", 0),
            st("web", "running", "", 0),
        ];
        assert_eq!(readiness(&all, Some(&c)), (true, String::new()));
        let starting = [
            st("db", "running", "starting", 0),
            st("init", "exited", "", 0),
            st("web", "created", "", 0),
        ];
        let (ready, why) = readiness(&starting, Some(&c));
        assert!(!ready);
        assert_eq!(why, "waiting for db to be healthy; web is not started yet");
        let crashed = [
            st("db", "running", "healthy", 0),
            st("init", "exited", "", 0),
            st("web", "exited", "", 2),
        ];
        assert_eq!(readiness(&crashed, Some(&c)).1, "web exited with code 2");
        // A missing container is not ready.
        assert!(!readiness(&all[..2], Some(&c)).0);
    }

    #[test]
    fn ports_are_named_after_the_manifest() {
        let c = compose();
        let m = Manifest::parse(
            "name = \"t\"\nruntime = [\"docker\"]\n[resources]\nvcpus = 1\nmemory = \"256MiB\"\ndisk = \"1GiB\"\n[[ports]]\nname = \"http\"\nport = 8080\n",
        )
        .unwrap();
        let mut web = st("web", "running", "", 0);
        web.ports = vec![(80, Protocol::Tcp, 20001)];
        web.address = Some("172.18.0.3".into());
        let names = Names::for_test("metrom-x");
        let d = detail_of(&names, &[web], Some(&c), Some(&m));
        assert_eq!(d.ports.len(), 1);
        assert_eq!(
            (
                d.ports[0].name.as_str(),
                d.ports[0].guest_port,
                d.ports[0].host_port
            ),
            ("http", 80, 20001)
        );
        assert_eq!(d.addresses, ["172.18.0.3"]);
        assert_eq!(d.instance, "metrom-x");
        assert_eq!(d.services[0].state, "missing", "db first, and missing");
        assert_eq!(
            port_name("db", 5432, Protocol::Tcp, Some(&c), Some(&m)),
            "db-5432"
        );
    }
}
