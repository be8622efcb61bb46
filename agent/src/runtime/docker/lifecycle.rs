//! Making, starting, stopping and removing an environment's Docker objects.
//! `converge` is both create and start: it makes whatever of the current
//! build is missing (never a second container: names are fixed and existing
//! containers are reused), then starts the services in dependency order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerSummary, HealthStatusEnum, NetworkConnectRequest, NetworkCreateRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{EnvSpec, Power};
use metrom_protocol::template::{self, Compose, Condition};
use tracing::{info, warn};

use super::plan::{self, Plan, ServicePlan, base_labels};
use super::{DockerRuntime, api_error, docker_message, images, is_not_found, label, ports};
use crate::runtime::{Progress, RuntimeError};

/// How often a dependency's state is polled while waiting for it.
const POLL: Duration = Duration::from_millis(250);

/// The environment's compose file as this host runs it (images qualified),
/// with the image names as written, keyed by their qualified names.
pub(super) struct Resolved {
    pub compose: Compose,
    pub manifest: template::Manifest,
    pub written: HashMap<String, String>,
    pub registry: Option<(String, bool)>,
}

pub(super) fn resolve(rt: &DockerRuntime, spec: &EnvSpec) -> Result<Resolved, RuntimeError> {
    let t = template::parse(spec.template.files.clone())
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    let params: BTreeMap<String, String> = spec.params.iter().cloned().collect();
    let mut compose = t
        .compose_for(&params)
        .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    let registry = images::registry_for(t.manifest.registry.as_deref(), rt, spec);
    let mut written = HashMap::new();
    for s in compose.services.values() {
        let q = match &registry {
            Some((r, _)) => template::qualify_image(&s.image, r),
            None => s.image.clone(),
        };
        written.insert(q, s.image.clone());
    }
    if let Some((r, _)) = &registry {
        compose.qualify_images(r);
    }
    Ok(Resolved {
        compose,
        manifest: t.manifest,
        written,
        registry,
    })
}

/// The folder of one environment's files and port record.
pub(super) fn env_dir(rt: &DockerRuntime, env: &EnvId) -> PathBuf {
    rt.dir.join("envs").join(env.as_str())
}

/// Creates what is missing of `spec.build` and, when the spec says Running,
/// starts the services in dependency order.
pub(super) async fn converge(
    rt: &DockerRuntime,
    spec: &EnvSpec,
    progress: &Progress,
) -> Result<(), RuntimeError> {
    let r = resolve(rt, spec)?;
    // What the spec itself gets wrong (env files, host paths) fails before
    // anything is pulled or made.
    let no_ports = plan::port_keys(&r.compose)
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    plan::plan(spec, &r.compose, &files_dir(rt, &spec.env_id), &no_ports)
        .map_err(RuntimeError::Invalid)?;
    let existing = containers(rt, &spec.env_id).await?;
    // Containers of another build (a crash between destroy and create) go.
    for c in &existing {
        if build_of(c) != Some(spec.build) {
            remove_container(rt, c, rt.settings.stop_timeout).await?;
        }
    }
    let have: BTreeMap<String, ContainerSummary> = existing
        .into_iter()
        .filter(|c| build_of(c) == Some(spec.build))
        .filter_map(|c| Some((service_of(&c)?.to_string(), c)))
        .collect();
    let missing: Vec<String> = r
        .compose
        .service_order
        .iter()
        .filter(|s| !have.contains_key(*s))
        .cloned()
        .collect();
    let plan = if missing.is_empty() {
        // Everything exists: the plan is only needed for the start order.
        plan::plan(
            spec,
            &r.compose,
            &files_dir(rt, &spec.env_id),
            &ports_of(&have),
        )
        .map_err(RuntimeError::Invalid)?
    } else {
        images::ensure(
            rt,
            spec,
            &r.compose,
            &r.written,
            r.registry.as_ref(),
            progress,
        )
        .await?;
        let _guard = rt.lock.lock().await;
        progress.say("creating the containers");
        let mut made = Made::default();
        match create_missing(rt, spec, &r, &have, &missing, &mut made).await {
            Ok(plan) => plan,
            Err(e) => {
                if have.is_empty() {
                    made.undo(rt).await;
                    let _ = std::fs::remove_dir_all(files_dir(rt, &spec.env_id));
                }
                return Err(e);
            }
        }
    };
    if spec.power == Power::Running {
        start_in_order(rt, &plan, progress).await?;
    }
    Ok(())
}

