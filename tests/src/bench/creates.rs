//! `metrom-bench creates`: the end-to-end rate of `env create` acknowledged
//! by a real controller with durable writes, from concurrent clients on
//! loopback. The host is an agent with the fake runtime, so the figure is the
//! controller's (API, scheduling, store fsync), not a hypervisor's.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use metrom_controller::cli::client::Client;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{Call, EnvCreate};

use crate::{Cluster, starter_template};

pub async fn run(clients: usize, count: usize) -> anyhow::Result<()> {
    println!("metrom-bench creates: {count} env creates from {clients} concurrent clients");
    let (cluster, _agent) = tokio::task::block_in_place(|| {
        let mut c = Cluster::start();
        c.configure("[scheduler]\ncpu_overcommit = 10000.0\nmemory_overcommit = 1000.0\ndisk_overcommit = 10000.0\n");
        let a = c.fake_host("bench", "0ms");
        c.import_dummy_image("tiny");
        c.ok(&[
            "template",
            "push",
            starter_template("minimal").to_str().expect("utf8"),
        ]);
        (c, a)
    });
    let identity = IdentityBundle::load(&cluster.identity)?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let identity = identity.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&identity).await?;
            for i in (k..count).step_by(clients) {
                let call = Call::EnvCreate(EnvCreate {
                    name: format!("bench-{i:06}"),
                    template: "minimal".into(),
                    version: None,
                    params: Default::default(),
                    host: None,
                    labels: Default::default(),
                });
                let t = Instant::now();
                client
                    .call(call)
                    .await
                    .with_context(|| format!("create bench-{i:06}"))?;
                latencies.lock().expect("lock").push(t.elapsed());
            }
            client.close().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        if let Err(e) = t.await? {
            cluster.dump_logs();
            return Err(e);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().expect("lock").clone();
    l.sort();
    let p = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "{count} creates acknowledged in {secs:.2}s: {:.0} creates/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        count as f64 / secs,
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
    drop(cluster);
    Ok(())
}
