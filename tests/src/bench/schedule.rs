//! `metrom-bench schedule`: the controller's scheduler on a synthetic cluster.
//! Builds a deterministic cluster (varied host sizes, a few label classes,
//! kvm/docker mixed), then times `place_and_commit` of varied environments on
//! the current thread. No processes, no network: the scheduler is pure.

use std::time::{Duration, Instant};

use metrom_controller::scheduler::{
    Capacity, HostSnapshot, Request, Scheduler, SchedulerConfig, Strategy,
};
use metrom_protocol::ids::HostId;
use metrom_protocol::messages::env::{Resources, RuntimeKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn run(hosts: usize, envs: usize, strategy: Strategy) -> anyhow::Result<()> {
    let config = SchedulerConfig {
        strategy,
        ..SchedulerConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    println!(
        "metrom-bench schedule: {hosts} hosts, {envs} environments, strategy {strategy}, \
         overcommit cpu {} memory {} disk {}",
        config.cpu_overcommit, config.memory_overcommit, config.disk_overcommit
    );
    let cluster = synthetic_cluster(hosts)?;
    let requests = synthetic_requests(envs, &cluster);

    let t = Instant::now();
    let mut scheduler = Scheduler::new(cluster, &config);
    println!("index built in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);

    // Each call is timed with the drop of its result: a refusal's NoCapacity
    // lists every host, and freeing it is part of its cost.
    let (mut placed, mut refused) = (0usize, 0usize);
    let (mut placed_time, mut refused_time) = (Duration::ZERO, Duration::ZERO);
    let t0 = Instant::now();
    for req in &requests {
        let t = Instant::now();
        let ok = scheduler.place_and_commit(req).is_ok();
        let took = t.elapsed();
        if ok {
            placed += 1;
            placed_time += took;
        } else {
            refused += 1;
            refused_time += took;
        }
    }
    let total = t0.elapsed().as_secs_f64();
    println!(
        "{envs} place_and_commit in {total:.3} s: {:.0} placements/s ({:.2} µs each, refusals included)",
        envs as f64 / total,
        total * 1e6 / envs.max(1) as f64
    );
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "placed {placed} in {:.3} s ({:.0}/s, {:.2} µs each)",
        secs(placed_time),
        placed as f64 / secs(placed_time).max(1e-9),
        secs(placed_time) * 1e6 / placed.max(1) as f64
    );
    println!(
        "no capacity {refused} in {:.3} s ({:.0} µs each: a scan of every host to explain why)",
        secs(refused_time),
        secs(refused_time) * 1e6 / refused.max(1) as f64
    );
    report_utilisation(&scheduler, &config);
    Ok(())
}

/// Hardware sizes: (CPUs, memory MiB, disk GiB, weight in percent).
const HOST_SIZES: [(u32, u64, u64, u32); 4] = [
    (16, 65_536, 500, 30),
    (32, 131_072, 1_000, 40),
    (64, 262_144, 2_000, 25),
    (128, 1_048_576, 4_000, 5),
];

/// Environment shapes: (vCPUs, memory MiB, disk GiB, weight in percent).
const ENV_SHAPES: [(u32, u64, u64, u32); 4] = [
    (2, 4_096, 20, 40),
    (4, 8_192, 40, 35),
    (8, 32_768, 100, 20),
    (16, 65_536, 200, 5),
];

const ZONES: [&str; 4] = ["a", "b", "c", "d"];

/// Hosts h-bench00000 …: sizes by weight, a zone each, 10 % with a GPU,
/// kvm+docker 60 % / kvm 25 % / docker 15 %, 1 % Unreachable, 1 % cordoned.
fn synthetic_cluster(n: usize) -> anyhow::Result<Vec<HostSnapshot>> {
    let mut rng = StdRng::seed_from_u64(0x5ced);
    (0..n)
        .map(|i| {
            let (cpus, memory_mb, disk_gb, _) = *weighted(&mut rng, &HOST_SIZES, |s| s.3);
            let mut labels = std::collections::BTreeMap::new();
            labels.insert(
                "zone".to_string(),
                ZONES[rng.random_range(0..ZONES.len())].to_string(),
            );
            if rng.random_bool(0.1) {
                labels.insert("gpu".to_string(), "true".to_string());
            }
            let runtimes = match rng.random_range(0..100) {
                0..60 => vec![RuntimeKind::Kvm, RuntimeKind::Docker],
                60..85 => vec![RuntimeKind::Kvm],
                _ => vec![RuntimeKind::Docker],
            };
            Ok(HostSnapshot {
                id: HostId::parse(&format!("h-bench{i:05}"))?,
                ready: !rng.random_bool(0.01),
                cordoned: rng.random_bool(0.01),
                labels,
                runtimes,
                capacity: Capacity {
                    cpus,
                    memory_mb,
                    disk_gb,
                },
                allocated: Resources::default(),
            })
        })
        .collect()
}

/// Shapes by weight; kvm-then-docker 70 % / docker 20 % / kvm 10 %; a zone
/// for 20 %, a GPU for 5 %; 1 % exclude a host (`rebuild --elsewhere`).
fn synthetic_requests(n: usize, hosts: &[HostSnapshot]) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(0xe4f);
    (0..n)
        .map(|_| {
            let (vcpus, memory_mb, disk_gb, _) = *weighted(&mut rng, &ENV_SHAPES, |s| s.3);
            let runtimes = match rng.random_range(0..100) {
                0..70 => vec![RuntimeKind::Kvm, RuntimeKind::Docker],
                70..90 => vec![RuntimeKind::Docker],
                _ => vec![RuntimeKind::Kvm],
            };
            let mut labels = std::collections::BTreeMap::new();
            match rng.random_range(0..100) {
                0..20 => {
                    let zone = ZONES[rng.random_range(0..ZONES.len())];
                    labels.insert("zone".to_string(), zone.to_string());
                }
                20..25 => {
                    labels.insert("gpu".to_string(), "true".to_string());
                }
                _ => {}
            }
            let exclude = if rng.random_bool(0.01) && !hosts.is_empty() {
                vec![hosts[rng.random_range(0..hosts.len())].id.clone()]
            } else {
                Vec::new()
            };
            Request {
                resources: Resources {
                    vcpus,
                    memory_mb,
                    disk_gb,
                },
                runtimes,
                labels,
                host: None,
                exclude,
            }
        })
        .collect()
}

fn weighted<'a, T>(rng: &mut StdRng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut pick = rng.random_range(0..total);
    for item in items {
        if pick < weight(item) {
            return item;
        }
        pick -= weight(item);
    }
    items.last().expect("items")
}