/// What one `converge` made, to take back if it fails half-way.
#[derive(Default)]
struct Made {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
}

impl Made {
    async fn undo(&self, rt: &DockerRuntime) {
        for c in &self.containers {
            let _ = rt
                .docker
                .remove_container(
                    c,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
        for n in &self.networks {
            let _ = rt.docker.remove_network(n).await;
        }
        for v in &self.volumes {
            let _ = rt
                .docker
                .remove_volume(v, None::<RemoveVolumeOptions>)
                .await;
        }
    }
}

async fn create_missing(
    rt: &DockerRuntime,
    spec: &EnvSpec,
    r: &Resolved,
    have: &BTreeMap<String, ContainerSummary>,
    missing: &[String],
    made: &mut Made,
) -> Result<Plan, RuntimeError> {
    let dir = env_dir(rt, &spec.env_id);
    materialise(spec, &files_dir(rt, &spec.env_id))?;

    // Host ports: ours from the record and our containers; others' are taken.
    let mut previous = ports::load(&dir);
    let mut ours = BTreeSet::new();
    for (svc, c) in have {
        for (target, proto, host) in label_ports(c) {
            previous.insert(
                plan::PortKey {
                    service: svc.clone(),
                    target,
                    protocol: proto,
                }
                .text(),
                host,
            );
            ours.insert(host);
        }
    }
    let mut taken = ports::recorded_elsewhere(&rt.dir.join("envs"), spec.env_id.as_str());
    for c in all_containers(rt).await? {
        if env_of(&c) != Some(spec.env_id.as_str()) {
            taken.extend(label_ports(&c).into_iter().map(|(_, _, h)| h));
        }
    }
    let keys = plan::port_keys(&r.compose);
    let allocated = ports::allocate(
        &keys,
        &previous,
        &taken,
        &ours,
        rt.settings.port_range,
        ports::free_on_host,
    )
    .map_err(RuntimeError::Failed)?;
    ports::save(&dir, &allocated).map_err(|e| {
        RuntimeError::Failed(format!("{}: {e}", dir.join(ports::PORTS_FILE).display()))
    })?;

    let plan = plan::plan(spec, &r.compose, &files_dir(rt, &spec.env_id), &allocated)
        .map_err(RuntimeError::Invalid)?;
    let labels = base_labels(spec, &plan.names);
    for n in &plan.networks {
        match rt.docker.inspect_network(&n.name, None).await {
            Ok(existing) => check_owner(&existing.labels, spec, "network", &n.name)?,
            Err(e) if is_not_found(&e) => {
                let mut l = labels.clone();
                l.insert(label::NAME.into(), n.compose_name.clone());
                rt.docker
                    .create_network(NetworkCreateRequest {
                        name: n.name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(l),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| api_error(&format!("creating network {}", n.name), e))?;
                made.networks.push(n.name.clone());
            }
            Err(e) => return Err(api_error(&format!("network {}", n.name), e)),
        }
    }
    for v in &plan.volumes {
        match rt.docker.inspect_volume(&v.name).await {
            Ok(existing) => check_owner(&Some(existing.labels.clone()), spec, "volume", &v.name)?,
            Err(e) if is_not_found(&e) => {
                rt.docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(v.name.clone()),
                        labels: Some(v.labels.clone()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| api_error(&format!("creating volume {}", v.name), e))?;
                made.volumes.push(v.name.clone());
            }
            Err(e) => return Err(api_error(&format!("volume {}", v.name), e)),
        }
    }
    for s in plan
        .services
        .iter()
        .filter(|s| missing.contains(&s.service))
    {
        create_container(rt, spec, s).await?;
        made.containers.push(s.container.clone());
        for n in &s.more_networks {
            rt.docker
                .connect_network(
                    n,
                    NetworkConnectRequest {
                        container: s.container.clone(),
                        endpoint_config: Some(bollard::models::EndpointSettings {
                            aliases: Some(vec![s.service.clone()]),
                            ..Default::default()
                        }),
                    },
                )
                .await
                .map_err(|e| api_error(&format!("connecting {} to {n}", s.container), e))?;
        }
    }
    info!(project = %plan.names.project, build = spec.build, created = missing.len(), "containers created");
    Ok(plan)
}

async fn create_container(
    rt: &DockerRuntime,
    spec: &EnvSpec,
    s: &ServicePlan,
) -> Result<(), RuntimeError> {
    let options = CreateContainerOptions {
        name: Some(s.container.clone()),
        ..Default::default()
    };
    match rt
        .docker
        .create_container(Some(options), s.body.clone())
        .await
    {
        Ok(_) => Ok(()),
        Err(
            e @ bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            },
        ) => {
            // The name is taken: ours from a concurrent step is fine, anyone else's is not.
            let other = rt
                .docker
                .inspect_container(&s.container, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|c| c.config.and_then(|c| c.labels))
                .unwrap_or_default();
            if other.get(label::ENV).map(String::as_str) == Some(spec.env_id.as_str())
                && other.get(label::BUILD) == Some(&spec.build.to_string())
            {
                Ok(())
            } else {
                Err(RuntimeError::Failed(format!(
                    "container name {} is taken by a container that is not this environment's \
                     ({}); remove it with `docker rm -f {}`",
                    s.container,
                    docker_message(&e),
                    s.container
                )))
            }
        }
        Err(e) => Err(api_error(
            &format!("creating container {} ({})", s.container, s.image),
            e,
        )),
    }
}

/// A network or volume of that name must be this environment's.
fn check_owner(
    labels: &Option<HashMap<String, String>>,
    spec: &EnvSpec,
    kind: &str,
    name: &str,
) -> Result<(), RuntimeError> {
    let env = labels.as_ref().and_then(|l| l.get(label::ENV));
    if env.map(String::as_str) == Some(spec.env_id.as_str()) {
        Ok(())
    } else {
        Err(RuntimeError::Failed(format!(
            "{kind} {name} exists and is not this environment's (label {}={}); remove it or rename the environment",
            label::ENV,
            env.map(String::as_str).unwrap_or("none")
        )))
    }
}

/// Writes the template's files for bind mounts.
fn materialise(spec: &EnvSpec, dir: &std::path::Path) -> Result<(), RuntimeError> {
    let io = |p: &std::path::Path, e: std::io::Error| {
        RuntimeError::Failed(format!("writing template files to {}: {e}", p.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for f in &spec.template.files {
        template::check_file_path(&f.path).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, &f.contents).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

pub(super) fn files_dir(rt: &DockerRuntime, env: &EnvId) -> PathBuf {
    env_dir(rt, env).join("files")
}

/// Starts the services in order; before each, waits for what it depends on.
async fn start_in_order(
    rt: &DockerRuntime,
    plan: &Plan,
    progress: &Progress,
) -> Result<(), RuntimeError> {
    let container_of: HashMap<&str, &str> = plan
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.container.as_str()))
        .collect();
    for s in &plan.services {
        for (dep, condition) in &s.depends_on {
            let Some(c) = container_of.get(dep.as_str()) else {
                continue;
            };
            wait_for(
                rt,
                dep,
                c,
                *condition,
                rt.settings.dependency_timeout,
                progress,
            )
            .await?;
        }
        progress.say(format!("starting {}", s.service));
        rt.docker
            .start_container(&s.container, None)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError { .. } => RuntimeError::Failed(
                    format!("service {} cannot start: {}", s.service, docker_message(&e)),
                ),
                other => api_error(&format!("starting {}", s.container), other),
            })?;
    }
    Ok(())
}

/// Waits until `service` meets `condition`, or fails on what makes that impossible.
async fn wait_for(
    rt: &DockerRuntime,
    service: &str,
    container: &str,
    condition: Condition,
    timeout: Duration,
    progress: &Progress,
) -> Result<(), RuntimeError> {
    let what = match condition {
        Condition::ServiceStarted => return Ok(()),
        Condition::ServiceHealthy => "healthy",
        Condition::ServiceCompletedSuccessfully => "completed",
    };
    progress.say(format!("waiting for {service} to be {what}"));
    let deadline = Instant::now() + timeout;
    loop {
        let c = rt
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(|e| api_error(&format!("service {service}"), e))?;
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let exit = state.exit_code.unwrap_or(0);
        match condition {
            Condition::ServiceHealthy => {
                let health = state.health.unwrap_or_default();
                match health.status {
                    Some(HealthStatusEnum::HEALTHY) if running => return Ok(()),
                    Some(HealthStatusEnum::UNHEALTHY) => {
                        let last = health
                            .log
                            .unwrap_or_default()
                            .pop()
                            .and_then(|l| l.output)
                            .unwrap_or_default();
                        return Err(RuntimeError::Failed(format!(
                            "service {service} is unhealthy (last check: {})",
                            last.trim()
                        )));
                    }
                    _ if !running && state.restarting != Some(true) => {
                        return Err(RuntimeError::Failed(format!(
                            "service {service} exited with code {exit} before it was healthy"
                        )));
                    }
                    _ => {}
                }
            }
            Condition::ServiceCompletedSuccessfully => {
                if !running && state.restarting != Some(true) {
                    return if exit == 0 {
                        Ok(())
                    } else {
                        Err(RuntimeError::Failed(format!(
                            "service {service} exited with code {exit}"
                        )))
                    };
                }
            }
            Condition::ServiceStarted => return Ok(()),
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::Failed(format!(
                "service {service} was not {what} within {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stops the environment's containers, dependents first: SIGTERM, then
/// SIGKILL after the stop timeout.
pub(super) async fn stop(rt: &DockerRuntime, spec: &EnvSpec) -> Result<(), RuntimeError> {
    let mut list = containers(rt, &spec.env_id).await?;
    let order: Vec<String> = resolve(rt, spec)
        .map(|r| {
            r.compose
                .startup_order()
                .into_iter()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let rank = |c: &ContainerSummary| {
        service_of(c)
            .and_then(|s| order.iter().position(|o| o == s))
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|c| std::cmp::Reverse(rank(c)));
    for c in &list {
        stop_container(rt, c, rt.settings.stop_timeout).await?;
    }
    Ok(())
}

async fn stop_container(
    rt: &DockerRuntime,
    c: &ContainerSummary,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let id = c.id.clone().unwrap_or_default();
    match rt
        .docker
        .stop_container(
            &id,
            Some(StopContainerOptions {
                t: Some(timeout.as_secs() as i32),
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_error(&format!("stopping {}", name_of(c)), e)),
    }
}

async fn remove_container(
    rt: &DockerRuntime,
    c: &ContainerSummary,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    stop_container(rt, c, timeout).await?;
    let id = c.id.clone().unwrap_or_default();
    match rt
        .docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // Already being removed by dockerd.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(api_error(&format!("removing {}", name_of(c)), e)),
    }
}

/// Removes the containers, networks and files, and the volumes and port
/// record unless `keep_data`.
pub(super) async fn destroy(
    rt: &DockerRuntime,
    env: &EnvId,
    keep_data: bool,
) -> Result<(), RuntimeError> {
    let _guard = rt.lock.lock().await;
    for c in containers(rt, env).await? {
        remove_container(rt, &c, rt.settings.stop_timeout).await?;
    }
    let filter = label_filter(env);
    let networks = rt
        .docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filter.clone()),
        }))
        .await
        .map_err(|e| api_error("listing networks", e))?;
    for n in networks {
        let name = n.name.unwrap_or_default();
        match rt.docker.remove_network(&name).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_error(&format!("removing network {name}"), e)),
        }
    }
    if !keep_data {
        let volumes = rt
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filter),
            }))
            .await
            .map_err(|e| api_error("listing volumes", e))?;
        for v in volumes.volumes.unwrap_or_default() {
            match rt
                .docker
                .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error(&format!("removing volume {}", v.name), e)),
            }
        }
    }
    let dir = env_dir(rt, env);
    let gone = if keep_data {
        std::fs::remove_dir_all(dir.join("files"))
    } else {
        std::fs::remove_dir_all(&dir)
    };
    if let Err(e) = gone
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!("removing {}: {e}", dir.display());
    }
    info!(keep_data, "docker objects removed");
    Ok(())
}

