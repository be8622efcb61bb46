//! The `kvm` runtime: an environment is a libvirt/QEMU VM.
//!
//! - Root disk: a qcow2 overlay in the `metrom` storage pool whose backing
//!   file is the cached base image (never a copy); several VMs share one image.
//! - Data disk: a separate qcow2 volume that survives `rebuild`, mounted at
//!   `/data` by cloud-init.
//! - Seed: a NoCloud ISO (volume label `cidata`) with user-data generated from
//!   the template (see `metrom_protocol::cloudinit`).
//! - Network: the `metrom` NAT network (created when missing); exposed ports
//!   are relayed from the host (see `forward`).
//! - Status: the QEMU guest agent (address, provisioning markers, services).

mod accel;
mod forward;
mod guest;
mod libvirt;
mod xml;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrom_protocol::cloudinit::{self, GuestSettings};
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{EnvDetail, EnvSpec, Power, RuntimeKind};
use metrom_protocol::template::{self, Template};
use tracing::{info, warn};
use virt::domain::Domain;
use virt::storage_pool::StoragePool;

pub use accel::Accel;
use accel::Acceleration;
use forward::{Exposed, Forwarder};
use guest::{Guest, Provisioning};
use libvirt::{Libvirt, LibvirtError};

use super::{Observed, Progress, Runtime, RuntimeError};
use crate::images::ImageCache;
use crate::link::Link;

/// Settings of the kvm runtime (from agent.toml).
#[derive(Debug, Clone)]
pub struct KvmSettings {
    pub uri: String,
    /// libvirt network name, its bridge and the gateway/prefix of its subnet.
    pub network: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// libvirt storage pool name and folder (overlays, data disks, seeds).
    pub pool: String,
    pub pool_dir: PathBuf,
    /// Per-environment files (console logs, port allocations).
    pub state_dir: PathBuf,
    pub image_dir: PathBuf,
    pub image_cache_max: u64,
    pub port_range: (u16, u16),
    pub stop_timeout: Duration,
    pub acceleration: Accel,
    /// Size of each environment's data disk.
    pub data_disk_bytes: u64,
}

pub struct KvmRuntime {
    lv: Arc<Libvirt>,
    settings: KvmSettings,
    cache: ImageCache,
    forwards: Forwarder,
    accel: Acceleration,
}

