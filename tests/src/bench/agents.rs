//! `metrom-bench agents`: join N simulated agents (each with its own key, CSR,
//! certificate and mTLS QUIC connection) to a real controller, keep them
//! heartbeating, measure the controller's CPU and resident memory, then
//! restart the controller and measure how long all N take to reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use metrom_agent::backoff::Backoff;
use metrom_agent::enroll::{exchange, key_and_csr};
use metrom_protocol::codec;
use metrom_protocol::facts::{Capabilities, DiskFact, HostFacts, HostLoad, Probe};
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::ids::Principal;
use metrom_protocol::messages::agent::{AgentMessage, Hello, HelloReply};
use metrom_protocol::messages::join::JoinRequest;
use metrom_protocol::tls::Timing;
use metrom_protocol::token::JoinToken;
use metrom_protocol::{CONTROLLER_SERVER_NAME, PROTOCOL_VERSION};
use tokio::sync::Semaphore;

use crate::{Cluster, bin, proc};

/// Shared counters of the simulated agents.
#[derive(Default)]
struct Fleet {
    connected: AtomicUsize,
    /// When each session began (Welcome received), for percentiles.
    welcomes: std::sync::Mutex<Vec<Instant>>,
    /// Incremented on every Welcome; lets us see reconnects after a restart.
    sessions: AtomicU64,
    heartbeats: AtomicU64,
}

pub async fn run(
    count: usize,
    measure: Duration,
    heartbeat: &str,
    per_socket: usize,
) -> anyhow::Result<()> {
    let _ = bin("metrom-controller");
    println!(
        "metrom-bench agents: {count} simulated agents, heartbeat {heartbeat}, {measure:?} measurement"
    );
    let mut cluster = tokio::task::block_in_place(|| {
        Cluster::start_with(&["--heartbeat-interval", heartbeat, "--heartbeat-ttl", "30s"])
    });
    let token_text = tokio::task::block_in_place(|| {
        cluster.token(&["--uses", &count.to_string(), "--ttl", "2h"])
    });
    let token = JoinToken::parse(&token_text)?;
    let admin = IdentityBundle::load(&cluster.identity)?;

    // 1. Join N agents, 32 at a time.
    let t0 = Instant::now();
    let limit = Arc::new(Semaphore::new(32));
    let mut joins = Vec::with_capacity(count);
    for i in 0..count {
        let limit = limit.clone();
        let addr = cluster.address();
        let token = token.clone();
        let ca = admin.ca_cert.clone();
        joins.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.expect("semaphore");
            let (key, csr) = key_and_csr(&format!("bench-{i}"))?;
            let req = JoinRequest {
                version: PROTOCOL_VERSION,
                token_id: token.id.clone(),
                secret: token.secret.clone(),
                csr_pem: csr,
                hostname: format!("bench-{i}"),
            };
            let acc = exchange(&addr, token.ca_pin, &req).await?;
            anyhow::Ok(IdentityBundle {
                controller: addr,
                principal: Principal::Host(acc.host_id).common_name(),
                ca_cert: ca,
                cert: acc.cert_pem,
                key,
            })
        }));
    }
    let mut identities = Vec::with_capacity(count);
    for j in joins {
        identities.push(j.await??);
    }
    let join_secs = t0.elapsed().as_secs_f64();
    println!(
        "joined {count} agents in {join_secs:.1}s ({:.0} joins/s)",
        count as f64 / join_secs
    );

    // 2. Connect them all and keep them heartbeating.
    let fleet = Arc::new(Fleet::default());
    let addr: std::net::SocketAddr = cluster.address().parse()?;
    let mut endpoints = Vec::new();
    for _ in 0..count.div_ceil(per_socket.max(1)) {
        endpoints.push(quinn::Endpoint::client("127.0.0.1:0".parse()?)?);
    }
    let t1 = Instant::now();
    for (i, identity) in identities.into_iter().enumerate() {
        let ep = endpoints[i / per_socket.max(1)].clone();
        tokio::spawn(simulated_agent(ep, addr, identity, i, fleet.clone()));
    }
    wait_until(Duration::from_secs(300), || {
        fleet.connected.load(Ordering::Relaxed) == count
    })
    .await
    .context("not every agent connected within 300s")?;
    println!("connected {count} agents: {}", percentiles(&fleet, t1));
    let ready = ready_hosts(&cluster);
    if ready != count {
        bail!("the controller shows {ready} Ready hosts, expected {count}");
    }
    println!("controller shows {ready} hosts Ready");

    // 3. Steady state: controller CPU and memory.
    let pid = cluster.controller_pid().context("controller pid")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticks0 = proc::cpu_ticks(pid).context("cpu ticks")?;
    let hb0 = fleet.heartbeats.load(Ordering::Relaxed);
    let m0 = Instant::now();
    let mut rss_max = 0;
    while m0.elapsed() < measure {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(proc::rss_bytes(pid).unwrap_or(0));
    }
    let elapsed = m0.elapsed().as_secs_f64();
    let ticks = proc::cpu_ticks(pid).context("cpu ticks")? - ticks0;
    let cpu_pct = ticks as f64 / proc::ticks_per_second() as f64 / elapsed * 100.0;
    let hb = fleet.heartbeats.load(Ordering::Relaxed) - hb0;
    let rss = proc::rss_bytes(pid).unwrap_or(0);
    println!(
        "steady state over {elapsed:.0}s: controller CPU {cpu_pct:.1}% of one core, RSS {:.0} MiB (max {:.0} MiB), {:.0} heartbeats/s",
        rss as f64 / 1048576.0,
        rss_max as f64 / 1048576.0,
        hb as f64 / elapsed
    );

    // 4. Restart the controller; time until every agent is back.
    let before = fleet.sessions.load(Ordering::Relaxed);
    let t2 = Instant::now();
    tokio::task::block_in_place(|| {
        cluster.stop_controller();
        cluster.start_controller();
    });
    let up_secs = t2.elapsed().as_secs_f64();
    wait_until(Duration::from_secs(600), || {
        fleet.sessions.load(Ordering::Relaxed) >= before + count as u64
            && fleet.connected.load(Ordering::Relaxed) == count
    })
    .await
    .context("not every agent reconnected within 600s")?;
    let reconnect_secs = t2.elapsed().as_secs_f64();
    let ready = ready_hosts(&cluster);
    println!(
        "controller restart: serving again after {up_secs:.1}s; all {count} agents reconnected {reconnect_secs:.1}s after the restart began ({ready} Ready)"
    );
    println!(
        "reconnects after the restart began: {}",
        percentiles(&fleet, t2)
    );
    let rss_after = cluster
        .controller_pid()
        .and_then(proc::rss_bytes)
        .unwrap_or(0);
    println!(
        "controller RSS after reconnect: {:.0} MiB",
        rss_after as f64 / 1048576.0
    );
    Ok(())
}

