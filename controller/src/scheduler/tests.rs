//! Scheduler behaviour on small clusters, and what users read when nothing fits.

use metrom_protocol::messages::env::RuntimeKind;

use super::harness::{
    Harness, config, host, id, labels, reference, request, resources, seeded_cluster,
    seeded_requests,
};
use super::{Reason, Request, Scheduler, SchedulerConfig, Strategy, place};

mod proptests;

/// Three identical hosts, room for four 4 GiB environments each.
fn toy_cluster() -> Vec<super::HostSnapshot> {
    vec![
        host("h-a", 8, 16_384, 100),
        host("h-b", 8, 16_384, 100),
        host("h-c", 8, 16_384, 100),
    ]
}

#[test]
fn binpack_fills_one_host_before_starting_the_next() {
    let mut harness = Harness::new(toy_cluster(), config(Strategy::Binpack));
    harness.apply_all((0..9).map(|_| request(2, 4_096, 10)));
    assert_eq!(
        harness.placed_on(),
        [
            "h-a", "h-a", "h-a", "h-a", "h-b", "h-b", "h-b", "h-b", "h-c"
        ]
    );
}

#[test]
fn spread_alternates() {
    let mut harness = Harness::new(toy_cluster(), config(Strategy::Spread));
    harness.apply_all((0..7).map(|_| request(2, 4_096, 10)));
    assert_eq!(
        harness.placed_on(),
        ["h-a", "h-b", "h-c", "h-a", "h-b", "h-c", "h-a"]
    );
}

#[test]
fn binpack_prefers_a_nearly_full_big_host_to_many_half_empty_small_ones() {
    // The small hosts have less free memory than the big one, so a walk by
    // free memory alone would meet them first; the big host is 94 % full.
    let mut hosts: Vec<_> = (0..20)
        .map(|i| {
            let mut h = host(&format!("h-small{i:02}"), 8, 16_384, 100);
            h.allocated = resources(4, 8_192, 50);
            h
        })
        .collect();
    let mut big = host("h-big", 128, 524_288, 4_000);
    big.allocated = resources(480, 491_520, 3_750);
    hosts.push(big);
    let mut harness = Harness::new(hosts, config(Strategy::Binpack));
    harness.apply(request(2, 4_096, 20));
    assert_eq!(harness.placed_on(), ["h-big"]);
}

#[test]
fn kvm_is_preferred_when_both_fit_and_docker_is_the_fallback() {
    let mut kvm = host("h-kvm", 8, 16_384, 100);
    kvm.runtimes = vec![RuntimeKind::Kvm];
    let mut docker = host("h-docker", 8, 16_384, 100);
    docker.runtimes = vec![RuntimeKind::Docker];
    // Binpack alone would pick the fuller docker host.
    docker.allocated = resources(4, 8_192, 50);
    let mut harness = Harness::new(vec![kvm, docker], config(Strategy::Binpack));
    let both = |vcpus, memory_mb| Request {
        runtimes: vec![RuntimeKind::Kvm, RuntimeKind::Docker],
        ..request(vcpus, memory_mb, 10)
    };
    harness.apply(both(2, 12_288));
    // h-kvm now has 4 GiB free; 6 GiB only fits h-docker.
    harness.apply(both(2, 6_144));
    assert_eq!(harness.transcript(), ["h-kvm kvm", "h-docker docker"]);

    let docker_first = Request {
        runtimes: vec![RuntimeKind::Docker, RuntimeKind::Kvm],
        ..request(1, 1_024, 1)
    };
    assert_eq!(
        harness.apply(docker_first).as_ref().unwrap().runtime,
        RuntimeKind::Docker
    );
}

#[test]
fn a_host_with_both_runtimes_runs_the_preferred_one() {
    let placement = place(
        &[host("h-a", 8, 16_384, 100)],
        &Request {
            runtimes: vec![RuntimeKind::Docker, RuntimeKind::Kvm],
            ..request(1, 1_024, 1)
        },
        &SchedulerConfig::default(),
    )
    .unwrap();
    assert_eq!(
        (placement.host.as_str(), placement.runtime),
        ("h-a", RuntimeKind::Docker)
    );
}

