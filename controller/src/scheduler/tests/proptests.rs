//! Properties over random clusters and request sequences, checked against the
//! naive reference (a hand-written check of every host).

use metrom_protocol::messages::env::RuntimeKind::{self, Docker, Fake, Kvm};
use proptest::prelude::*;

use super::super::harness::{Harness, host, id, labels, reference, request};
use super::super::{
    CANDIDATES_PER_POOL, HostSnapshot, Request, Scheduler, SchedulerConfig, Strategy as Scoring,
    wanted_runtimes,
};

/// All memory sizes, several pools per runtime.
const MEMORY_SIZES: [u64; 7] = [1_024, 2_048, 4_096, 8_192, 16_384, 65_536, 262_144];
/// Different sizes within one pool (16–32 GiB).
const ONE_POOL: [u64; 3] = [16_384, 24_576, 32_767];

fn arb_host(memory_sizes: &[u64]) -> impl Strategy<Value = HostSnapshot> + use<> {
    (
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        prop::sample::select(vec![
            vec![Kvm],
            vec![Docker],
            vec![Kvm, Docker],
            vec![],
            vec![Fake],
        ]),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::bool::weighted(0.2),
        1..=16u32,
        prop::sample::select(memory_sizes.to_vec()),
        10..=500u64,
        // Allocated, in percent of capacity (a host can be over its limits).
        (0..=110u64, 0..=110u64, 0..=110u64),
    )
        .prop_map(
            |(ready, cordoned, runtimes, zone, gpu, cpus, memory_mb, disk_gb, used)| {
                let mut h = host("h-unnamed", cpus, memory_mb, disk_gb);
                h.ready = ready;
                h.cordoned = cordoned;
                h.runtimes = runtimes;
                if let Some(zone) = zone {
                    h.labels.insert("zone".into(), zone.into());
                }
                if gpu {
                    h.labels.insert("gpu".into(), "true".into());
                }
                h.allocated.vcpus = (u64::from(cpus) * 4 * used.0 / 100) as u32;
                h.allocated.memory_mb = memory_mb * used.1 / 100;
                h.allocated.disk_gb = disk_gb * used.2 / 100;
                h
            },
        )
}

/// Up to `max` hosts named h-p000, h-p001 … in a random order.
fn arb_cluster(max: usize) -> impl Strategy<Value = Vec<HostSnapshot>> {
    sized_cluster(max, &MEMORY_SIZES)
}

fn sized_cluster(
    max: usize,
    memory_sizes: &[u64],
) -> impl Strategy<Value = Vec<HostSnapshot>> + use<> {
    prop::collection::vec(arb_host(memory_sizes), 0..=max)
        .prop_map(|mut hosts| {
            for (i, h) in hosts.iter_mut().enumerate() {
                h.id = id(&format!("h-p{i:03}"));
            }
            hosts
        })
        .prop_shuffle()
}

/// Pins and exclusions name h-p000 … h-p049, known or not.
fn arb_request() -> impl Strategy<Value = Request> {
    (
        0..=16u32,
        prop::sample::select(vec![0u64, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 70_000]),
        0..=200u64,
        prop::sample::select(vec![
            vec![],
            vec![Kvm],
            vec![Docker],
            vec![Kvm, Docker],
            vec![Docker, Kvm],
            vec![Fake],
        ]),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.1, 0..50usize),
        prop::collection::vec(0..50usize, 0..3),
    )
        .prop_map(
            |(vcpus, memory_mb, disk_gb, runtimes, zone, gpu, pin, exclude)| {
                let mut req = request(vcpus, memory_mb, disk_gb);
                req.runtimes = runtimes;
                if let Some(zone) = zone {
                    req.labels = labels(&[("zone", zone)]);
                }
                if gpu {
                    req.labels.insert("gpu".into(), "true".into());
                }
                req.host = pin.map(|i| id(&format!("h-p{i:03}")));
                req.exclude = exclude
                    .into_iter()
                    .map(|i| id(&format!("h-p{i:03}")))
                    .collect();
                req
            },
        )
}

fn arb_config() -> impl Strategy<Value = SchedulerConfig> {
    (
        prop::sample::select(vec![Scoring::Binpack, Scoring::Spread]),
        prop::sample::select(vec![1.0, 1.5, 4.0]),
        prop::sample::select(vec![1.0, 1.25]),
        prop::sample::select(vec![1.0, 2.0]),
    )
        .prop_map(|(strategy, cpu, memory, disk)| SchedulerConfig {
            strategy,
            cpu_overcommit: cpu,
            memory_overcommit: memory,
            disk_overcommit: disk,
        })
}

/// A small cluster: every host fits in the candidates of one pool.
const SMALL: usize = 8;
const _: () = assert!(CANDIDATES_PER_POOL >= SMALL);

fn limit(capacity: u64, ratio: f64) -> u64 {
    (capacity as f64 * ratio).floor() as u64
}

