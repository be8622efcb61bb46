//! Host facts (sysinfo) and capability probes (KVM device, libvirt, Docker).

use std::path::Path;
use std::time::Duration;

use metrom_protocol::facts::{Capabilities, DiskFact, HostFacts, HostLoad, Probe};
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

/// How long a capability probe may take before it counts as "not answering".
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Filesystems that are not real storage.
const PSEUDO_FS: &[&str] = &[
    "overlay",
    "tmpfs",
    "devtmpfs",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup2",
    "nsfs",
    "fuse.lxcfs",
];

/// Gathers the static facts sent in Hello.
pub async fn gather(data_dir: &Path, libvirt_uri: &str, docker_socket: &str) -> HostFacts {
    let data_dir = data_dir.to_path_buf();
    let (base, capabilities) = tokio::join!(
        tokio::task::spawn_blocking(move || static_facts(&data_dir)),
        probe_all(libvirt_uri, docker_socket)
    );
    let mut facts = base.unwrap_or_default();
    facts.capabilities = capabilities;
    facts
}

fn static_facts(data_dir: &Path) -> HostFacts {
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    let cpus = sys.as_ref().map(|s| s.cpus()).unwrap_or_default();
    let disks = disk_facts();
    let storage = storage_of(&disks, data_dir);
    HostFacts {
        hostname: System::host_name().unwrap_or_else(|_| "unknown".into()),
        os: System::long_os_version().unwrap_or_else(|_| "unknown".into()),
        kernel: System::kernel_version().unwrap_or_else(|_| "unknown".into()),
        arch: std::env::consts::ARCH.to_string(),
        cpus: cpus.len() as u32,
        cpu_model: cpus
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        memory_bytes: sys.as_ref().map(|s| s.total_memory()).unwrap_or_default(),
        disks,
        storage,
        capabilities: Capabilities::default(),
        agent_version: metrom_protocol::BUILD_VERSION.to_string(),
        runtimes: Vec::new(),
    }
}

fn disk_facts() -> Vec<DiskFact> {
    let Ok(disks) = Disks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut out: Vec<DiskFact> = disks
        .iter()
        .filter(|d| !PSEUDO_FS.contains(&d.file_system().to_string_lossy().as_ref()))
        .map(|d| DiskFact {
            mount: d.mount_point().to_string_lossy().into_owned(),
            device: d.name().to_string_lossy().into_owned(),
            filesystem: d.file_system().to_string_lossy().into_owned(),
            total_bytes: d.total_space(),
            available_bytes: d.available_space(),
        })
        .collect();
    out.sort_by(|a, b| a.mount.cmp(&b.mount));
    out.dedup_by(|a, b| a.mount == b.mount);
    out
}

/// The disk holding `dir`: the mount point that is its longest prefix.
fn storage_of(disks: &[DiskFact], dir: &Path) -> DiskFact {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    disks
        .iter()
        .filter(|d| dir.starts_with(&d.mount))
        .max_by_key(|d| d.mount.len())
        .cloned()
        .unwrap_or_default()
}

/// Samples load for heartbeats. Keeps the CPU counters between samples.
pub struct LoadSampler {
    sys: Option<System>,
    data_dir: std::path::PathBuf,
}

impl LoadSampler {
    pub fn new(data_dir: &Path) -> LoadSampler {
        let mut sys = System::new().ok();
        if let Some(s) = sys.as_mut() {
            s.refresh_cpu_usage();
        }
        LoadSampler {
            sys,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn sample(&mut self) -> HostLoad {
        let (cpu_percent, memory_available_bytes) = match self.sys.as_mut() {
            Some(sys) => {
                sys.refresh_cpu_usage();
                sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                (sys.global_cpu_usage(), sys.available_memory())
            }
            None => (0.0, 0),
        };
        let storage = storage_of(&disk_facts(), &self.data_dir);
        HostLoad {
            load1: System::load_average()
                .map(|l| l.one as f32)
                .unwrap_or_default(),
            cpu_percent,
            memory_available_bytes,
            storage_available_bytes: storage.available_bytes,
        }
    }
}

/// Probes KVM, libvirt and Docker concurrently.
pub async fn probe_all(libvirt_uri: &str, docker_socket: &str) -> Capabilities {
    let (kvm, libvirt, docker) = tokio::join!(
        probe_kvm(),
        probe_libvirt(libvirt_uri),
        probe_docker(docker_socket)
    );
    Capabilities {
        kvm,
        libvirt,
        docker,
    }
}

/// `/dev/kvm` exists and this process can open it read-write.
pub async fn probe_kvm() -> Probe {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Probe::ok("/dev/kvm"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::missing(
            "/dev/kvm does not exist (no hardware virtualisation, or the kvm module is not loaded)",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Probe::missing("/dev/kvm is not accessible: run the agent as root or in the kvm group")
        }
        Err(e) => Probe::missing(format!("/dev/kvm: {e}")),
    }
}

/// The libvirt daemon answers at `uri`.
pub async fn probe_libvirt(uri: &str) -> Probe {
    let uri = uri.to_string();
    let task = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut conn = virt::connect::Connect::open(Some(&uri)).map_err(|e| e.to_string())?;
        let version = conn.get_lib_version().map_err(|e| e.to_string())?;
        let _ = conn.close();
        Ok(format!(
            "libvirt {}.{}.{} at {uri}",
            version / 1_000_000,
            (version / 1000) % 1000,
            version % 1000
        ))
    });
    match tokio::time::timeout(PROBE_TIMEOUT, task).await {
        Ok(Ok(Ok(v))) => Probe::ok(v),
        Ok(Ok(Err(e))) => Probe::missing(format!("libvirt not reachable: {}", first_line(&e))),
        Ok(Err(e)) => Probe::missing(format!("libvirt probe failed: {e}")),
        Err(_) => Probe::missing("libvirt did not answer within 5s"),
    }
}

/// The Docker Engine answers on `socket` (at an API version both sides speak).
pub async fn probe_docker(socket: &str) -> Probe {
    let docker = match crate::runtime::docker::connect(socket).await {
        Ok(d) => d,
        Err(why) => return Probe::missing(why),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, docker.version()).await {
        Ok(Ok(v)) => Probe::ok(format!(
            "Docker {} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        )),
        Ok(Err(e)) => Probe::missing(format!("Docker not answering on {socket}: {e}")),
        Err(_) => Probe::missing(format!("Docker did not answer on {socket} within 5s")),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_the_longest_matching_mount() {
        let d = |m: &str| DiskFact {
            mount: m.into(),
            ..Default::default()
        };
        let disks = vec![d("/"), d("/var"), d("/var/lib/metrom")];
        assert_eq!(
            storage_of(&disks, Path::new("/var/lib/metrom/agent")).mount,
            "/var/lib/metrom"
        );
        assert_eq!(storage_of(&disks, Path::new("/home/x")).mount, "/");
    }

    #[tokio::test]
    async fn facts_describe_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let f = gather(dir.path(), "test:///default", "/nonexistent.sock").await;
        assert!(f.cpus >= 1);
        assert!(f.memory_bytes > 0);
        assert!(!f.hostname.is_empty());
        assert!(f.storage.total_bytes > 0, "{:?}", f.storage);
        assert!(!f.capabilities.docker.available);
        assert!(f.capabilities.docker.detail.contains("/nonexistent.sock"));
        // libvirt's built-in test driver needs no daemon.
        assert!(
            f.capabilities.libvirt.available,
            "{:?}",
            f.capabilities.libvirt
        );
    }
}
