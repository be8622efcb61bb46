//! The thin layer over libvirt (the `virt` crate): one shared connection,
//! reopened when libvirtd went away, and every call run on a blocking thread.

use std::sync::{Arc, Mutex};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::network::Network;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;

use super::xml::{self, METADATA_NS, Metadata};

/// A libvirt failure, as the environment's owner will read it.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("libvirt at {uri} is not reachable: {message}")]
    Unreachable { uri: String, message: String },
    #[error("libvirt: {0}")]
    Call(String),
}

/// What the runtime needs to know about a domain.
#[derive(Debug, Clone)]
pub struct DomainState {
    pub state: sys::virDomainState,
    pub reason: i32,
    pub metadata: Option<Metadata>,
}

impl DomainState {
    pub fn running(&self) -> bool {
        self.state == sys::VIR_DOMAIN_RUNNING || self.state == sys::VIR_DOMAIN_BLOCKED
    }

    /// Paused without anyone asking: QEMU stopped the vCPU (a KVM internal error, an I/O error).
    pub fn stuck(&self) -> bool {
        self.state == sys::VIR_DOMAIN_PAUSED && self.reason != sys::VIR_DOMAIN_PAUSED_USER as i32
    }
}

pub struct Libvirt {
    uri: String,
    conn: Mutex<Option<Connect>>,
}

impl Libvirt {
    pub fn new(uri: &str) -> Arc<Libvirt> {
        Arc::new(Libvirt {
            uri: uri.to_string(),
            conn: Mutex::new(None),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T, LibvirtError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, virt::error::Error> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.with(f))
            .await
            .map_err(|e| LibvirtError::Call(format!("libvirt call panicked: {e}")))?
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connect) -> Result<T, virt::error::Error>,
    ) -> Result<T, LibvirtError> {
        let mut guard = self.conn.lock().expect("libvirt lock");
        if guard.as_ref().map(|c| c.is_alive().unwrap_or(false)) != Some(true) {
            if let Some(mut old) = guard.take() {
                let _ = old.close();
            }
            let c = Connect::open(Some(&self.uri)).map_err(|e| LibvirtError::Unreachable {
                uri: self.uri.clone(),
                message: e.message().to_string(),
            })?;
            *guard = Some(c);
        }
        let conn = guard.as_ref().expect("connected");
        let result = f(conn);
        let alive = result.is_ok() || conn.is_alive().unwrap_or(false);
        result.map_err(|e| {
            // A system or RPC error is the daemon going away only when the
            // connection died with it; otherwise (a file QEMU may not open, …)
            // it is the call's own failure.
            if matches!(e.code(), ErrorNumber::SystemError | ErrorNumber::Rpc) && !alive {
                // The daemon went away: reconnect next time.
                if let Some(mut c) = guard.take() {
                    let _ = c.close();
                }
                LibvirtError::Unreachable {
                    uri: self.uri.clone(),
                    message: e.message().to_string(),
                }
            } else {
                LibvirtError::Call(e.message().to_string())
            }
        })
    }
}

/// Whether an error means "no such object".
pub fn not_found(e: &virt::error::Error) -> bool {
    matches!(
        e.code(),
        ErrorNumber::NoDomain
            | ErrorNumber::NoNetwork
            | ErrorNumber::NoStoragePool
            | ErrorNumber::NoStorageVolume
    )
}

/// Makes sure the NAT network exists and is active.
pub fn ensure_network(c: &Connect, name: &str, xml_text: &str) -> Result<(), virt::error::Error> {
    let net = match Network::lookup_by_name(c, name) {
        Ok(n) => n,
        Err(e) if not_found(&e) => {
            tracing::info!(network = name, "creating the libvirt network");
            Network::define_xml(c, xml_text)?
        }
        Err(e) => return Err(e),
    };
    if !net.is_active()? {
        net.create()?;
    }
    let _ = net.set_autostart(true);
    Ok(())
}