/// p50/p90/p99/max of the sessions that began after `since`, in seconds after it.
fn percentiles(fleet: &Fleet, since: Instant) -> String {
    let mut t: Vec<f64> = fleet
        .welcomes
        .lock()
        .expect("lock")
        .iter()
        .filter(|w| **w >= since)
        .map(|w| w.duration_since(since).as_secs_f64())
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    if t.is_empty() {
        return "none".into();
    }
    let p = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.1}s, p90 {:.1}s, p99 {:.1}s, max {:.1}s",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    )
}

fn ready_hosts(cluster: &Cluster) -> usize {
    tokio::task::block_in_place(|| {
        cluster
            .hosts()
            .iter()
            .filter(|h| h["state"] == "Ready")
            .count()
    })
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            bail!("timed out");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One simulated agent: the real agent's protocol and backoff, synthetic facts.
async fn simulated_agent(
    endpoint: quinn::Endpoint,
    addr: std::net::SocketAddr,
    identity: IdentityBundle,
    i: usize,
    fleet: Arc<Fleet>,
) {
    let Some(Principal::Host(host_id)) = identity.principal() else {
        return;
    };
    let cfg = metrom_protocol::tls::client_config(
        &identity,
        Timing {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        },
    )
    .expect("client config");
    let facts = synthetic_facts(i);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let session = async {
            let conn = endpoint
                .connect_with(cfg.clone(), addr, CONTROLLER_SERVER_NAME)
                .ok()?
                .await
                .ok()?;
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            let hello = Hello {
                version: PROTOCOL_VERSION,
                host_id: host_id.clone(),
                facts: facts.clone(),
                environments: vec![],
            };
            codec::write_message(&mut send, &hello, codec::DEFAULT_MAX_FRAME)
                .await
                .ok()?;
            let welcome =
                match codec::read_message::<HelloReply, _>(&mut recv, codec::DEFAULT_MAX_FRAME)
                    .await
                {
                    Ok(Some(HelloReply::Welcome(w))) => w,
                    _ => return None,
                };
            fleet.welcomes.lock().expect("lock").push(Instant::now());
            fleet.sessions.fetch_add(1, Ordering::Relaxed);
            fleet.connected.fetch_add(1, Ordering::Relaxed);
            backoff.reset();
            let mut tick =
                tokio::time::interval(Duration::from_millis(welcome.heartbeat_interval_ms));
            let load = HostLoad {
                load1: 0.5,
                cpu_percent: 3.0,
                memory_available_bytes: 48 << 30,
                storage_available_bytes: 800 << 30,
            };
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if codec::write_message(&mut send, &AgentMessage::Heartbeat(load), codec::DEFAULT_MAX_FRAME).await.is_err() {
                            break;
                        }
                        fleet.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = conn.closed() => break,
                }
            }
            fleet.connected.fetch_sub(1, Ordering::Relaxed);
            Some(())
        };
        session.await;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn synthetic_facts(i: usize) -> HostFacts {
    let disk = DiskFact {
        mount: "/".into(),
        device: "/dev/nvme0n1p2".into(),
        filesystem: "ext4".into(),
        total_bytes: 1 << 40,
        available_bytes: 800 << 30,
    };
    HostFacts {
        hostname: format!("bench-{i}"),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1.0".into(),
        arch: "x86_64".into(),
        cpus: 16,
        cpu_model: "simulated".into(),
        memory_bytes: 64 << 30,
        disks: vec![disk.clone()],
        storage: disk,
        capabilities: Capabilities {
            kvm: Probe::ok("/dev/kvm"),
            libvirt: Probe::ok("simulated"),
            docker: Probe::missing("simulated"),
        },
        agent_version: metrom_protocol::BUILD_VERSION.into(),
        runtimes: vec![metrom_protocol::messages::env::RuntimeKind::Kvm],
    }
}
