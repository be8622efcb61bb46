//! "No host can take it": every host with the reason it was rejected, and a
//! one-line summary a developer understands at a glance.

use std::collections::BTreeMap;
use std::fmt;

use metrom_protocol::ids::HostId;
use metrom_protocol::messages::env::{Resources, RuntimeKind};
use serde::Serialize;

/// No host can take the request. Carries every host's rejection; `Display`
/// summarises them (counts by reason and a few example hosts).
#[derive(Debug, Clone, Serialize)]
pub struct NoCapacity {
    /// What was asked for.
    pub resources: Resources,
    /// Runtimes asked for, in preference order (empty: any).
    pub runtimes: Vec<RuntimeKind>,
    pub labels: BTreeMap<String, String>,
    /// The host the request was pinned to, if any.
    pub pinned: Option<HostId>,
    /// One per known host, ordered by host id.
    rejections: Vec<Rejection>,
}

/// One host that cannot take the request, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub host: HostId,
    pub reason: Reason,
}

/// Why a host cannot take a request: the first filter that said no.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Its agent is not connected and heartbeating.
    NotReady,
    Cordoned,
    /// The request is pinned to another host.
    NotTheRequestedHost,
    /// The request excludes it (`rebuild --elsewhere`).
    Excluded,
    RuntimeUnsupported {
        wanted: Vec<RuntimeKind>,
        offered: Vec<RuntimeKind>,
    },
    LabelMismatch {
        key: String,
        wanted: String,
        found: Option<String>,
    },
    /// In vCPUs. `free` = floor(`capacity` × `overcommit`) − `allocated`, at least 0.
    Cpu {
        need: u32,
        free: u64,
        capacity: u32,
        overcommit: f64,
        allocated: u32,
    },
    /// In MiB.
    Memory {
        need_mb: u64,
        free_mb: u64,
        capacity_mb: u64,
        overcommit: f64,
        allocated_mb: u64,
    },
    /// In GiB.
    Disk {
        need_gb: u64,
        free_gb: u64,
        capacity_gb: u64,
        overcommit: f64,
        allocated_gb: u64,
    },
}

impl NoCapacity {
    /// Every known host with the reason it was rejected, ordered by host id.
    pub fn rejections(&self) -> &[Rejection] {
        &self.rejections
    }

    pub(super) fn new(
        resources: Resources,
        runtimes: &[RuntimeKind],
        labels: &BTreeMap<String, String>,
        pinned: Option<&HostId>,
        rejections: Vec<Rejection>,
    ) -> NoCapacity {
        NoCapacity {
            resources,
            runtimes: runtimes.to_vec(),
            labels: labels.clone(),
            pinned: pinned.cloned(),
            rejections,
        }
    }
}

impl std::error::Error for NoCapacity {}

