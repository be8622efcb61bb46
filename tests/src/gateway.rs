//! Services a test runs on the kvm runtime's NAT network gateway, where guest
//! VMs can reach them (loopback is the guest's own).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

/// The gateway of the agent's default network (`kvm_subnet` 192.168.213.1/24);
/// it exists once a kvm agent has started.
pub const GATEWAY: &str = "192.168.213.1";

/// Kills a helper process when dropped.
pub struct Helper(pub Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves the test cache's registry storage (filled by tests/setup.sh) on the
/// VM network's gateway, where guests can reach it.
pub fn registry_on_gateway(dir: &Path) -> (Helper, u16) {
    let port = free_port_on(GATEWAY);
    let cache =
        std::env::var("METROM_TEST_CACHE").unwrap_or_else(|_| "/var/cache/metrom-tests".into());
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {cache}/registry/data\nhttp:\n  addr: {GATEWAY}:{port}\n"),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry");
    let helper = Helper(child);
    wait_for("the registry", Duration::from_secs(20), || {
        std::net::TcpStream::connect((GATEWAY, port))
            .ok()
            .map(|_| ())
    });
    (helper, port)
}