/// Mean utilisation of the hosts that can take work, each resource's share of
/// the cluster's limits, and how many hosts hold anything.
fn report_utilisation(scheduler: &Scheduler, config: &SchedulerConfig) {
    let schedulable: Vec<&HostSnapshot> = scheduler
        .hosts()
        .iter()
        .filter(|h| h.ready && !h.cordoned)
        .collect();
    let n = schedulable.len().max(1) as f64;
    let mean: f64 = schedulable
        .iter()
        .filter_map(|h| scheduler.utilisation(&h.id))
        .sum::<f64>()
        / n;
    let share = |used: fn(&HostSnapshot) -> u64, capacity: fn(&HostSnapshot) -> u64, r: f64| {
        let used: u64 = schedulable.iter().map(|h| used(h)).sum();
        let limit: f64 = schedulable
            .iter()
            .map(|h| (capacity(h) as f64 * r).floor())
            .sum();
        100.0 * used as f64 / limit.max(1.0)
    };
    let cpu = share(
        |h| h.allocated.vcpus.into(),
        |h| h.capacity.cpus.into(),
        config.cpu_overcommit,
    );
    let memory = share(
        |h| h.allocated.memory_mb,
        |h| h.capacity.memory_mb,
        config.memory_overcommit,
    );
    let disk = share(
        |h| h.allocated.disk_gb,
        |h| h.capacity.disk_gb,
        config.disk_overcommit,
    );
    let in_use = schedulable
        .iter()
        .filter(|h| h.allocated != Resources::default())
        .count();
    println!(
        "final mean utilisation {:.1} % (of the cluster's limits: cpu {cpu:.1} %, memory {memory:.1} %, disk {disk:.1} %); \
         hosts in use {in_use} of {} schedulable",
        mean * 100.0,
        schedulable.len()
    );
}