impl fmt::Display for NoCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rejections.is_empty() {
            return f.write_str(
                "no hosts have joined yet; add one with metrom token create + metrom-agent join",
            );
        }
        if let Some(pinned) = &self.pinned {
            return match self.rejections.iter().find(|r| &r.host == pinned) {
                Some(r) => write!(f, "host {pinned} cannot take it: {}", r.reason),
                None => write!(
                    f,
                    "host {pinned} is not a known host ({} {} joined; see metrom host list)",
                    self.rejections.len(),
                    plural(self.rejections.len(), "host has", "hosts have"),
                ),
            };
        }
        write!(f, "no host can take {}: ", self.request_summary())?;
        let mut groups = self.groups();
        // Most common reason first; equal counts in `Kind` order.
        groups.sort_by_key(|g| (std::cmp::Reverse(g.hosts.len()), g.kind));
        for (i, group) in groups.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            self.write_group(f, group, i == 0)?;
        }
        Ok(())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("it is Unreachable (its agent is not connected)"),
            Reason::Cordoned => f.write_str(
                "it is cordoned (metrom host uncordon lets it receive environments again)",
            ),
            Reason::NotTheRequestedHost => f.write_str("it is not the requested host"),
            Reason::Excluded => f.write_str("the request excludes it"),
            Reason::RuntimeUnsupported { wanted, offered } => write!(
                f,
                "runtime: it offers {}, the request wants {}",
                if offered.is_empty() {
                    "no runtime".to_string()
                } else {
                    runtimes(offered, "and")
                },
                runtimes(wanted, "or"),
            ),
            Reason::LabelMismatch { key, wanted, found } => match found {
                Some(found) => write!(f, "label {key}: wants {wanted}, the host has {found}"),
                None => write!(
                    f,
                    "label {key}: wants {wanted}, the host has no {key} label"
                ),
            },
            Reason::Cpu {
                need,
                free,
                capacity,
                overcommit,
                allocated,
            } => write!(
                f,
                "cpu: needs {need} {}, {free} free ({capacity} CPUs x {} overcommit minus {allocated} allocated)",
                plural(*need as usize, "vCPU", "vCPUs"),
                ratio(*overcommit)
            ),
            Reason::Memory {
                need_mb,
                free_mb,
                capacity_mb,
                overcommit,
                allocated_mb,
            } => write!(
                f,
                "memory: needs {need_mb} MiB, {free_mb} MiB free ({capacity_mb} MiB x {} overcommit minus {allocated_mb} MiB allocated)",
                ratio(*overcommit)
            ),
            Reason::Disk {
                need_gb,
                free_gb,
                capacity_gb,
                overcommit,
                allocated_gb,
            } => write!(
                f,
                "disk: needs {need_gb} GiB, {free_gb} GiB free ({capacity_gb} GiB x {} overcommit minus {allocated_gb} GiB allocated)",
                ratio(*overcommit)
            ),
        }
    }
}

/// How many example hosts a summary names per reason.
const EXAMPLES: usize = 3;

/// The reasons as the summary groups them. Groups of equal size are listed in
/// this order: lack of room first (what a developer can act on), then what
/// hosts offer, then their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Cpu,
    Memory,
    Disk,
    Labels,
    Runtime,
    Cordoned,
    NotReady,
    Excluded,
    NotTheRequestedHost,
}

/// The hosts rejected for one kind of reason.
struct Group<'a> {
    kind: Kind,
    hosts: Vec<&'a Rejection>,
}