#[test]
fn pinned_and_excluded_hosts_are_honoured() {
    let mut harness = Harness::new(toy_cluster(), config(Strategy::Binpack));
    harness.apply(Request {
        host: Some(id("h-c")),
        ..request(1, 1_024, 1)
    });
    harness.apply(Request {
        exclude: vec![id("h-c"), id("h-a")],
        ..request(1, 1_024, 1)
    });
    assert_eq!(harness.placed_on(), ["h-c", "h-b"]);
}

#[test]
fn unready_cordoned_and_mismatched_hosts_are_passed_over() {
    let mut gone = host("h-a", 64, 262_144, 1_000);
    gone.ready = false;
    let mut cordoned = host("h-b", 64, 262_144, 1_000);
    cordoned.cordoned = true;
    let mut us = host("h-c", 64, 262_144, 1_000);
    us.labels = labels(&[("zone", "us")]);
    let mut eu = host("h-d", 8, 16_384, 100);
    eu.labels = labels(&[("zone", "eu")]);
    let mut harness = Harness::new(vec![gone, cordoned, us, eu], config(Strategy::Spread));
    let in_eu = Request {
        labels: labels(&[("zone", "eu")]),
        ..request(1, 1_024, 1)
    };
    harness.apply_all([in_eu.clone(), request(1, 1_024, 1), in_eu]);
    assert_eq!(harness.placed_on(), ["h-d", "h-c", "h-d"]);
}

#[test]
fn overcommit_ratios_set_the_limits() {
    // 2 CPUs x 4.0 = 8 vCPUs; memory x 1.5 = 3072 MiB.
    let cfg = SchedulerConfig {
        memory_overcommit: 1.5,
        ..SchedulerConfig::default()
    };
    let mut harness = Harness::new(vec![host("h-a", 2, 2_048, 100)], cfg);
    harness.apply_all([
        request(8, 1_024, 1),
        request(1, 1_024, 1),
        request(0, 2_048, 1),
    ]);
    assert_eq!(harness.placed_on(), ["h-a", "-", "h-a"]);
    assert_eq!(harness.host("h-a").allocated, resources(8, 3_072, 2));
}

#[test]
fn release_gives_room_back_and_unknown_hosts_are_ignored() {
    let mut harness = Harness::new(vec![host("h-a", 8, 8_192, 100)], config(Strategy::Binpack));
    harness.apply_all([request(2, 8_192, 10), request(2, 1_024, 10)]);
    harness
        .scheduler
        .release(&id("h-a"), resources(2, 8_192, 10));
    harness
        .scheduler
        .release(&id("h-a"), resources(2, 8_192, 10));
    harness
        .scheduler
        .commit(&id("h-nowhere"), resources(1, 1, 1));
    harness.apply(request(2, 8_192, 10));
    assert_eq!(harness.placed_on(), ["h-a", "-", "h-a"]);
    assert_eq!(harness.scheduler.utilisation(&id("h-nowhere")), None);
    let u = harness.scheduler.utilisation(&id("h-a")).unwrap();
    assert!((u - (2.0 / 32.0 + 1.0 + 0.1) / 3.0).abs() < 1e-6, "{u}");
}

#[test]
fn the_same_requests_give_the_same_placements_whatever_the_host_order() {
    let hosts = seeded_cluster(7, 300);
    let requests = seeded_requests(8, 2_000, &hosts);
    for strategy in [Strategy::Binpack, Strategy::Spread] {
        let run = |hosts: Vec<super::HostSnapshot>| {
            let mut harness = Harness::new(hosts, config(strategy));
            harness.apply_all(requests.iter().cloned());
            harness.transcript()
        };
        let first = run(hosts.clone());
        assert_eq!(first, run(hosts.clone()));
        assert_eq!(first, run(hosts.iter().rev().cloned().collect()));
        assert!(
            first.iter().any(|t| t.starts_with("h-")),
            "nothing was placed"
        );
    }
}

