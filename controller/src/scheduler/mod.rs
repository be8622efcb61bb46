//! The scheduler: which host runs a new environment, and with which runtime.
//!
//! A pure function of a snapshot of the hosts and a request: no I/O, no
//! clock, no randomness — the same input always gives the same placement.
//! Small feasibility filters ([`filters`]) and rank scorers ([`scorers`]) are
//! wired together in one place, "The pipeline" below. An [`index`] keeps a
//! placement to a few dozen hosts out of thousands. Only when nothing fits
//! does the scheduler look at every host, to say why each one cannot
//! ([`NoCapacity`]).
//!
//! The scheduler holds the snapshot it was built from; `commit` and `release`
//! keep its allocations (and index) current between placements. A host that
//! changes state (Ready, cordoned, labels, runtimes) needs a new snapshot.

mod config;
mod filters;
mod index;
mod no_capacity;
mod scorers;

#[cfg(test)]
mod harness;

use std::collections::{BTreeMap, HashMap};

use metrom_protocol::ids::HostId;
use metrom_protocol::messages::env::{Resources, RuntimeKind};
use serde::{Deserialize, Serialize};

pub use config::{SchedulerConfig, Strategy};
pub use no_capacity::{NoCapacity, Reason, Rejection};

use config::Ratios;
use index::{Index, Order};
use scorers::{Score, Utilisation};

/// A host as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    pub id: HostId,
    /// Connected and heartbeating.
    pub ready: bool,
    pub cordoned: bool,
    pub labels: BTreeMap<String, String>,
    /// The runtimes the host offers.
    pub runtimes: Vec<RuntimeKind>,
    /// Raw hardware.
    pub capacity: Capacity,
    /// The sum of the environments already placed there.
    pub allocated: Resources,
}

/// A host's raw hardware, before overcommit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
}

/// What an environment needs from a host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub resources: Resources,
    /// Preference order: the first runtime for which some host fits wins.
    /// Empty means any runtime, in the order kvm, docker, fake.
    pub runtimes: Vec<RuntimeKind>,
    /// Every label must be on the host with exactly this value.
    pub labels: BTreeMap<String, String>,
    /// Pinned: only this host is considered.
    pub host: Option<HostId>,
    /// Never these hosts (`rebuild --elsewhere`).
    pub exclude: Vec<HostId>,
}

/// Where an environment goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub host: HostId,
    pub runtime: RuntimeKind,
}

/// Hosts indexed for placement, with their allocations kept current by
/// `commit` and `release`.
#[derive(Debug)]
pub struct Scheduler {
    strategy: Strategy,
    ratios: Ratios,
    /// Ordered by id, one per id; a host's position is its number everywhere below.
    hosts: Vec<HostSnapshot>,
    /// floor(capacity × ratio), per host.
    limits: Vec<Limits>,
    positions: HashMap<HostId, usize>,
    /// Hosts with identical labels share a label class, so a request's label
    /// selector is checked once per class, not once per host.
    label_class: Vec<usize>,
    /// A host of each label class.
    class_example: Vec<usize>,
    index: Index,
}

/// Places one request on a snapshot. To place many, build a [`Scheduler`] once.
pub fn place(
    hosts: &[HostSnapshot],
    req: &Request,
    config: &SchedulerConfig,
) -> Result<Placement, NoCapacity> {
    Scheduler::new(hosts.to_vec(), config).place(req)
}