/// Applies `requests` one by one and checks each outcome against the reference.
fn agrees_with_reference(
    hosts: Vec<HostSnapshot>,
    requests: Vec<Request>,
    cfg: SchedulerConfig,
) -> Result<(), TestCaseError> {
    let known = hosts.len();
    let mut harness = Harness::new(hosts, cfg);
    let cfg = harness.config.clone();
    for req in requests {
        let expected = reference(harness.scheduler.hosts(), &req, &cfg);
        let outcome = harness.apply(req.clone()).clone();
        match (outcome, expected) {
            (Ok(p), Some((runtime, fitting))) => {
                prop_assert_eq!(p.runtime, runtime, "runtime preference for {:?}", req);
                prop_assert!(
                    fitting.contains(&p.host),
                    "{} does not fit {:?}",
                    p.host,
                    req
                );
                let h = harness.host(p.host.as_str());
                // The same rules, spelled out.
                prop_assert!(h.ready && !h.cordoned, "{:?}", h);
                prop_assert!(req.host.as_ref().is_none_or(|pin| *pin == h.id));
                prop_assert!(!req.exclude.contains(&h.id));
                prop_assert!(h.runtimes.contains(&p.runtime));
                prop_assert!(req.labels.iter().all(|(k, v)| h.labels.get(k) == Some(v)));
                // Committed, it stays within the overcommitted limits in
                // whatever it takes (a host may start out over a limit, and
                // still take what needs none of that resource).
                let (a, need) = (&h.allocated, &req.resources);
                prop_assert!(
                    need.vcpus == 0
                        || u64::from(a.vcpus) <= limit(h.capacity.cpus.into(), cfg.cpu_overcommit)
                );
                prop_assert!(
                    need.memory_mb == 0
                        || a.memory_mb <= limit(h.capacity.memory_mb, cfg.memory_overcommit)
                );
                prop_assert!(
                    need.disk_gb == 0
                        || a.disk_gb <= limit(h.capacity.disk_gb, cfg.disk_overcommit)
                );
            }
            (Err(e), None) => {
                prop_assert_eq!(e.rejections().len(), known);
                prop_assert!(!e.to_string().is_empty());
            }
            (outcome, expected) => {
                prop_assert!(
                    false,
                    "{:?}: got {:?}, reference {:?}",
                    req,
                    outcome,
                    expected
                )
            }
        }
    }
    Ok(())
}

fn transcript(
    hosts: Vec<HostSnapshot>,
    requests: &[Request],
    cfg: &SchedulerConfig,
) -> Vec<String> {
    let mut harness = Harness::new(hosts, cfg.clone());
    harness.apply_all(requests.iter().cloned());
    harness.transcript()
}

proptest! {
    #[test]
    fn placements_agree_with_the_reference(
        hosts in arb_cluster(40),
        requests in prop::collection::vec(arb_request(), 1..40),
        cfg in arb_config(),
    ) {
        agrees_with_reference(hosts, requests, cfg)?;
    }

    /// No pool has more hosts than the index hands the scorer, so the index
    /// must find exactly what a full scan finds.
    #[test]
    fn small_clusters_get_the_host_a_full_scan_would_pick(
        hosts in sized_cluster(SMALL, &ONE_POOL),
        requests in prop::collection::vec(arb_request(), 1..30),
        cfg in arb_config(),
    ) {
        let mut scheduler = Scheduler::new(hosts, &cfg);
        for req in &requests {
            let scan = scheduler.place_by_scan(req, wanted_runtimes(req));
            let placed = scheduler.place_and_commit(req).ok();
            prop_assert_eq!(placed, scan, "{:?}", req);
        }
    }

    #[test]
    fn the_same_input_gives_the_same_output(
        hosts in arb_cluster(40),
        requests in prop::collection::vec(arb_request(), 1..40),
        cfg in arb_config(),
    ) {
        let first = transcript(hosts.clone(), &requests, &cfg);
        prop_assert_eq!(&first, &transcript(hosts.clone(), &requests, &cfg));
        let reversed: Vec<HostSnapshot> = hosts.into_iter().rev().collect();
        prop_assert_eq!(&first, &transcript(reversed, &requests, &cfg));
    }

    #[test]
    fn releasing_everything_restores_the_first_decisions(
        hosts in arb_cluster(40),
        requests in prop::collection::vec(arb_request(), 1..40),
        cfg in arb_config(),
    ) {
        let fresh = Scheduler::new(hosts.clone(), &cfg);
        let mut harness = Harness::new(hosts, cfg);
        harness.apply_all(requests.iter().cloned());
        for (host, res) in harness.committed().iter().rev() {
            harness.scheduler.release(host, *res);
        }
        prop_assert_eq!(harness.scheduler.hosts(), fresh.hosts());
        for req in &requests {
            prop_assert_eq!(harness.scheduler.place(req).ok(), fresh.place(req).ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Big enough that the index stops its walks early.
    #[test]
    fn larger_clusters_agree_with_the_reference(
        hosts in arb_cluster(300),
        requests in prop::collection::vec(arb_request(), 100..200),
        cfg in arb_config(),
    ) {
        agrees_with_reference(hosts, requests, cfg)?;
    }
}

#[test]
fn runtime_names_are_in_preference_order() {
    let req = Request {
        runtimes: vec![Docker, Kvm],
        ..Request::default()
    };
    assert_eq!(wanted_runtimes(&req), [Docker, Kvm]);
    let any = Request::default();
    let any: &[RuntimeKind] = wanted_runtimes(&any);
    assert_eq!(any, [Kvm, Docker, Fake]);
}