/// Makes sure the directory storage pool exists, is active and is the one
/// for `path`. The inner error is a pool of that name for another folder.
pub fn ensure_pool(
    c: &Connect,
    name: &str,
    path: &str,
) -> Result<Result<StoragePool, String>, virt::error::Error> {
    let pool = match StoragePool::lookup_by_name(c, name) {
        Ok(p) => p,
        Err(e) if not_found(&e) => {
            tracing::info!(pool = name, path, "creating the libvirt storage pool");
            let p = StoragePool::define_xml(c, &xml::pool(name, path), 0)?;
            p.build(0)?;
            p
        }
        Err(e) => return Err(e),
    };
    if !pool
        .get_xml_desc(0)?
        .contains(&format!("<path>{}</path>", xml::esc(path)))
    {
        return Ok(Err(format!(
            "a libvirt storage pool named {name} already exists for another folder than {path}; set kvm_pool in \
             agent.toml to another name, or remove it (virsh pool-destroy {name}; virsh pool-undefine {name})"
        )));
    }
    if !pool.is_active()? {
        pool.create(0)?;
    }
    let _ = pool.set_autostart(true);
    Ok(Ok(pool))
}

/// The path of a volume, creating it from `xml_text` if it does not exist.
pub fn ensure_volume(
    pool: &StoragePool,
    name: &str,
    xml_text: &str,
) -> Result<String, virt::error::Error> {
    match StorageVol::lookup_by_name(pool, name) {
        Ok(v) => v.get_path(),
        Err(e) if not_found(&e) => StorageVol::create_xml(pool, xml_text, 0)?.get_path(),
        Err(e) => Err(e),
    }
}

/// Deletes a volume if it exists.
pub fn delete_volume(pool: &StoragePool, name: &str) -> Result<(), virt::error::Error> {
    match StorageVol::lookup_by_name(pool, name) {
        Ok(v) => v.delete(0),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A domain's state and Metrom metadata, or None if there is no such domain.
pub fn domain_state(c: &Connect, name: &str) -> Result<Option<DomainState>, virt::error::Error> {
    let d = match Domain::lookup_by_name(c, name) {
        Ok(d) => d,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (state, reason) = d.get_state()?;
    let metadata = d
        .get_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_NS),
            0,
        )
        .ok()
        .and_then(|m| xml::parse_metadata(&m));
    Ok(Some(DomainState {
        state,
        reason,
        metadata,
    }))
}

/// Every domain carrying Metrom metadata: (name, metadata).
pub fn metrom_domains(c: &Connect) -> Result<Vec<(String, Metadata)>, virt::error::Error> {
    let mut out = Vec::new();
    for d in c.list_all_domains(0)? {
        let meta = d
            .get_metadata(
                sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(METADATA_NS),
                0,
            )
            .ok()
            .and_then(|m| xml::parse_metadata(&m));
        if let Some(m) = meta {
            out.push((d.get_name()?, m));
        }
    }
    Ok(out)
}

/// CPU time (ns) and network bytes of a running domain; None if it does not run.
pub fn counters(
    c: &Connect,
    name: &str,
) -> Result<Option<crate::runtime::Counters>, virt::error::Error> {
    let d = match Domain::lookup_by_name(c, name) {
        Ok(d) => d,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !d.is_active()? {
        return Ok(None);
    }
    let cpu_ns = d.get_info()?.cpu_time;
    // The host side of each NIC: <target dev='vnetN'/> inside <interface>.
    let xml = d.get_xml_desc(0)?;
    let mut net_bytes = 0;
    for iface in xml.split("<interface").skip(1) {
        let iface = iface.split("</interface>").next().unwrap_or_default();
        let dev = iface
            .split("<target dev='")
            .nth(1)
            .or_else(|| iface.split("<target dev=\"").nth(1))
            .and_then(|s| s.split(['\'', '"']).next());
        if let Some(dev) = dev
            && let Ok(stats) = d.interface_stats(dev)
        {
            net_bytes += stats.rx_bytes.max(0) as u64 + stats.tx_bytes.max(0) as u64;
        }
    }
    Ok(Some(crate::runtime::Counters { cpu_ns, net_bytes }))
}

/// Sends a guest agent command (JSON) and returns the JSON answer.
pub fn agent_command(
    c: &Connect,
    name: &str,
    cmd: &str,
    timeout_secs: i32,
) -> Result<String, virt::error::Error> {
    Domain::lookup_by_name(c, name)?.qemu_agent_command(cmd, timeout_secs, 0)
}
