//! Benchmarks behind `metrom-bench`; figures go to docs/benchmarks.md.

pub mod agents;
pub mod cloud;
pub mod creates;
pub mod docker;
pub mod kvm;
pub mod schedule;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use metrom_controller::cli::client::Client;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{Call, EnvCreate};

/// Creates `count` environments `{prefix}-{i:06}` of `template` from
/// `clients` concurrent clients, each with its own QUIC connection; the
/// latency of every acknowledged create.
pub async fn create_envs(
    identity: &IdentityBundle,
    clients: usize,
    count: usize,
    template: &str,
    prefix: &str,
) -> anyhow::Result<Vec<Duration>> {
    let clients = clients.max(1);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut tasks = Vec::new();
    for k in 0..clients {
        let identity = identity.clone();
        let latencies = latencies.clone();
        let (template, prefix) = (template.to_string(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&identity).await?;
            for i in (k..count).step_by(clients) {
                let name = format!("{prefix}-{i:06}");
                let call = Call::EnvCreate(EnvCreate {
                    name: name.clone(),
                    template: template.clone(),
                    version: None,
                    params: Default::default(),
                    host: None,
                    labels: Default::default(),
                });
                let t = Instant::now();
                client
                    .call(call)
                    .await
                    .with_context(|| format!("create {name}"))?;
                latencies.lock().expect("lock").push(t.elapsed());
            }
            client.close().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let l = latencies.lock().expect("lock").clone();
    Ok(l)
}