impl Scheduler {
    /// Indexes a snapshot. Hosts are ordered by id; of several with the same
    /// id, the first is kept. Ratios that fail `SchedulerConfig::validate`
    /// count as 1.0.
    pub fn new(mut hosts: Vec<HostSnapshot>, config: &SchedulerConfig) -> Scheduler {
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        hosts.dedup_by(|later, earlier| later.id == earlier.id);
        let ratios = Ratios::from_config(config);
        let limits: Vec<Limits> = hosts
            .iter()
            .map(|h| Limits::of(&h.capacity, &ratios))
            .collect();
        let positions = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.id.clone(), i))
            .collect();
        let mut classes: HashMap<&BTreeMap<String, String>, usize> = HashMap::new();
        let mut class_example = Vec::new();
        let label_class = (0..hosts.len())
            .map(|h| {
                *classes.entry(&hosts[h].labels).or_insert_with(|| {
                    class_example.push(h);
                    class_example.len() - 1
                })
            })
            .collect();
        let free: Vec<u64> = (0..hosts.len())
            .map(|h| filters::free(limits[h].memory_mb, hosts[h].allocated.memory_mb))
            .collect();
        let index = Index::build(&hosts, &limits, &free);
        Scheduler {
            strategy: config.strategy,
            ratios,
            hosts,
            limits,
            positions,
            label_class,
            class_example,
            index,
        }
    }

    /// Where `req` should go. Decides only: nothing is reserved.
    pub fn place(&self, req: &Request) -> Result<Placement, NoCapacity> {
        let runtimes = wanted_runtimes(req);
        match self.place_indexed(req, runtimes) {
            Some(placement) => Ok(placement),
            None => self.explain(req, runtimes),
        }
    }

    /// Reserves `res` on `host`. It records, it does not check: a commit can
    /// take a host past its limits (say, replaying placements after the
    /// ratios were lowered). Unknown hosts are ignored.
    pub fn commit(&mut self, host: &HostId, res: Resources) {
        let Some(&h) = self.positions.get(host) else {
            return;
        };
        let a = &mut self.hosts[h].allocated;
        a.vcpus = a.vcpus.saturating_add(res.vcpus);
        a.memory_mb = a.memory_mb.saturating_add(res.memory_mb);
        a.disk_gb = a.disk_gb.saturating_add(res.disk_gb);
        self.reindex(h);
    }

    /// Gives back `res` on `host` (never below zero). Unknown hosts are ignored.
    pub fn release(&mut self, host: &HostId, res: Resources) {
        let Some(&h) = self.positions.get(host) else {
            return;
        };
        let a = &mut self.hosts[h].allocated;
        a.vcpus = a.vcpus.saturating_sub(res.vcpus);
        a.memory_mb = a.memory_mb.saturating_sub(res.memory_mb);
        a.disk_gb = a.disk_gb.saturating_sub(res.disk_gb);
        self.reindex(h);
    }

    /// `place`, then `commit` the request's resources on the chosen host.
    pub fn place_and_commit(&mut self, req: &Request) -> Result<Placement, NoCapacity> {
        let placement = self.place(req)?;
        self.commit(&placement.host, req.resources);
        Ok(placement)
    }

    /// The hosts, ordered by id, with their current allocations.
    pub fn hosts(&self) -> &[HostSnapshot] {
        &self.hosts
    }

    /// How full a host is now: the mean of its cpu, memory and disk fractions
    /// of the overcommitted limits (0.0 ..= 1.0).
    pub fn utilisation(&self, host: &HostId) -> Option<f64> {
        let &h = self.positions.get(host)?;
        let a = &self.hosts[h].allocated;
        let u = Utilisation::of(&self.limits[h], u64::from(a.vcpus), a.memory_mb, a.disk_gb);
        Some(u.mean())
    }
}

// ───────────────────────────── The pipeline ─────────────────────────────
//
// Every filter and scorer is wired here, and only here. `reject` is the
// feasibility chain; `score` ranks the hosts that pass it; `order` tells the
// index where to start looking so the first hosts it finds are the ones the
// scorer likes. Ties go to the smaller host id (`better`).

/// Feasible hosts the index hands to the scorer per pool (hosts of one runtime
/// and one size). More is closer to the best of a full scan, and slower.
const CANDIDATES_PER_POOL: usize = 8;

/// The runtimes of a request that names none, in preference order.
const ANY_RUNTIME: [RuntimeKind; 3] = [RuntimeKind::Kvm, RuntimeKind::Docker, RuntimeKind::Fake];

impl Scheduler {
    /// Why host `h` cannot take `req` with any of `runtimes`, or `None` if it
    /// can. The first filter to say no gives the reason users see, so the
    /// request's own choices come first, then the host's state, then what it
    /// offers, then its room.
    fn reject(&self, h: usize, req: &Request, runtimes: &[RuntimeKind]) -> Option<Reason> {
        let host = &self.hosts[h];
        let limits = &self.limits[h];
        let need = &req.resources;
        filters::requested_host(host, req.host.as_ref())
            .or_else(|| filters::excluded(host, &req.exclude))
            .or_else(|| filters::ready(host))
            .or_else(|| filters::not_cordoned(host))
            .or_else(|| filters::runtime(host, runtimes))
            .or_else(|| filters::labels(&host.labels, &req.labels))
            .or_else(|| filters::cpu(host, limits.cpus, self.ratios.cpu, need.vcpus))
            .or_else(|| filters::memory(host, limits.memory_mb, self.ratios.memory, need.memory_mb))
            .or_else(|| filters::disk(host, limits.disk_gb, self.ratios.disk, need.disk_gb))
    }

    /// How good a feasible host `h` is for `need`: the strategy's view of its
    /// utilisation once the environment is there.
    fn score(&self, h: usize, need: &Resources) -> Score {
        let a = &self.hosts[h].allocated;
        let after = Utilisation::of(
            &self.limits[h],
            u64::from(a.vcpus) + u64::from(need.vcpus),
            a.memory_mb.saturating_add(need.memory_mb),
            a.disk_gb.saturating_add(need.disk_gb),
        );
        match self.strategy {
            Strategy::Binpack => scorers::binpack(after),
            Strategy::Spread => scorers::spread(after),
        }
    }

    /// Binpack wants the fullest hosts that still fit: start at the tightest
    /// memory fit. Spread wants the emptiest: start at the most free memory.
    fn order(&self) -> Order {
        match self.strategy {
            Strategy::Binpack => Order::TightestFirst,
            Strategy::Spread => Order::RoomiestFirst,
        }
    }
}

/// Whether `(score, h)` beats the best so far: higher score, then smaller
/// host id (positions follow ids).
fn better(candidate: (Score, usize), best: Option<(Score, usize)>) -> bool {
    match best {
        None => true,
        Some((score, h)) => candidate.0 > score || (candidate.0 == score && candidate.1 < h),
    }
}