#[test]
fn a_long_sequence_never_overcommits_and_never_misses_a_fitting_host() {
    let hosts = seeded_cluster(11, 200);
    let requests = seeded_requests(12, 4_000, &hosts);
    let cfg = config(Strategy::Binpack);
    let mut harness = Harness::new(hosts, cfg.clone());
    let mut placed = Vec::new();
    for (i, req) in requests.into_iter().enumerate() {
        // Now and then an environment is deleted.
        if i % 7 == 6 && !placed.is_empty() {
            let (host, res) = placed.swap_remove(i % placed.len());
            harness.scheduler.release(&host, res);
        }
        let expected = reference(harness.scheduler.hosts(), &req, &cfg);
        let outcome = harness.apply(req.clone()).clone();
        match (outcome, expected) {
            (Ok(p), Some((runtime, fitting))) => {
                assert_eq!(p.runtime, runtime, "{req:?}");
                assert!(fitting.contains(&p.host), "{} does not fit {req:?}", p.host);
                placed.push((p.host, req.resources));
            }
            (Err(e), None) => assert_eq!(e.rejections().len(), harness.scheduler.hosts().len()),
            (outcome, expected) => panic!("{req:?}: got {outcome:?}, reference {expected:?}"),
        }
        for h in harness.scheduler.hosts() {
            let a = &h.allocated;
            assert!(
                u64::from(a.vcpus) <= u64::from(h.capacity.cpus) * 4,
                "{h:?}"
            );
            assert!(a.memory_mb <= h.capacity.memory_mb, "{h:?}");
            assert!(a.disk_gb <= h.capacity.disk_gb, "{h:?}");
        }
    }
    let placed_count = harness.placed_on().iter().filter(|p| *p != "-").count();
    assert!(placed_count > 500, "only {placed_count} placed");
    assert!(placed_count < 4_000, "the cluster never filled up");
}

// ───────────────────────── What users read ─────────────────────────

#[test]
fn no_hosts_says_how_to_add_one() {
    let err = Scheduler::new(vec![], &SchedulerConfig::default())
        .place(&request(1, 1_024, 1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no hosts have joined yet; add one with metrom token create + metrom-agent join"
    );
}

fn kvm_request(vcpus: u32, memory_mb: u64, disk_gb: u64) -> Request {
    Request {
        runtimes: vec![RuntimeKind::Kvm],
        ..request(vcpus, memory_mb, disk_gb)
    }
}

#[test]
fn no_capacity_counts_hosts_by_reason_with_examples() {
    let mut abc = host("h-abc", 8, 16_384, 100);
    abc.allocated = resources(0, 10_240, 0);
    let mut abd = host("h-abd", 8, 16_384, 100);
    abd.allocated = resources(0, 14_336, 0);
    let mut def = host("h-def", 64, 262_144, 1_000);
    def.cordoned = true;
    let mut ghi = host("h-ghi", 64, 262_144, 1_000);
    ghi.ready = false;
    let err = place(
        &[ghi, def, abd, abc],
        &kvm_request(4, 8_192, 40),
        &SchedulerConfig::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host can take 4 vCPUs, 8192 MiB memory, 40 GiB disk (runtime kvm): \
         2 hosts lack memory (most free: h-abc with 6144 MiB), 1 cordoned (h-def), 1 Unreachable (h-ghi)"
    );
    let hosts: Vec<&str> = err.rejections().iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts, ["h-abc", "h-abd", "h-def", "h-ghi"]);
}

