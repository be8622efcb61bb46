//! `metrom-bench cloud`: how long Metrom takes to launch N environments on an
//! EC2-compatible server (moto's `moto_server` on 127.0.0.1, installed by
//! tests/setup.sh) and see them all Running: `env create` of a cloud-only
//! template from concurrent clients, then the environment list until every
//! one is Running. The controller runs with the default `[cloud]` settings
//! (launch concurrency, retries; the poll interval too unless given: it
//! bounds how soon a `pending` instance is seen `running`); the EC2 API is
//! checked at the end for one running, tagged instance per environment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use metrom_controller::cli::client::Client;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{Call, Reply};

use crate::Cluster;
use crate::ec2::{self, Moto};

const TEMPLATE: &str = "bench-cloud";
const LIMIT: Duration = Duration::from_secs(600);

pub async fn run(count: usize, clients: usize, poll_interval: Option<&str>) -> anyhow::Result<()> {
    println!(
        "metrom-bench cloud: {count} cloud environments on moto_server (127.0.0.1) from {clients} concurrent clients, [cloud] poll_interval {}, other [cloud] settings default",
        poll_interval.unwrap_or("2s (default)")
    );
    let (moto, cluster) = tokio::task::block_in_place(|| {
        let moto = Moto::start(&std::env::temp_dir());
        let mut c = Cluster::start();
        ec2::give_credentials(&mut c);
        // Restarted to take the credentials (and the poll interval).
        match poll_interval {
            Some(p) => c.configure(&format!("[cloud]\npoll_interval = \"{p}\"\n")),
            None => {
                c.stop_controller();
                c.start_controller();
            }
        }
        ec2::add_account(&c, "bench", &moto.endpoint(), &[]);
        let dir = ec2::template(c.dir.path(), TEMPLATE, "[\"cloud\"]", 1, "512MiB");
        c.ok(&["template", "push", dir.to_str().expect("utf8")]);
        (moto, c)
    });
    let identity = IdentityBundle::load(&cluster.identity)?;
    let start = Instant::now();
    super::create_envs(&identity, clients, count, TEMPLATE, "cloud")
        .await
        .inspect_err(|_| cluster.dump_logs())?;
    let created = start.elapsed();
    let running = match all_running(&identity, count, start).await {
        Ok(r) => r,
        Err(e) => {
            cluster.dump_logs();
            return Err(e);
        }
    };
    let total = start.elapsed();

    // Independently of Metrom: one running instance per environment, tagged.
    let controller_tagged = tokio::task::block_in_place(|| {
        moto.instances(None)
            .into_iter()
            .filter(|i| i.state == "running" && i.tags.contains_key("metrom:env"))
            .count()
    });
    if controller_tagged != count {
        bail!("the EC2 server runs {controller_tagged} tagged instances, not {count}");
    }
    let mut secs: Vec<f64> = running.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    let q = |f: f64| secs[((secs.len() - 1) as f64 * f).round() as usize];
    println!(
        "{count} creates acknowledged in {:.2}s",
        created.as_secs_f64()
    );
    println!(
        "all {count} Running after {:.2}s ({:.1} environments/s); per environment from the start: p50 {:.2}s, p90 {:.2}s, max {:.2}s",
        total.as_secs_f64(),
        count as f64 / total.as_secs_f64(),
        q(0.5),
        q(0.9),
        q(1.0)
    );
    println!("EC2 API: {controller_tagged} running instances tagged metrom:env");
    drop(cluster);
    drop(moto);
    Ok(())
}

/// Polls the environment list until all `count` are Running; when each was
/// first seen Running, from `start`.
async fn all_running(
    identity: &IdentityBundle,
    count: usize,
    start: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let client = Client::connect(identity).await?;
    let mut seen: BTreeMap<String, Duration> = BTreeMap::new();
    // Bounded by LIMIT; every round sleeps.
    loop {
        let Reply::Envs(envs) = client.call(Call::EnvList { all: true }).await? else {
            bail!("unexpected answer to env list");
        };
        for e in &envs {
            if e.state == "Running" {
                seen.entry(e.name.clone())
                    .or_insert_with(|| start.elapsed());
            }
            if e.state == "Failed" {
                bail!(
                    "{} failed: {}",
                    e.name,
                    e.reason.clone().unwrap_or_default()
                );
            }
        }
        if seen.len() >= count {
            client.close().await;
            return Ok(seen.into_values().collect());
        }
        if start.elapsed() > LIMIT {
            bail!("only {} of {count} Running after {LIMIT:?}", seen.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
