//! Choosing hardware acceleration: `kvm`, `tcg`, or `auto` — KVM only where a
//! VM really boots with it. `auto` starts a throwaway domain under KVM (no
//! disks: the firmware alone runs) and watches whether it keeps running; a
//! broken KVM (a nested hypervisor that cannot run guests) pauses it with an
//! internal error. The verdict is remembered per kernel and QEMU version, and
//! revised if an environment's VM later gets stuck under KVM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use virt::domain::Domain;

use super::libvirt::{DomainState, Libvirt};

/// The `acceleration` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn parse(s: &str) -> Option<Accel> {
        match s {
            "auto" => Some(Accel::Auto),
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Verdict {
    /// The host kernel and QEMU it was measured on.
    host: String,
    kvm_works: bool,
}

/// The acceleration in effect, revisable at run time.
pub struct Acceleration {
    file: PathBuf,
    host: String,
    use_kvm: Mutex<bool>,
    setting: Accel,
}

impl Acceleration {
    /// Decides, probing if `auto` and no verdict for this host is recorded.
    pub async fn decide(lv: &Arc<Libvirt>, setting: Accel, dir: &Path) -> Acceleration {
        let file = dir.join("kvm-verdict.json");
        let host = host_signature();
        let kvm_device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let use_kvm = match setting {
            Accel::Tcg => false,
            Accel::Kvm => true,
            Accel::Auto if !kvm_device => {
                info!("acceleration: tcg (/dev/kvm is not usable)");
                false
            }
            Accel::Auto => {
                let recorded = std::fs::read(&file)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Verdict>(&b).ok())
                    .filter(|v| v.host == host);
                let works = match recorded {
                    Some(v) => v.kvm_works,
                    None => {
                        let works = probe(lv).await;
                        let _ = std::fs::write(
                            &file,
                            serde_json::to_vec(&Verdict {
                                host: host.clone(),
                                kvm_works: works,
                            })
                            .expect("json"),
                        );
                        works
                    }
                };
                info!(
                    "acceleration: {} (auto: a VM {} under KVM here)",
                    if works { "kvm" } else { "tcg" },
                    if works { "runs" } else { "does not run" }
                );
                works
            }
        };
        Acceleration {
            file,
            host,
            use_kvm: Mutex::new(use_kvm),
            setting,
        }
    }

    /// libvirt's domain type: "kvm" or "qemu" (TCG).
    pub fn domain_type(&self) -> &'static str {
        if *self.use_kvm.lock().expect("accel lock") {
            "kvm"
        } else {
            "qemu"
        }
    }

    /// A VM got stuck under KVM: with `auto`, use TCG from now on. Returns
    /// whether the caller should recreate the VM.
    pub fn kvm_failed(&self, domain: &str) -> bool {
        if self.setting != Accel::Auto {
            return false;
        }
        let mut use_kvm = self.use_kvm.lock().expect("accel lock");
        if !*use_kvm {
            return false;
        }
        warn!(
            domain,
            "the VM stopped under KVM with an internal error: falling back to TCG on this host"
        );
        *use_kvm = false;
        let _ = std::fs::write(
            &self.file,
            serde_json::to_vec(&Verdict {
                host: self.host.clone(),
                kvm_works: false,
            })
            .expect("json"),
        );
        true
    }
}

/// Boots a disk-less VM under KVM for a few seconds.
async fn probe(lv: &Arc<Libvirt>) -> bool {
    const NAME: &str = "metrom-kvm-probe";
    let xml = format!(
        "<domain type='kvm'><name>{NAME}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><features><acpi/><apic/></features>\
         <cpu mode='host-passthrough'/><devices><memballoon model='none'/></devices></domain>"
    );
    let started = lv
        .call(move |c| {
            if let Ok(old) = Domain::lookup_by_name(c, NAME) {
                let _ = old.destroy();
            }
            Domain::create_xml(c, &xml, 0).map(|_| ())
        })
        .await;
    if let Err(e) = started {
        warn!("KVM probe could not start a VM: {e}");
        return false;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state: Option<DomainState> = lv
        .call(|c| super::libvirt::domain_state(c, NAME))
        .await
        .ok()
        .flatten();
    let _ = lv
        .call(|c| match Domain::lookup_by_name(c, NAME) {
            Ok(d) => d.destroy(),
            Err(_) => Ok(()),
        })
        .await;
    state.is_some_and(|s| s.running())
}

fn host_signature() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu = std::fs::metadata("/usr/bin/qemu-system-x86_64")
        .and_then(|m| m.modified())
        .map(|t| format!("{t:?}"))
        .unwrap_or_default();
    format!("{} {qemu}", kernel.trim())
}