// ─────────────────────────────── Helpers ────────────────────────────────

/// A host's overcommitted limits: floor(capacity × ratio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    cpus: u64,
    memory_mb: u64,
    disk_gb: u64,
}

impl Limits {
    fn of(capacity: &Capacity, ratios: &Ratios) -> Limits {
        Limits {
            cpus: config::limit(u64::from(capacity.cpus), ratios.cpu),
            memory_mb: config::limit(capacity.memory_mb, ratios.memory),
            disk_gb: config::limit(capacity.disk_gb, ratios.disk),
        }
    }
}

/// The label classes' verdicts on one request's labels, filled in as the
/// walk meets them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LabelVerdict {
    Unknown,
    Match,
    Mismatch,
}

fn wanted_runtimes(req: &Request) -> &[RuntimeKind] {
    if req.runtimes.is_empty() {
        &ANY_RUNTIME
    } else {
        &req.runtimes
    }
}

impl Scheduler {
    /// The index's answer: for each runtime in preference order, the best of
    /// the candidates the index offers; `None` if no indexed host fits.
    fn place_indexed(&self, req: &Request, runtimes: &[RuntimeKind]) -> Option<Placement> {
        if let Some(pinned) = &req.host {
            let &h = self.positions.get(pinned)?;
            let runtime = runtimes
                .iter()
                .find(|r| self.reject(h, req, std::slice::from_ref(r)).is_none())?;
            return Some(self.placement(h, *runtime));
        }
        let mut verdicts = if req.labels.is_empty() {
            Vec::new()
        } else {
            vec![LabelVerdict::Unknown; self.class_example.len()]
        };
        for runtime in runtimes {
            let mut best = None;
            self.index.walk(
                *runtime,
                req.resources.memory_mb,
                self.order(),
                CANDIDATES_PER_POOL,
                |h| {
                    // Skip a host whose label class is known not to match without
                    // building a Reason for it; `reject` still has the last word.
                    if !self.labels_match(h, req, &mut verdicts)
                        || self.reject(h, req, std::slice::from_ref(runtime)).is_some()
                    {
                        return false;
                    }
                    let candidate = (self.score(h, &req.resources), h);
                    if better(candidate, best) {
                        best = Some(candidate);
                    }
                    true
                },
            );
            if let Some((_, h)) = best {
                return Some(self.placement(h, *runtime));
            }
        }
        None
    }

    fn labels_match(&self, h: usize, req: &Request, verdicts: &mut [LabelVerdict]) -> bool {
        if req.labels.is_empty() {
            return true;
        }
        let class = self.label_class[h];
        if verdicts[class] == LabelVerdict::Unknown {
            let example = &self.hosts[self.class_example[class]];
            verdicts[class] = match filters::labels(&example.labels, &req.labels) {
                None => LabelVerdict::Match,
                Some(_) => LabelVerdict::Mismatch,
            };
        }
        verdicts[class] == LabelVerdict::Match
    }

    /// Every host with its reason. If a host turns out to fit after all, the
    /// index missed it: that is a bug, but the placement is still made.
    fn explain(&self, req: &Request, runtimes: &[RuntimeKind]) -> Result<Placement, NoCapacity> {
        let mut rejections = Vec::with_capacity(self.hosts.len());
        for (h, host) in self.hosts.iter().enumerate() {
            match self.reject(h, req, runtimes) {
                Some(reason) => rejections.push(Rejection {
                    host: host.id.clone(),
                    reason,
                }),
                None => {
                    debug_assert!(false, "the index missed feasible host {}", host.id);
                    tracing::error!(host_id = %host.id, "scheduler index missed a feasible host");
                    if let Some(placement) = self.place_by_scan(req, runtimes) {
                        return Ok(placement);
                    }
                }
            }
        }
        Err(NoCapacity::new(
            req.resources,
            &req.runtimes,
            &req.labels,
            req.host.as_ref(),
            rejections,
        ))
    }

    /// The best placement by a scan of every host: what the index approximates.
    fn place_by_scan(&self, req: &Request, runtimes: &[RuntimeKind]) -> Option<Placement> {
        runtimes.iter().find_map(|runtime| {
            let mut best = None;
            for h in 0..self.hosts.len() {
                if self.reject(h, req, std::slice::from_ref(runtime)).is_none() {
                    let candidate = (self.score(h, &req.resources), h);
                    if better(candidate, best) {
                        best = Some(candidate);
                    }
                }
            }
            best.map(|(_, h)| self.placement(h, *runtime))
        })
    }

    fn placement(&self, h: usize, runtime: RuntimeKind) -> Placement {
        Placement {
            host: self.hosts[h].id.clone(),
            runtime,
        }
    }

    /// Files host `h` in the index under its current free memory.
    fn reindex(&mut self, h: usize) {
        let free = filters::free(self.limits[h].memory_mb, self.hosts[h].allocated.memory_mb);
        self.index.update(h, free);
    }
}

#[cfg(test)]
mod tests;
