//! From an environment's compose file to the Docker objects that run it: the
//! names, labels and container specs. Pure: no Docker, no files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount as DockerMount,
    MountType, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use metrom_protocol::messages::env::{EnvSpec, TemplateFile};
use metrom_protocol::template::{
    Compose, Condition, HealthTest, MountSource, Protocol, Restart, Service,
};

use super::label;

/// The names of an environment's Docker objects.
#[derive(Debug, Clone)]
pub struct Names {
    /// `metrom-<env name>`.
    pub project: String,
    env_id: String,
}

impl Names {
    pub fn of(spec: &EnvSpec) -> Names {
        Names {
            project: format!("metrom-{}", spec.name),
            env_id: spec.env_id.to_string(),
        }
    }

    #[cfg(test)]
    pub fn for_test(project: &str) -> Names {
        Names {
            project: project.into(),
            env_id: "e-test".into(),
        }
    }

    /// The bridge network of a compose network (`default` is the project's own).
    pub fn network(&self, compose_name: &str) -> String {
        if compose_name == "default" {
            self.project.clone()
        } else {
            format!("{}_{compose_name}", self.project)
        }
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.project)
    }

    /// Named volumes carry the environment id: they outlive the environment
    /// with `--keep-data`, and a later environment of the same name must not
    /// inherit them.
    pub fn volume(&self, compose_name: &str) -> String {
        format!("{}-{}_{compose_name}", self.project, self.env_id)
    }
}

/// One published port of a service: what it is called in port records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub service: String,
    pub target: u16,
    pub protocol: Protocol,
}

impl PortKey {
    /// `web:8080/tcp`
    pub fn text(&self) -> String {
        format!("{}:{}/{}", self.service, self.target, proto(self.protocol))
    }
}

pub fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// A network to make.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPlan {
    pub name: String,
    pub compose_name: String,
}

/// A named volume to make.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumePlan {
    pub name: String,
    pub compose_name: String,
    pub labels: HashMap<String, String>,
}

/// A container to make.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub service: String,
    pub container: String,
    pub image: String,
    pub body: ContainerCreateBody,
    /// Networks to connect after creation (Docker takes one at create).
    pub more_networks: Vec<String>,
    pub depends_on: BTreeMap<String, Condition>,
}

/// Everything an environment is made of, services in startup order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub names: Names,
    pub networks: Vec<NetworkPlan>,
    pub volumes: Vec<VolumePlan>,
    pub services: Vec<ServicePlan>,
}