impl KvmRuntime {
    /// Connects to libvirt, makes sure the network and the pool exist, and
    /// decides the acceleration.
    pub async fn open(settings: KvmSettings, link: Arc<Link>) -> Result<KvmRuntime, RuntimeError> {
        // QEMU runs as its own user and must reach the disks under the agent's
        // data directory: let others traverse it (not list it; the identity
        // file inside stays 0600).
        if let Some(data_dir) = settings.state_dir.parent() {
            set_mode(data_dir, 0o711);
        }
        let mut closed_seen = std::collections::BTreeSet::new();
        for dir in [&settings.pool_dir, &settings.state_dir, &settings.image_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::Failed(format!("{}: {e}", dir.display())))?;
            // QEMU runs as its own user: it must be able to reach the disks.
            set_mode(dir, 0o755);
            if let Some(closed) = closed_ancestor(dir).filter(|c| closed_seen.insert(c.clone())) {
                tracing::warn!(
                    "QEMU, which libvirt runs as its own user, may not reach {}: {} lets only its owner in; \
                     allow others to traverse it (chmod o+x {}) or give the agent a data folder outside it",
                    dir.display(),
                    closed.display(),
                    closed.display()
                );
            }
        }
        let lv = Libvirt::new(&settings.uri);
        let net_xml = xml::network(
            &settings.network,
            &settings.bridge,
            settings.gateway,
            settings.prefix,
        );
        let (net, pool, pool_dir) = (
            settings.network.clone(),
            settings.pool.clone(),
            settings.pool_dir.clone(),
        );
        lv.call(move |c| {
            libvirt::ensure_network(c, &net, &net_xml)?;
            libvirt::ensure_pool(c, &pool, &pool_dir.to_string_lossy()).map(|r| r.map(|_| ()))
        })
        .await
        .map_err(unavailable)?
        .map_err(RuntimeError::Invalid)?;
        let accel = Acceleration::decide(&lv, settings.acceleration, &settings.state_dir).await;
        Ok(KvmRuntime {
            cache: ImageCache::new(&settings.image_dir, settings.image_cache_max, link),
            forwards: Forwarder::new(&settings.state_dir, settings.port_range),
            lv,
            accel,
            settings,
        })
    }

    fn domain_name(spec: &EnvSpec) -> String {
        format!("metrom-{}", spec.name)
    }

    fn root_volume(env: &EnvId) -> String {
        format!("{env}-root.qcow2")
    }

    fn data_volume(env: &EnvId) -> String {
        format!("{env}-data.qcow2")
    }

    fn seed_path(&self, env: &EnvId) -> PathBuf {
        self.settings.pool_dir.join(format!("{env}-seed.iso"))
    }

    fn env_dir(&self, env: &EnvId) -> PathBuf {
        self.settings.state_dir.join(env.as_str())
    }

    /// Digests of the base images VMs on this host are backed by.
    async fn images_in_use(&self) -> HashSet<String> {
        self.lv
            .call(libvirt::metrom_domains)
            .await
            .map(|l| l.into_iter().map(|(_, m)| m.image_digest).collect())
            .unwrap_or_default()
    }

    /// Ports the environment exposes: the template's `[[ports]]` and the
    /// compose services' published ports.
    fn exposed(t: &Template, params: &std::collections::BTreeMap<String, String>) -> Vec<Exposed> {
        let mut out: Vec<Exposed> = t
            .manifest
            .ports
            .iter()
            .map(|p| Exposed {
                name: p.name.clone(),
                guest_port: p.port,
            })
            .collect();
        if let Ok(compose) = t.compose_for(params) {
            for (svc, s) in &compose.services {
                for p in &s.ports {
                    if let Some(published) = p.published {
                        out.push(Exposed {
                            name: format!("{svc}:{}", p.target),
                            guest_port: published,
                        });
                    }
                }
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.guest_port == b.guest_port);
        out
    }

    /// The registry as the guest reaches it: the host's loopback becomes the
    /// gateway of the VM network.
    fn guest_registry(&self, registry: Option<String>) -> Option<String> {
        registry.map(|r| {
            let (host, port) = r
                .split_once(':')
                .map(|(h, p)| (h.to_string(), Some(p.to_string())))
                .unwrap_or((r.clone(), None));
            let host = if host == "localhost" || host.starts_with("127.") {
                self.settings.gateway.to_string()
            } else {
                host
            };
            match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
    }

    async fn write_seed(&self, spec: &EnvSpec, t: &Template) -> Result<PathBuf, RuntimeError> {
        let mut guest = GuestSettings::from_site(&spec.site, t);
        guest.data_disk = Some("/dev/vdb".into());
        guest.registry = self.guest_registry(guest.registry);
        let seed =
            cloudinit::seed(spec, t, &guest).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let dir = tempfile::tempdir().map_err(|e| RuntimeError::Failed(format!("seed: {e}")))?;
        std::fs::write(dir.path().join("user-data"), &seed.user_data)
            .map_err(|e| RuntimeError::Failed(format!("seed: {e}")))?;
        std::fs::write(dir.path().join("meta-data"), &seed.meta_data)
            .map_err(|e| RuntimeError::Failed(format!("seed: {e}")))?;
        let out = self.seed_path(&spec.env_id);
        let tmp = out.with_extension("iso.tmp");
        let status = tokio::process::Command::new("genisoimage")
            .arg("-quiet")
            .arg("-output")
            .arg(&tmp)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .arg(dir.path().join("user-data"))
            .arg(dir.path().join("meta-data"))
            .status()
            .await
            .map_err(|e| RuntimeError::Failed(format!("genisoimage: {e} (install genisoimage)")))?;
        if !status.success() {
            return Err(RuntimeError::Failed(format!(
                "genisoimage failed ({status})"
            )));
        }
        std::fs::rename(&tmp, &out).map_err(|e| RuntimeError::Failed(format!("seed: {e}")))?;
        Ok(out)
    }

    /// Defines the domain (replacing a definition of the same name) and starts it.
    async fn define(&self, d: &xml::DomainSpec, start: bool) -> Result<(), LibvirtError> {
        let text = xml::domain(d);
        self.lv
            .call(move |c| {
                let dom = Domain::define_xml(c, &text)?;
                if start && let Err(e) = dom.create() {
                    let _ = dom.undefine();
                    return Err(e);
                }
                Ok(())
            })
            .await
    }

    /// Stops relays and frees what only a deleted environment holds.
    fn forget(&self, env: &EnvId, keep_data: bool) {
        if keep_data {
            self.forwards.stop(env);
        } else {
            self.forwards.release(env);
            let _ = std::fs::remove_dir_all(self.env_dir(env));
        }
    }
}

#[async_trait]
impl Runtime for KvmRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Kvm
    }

    async fn observe(&self, spec: &EnvSpec) -> Result<Observed, RuntimeError> {
        let name = Self::domain_name(spec);
        let n = name.clone();
        let state = self
            .lv
            .call(move |c| libvirt::domain_state(c, &n))
            .await
            .map_err(unavailable)?;
        let Some(state) = state else {
            self.forwards.stop(&spec.env_id);
            return Ok(Observed::Missing);
        };
        let meta = state.metadata.clone().unwrap_or_default();
        if meta.env_id != spec.env_id.as_str() {
            return Err(RuntimeError::Failed(format!(
                "a VM named {name} exists but belongs to {}; it must be removed first",
                if meta.env_id.is_empty() {
                    "something else".to_string()
                } else {
                    meta.env_id.clone()
                }
            )));
        }
        let build = meta.build;
        if state.stuck() {
            if self.accel.kvm_failed(&name) {
                // Recreate it under TCG, keeping its data: report it gone.
                self.destroy(&spec.env_id, true).await?;
                return Ok(Observed::Missing);
            }
            return Ok(Observed::Failed {
                build,
                reason: format!("the VM {name} is paused by QEMU (an internal or I/O error)"),
            });
        }
        if !state.running() {
            self.forwards.stop(&spec.env_id);
            return Ok(Observed::Stopped {
                build,
                detail: EnvDetail {
                    runtime: "kvm".into(),
                    instance: name,
                    ..Default::default()
                },
            });
        }
        let guest = Guest::new(self.lv.clone(), &name);
        let provisioning = guest.provisioning().await;
        let addresses = if provisioning == Provisioning::Booting {
            Vec::new()
        } else {
            guest.addresses().await
        };
        let t = template::parse(spec.template.files.clone())
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let params = spec.params.iter().cloned().collect();
        let ports = self
            .forwards
            .allocate(&spec.env_id, &Self::exposed(&t, &params));
        if let Some(ip) = addresses.iter().find_map(|a| a.parse::<Ipv4Addr>().ok()) {
            self.forwards.ensure(&spec.env_id, ip, &ports);
        }
        let mut detail = EnvDetail {
            runtime: "kvm".into(),
            instance: name,
            addresses,
            ports,
            ..Default::default()
        };
        Ok(match provisioning {
            Provisioning::Booting => {
                detail.message = "booting (waiting for the guest agent)".into();
                Observed::Running {
                    build,
                    ready: false,
                    detail,
                }
            }
            Provisioning::InProgress(phase) => {
                detail.message = match phase {
                    Some(p) => format!("provisioning: {p}"),
                    None => "provisioning (cloud-init)".into(),
                };
                Observed::Running {
                    build,
                    ready: false,
                    detail,
                }
            }
            Provisioning::Ready => {
                if !t.compose.services.is_empty() {
                    detail.services = guest.services(&format!("metrom-{}", spec.name)).await;
                }
                Observed::Running {
                    build,
                    ready: true,
                    detail,
                }
            }
            Provisioning::Failed(reason) => Observed::Failed { build, reason },
        })
    }

    async fn create(&self, spec: &EnvSpec, progress: &Progress) -> Result<(), RuntimeError> {
        let name = Self::domain_name(spec);
        let n = name.clone();
        if let Some(s) = self
            .lv
            .call(move |c| libvirt::domain_state(c, &n))
            .await
            .map_err(unavailable)?
            && s.metadata
                .as_ref()
                .is_some_and(|m| m.env_id == spec.env_id.as_str() && m.build == spec.build)
        {
            return Ok(()); // already made (a retried command, or a restart half-way)
        }
        let t = template::parse(spec.template.files.clone())
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let image = spec.image.clone().ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "template {} names no base image (`image = …` in metrom.toml); the kvm runtime boots VMs from one",
                t.manifest.name
            ))
        })?;
        let started = Instant::now();
        let in_use = self.images_in_use().await;
        let base = self
            .cache
            .ensure(&image, &in_use, progress)
            .await
            .map_err(|e| RuntimeError::Failed(crate::error_chain(&e)))?;
        progress.say("creating the disks");
        let capacity =
            (spec.resources.disk_gb << 30).max(virtual_size(&base, &image.format).unwrap_or(0));
        let root_xml = xml::volume(
            &Self::root_volume(&spec.env_id),
            capacity,
            Some((&base.to_string_lossy(), &image.format)),
        );
        let data_xml = xml::volume(
            &Self::data_volume(&spec.env_id),
            self.settings.data_disk_bytes,
            None,
        );
        let (pool, root_name, data_name) = (
            self.settings.pool.clone(),
            Self::root_volume(&spec.env_id),
            Self::data_volume(&spec.env_id),
        );
        let (root, data) = self
            .lv
            .call(move |c| {
                let pool = StoragePool::lookup_by_name(c, &pool)?;
                let root = libvirt::ensure_volume(&pool, &root_name, &root_xml)?;
                let data = libvirt::ensure_volume(&pool, &data_name, &data_xml)?;
                Ok((root, data))
            })
            .await
            .map_err(|e| disk_error(e, &self.settings.pool_dir))?;
        progress.say("writing the cloud-init seed");
        let seed = self.write_seed(spec, &t).await?;
        let env_dir = self.env_dir(&spec.env_id);
        std::fs::create_dir_all(&env_dir)
            .map_err(|e| RuntimeError::Failed(format!("{}: {e}", env_dir.display())))?;
        set_mode(&env_dir, 0o755);
        let mut dspec = xml::DomainSpec {
            name: name.clone(),
            title: format!("Metrom environment {} of {}", spec.name, spec.owner),
            env_id: spec.env_id.to_string(),
            build: spec.build,
            image_digest: image.digest.clone(),
            domain_type: self.accel.domain_type(),
            vcpus: spec.resources.vcpus.max(1),
            memory_mib: spec.resources.memory_mb.max(128),
            root_disk: root,
            data_disk: data,
            seed_iso: seed.to_string_lossy().into_owned(),
            network: self.settings.network.clone(),
            mac: xml::mac_for(spec.env_id.as_str()),
            console_log: env_dir.join("console.log").to_string_lossy().into_owned(),
        };
        let start = spec.power == Power::Running;
        progress.say(if start {
            "starting the VM"
        } else {
            "defining the VM"
        });
        let result = self.define(&dspec, start).await;
        let result = match result {
            // QEMU itself may refuse KVM at start (a nested hypervisor that
            // cannot set up the vCPU): with `auto`, fall back to TCG.
            Err(e) if dspec.domain_type == "kvm" && self.accel.kvm_failed(&name) => {
                warn!(domain = %name, "starting under KVM failed ({e}); retrying with TCG");
                dspec.domain_type = self.accel.domain_type();
                self.define(&dspec, start).await
            }
            other => other,
        };
        result.map_err(|e| RuntimeError::Failed(format!("defining VM {name}: {e}")))?;
        info!(env_id = %spec.env_id, domain = %Self::domain_name(spec), "VM created in {:.1}s ({})", started.elapsed().as_secs_f64(), self.accel.domain_type());
        Ok(())
    }

    async fn start(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        let name = Self::domain_name(spec);
        self.lv
            .call(move |c| Domain::lookup_by_name(c, &name)?.create().map(|_| ()))
            .await
            .map_err(unavailable)
    }

    async fn stop(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        self.forwards.stop(&spec.env_id);
        self.shut_down(&Self::domain_name(spec)).await
    }

    async fn destroy(&self, env: &EnvId, keep_data: bool) -> Result<(), RuntimeError> {
        if keep_data {
            // The data disk outlives this VM: let the guest flush it first.
            let id = env.to_string();
            let names = self
                .lv
                .call(libvirt::metrom_domains)
                .await
                .map_err(unavailable)?;
            for (name, _) in names.into_iter().filter(|(_, m)| m.env_id == id) {
                self.shut_down(&name).await?;
            }
        }
        let envs = env.to_string();
        let pool = self.settings.pool.clone();
        let (root, data) = (Self::root_volume(env), Self::data_volume(env));
        self.lv
            .call(move |c| {
                for (name, meta) in libvirt::metrom_domains(c)? {
                    if meta.env_id != envs {
                        continue;
                    }
                    let d = Domain::lookup_by_name(c, &name)?;
                    if d.is_active()? {
                        d.destroy()?;
                    }
                    d.undefine()?;
                }
                let pool = StoragePool::lookup_by_name(c, &pool)?;
                libvirt::delete_volume(&pool, &root)?;
                if !keep_data {
                    libvirt::delete_volume(&pool, &data)?;
                }
                Ok(())
            })
            .await
            .map_err(unavailable)?;
        let _ = std::fs::remove_file(self.seed_path(env));
        self.forget(env, keep_data);
        Ok(())
    }

    async fn counters(&self, spec: &EnvSpec) -> Result<Option<super::Counters>, RuntimeError> {
        let name = Self::domain_name(spec);
        self.lv
            .call(move |c| libvirt::counters(c, &name))
            .await
            .map_err(unavailable)
    }

    async fn instances(&self) -> Result<Vec<EnvId>, RuntimeError> {
        let list = self
            .lv
            .call(libvirt::metrom_domains)
            .await
            .map_err(unavailable)?;
        Ok(list
            .into_iter()
            .filter_map(|(_, m)| EnvId::parse(&m.env_id).ok())
            .collect())
    }
}

