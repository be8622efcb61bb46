//! The Docker Compose subset Metrom runs, as typed values.
//!
//! The Docker runtime implements exactly this subset, so a compose file that
//! leaves it is refused when the template is pushed, with the file, line, key
//! and the keys that are supported. The supported keys are the constants
//! [`TOP_LEVEL_KEYS`] and [`SERVICE_KEYS`]; `x-*` extension keys are ignored
//! anywhere compose allows them, and `version` is ignored.

mod mounts;
mod order;
mod ports;
mod service;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::{Protocol, TemplateError};
use yaml::{Reader, line};

/// Top-level keys of the subset (plus `x-*`).
pub const TOP_LEVEL_KEYS: &[&str] = &["services", "volumes", "networks", "name", "version"];
/// Service keys of the subset (plus `x-*`).
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "depends_on",
    "healthcheck",
    "restart",
    "networks",
    "labels",
    "working_dir",
    "user",
];

/// A parsed and checked compose file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compose {
    /// The project name, if the file sets one.
    pub name: Option<String>,
    pub services: BTreeMap<String, Service>,
    /// Service names in the order the file declares them.
    pub service_order: Vec<String>,
    /// Named volumes declared at the top level.
    pub volumes: BTreeMap<String, Volume>,
    /// Networks declared at the top level (`default` is implied).
    pub networks: BTreeSet<String>,
}

/// A named volume declaration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Volume {
    pub labels: BTreeMap<String, String>,
}

/// One service: a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub image: String,
    /// Overrides the image's command; a string is split as a shell would.
    pub command: Option<Vec<String>>,
    /// Overrides the image's entrypoint; a string is split as a shell would.
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    /// Env files as paths inside the template (resolved against the compose
    /// file's folder); `environment` wins over them.
    pub env_file: Vec<String>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<Mount>,
    /// Services to start first, and what to wait for.
    pub depends_on: BTreeMap<String, Condition>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Option<Restart>,
    /// Networks to join; empty means `default`.
    pub networks: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl Service {
    /// `registry.lan/web:1, ports 8080:80, depends on db (healthy)`
    pub fn summary(&self) -> String {
        let mut s = self.image.clone();
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|p| match p.published {
                    Some(h) => format!("{h}:{}", p.target),
                    None => p.target.to_string(),
                })
                .collect();
            s.push_str(&format!(", ports {}", ports.join(" ")));
        }
        if !self.depends_on.is_empty() {
            let deps: Vec<String> = self
                .depends_on
                .iter()
                .map(|(n, c)| match c {
                    Condition::ServiceStarted => n.clone(),
                    Condition::ServiceHealthy => format!("{n} (healthy)"),
                    Condition::ServiceCompletedSuccessfully => format!("{n} (completed)"),
                })
                .collect();
            s.push_str(&format!(", depends on {}", deps.join(", ")));
        }
        s
    }
}

/// A container port, optionally published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// The port inside the container.
    pub target: u16,
    /// The host port; `None`: not bound to a fixed host port.
    pub published: Option<u16>,
    /// The host address to bind; `None`: all.
    pub host_ip: Option<IpAddr>,
    pub protocol: Protocol,
}

/// A mount into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// What a mount mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A fresh volume for this container (`- /var/lib/x`).
    Anonymous,
    /// A named volume declared at the top level (`- data:/var/lib/x`).
    Volume(String),
    /// A file or folder of the template (`- ./conf:/etc/x`), as its path
    /// inside the template ("" for the template's root folder).
    Template(String),
    /// An absolute path on the machine that runs the environment.
    Host(String),
}

/// What `depends_on` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

/// A container healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `None`: the image's own test, with the timings below.
    pub test: Option<HealthTest>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

/// A healthcheck's test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    /// `["CMD", args…]`: run without a shell.
    Cmd(Vec<String>),
    /// `"cmd"` or `["CMD-SHELL", "cmd"]`: run with `/bin/sh -c`.
    Shell(String),
    /// `["NONE"]` or `disable: true`: no healthcheck, not even the image's.
    Disabled,
}

/// A restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    OnFailure { max_retries: Option<u32> },
    UnlessStopped,
}

impl Compose {
    /// Parses and checks a compose file that uses no variables: `${VAR}`
    /// without a default is an error naming it. `file` is the compose file's
    /// path inside the template; relative paths resolve against its folder.
    pub fn parse(yaml: &str, file: &str) -> Result<Compose, TemplateError> {
        Compose::interpolated(yaml, file, &BTreeMap::new())
    }

