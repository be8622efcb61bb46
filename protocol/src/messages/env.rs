//! Environments as the controller tells agents to run them and as agents report them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::EnvId;

/// Which runtime runs an environment on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuntimeKind {
    /// A libvirt/QEMU virtual machine.
    Kvm,
    /// A compose project on the host's Docker Engine.
    Docker,
    /// Anything else a test or an experiment plugs in (the in-memory fake runtime).
    Fake,
    /// An instance of a cloud account (the controller's cloud broker runs it;
    /// no agent does). Appended: postcard numbers variants by position.
    Cloud,
}

impl RuntimeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuntimeKind::Kvm => "kvm",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Fake => "fake",
            RuntimeKind::Cloud => "cloud",
        }
    }

    pub fn parse(s: &str) -> Option<RuntimeKind> {
        match s {
            "kvm" => Some(RuntimeKind::Kvm),
            "docker" => Some(RuntimeKind::Docker),
            "fake" => Some(RuntimeKind::Fake),
            "cloud" => Some(RuntimeKind::Cloud),
            _ => None,
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resources an environment asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
}

/// Whether the environment should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Power {
    Running,
    Stopped,
}

/// A file of a template version, as stored by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateFile {
    /// Path relative to the template folder, '/'-separated.
    pub path: String,
    pub contents: Vec<u8>,
}

/// A template version shipped with a spec, so the agent needs nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSnapshot {
    pub name: String,
    /// Content digest (`sha256:…`) of the version.
    pub version: String,
    pub files: Vec<TemplateFile>,
}

/// A VM base image the environment boots from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    /// `sha256:` + hex of the image file.
    pub digest: String,
    pub size: u64,
    /// "qcow2" or "raw".
    pub format: String,
}

/// Everything an agent needs to run one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSpec {
    pub env_id: EnvId,
    pub name: String,
    pub owner: String,
    /// Increments on every change of desired state; commands are idempotent by it.
    pub generation: u64,
    /// Increments on every rebuild: a larger build means "recreate from the template".
    pub build: u64,
    pub power: Power,
    pub runtime: RuntimeKind,
    pub resources: Resources,
    pub template: TemplateSnapshot,
    /// Parameters with the template's defaults filled in.
    pub params: Vec<(String, String)>,
    pub image: Option<ImageRef>,
    /// The owner's SSH public keys.
    pub ssh_keys: Vec<String>,
    /// Site settings that shape provisioning (registry mirror, package mirror).
    pub site: SiteSettings,
    /// `docker save` archives in the controller's image store that provide
    /// images of the template (Docker runtime): an agent that lacks one of
    /// these images fetches the archive and loads it instead of pulling.
    pub docker_archives: Vec<DockerArchiveRef>,
}

/// A Docker image archive (`docker save`) the controller can stream to agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerArchiveRef {
    /// `sha256:` + hex of the archive file.
    pub digest: String,
    pub size: u64,
    /// The image references it holds (`repo:tag`, from its `manifest.json`).
    pub images: Vec<String>,
}

impl DockerArchiveRef {
    /// The reference in this archive that provides `image`, if any.
    ///
    /// References are compared the way Docker names them (`busybox` is
    /// `docker.io/library/busybox:latest`). An image that names no registry
    /// (`team/app:1`) is also provided by the same repository and tag saved
    /// from any registry (`registry.lan:5000/team/app:1`): an unqualified name
    /// means "whatever registry the site uses". An image that names a registry
    /// needs exactly that reference.
    pub fn provides(&self, image: &str) -> Option<&str> {
        let want = ImageName::parse(image);
        self.images
            .iter()
            .find(|have| {
                let have = ImageName::parse(have);
                let same_repo = have.path == want.path && have.tag == want.tag;
                same_repo && (have.registry == want.registry || !want.explicit_registry)
            })
            .map(String::as_str)
    }
}

/// An image reference split the way Docker reads it.
#[derive(Debug)]
struct ImageName {
    registry: String,
    path: String,
    /// `:tag` or `@digest`.
    tag: String,
    /// Whether the reference named its registry itself.
    explicit_registry: bool,
}

