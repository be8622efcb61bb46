//! `metrom-bench creates`: the end-to-end rate of `env create` acknowledged
//! by a real controller with durable writes, from concurrent clients on
//! loopback. The host is an agent with the fake runtime, so the figure is the
//! controller's (API, scheduling, store fsync), not a hypervisor's.

use std::time::Instant;

use metrom_protocol::identity::IdentityBundle;

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
    let start = Instant::now();
    let mut l = super::create_envs(&identity, clients, count, "minimal", "bench")
        .await
        .inspect_err(|_| cluster.dump_logs())?;
    let secs = start.elapsed().as_secs_f64();
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
