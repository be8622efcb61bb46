//! Forwarding the ports an environment exposes from the host to its VM: a TCP
//! relay per port, listening on the host and connecting to the guest's address
//! on the libvirt network. Host ports are allocated from a range, remembered
//! per environment (so rebuilds and agent restarts keep them), and never shared
//! between two environments.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::PortMapping;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// A port the environment exposes: a name and the guest port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Exposed {
    pub name: String,
    pub guest_port: u16,
}

/// Host port allocations, persisted in `<dir>/ports.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Allocations {
    /// env id → (exposed → host port)
    envs: BTreeMap<String, BTreeMap<String, u16>>,
}

pub struct Forwarder {
    file: PathBuf,
    range: (u16, u16),
    bind: Ipv4Addr,
    allocations: Mutex<Allocations>,
    /// Running relays: env id → (guest address they point at, tasks).
    relays: Mutex<HashMap<EnvId, Relays>>,
}

/// The guest address an environment's relays point at, and their tasks.
type Relays = (Ipv4Addr, Vec<JoinHandle<()>>);

impl Forwarder {
    pub fn new(dir: &Path, range: (u16, u16)) -> Forwarder {
        let file = dir.join("ports.json");
        let allocations = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Forwarder {
            file,
            range,
            bind: Ipv4Addr::UNSPECIFIED,
            allocations: Mutex::new(allocations),
            relays: Mutex::new(HashMap::new()),
        }
    }

    /// Host ports for an environment's exposed ports, allocating new ones as needed.
    pub fn allocate(&self, env: &EnvId, exposed: &[Exposed]) -> Vec<PortMapping> {
        let mut a = self.allocations.lock().expect("ports lock");
        let used: std::collections::HashSet<u16> = a
            .envs
            .iter()
            .filter(|(e, _)| e.as_str() != env.as_str())
            .flat_map(|(_, m)| m.values().copied())
            .collect();
        let mine = a.envs.entry(env.to_string()).or_default();
        let mut out = Vec::new();
        for x in exposed {
            let key = format!("{}/{}", x.name, x.guest_port);
            let port = match mine.get(&key) {
                Some(p) => *p,
                None => {
                    let taken: std::collections::HashSet<u16> = mine.values().copied().collect();
                    let Some(p) = (self.range.0..=self.range.1)
                        .find(|p| !used.contains(p) && !taken.contains(p) && port_free(*p))
                    else {
                        warn!(
                            "no free host port left in {}-{}",
                            self.range.0, self.range.1
                        );
                        continue;
                    };
                    mine.insert(key, p);
                    p
                }
            };
            out.push(PortMapping {
                name: x.name.clone(),
                guest_port: x.guest_port,
                host_port: port,
                protocol: "tcp".into(),
            });
        }
        let _ = std::fs::write(
            &self.file,
            serde_json::to_vec_pretty(&*a).expect("ports serialize"),
        );
        out
    }

    /// Makes sure relays run for these mappings to `guest`; restarts them if the address changed.
    pub fn ensure(&self, env: &EnvId, guest: Ipv4Addr, mappings: &[PortMapping]) {
        let mut relays = self.relays.lock().expect("relays lock");
        if let Some((ip, tasks)) = relays.get(env)
            && *ip == guest
            && tasks.iter().all(|t| !t.is_finished())
        {
            return;
        }
        if let Some((_, tasks)) = relays.remove(env) {
            tasks.iter().for_each(|t| t.abort());
        }
        let mut tasks = Vec::new();
        for m in mappings {
            let listen = SocketAddr::from((self.bind, m.host_port));
            let target = SocketAddr::from((guest, m.guest_port));
            let env_id = env.clone();
            tasks.push(tokio::spawn(async move {
                let listener = match TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => return warn!(env_id = %env_id, "cannot listen on {listen}: {e}"),
                };
                info!(env_id = %env_id, "forwarding {listen} → {target}");
                loop {
                    let Ok((mut inbound, peer)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        match TcpStream::connect(target).await {
                            Ok(mut outbound) => {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                            Err(e) => debug!("forward {peer} → {target}: {e}"),
                        }
                    });
                }
            }));
        }
        relays.insert(env.clone(), (guest, tasks));
    }

    /// Stops the relays of an environment (stopped or deleted).
    pub fn stop(&self, env: &EnvId) {
        if let Some((_, tasks)) = self.relays.lock().expect("relays lock").remove(env) {
            tasks.iter().for_each(|t| t.abort());
        }
    }

    /// Stops the relays and frees the host ports of a deleted environment.
    pub fn release(&self, env: &EnvId) {
        self.stop(env);
        let mut a = self.allocations.lock().expect("ports lock");
        if a.envs.remove(env.as_str()).is_some() {
            let _ = std::fs::write(
                &self.file,
                serde_json::to_vec_pretty(&*a).expect("ports serialize"),
            );
        }
    }
}

/// Whether nothing else on the host listens on the port.
fn port_free(p: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allocations_are_stable_disjoint_and_relay_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let f = Forwarder::new(dir.path(), (32600, 32699));
        let a = EnvId::parse("e-a").unwrap();
        let b = EnvId::parse("e-b").unwrap();
        let web = [Exposed {
            name: "web".into(),
            guest_port: 8080,
        }];
        let pa = f.allocate(&a, &web);
        let pb = f.allocate(&b, &web);
        assert_ne!(pa[0].host_port, pb[0].host_port);
        assert_eq!(
            Forwarder::new(dir.path(), (32600, 32699)).allocate(&a, &web),
            pa,
            "remembered"
        );

        // A relay to a local "guest".
        let guest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gport = guest.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = guest.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, b"hello")
                .await
                .unwrap();
        });
        let mapping = [PortMapping {
            name: "x".into(),
            guest_port: gport,
            host_port: pa[0].host_port,
            protocol: "tcp".into(),
        }];
        f.ensure(&a, Ipv4Addr::LOCALHOST, &mapping);
        // The range lies below Linux's ephemeral ports (32768+), so a connect
        // before the relay listens cannot meet itself (a TCP self-connect);
        // each read is bounded all the same.
        let mut got = Vec::new();
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", pa[0].host_port)).await {
                let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got);
                if tokio::time::timeout(std::time::Duration::from_secs(5), read)
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    break;
                }
                got.clear();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(got, b"hello");
        f.release(&a);
    }
}