impl ImageName {
    fn parse(image: &str) -> ImageName {
        let (registry, rest, explicit_registry) = match image.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string(), true)
            }
            _ => ("docker.io".to_string(), image.to_string(), false),
        };
        let (path, tag) = if let Some((p, d)) = rest.split_once('@') {
            (p.to_string(), format!("@{d}"))
        } else {
            match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p.to_string(), format!(":{t}")),
                _ => (rest.clone(), ":latest".to_string()),
            }
        };
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let path = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        ImageName {
            registry,
            path,
            tag,
            explicit_registry,
        }
    }
}

/// Site-wide provisioning settings from the controller's config (`[site]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SiteSettings {
    /// The internal container registry (`host:port`), used as Docker's mirror
    /// and for unqualified images.
    pub registry: Option<String>,
    /// Whether that registry speaks plain HTTP.
    pub registry_insecure: bool,
    /// An APT mirror URL for packages inside environments, for air-gapped sites.
    pub apt_mirror: Option<String>,
}

#[cfg(test)]
mod archive_tests {
    use super::DockerArchiveRef;

    #[test]
    fn archives_provide_images_by_docker_name() {
        let a = DockerArchiveRef {
            digest: "sha256:00".into(),
            size: 1,
            images: vec![
                "busybox:latest".into(),
                "registry.lan:5000/team/app:1".into(),
                "docker.io/library/redis:7".into(),
            ],
        };
        assert_eq!(a.provides("busybox"), Some("busybox:latest"));
        assert_eq!(
            a.provides("docker.io/library/busybox:latest"),
            Some("busybox:latest")
        );
        assert_eq!(a.provides("redis:7"), Some("docker.io/library/redis:7"));
        // Unqualified: any registry's copy of team/app:1 will do.
        assert_eq!(
            a.provides("team/app:1"),
            Some("registry.lan:5000/team/app:1")
        );
        assert_eq!(
            a.provides("registry.lan:5000/team/app:1"),
            Some("registry.lan:5000/team/app:1")
        );
        // A named registry needs exactly that one.
        assert_eq!(a.provides("other.lan/team/app:1"), None);
        assert_eq!(a.provides("team/app:2"), None);
        assert_eq!(a.provides("busybox:1"), None);
    }
}

/// The state of an environment. The controller alone uses Pending, Scheduled
/// and Unknown; agents report the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvState {
    Pending,
    Scheduled,
    Provisioning,
    Running,
    Stopped,
    Failed(String),
    Unknown,
    Deleted,
}

impl EnvState {
    pub fn name(&self) -> &'static str {
        match self {
            EnvState::Pending => "Pending",
            EnvState::Scheduled => "Scheduled",
            EnvState::Provisioning => "Provisioning",
            EnvState::Running => "Running",
            EnvState::Stopped => "Stopped",
            EnvState::Failed(_) => "Failed",
            EnvState::Unknown => "Unknown",
            EnvState::Deleted => "Deleted",
        }
    }
}

impl fmt::Display for EnvState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvState::Failed(reason) => write!(f, "Failed: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A port of the environment reachable from outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub name: String,
    /// Port inside the VM or container.
    pub guest_port: u16,
    /// Port on the host's address.
    pub host_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
}

/// One compose service's state inside the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// "running", "exited", "created", …
    pub state: String,
    /// "healthy", "unhealthy", "starting" or "" when there is no healthcheck.
    pub health: String,
}

/// What a runtime knows about a running environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EnvDetail {
    /// "kvm", "docker", "fake".
    pub runtime: String,
    /// The runtime's name for the instance (domain name, compose project).
    pub instance: String,
    pub addresses: Vec<String>,
    pub ports: Vec<PortMapping>,
    pub services: Vec<ServiceStatus>,
    /// Free text: the last step taken, or what is being waited for.
    pub message: String,
}

/// An agent's report of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvReport {
    pub env_id: EnvId,
    /// Generation of the spec the agent was acting on.
    pub generation: u64,
    /// Build of the instance that exists now.
    pub build: u64,
    pub state: EnvState,
    pub detail: EnvDetail,
}
