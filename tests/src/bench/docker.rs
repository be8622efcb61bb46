//! `metrom-bench docker-up`: how long the two-service template (web waits for
//! a healthy db) takes to come up through Metrom — `env create` until the
//! environment is Running with its services healthy — against
//! `docker-compose up -d` on the same compose file with the same images, in
//! the same run, alternating. Needs dockerd, docker-compose and the test
//! registry of tests/setup.sh.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use metrom_controller::cli::client::Client;
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::api::{Call, EnvCreate, EnvView, Reply};

use crate::Cluster;

const IMAGE: &str = "127.0.0.1:5000/metrom-test/busybox:1";
const TEMPLATE: &str = "bench-webdb";
const LIMIT: Duration = Duration::from_secs(120);

/// The compose file both sides run. The image names its registry, so Metrom
/// and docker-compose use the very same reference.
fn compose_yaml() -> String {
    crate::web_db_compose(IMAGE, 18080)
}

pub async fn run(reps: usize) -> anyhow::Result<()> {
    println!(
        "metrom-bench docker-up: {reps} repetitions, two services (web waits for db healthy; db is healthy 2 s after it starts)"
    );
    docker(&["pull", "-q", IMAGE]).context("the test registry (tests/setup.sh) must be up")?;
    let (cluster, files) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let mut c = Cluster::start();
        let token = c.token(&[]);
        let toml = "registry = \"127.0.0.1:5000\"\ndocker_port_range = \"32000-32099\"\ndocker_stop_timeout = \"2s\"\n";
        let i = c.join_agent_with_config("bench", &token, toml);
        let id = c.agent(i).host_id.clone();
        c.wait_host_state(&id, "Ready", Duration::from_secs(30));
        let dir = c.dir.path().join(TEMPLATE);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("metrom.toml"),
            format!(
                "name = \"{TEMPLATE}\"\nruntime = [\"docker\"]\n[resources]\nvcpus = 1\nmemory = \"256MiB\"\ndisk = \"1GiB\"\n"
            ),
        )?;
        std::fs::write(dir.join("compose.yaml"), compose_yaml())?;
        c.ok(&["template", "push", dir.to_str().expect("utf8")]);
        Ok((c, dir))
    })?;
    let client = Client::connect(&IdentityBundle::load(&cluster.identity)?).await?;
    let compose_file = files.join("compose.yaml");
    let mut metrom = Vec::new();
    let mut compose = Vec::new();
    for rep in 0..reps {
        let name = format!("bench-{rep}");
        let m = metrom_up(&client, &name)
            .await
            .inspect_err(|_| cluster.dump_logs())?;
        metrom_delete(&client, &name).await?;
        let project = format!("metrombench{rep}");
        let d = compose_up(&compose_file, &project)?;
        println!(
            "rep {}: metrom {:.2}s, docker-compose up -d {:.2}s",
            rep + 1,
            m.as_secs_f64(),
            d.as_secs_f64()
        );
        metrom.push(m);
        compose.push(d);
    }
    client.close().await;
    print_summary("metrom env create → Running", &mut metrom);
    print_summary("docker-compose up -d", &mut compose);
    drop(cluster);
    Ok(())
}

/// `env create`, then the environment's view until it is Running with every
/// service running and db healthy.
async fn metrom_up(client: &Client, name: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    client
        .call(Call::EnvCreate(EnvCreate {
            name: name.into(),
            template: TEMPLATE.into(),
            version: None,
            params: Default::default(),
            host: None,
            labels: Default::default(),
        }))
        .await?;
    loop {
        let env = show(client, name).await?;
        let healthy = env.detail.services.len() == 2
            && env.detail.services.iter().all(|s| s.state == "running")
            && env
                .detail
                .services
                .iter()
                .any(|s| s.name == "db" && s.health == "healthy");
        if env.state == "Running" && healthy {
            return Ok(start.elapsed());
        }
        if env.state == "Failed" {
            bail!("{name} failed: {}", env.reason.unwrap_or_default());
        }
        if start.elapsed() > LIMIT {
            bail!("{name} not Running after {LIMIT:?}: {}", env.state);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrom_delete(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .call(Call::EnvDelete {
            name: name.into(),
            keep_data: false,
        })
        .await?;
    let start = Instant::now();
    loop {
        let env = show(client, name).await;
        match env {
            Ok(e) if e.state == "Deleted" => return Ok(()),
            Err(_) => return Ok(()),
            Ok(_) if start.elapsed() > LIMIT => bail!("{name} not deleted after {LIMIT:?}"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn show(client: &Client, name: &str) -> anyhow::Result<EnvView> {
    match client.call(Call::EnvShow { name: name.into() }).await? {
        Reply::Env(e) => Ok(e),
        _ => bail!("unexpected answer to env show"),
    }
}

/// `docker-compose up -d` (timed), then `down -v` (not timed).
fn compose_up(file: &std::path::Path, project: &str) -> anyhow::Result<Duration> {
    let file = file.to_str().expect("utf8");
    let start = Instant::now();
    let out = Command::new("docker-compose")
        .args(["-p", project, "-f", file, "up", "-d"])
        .output()
        .context("run docker-compose")?;
    let took = start.elapsed();
    let down = Command::new("docker-compose")
        .args(["-p", project, "-f", file, "down", "-v", "-t", "2"])
        .output();
    if !out.status.success() {
        bail!(
            "docker-compose up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Ok(d) = down
        && !d.status.success()
    {
        bail!(
            "docker-compose down failed: {}",
            String::from_utf8_lossy(&d.stderr)
        );
    }
    Ok(took)
}

fn docker(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn print_summary(what: &str, times: &mut [Duration]) {
    times.sort();
    let secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    let median = secs[secs.len() / 2];
    println!(
        "{what}: median {median:.2}s, min {:.2}s, max {:.2}s over {} runs",
        secs[0],
        secs[secs.len() - 1],
        secs.len()
    );
}