#[test]
fn a_pinned_host_says_exactly_why_it_cannot() {
    let mut x = host("h-x", 8, 16_384, 100);
    x.allocated = resources(0, 14_336, 0);
    let hosts = [x, host("h-y", 64, 262_144, 1_000)];
    let pinned = |req: Request| Request {
        host: Some(id("h-x")),
        ..req
    };
    let cfg = SchedulerConfig::default();
    let err = place(&hosts, &pinned(kvm_request(4, 8_192, 40)), &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host h-x cannot take it: memory: needs 8192 MiB, 2048 MiB free \
         (16384 MiB x 1.0 overcommit minus 14336 MiB allocated)"
    );
    assert_eq!(err.rejections()[1].reason, Reason::NotTheRequestedHost);

    let err = place(&hosts, &pinned(kvm_request(40, 1_024, 1)), &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host h-x cannot take it: cpu: needs 40 vCPUs, 32 free (8 CPUs x 4.0 overcommit minus 0 allocated)"
    );
    let err = place(&hosts, &pinned(kvm_request(1, 1_024, 101)), &cfg).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "disk: needs 101 GiB, 100 GiB free (100 GiB x 1.0 overcommit minus 0 GiB allocated)"
        ),
        "{err}"
    );

    let mut cordoned = hosts.clone();
    cordoned[0].cordoned = true;
    let err = place(&cordoned, &pinned(kvm_request(1, 1_024, 1)), &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host h-x cannot take it: it is cordoned (metrom host uncordon lets it receive environments again)"
    );
    let err = place(
        &hosts,
        &Request {
            host: Some(id("h-nope")),
            ..request(1, 1, 1)
        },
        &cfg,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "host h-nope is not a known host (2 hosts have joined; see metrom host list)"
    );
}

#[test]
fn runtime_label_and_exclusion_reasons_read_well() {
    let mut docker = host("h-d", 8, 16_384, 100);
    docker.runtimes = vec![RuntimeKind::Docker];
    let mut us = host("h-us", 8, 16_384, 100);
    us.labels = labels(&[("zone", "us")]);
    let bare = host("h-bare", 8, 16_384, 100);
    let excluded = host("h-old", 8, 16_384, 100);
    let req = Request {
        labels: labels(&[("zone", "eu")]),
        exclude: vec![id("h-old")],
        ..kvm_request(1, 1_024, 1)
    };
    let err = place(
        &[docker, us, bare, excluded],
        &req,
        &SchedulerConfig::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host can take 1 vCPU, 1024 MiB memory, 1 GiB disk (runtime kvm, labels zone=eu): \
         2 hosts don't match the labels (h-bare has no zone, h-us has zone=us), \
         1 doesn't offer kvm (h-d), 1 excluded by the request (h-old)"
    );
    let pinned = Request {
        host: Some(id("h-d")),
        ..req
    };
    let mut d = host("h-d", 8, 16_384, 100);
    d.runtimes = vec![RuntimeKind::Docker];
    let err = place(&[d], &pinned, &SchedulerConfig::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host h-d cannot take it: runtime: it offers docker, the request wants kvm"
    );
}

#[test]
fn thousands_of_hosts_make_one_line() {
    let hosts: Vec<_> = (0..2_000)
        .map(|i| {
            let mut h = host(&format!("h-c{i:04}"), 8, 16_384, 100);
            h.cordoned = i % 2 == 0;
            h.allocated = resources(0, 16_384 - i, 0);
            h
        })
        .collect();
    let err = place(&hosts, &request(1, 4_096, 1), &SchedulerConfig::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host can take 1 vCPU, 4096 MiB memory, 1 GiB disk (any runtime): \
         1000 hosts lack memory (most free: h-c1999 with 1999 MiB), \
         1000 cordoned (h-c0000, h-c0002, h-c0004 and 997 more)"
    );
    assert_eq!(err.rejections().len(), 2_000);
}

#[test]
fn rejections_serialise_for_scripts() {
    let mut full = host("h-a", 8, 16_384, 100);
    full.allocated = resources(0, 16_000, 0);
    let err = place(&[full], &request(1, 1_024, 1), &SchedulerConfig::default()).unwrap_err();
    let json = serde_json::to_value(err.rejections()).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "host": "h-a",
            "reason": {
                "reason": "memory",
                "need_mb": 1024,
                "free_mb": 384,
                "capacity_mb": 16384,
                "overcommit": 1.0,
                "allocated_mb": 16000,
            }
        }])
    );
}