/// Environments with containers or networks on this host.
pub(super) async fn instances(rt: &DockerRuntime) -> Result<Vec<EnvId>, RuntimeError> {
    let mut ids: BTreeSet<String> = all_containers(rt)
        .await?
        .iter()
        .filter_map(|c| env_of(c).map(String::from))
        .collect();
    let networks = rt
        .docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label::ENV.to_string()],
            )])),
        }))
        .await
        .map_err(|e| api_error("listing networks", e))?;
    ids.extend(
        networks
            .into_iter()
            .filter_map(|n| n.labels?.get(label::ENV).cloned()),
    );
    Ok(ids.iter().filter_map(|i| EnvId::parse(i).ok()).collect())
}

fn label_filter(env: &EnvId) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{}={}", label::ENV, env)])])
}

/// The environment's containers, running or not.
pub(super) async fn containers(
    rt: &DockerRuntime,
    env: &EnvId,
) -> Result<Vec<ContainerSummary>, RuntimeError> {
    rt.docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(env)),
            ..Default::default()
        }))
        .await
        .map_err(|e| api_error("listing containers", e))
}

/// CPU time and network bytes of the environment's running containers, summed
/// (the idle policy's activity). None when none runs.
pub(super) async fn counters(
    rt: &DockerRuntime,
    env: &EnvId,
) -> Result<Option<super::super::Counters>, RuntimeError> {
    use futures::StreamExt;
    let mut total = super::super::Counters::default();
    let mut any = false;
    for c in containers(rt, env).await? {
        if c.state.as_ref().map(|s| s.to_string()) != Some("running".into()) {
            continue;
        }
        let Some(id) = c.id.as_deref() else { continue };
        let opts = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let Some(Ok(stats)) = rt.docker.stats(id, Some(opts)).next().await else {
            continue;
        };
        any = true;
        total.cpu_ns += stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        for n in stats.networks.unwrap_or_default().values() {
            total.net_bytes += n.rx_bytes.unwrap_or(0) + n.tx_bytes.unwrap_or(0);
        }
    }
    Ok(any.then_some(total))
}