    /// Parses and checks a compose file, substituting `vars` into its values
    /// (not its keys) as Docker Compose does; see [`super::interpolate`].
    pub fn interpolated(
        yaml: &str,
        file: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Compose, TemplateError> {
        read(yaml, file, vars, None)
    }

    /// The images the services use, each once, in declaration order.
    pub fn images(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in self
            .service_order
            .iter()
            .filter_map(|n| self.services.get(n))
        {
            if !out.contains(&s.image.as_str()) {
                out.push(&s.image);
            }
        }
        out
    }

    /// Rewrites every image with [`qualify_image`].
    pub fn qualify_images(&mut self, registry: &str) {
        for s in self.services.values_mut() {
            s.image = qualify_image(&s.image, registry);
        }
    }

    /// Service names in an order that starts each after what it depends on;
    /// services that do not depend on each other keep declaration order.
    pub fn startup_order(&self) -> Vec<&str> {
        order::startup_order(self)
    }
}

impl Healthcheck {
    pub fn is_disabled(&self) -> bool {
        self.test == Some(HealthTest::Disabled)
    }
}

/// Prefixes an image that names no registry with `registry`, the way Docker
/// names Docker Hub images: `postgres:16` → `reg.lan:5000/library/postgres:16`,
/// `team/app` → `reg.lan:5000/team/app`. An image whose first component is a
/// host (holds '.' or ':', or is `localhost`) already names its registry and is
/// returned unchanged, `docker.io/…` included.
pub fn qualify_image(image: &str, registry: &str) -> String {
    let registry = registry.trim_end_matches('/');
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => image.to_string(),
        Some(_) => format!("{registry}/{image}"),
        None => format!("{registry}/library/{image}"),
    }
}

/// Reads a compose file; with `files`, also checks that the template files it
/// references exist.
pub(crate) fn read(
    yaml: &str,
    file: &str,
    vars: &BTreeMap<String, String>,
    files: Option<&BTreeSet<&str>>,
) -> Result<Compose, TemplateError> {
    let root = yaml::load(yaml, file)?;
    let r = Reader { file, vars, files };
    if !yaml::is_mapping(&root) {
        return Err(r.err(
            line(&root),
            "services",
            "the file must be a mapping with 'services:' at its top",
        ));
    }
    let top = r.mapping(&root, "")?;
    r.only(&top, TOP_LEVEL_KEYS, "", "at the top level")?;
    let get = |k: &str| top.iter().find(|e| e.key == k);
    let mut compose = Compose::default();
    if let Some(e) = get("name") {
        let name = r.non_empty(e.value, "name")?;
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
        {
            return Err(r.err(
                line(e.value),
                "name",
                format!("project name '{name}': use a-z, 0-9, '_' and '-'"),
            ));
        }
        compose.name = Some(name);
    }
    if let Some(e) = get("volumes").filter(|e| !yaml::is_null(e.value)) {
        for v in r.mapping(e.value, "volumes")? {
            let key = format!("volumes.{}", v.key);
            service::check_object_name(&r, v.line, &key, "volume", &v.key)?;
            let mut volume = Volume::default();
            if !yaml::is_empty_decl(v.value) {
                let opts = r.mapping(v.value, &key)?;
                r.only(&opts, &["labels"], &key, &format!("in volume '{}'", v.key))?;
                if let Some(l) = opts.iter().find(|o| o.key == "labels") {
                    volume.labels = r.key_values(l.value, &format!("{key}.labels"), Some(""))?;
                }
            }
            compose.volumes.insert(v.key, volume);
        }
    }
    if let Some(e) = get("networks").filter(|e| !yaml::is_null(e.value)) {
        for n in r.mapping(e.value, "networks")? {
            let key = format!("networks.{}", n.key);
            service::check_object_name(&r, n.line, &key, "network", &n.key)?;
            if !yaml::is_empty_decl(n.value) {
                let opts = r.mapping(n.value, &key)?;
                r.only(&opts, &[], &key, &format!("in network '{}'", n.key))?;
            }
            compose.networks.insert(n.key);
        }
    }
    let Some(services) = get("services") else {
        return Err(r.err(
            1,
            "services",
            "missing 'services': a compose file lists its containers under services:",
        ));
    };
    let entries = if yaml::is_null(services.value) {
        Vec::new()
    } else {
        r.mapping(services.value, "services")?
    };
    for e in &entries {
        service::check_object_name(
            &r,
            e.line,
            &format!("services.{}", e.key),
            "service",
            &e.key,
        )?;
        compose.service_order.push(e.key.clone());
    }
    let base = file.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut lines = BTreeMap::new();
    let mut published: Vec<(PortMapping, &str)> = Vec::new();
    for e in &entries {
        let ctx = service::Context {
            name: &e.key,
            line: e.line,
            compose: &compose,
            base,
        };
        let (svc, svc_lines) = service::read(&r, &ctx, e.value)?;
        for (p, l) in svc.ports.iter().zip(&svc_lines.ports) {
            let Some(port) = p.published else { continue };
            let clash = published.iter().find(|(q, _)| {
                q.published == Some(port)
                    && q.protocol == p.protocol
                    && (q.host_ip == p.host_ip || q.host_ip.is_none() || p.host_ip.is_none())
            });
            if let Some((_, other)) = clash {
                return Err(r.err(
                    *l,
                    &format!("services.{}.ports", e.key),
                    format!(
                        "host port {port}/{} is published by service '{other}' already: \
                         choose another host port",
                        p.protocol
                    ),
                ));
            }
            published.push((*p, &e.key));
        }
        compose.services.insert(e.key.clone(), svc);
        lines.insert(e.key.clone(), svc_lines);
    }
    order::check_dependencies(&r, &compose, &lines)?;
    Ok(compose)
}

#[cfg(test)]
mod tests;