impl KvmRuntime {
    /// ACPI shutdown, then power off after the stop timeout.
    async fn shut_down(&self, name: &str) -> Result<(), RuntimeError> {
        let name = name.to_string();
        let n = name.clone();
        // ACPI power button first.
        let _ = self
            .lv
            .call(move |c| Domain::lookup_by_name(c, &n)?.shutdown().map(|_| ()))
            .await;
        let deadline = Instant::now() + self.settings.stop_timeout;
        while Instant::now() < deadline {
            let n = name.clone();
            match self
                .lv
                .call(move |c| libvirt::domain_state(c, &n))
                .await
                .map_err(unavailable)?
            {
                Some(s) if s.running() => tokio::time::sleep(Duration::from_millis(500)).await,
                _ => return Ok(()),
            }
        }
        warn!(domain = %name, "no ACPI shutdown within {:?}: powering off", self.settings.stop_timeout);
        let n = name.clone();
        self.lv
            .call(move |c| match Domain::lookup_by_name(c, &n) {
                Ok(d) if d.is_active()? => d.destroy(),
                _ => Ok(()),
            })
            .await
            .map_err(unavailable)
    }
}

fn unavailable(e: LibvirtError) -> RuntimeError {
    match e {
        LibvirtError::Unreachable { .. } => RuntimeError::Unavailable(e.to_string()),
        LibvirtError::Call(m) => RuntimeError::Failed(format!("libvirt: {m}")),
    }
}

/// A disk creation failure; "no space" says so.
fn disk_error(e: LibvirtError, dir: &Path) -> RuntimeError {
    let text = e.to_string();
    if text.contains("No space left") || text.contains("ENOSPC") {
        RuntimeError::Failed(format!(
            "the host's disk is full ({}): free space or move the environment",
            dir.display()
        ))
    } else {
        unavailable(e)
    }
}

/// The virtual size of a base image: a qcow2 header says it, a raw file is its size.
fn virtual_size(path: &Path, format: &str) -> Option<u64> {
    if format == "qcow2" {
        use std::io::Read;
        let mut header = [0u8; 32];
        std::fs::File::open(path)
            .ok()?
            .read_exact(&mut header)
            .ok()?;
        Some(u64::from_be_bytes(header[24..32].try_into().ok()?))
    } else {
        std::fs::metadata(path).ok().map(|m| m.len())
    }
}

/// The first folder above `dir` that others may not traverse (no o+x), which
/// keeps a QEMU running as another user out.
fn closed_ancestor(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().skip(1).find_map(|a| {
        let mode = std::fs::metadata(a).ok()?.permissions().mode();
        (mode & 0o001 == 0).then(|| a.to_path_buf())
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}