impl NoCapacity {
    /// `4 vCPUs, 8192 MiB memory, 40 GiB disk (runtime kvm, labels zone=eu)`.
    fn request_summary(&self) -> String {
        let r = &self.resources;
        let mut s = format!(
            "{} {}, {} MiB memory, {} GiB disk (",
            r.vcpus,
            plural(r.vcpus as usize, "vCPU", "vCPUs"),
            r.memory_mb,
            r.disk_gb
        );
        if self.runtimes.is_empty() {
            s.push_str("any runtime");
        } else {
            s.push_str("runtime ");
            s.push_str(&runtimes(&self.runtimes, "or"));
        }
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(", labels ");
            s.push_str(&labels.join(","));
        }
        s.push(')');
        s
    }

    fn groups(&self) -> Vec<Group<'_>> {
        let mut groups: Vec<Group<'_>> = Vec::new();
        for rejection in &self.rejections {
            let kind = kind(&rejection.reason);
            match groups.iter_mut().find(|g| g.kind == kind) {
                Some(g) => g.hosts.push(rejection),
                None => groups.push(Group {
                    kind,
                    hosts: vec![rejection],
                }),
            }
        }
        groups
    }

    /// `2 hosts lack memory (most free: h-abc with 6144 MiB)`, `1 cordoned (h-def)`.
    /// The first group names its subject ("hosts"); later ones are just counts.
    fn write_group(
        &self,
        f: &mut fmt::Formatter<'_>,
        group: &Group<'_>,
        first: bool,
    ) -> fmt::Result {
        let n = group.hosts.len();
        let one = n == 1;
        if first {
            write!(f, "{n} {} ", plural(n, "host", "hosts"))?;
        } else {
            write!(f, "{n} ")?;
        }
        let most_free = |unit: &str, free: fn(&Reason) -> u64| {
            // Hosts are in id order, so the first of the largest is the smallest id.
            let best = group
                .hosts
                .iter()
                .fold(None::<(&Rejection, u64)>, |best, r| {
                    let v = free(&r.reason);
                    match best {
                        Some((_, b)) if b >= v => best,
                        _ => Some((r, v)),
                    }
                })
                .expect("a group has hosts");
            format!("most free: {} with {} {unit}", best.0.host, best.1)
        };
        match group.kind {
            Kind::NotReady => write!(f, "Unreachable ({})", examples(&group.hosts)),
            Kind::Cordoned => write!(f, "cordoned ({})", examples(&group.hosts)),
            Kind::Excluded => write!(f, "excluded by the request ({})", examples(&group.hosts)),
            Kind::NotTheRequestedHost => {
                write!(f, "not the requested host ({})", examples(&group.hosts))
            }
            Kind::Runtime => write!(
                f,
                "{} {} ({})",
                if one { "doesn't offer" } else { "don't offer" },
                runtimes(&self.runtimes, "or"),
                examples(&group.hosts)
            ),
            Kind::Labels => {
                let shown: Vec<String> = group
                    .hosts
                    .iter()
                    .take(EXAMPLES)
                    .map(|r| match &r.reason {
                        Reason::LabelMismatch {
                            key,
                            found: Some(v),
                            ..
                        } => {
                            format!("{} has {key}={v}", r.host)
                        }
                        Reason::LabelMismatch {
                            key, found: None, ..
                        } => {
                            format!("{} has no {key}", r.host)
                        }
                        _ => r.host.to_string(),
                    })
                    .collect();
                write!(
                    f,
                    "{} the labels ({}{})",
                    if one { "doesn't match" } else { "don't match" },
                    shown.join(", "),
                    more(n)
                )
            }
            Kind::Cpu => write!(
                f,
                "{} CPU ({})",
                if one { "lacks" } else { "lack" },
                most_free("vCPUs", |r| match r {
                    Reason::Cpu { free, .. } => *free,
                    _ => 0,
                })
            ),
            Kind::Memory => write!(
                f,
                "{} memory ({})",
                if one { "lacks" } else { "lack" },
                most_free("MiB", |r| match r {
                    Reason::Memory { free_mb, .. } => *free_mb,
                    _ => 0,
                })
            ),
            Kind::Disk => write!(
                f,
                "{} disk ({})",
                if one { "lacks" } else { "lack" },
                most_free("GiB", |r| match r {
                    Reason::Disk { free_gb, .. } => *free_gb,
                    _ => 0,
                })
            ),
        }
    }
}

fn kind(reason: &Reason) -> Kind {
    match reason {
        Reason::NotTheRequestedHost => Kind::NotTheRequestedHost,
        Reason::Excluded => Kind::Excluded,
        Reason::NotReady => Kind::NotReady,
        Reason::Cordoned => Kind::Cordoned,
        Reason::RuntimeUnsupported { .. } => Kind::Runtime,
        Reason::LabelMismatch { .. } => Kind::Labels,
        Reason::Cpu { .. } => Kind::Cpu,
        Reason::Memory { .. } => Kind::Memory,
        Reason::Disk { .. } => Kind::Disk,
    }
}

/// `h-a, h-b, h-c and 7 more`.
fn examples(hosts: &[&Rejection]) -> String {
    let shown: Vec<&str> = hosts
        .iter()
        .take(EXAMPLES)
        .map(|r| r.host.as_str())
        .collect();
    format!("{}{}", shown.join(", "), more(hosts.len()))
}

fn more(n: usize) -> String {
    if n > EXAMPLES {
        format!(" and {} more", n - EXAMPLES)
    } else {
        String::new()
    }
}

/// `kvm or docker`.
fn runtimes(kinds: &[RuntimeKind], conjunction: &str) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    names.join(&format!(" {conjunction} "))
}

/// `1.0`, `4.0`, `1.25`.
fn ratio(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{r:.1}")
    } else {
        format!("{r}")
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}