/// The published ports of a compose file, in service order.
pub fn port_keys(compose: &Compose) -> Vec<PortKey> {
    let mut keys = Vec::new();
    for name in &compose.service_order {
        for p in &compose.services[name].ports {
            let k = PortKey {
                service: name.clone(),
                target: p.target,
                protocol: p.protocol,
            };
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// Labels every object of the environment carries.
pub fn base_labels(spec: &EnvSpec, names: &Names) -> HashMap<String, String> {
    HashMap::from([
        (label::ENV.to_string(), spec.env_id.to_string()),
        (label::OWNER.to_string(), spec.owner.clone()),
        (label::PROJECT.to_string(), names.project.clone()),
    ])
}

/// Plans the environment. `compose` has its images already qualified;
/// `files_dir` is where the template's files are materialised; `ports` holds
/// the host port of every key of [`port_keys`].
pub fn plan(
    spec: &EnvSpec,
    compose: &Compose,
    files_dir: &Path,
    ports: &BTreeMap<PortKey, u16>,
) -> Result<Plan, String> {
    let names = Names::of(spec);
    let base = base_labels(spec, &names);
    let mut networks = vec![NetworkPlan {
        name: names.network("default"),
        compose_name: "default".into(),
    }];
    for n in &compose.networks {
        if n != "default" {
            networks.push(NetworkPlan {
                name: names.network(n),
                compose_name: n.clone(),
            });
        }
    }
    let volumes = compose
        .volumes
        .iter()
        .map(|(n, v)| {
            let mut labels: HashMap<String, String> = v.labels.clone().into_iter().collect();
            labels.extend(base.clone());
            labels.insert(label::NAME.into(), n.clone());
            VolumePlan {
                name: names.volume(n),
                compose_name: n.clone(),
                labels,
            }
        })
        .collect();
    let mut services = Vec::new();
    for name in compose.startup_order() {
        let svc = &compose.services[name];
        services.push(service(spec, &names, &base, name, svc, files_dir, ports)?);
    }
    Ok(Plan {
        names,
        networks,
        volumes,
        services,
    })
}

fn service(
    spec: &EnvSpec,
    names: &Names,
    base: &HashMap<String, String>,
    name: &str,
    svc: &Service,
    files_dir: &Path,
    ports: &BTreeMap<PortKey, u16>,
) -> Result<ServicePlan, String> {
    // Compose labels first; ours win.
    let mut labels: HashMap<String, String> = svc.labels.clone().into_iter().collect();
    labels.extend(base.clone());
    labels.insert(label::BUILD.into(), spec.build.to_string());
    labels.insert(label::SERVICE.into(), name.to_string());
    labels.insert(
        label::TEMPLATE.into(),
        format!("{}@{}", spec.template.name, spec.template.version),
    );

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for f in &svc.env_file {
        let file = find_file(&spec.template.files, f)?;
        env.extend(parse_env_file(&file.contents).map_err(|e| format!("{f}: {e}"))?);
    }
    env.extend(svc.environment.clone());

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut published = Vec::new();
    for p in &svc.ports {
        let key = PortKey {
            service: name.to_string(),
            target: p.target,
            protocol: p.protocol,
        };
        let host = *ports
            .get(&key)
            .ok_or_else(|| format!("no host port was allocated for {}", key.text()))?;
        let port = format!("{}/{}", p.target, proto(p.protocol));
        if !exposed.contains(&port) {
            exposed.push(port.clone());
            published.push(format!("{port}={host}"));
        }
        bindings
            .entry(port)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.map(|ip| ip.to_string()).unwrap_or_default()),
                host_port: Some(host.to_string()),
            });
    }
    if !published.is_empty() {
        labels.insert(label::PORTS.into(), published.join(","));
    }

    let mut mounts = Vec::new();
    let mut anonymous = Vec::new();
    for m in &svc.volumes {
        let (typ, source) = match &m.source {
            MountSource::Anonymous => {
                anonymous.push(m.target.clone());
                continue;
            }
            MountSource::Volume(v) => (MountType::VOLUME, names.volume(v)),
            MountSource::Template(path) => (
                MountType::BIND,
                files_dir.join(path).to_string_lossy().into_owned(),
            ),
            MountSource::Host(path) => {
                return Err(format!(
                    "service '{name}' mounts the host path {path}: the docker runtime does not \
                     mount host paths, which would be this host's own files, shared with every \
                     environment on it; use a named volume or a file of the template (./path)"
                ));
            }
        };
        mounts.push(DockerMount {
            target: Some(m.target.clone()),
            source: Some(source),
            typ: Some(typ),
            read_only: Some(m.read_only),
            ..Default::default()
        });
    }

    let compose_networks: Vec<String> = if svc.networks.is_empty() {
        vec!["default".into()]
    } else {
        svc.networks.clone()
    };
    let docker_networks: Vec<String> = compose_networks.iter().map(|n| names.network(n)).collect();
    let first = docker_networks[0].clone();
    let endpoint = EndpointSettings {
        aliases: Some(vec![name.to_string()]),
        ..Default::default()
    };

    let body = ContainerCreateBody {
        image: Some(svc.image.clone()),
        cmd: svc.command.clone(),
        entrypoint: svc.entrypoint.clone(),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        working_dir: svc.working_dir.clone(),
        user: svc.user.clone(),
        hostname: Some(name.to_string()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        healthcheck: svc.healthcheck.as_ref().map(health_config),
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            restart_policy: Some(restart_policy(svc.restart)),
            network_mode: Some(first.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(first, endpoint)])),
        }),
        ..Default::default()
    };
    Ok(ServicePlan {
        service: name.to_string(),
        container: names.container(name),
        image: svc.image.clone(),
        body,
        more_networks: docker_networks[1..].to_vec(),
        depends_on: svc.depends_on.clone(),
    })
}

fn find_file<'f>(files: &'f [TemplateFile], path: &str) -> Result<&'f TemplateFile, String> {
    files
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| format!("env_file {path} is not in the template"))
}

fn health_config(h: &metrom_protocol::template::Healthcheck) -> HealthConfig {
    let nanos = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as i64);
    HealthConfig {
        test: h.test.as_ref().map(|t| match t {
            HealthTest::Cmd(args) => {
                let mut v = vec!["CMD".to_string()];
                v.extend(args.iter().cloned());
                v
            }
            HealthTest::Shell(cmd) => vec!["CMD-SHELL".to_string(), cmd.clone()],
            HealthTest::Disabled => vec!["NONE".to_string()],
        }),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        retries: h.retries.map(i64::from),
        start_period: nanos(h.start_period),
        ..Default::default()
    }
}

fn restart_policy(r: Option<Restart>) -> RestartPolicy {
    let (name, max) = match r {
        None | Some(Restart::No) => (RestartPolicyNameEnum::NO, None),
        Some(Restart::Always) => (RestartPolicyNameEnum::ALWAYS, None),
        Some(Restart::UnlessStopped) => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        Some(Restart::OnFailure { max_retries }) => (
            RestartPolicyNameEnum::ON_FAILURE,
            max_retries.map(i64::from),
        ),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: max,
    }
}