/// Every container of every environment on this host.
async fn all_containers(rt: &DockerRuntime) -> Result<Vec<ContainerSummary>, RuntimeError> {
    rt.docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label::ENV.to_string()],
            )])),
            ..Default::default()
        }))
        .await
        .map_err(|e| api_error("listing containers", e))
}

fn labels(c: &ContainerSummary) -> Option<&HashMap<String, String>> {
    c.labels.as_ref()
}

pub(super) fn build_of(c: &ContainerSummary) -> Option<u64> {
    labels(c)?.get(label::BUILD)?.parse().ok()
}

pub(super) fn service_of(c: &ContainerSummary) -> Option<&str> {
    labels(c)?.get(label::SERVICE).map(String::as_str)
}

fn env_of(c: &ContainerSummary) -> Option<&str> {
    labels(c)?.get(label::ENV).map(String::as_str)
}

fn name_of(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| c.id.clone().unwrap_or_default())
}

fn label_ports(c: &ContainerSummary) -> Vec<(u16, metrom_protocol::template::Protocol, u16)> {
    labels(c)
        .and_then(|l| l.get(label::PORTS))
        .map(|t| ports::parse_label(t))
        .unwrap_or_default()
}

/// The host ports recorded on existing containers, by key.
fn ports_of(have: &BTreeMap<String, ContainerSummary>) -> BTreeMap<plan::PortKey, u16> {
    have.iter()
        .flat_map(|(svc, c)| {
            label_ports(c)
                .into_iter()
                .map(move |(target, protocol, host)| {
                    (
                        plan::PortKey {
                            service: svc.clone(),
                            target,
                            protocol,
                        },
                        host,
                    )
                })
        })
        .collect()
}