/// Reads an env file the way Compose does: `KEY=VALUE` lines; blank lines and
/// lines starting with `#` are skipped; `export ` before a key is allowed; a
/// value in matching single or double quotes loses them (`\n` in double
/// quotes is a newline). A key without `=` would take the value from the
/// host's environment in Compose; Metrom never passes the host's environment,
/// so it is skipped.
pub fn parse_env_file(contents: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(contents).map_err(|_| "not UTF-8 text".to_string())?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("line {}: '{line}' is not KEY=VALUE", i + 1));
        }
        let value = value.trim();
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            value[1..value.len() - 1]
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
        } else if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
            value[1..value.len() - 1].to_string()
        } else {
            value.to_string()
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::tests::spec;

    fn compose() -> Compose {
        Compose::parse(
            r#"
services:
  web:
    image: reg.lan/web:1
    command: ["httpd", "-f"]
    env_file: app.env
    environment:
      MODE: dev
    ports:
      - "8080:80"
      - "127.0.0.1::9000/udp"
    volumes:
      - data:/srv
      - ./conf:/etc/conf:ro
      - /scratch
    depends_on:
      db:
        condition: service_healthy
    labels:
      io.metrom.env: forged
      team: a
    networks: [default, back]
    restart: on-failure:3
  db:
    image: reg.lan/db:1
    healthcheck:
      test: ["CMD", "true"]
      interval: 2s
      retries: 3
networks:
  back:
volumes:
  data:
"#,
            "compose.yaml",
        )
        .unwrap()
    }

    #[test]
    fn a_compose_file_becomes_labelled_containers_in_startup_order() {
        let mut s = spec("e-plan", 1);
        s.build = 3;
        s.template.files = vec![TemplateFile {
            path: "app.env".into(),
            contents: b"# comment\nMODE=prod\nLEVEL=\"debug\"\n".to_vec(),
        }];
        let c = compose();
        let keys = port_keys(&c);
        let ports: BTreeMap<PortKey, u16> = keys.iter().cloned().zip([20000, 20001]).collect();
        let p = plan(&s, &c, Path::new("/data/files"), &ports).unwrap();
        assert_eq!(p.names.project, "metrom-dev");
        let order: Vec<&str> = p.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(order, ["db", "web"]);
        let web = &p.services[1];
        assert_eq!(web.container, "metrom-dev-web");
        let labels = web.body.labels.as_ref().unwrap();
        assert_eq!(labels[label::ENV], "e-plan", "our labels win");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[label::BUILD], "3");
        assert_eq!(labels[label::PORTS], "80/tcp=20000,9000/udp=20001");
        let env = web.body.env.as_ref().unwrap();
        assert!(env.contains(&"MODE=dev".to_string()), "environment wins");
        assert!(env.contains(&"LEVEL=debug".to_string()));
        let hc = web.body.host_config.as_ref().unwrap();
        let b = hc.port_bindings.as_ref().unwrap();
        assert_eq!(
            b["9000/udp"].as_ref().unwrap()[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            b["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("20000")
        );
        let mounts = hc.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("metrom-dev-e-plan_data"));
        assert_eq!(mounts[1].source.as_deref(), Some("/data/files/conf"));
        assert_eq!(mounts[1].read_only, Some(true));
        assert_eq!(
            web.body.volumes.as_deref(),
            Some(&["/scratch".to_string()][..])
        );
        assert_eq!(hc.network_mode.as_deref(), Some("metrom-dev"));
        assert_eq!(web.more_networks, ["metrom-dev_back"]);
        assert_eq!(
            hc.restart_policy.as_ref().unwrap().maximum_retry_count,
            Some(3)
        );
        let db = &p.services[0];
        let h = db.body.healthcheck.as_ref().unwrap();
        assert_eq!(h.test.as_ref().unwrap(), &["CMD", "true"]);
        assert_eq!(h.interval, Some(2_000_000_000));
        assert_eq!(p.networks.len(), 2);
        assert_eq!(p.volumes[0].labels[label::NAME], "data");
    }

    #[test]
    fn host_paths_are_refused() {
        let c = Compose::parse(
            "services:\n  web:\n    image: w\n    volumes: [\"/var/run/docker.sock:/s\"]\n",
            "compose.yaml",
        )
        .unwrap();
        let e = plan(&spec("e-h", 1), &c, Path::new("/f"), &BTreeMap::new()).unwrap_err();
        assert!(e.contains("host path /var/run/docker.sock"), "{e}");
    }

    #[test]
    fn env_files_read_like_compose() {
        let env = parse_env_file(b"A=1\n\n# x\nexport B = 'two words'\nC\nD=\"a\\nb\"\n").unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert!(!env.contains_key("C"));
        assert_eq!(env["D"], "a\nb");
        assert!(parse_env_file(b"A B=1\n").unwrap_err().contains("line 1"));
    }
}
