//! The placement index, so a placement looks at a few dozen hosts instead of
//! all of them.
//!
//! For each runtime, the hosts that offer it and can take work (Ready, not
//! cordoned) sit in pools by size — the power of two of their memory limit —
//! and each pool is ordered by free memory. A request walks, in each pool of a
//! runtime, only the hosts with enough free memory (a range query), from the
//! tightest fit (binpack) or from the roomiest (spread), and stops once it has
//! met a few feasible hosts; the scorer then picks among those. Pooling by
//! size keeps binpack fair to big hosts: a big host that is 90 % full has more
//! free MiB than an empty small one and would otherwise come last.
//!
//! A walk only stops early after meeting feasible hosts, so it never misses
//! one: when a walk finds nothing, no indexed host can take the request.

use std::collections::{BTreeSet, HashMap};

use metrom_protocol::messages::env::RuntimeKind;

use super::{HostSnapshot, Limits};

/// Where a walk starts in each pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// Least free memory first (binpack).
    TightestFirst,
    /// Most free memory first (spread).
    RoomiestFirst,
}

#[derive(Debug)]
pub(super) struct Index {
    pools: Vec<Pool>,
    /// Pool ids per runtime slot, smallest hosts first.
    by_runtime: [Vec<usize>; RUNTIMES],
    /// Per host (by position in the scheduler's host list): its pools and the
    /// free memory it is filed under.
    entries: Vec<Entry>,
}

impl Index {
    /// Files every host that can take work; `free_memory_mb` per host.
    pub fn build(hosts: &[HostSnapshot], limits: &[Limits], free_memory_mb: &[u64]) -> Index {
        let mut index = Index {
            pools: Vec::new(),
            by_runtime: Default::default(),
            entries: Vec::with_capacity(hosts.len()),
        };
        let mut pool_ids: HashMap<(usize, u32), usize> = HashMap::new();
        for (h, host) in hosts.iter().enumerate() {
            let mut entry = Entry {
                pools: [None; RUNTIMES],
                free_mb: free_memory_mb[h],
            };
            if host.ready && !host.cordoned {
                let size = size_class(limits[h].memory_mb);
                for &runtime in &host.runtimes {
                    let slot = slot(runtime);
                    let id = *pool_ids.entry((slot, size)).or_insert_with(|| {
                        index.pools.push(Pool {
                            size,
                            hosts: BTreeSet::new(),
                        });
                        index.by_runtime[slot].push(index.pools.len() - 1);
                        index.pools.len() - 1
                    });
                    entry.pools[slot] = Some(id);
                    index.pools[id].hosts.insert((entry.free_mb, h as u32));
                }
            }
            index.entries.push(entry);
        }
        for ids in &mut index.by_runtime {
            ids.sort_by_key(|&id| index.pools[id].size);
        }
        index
    }

    /// Re-files host `h` under its new free memory.
    pub fn update(&mut self, h: usize, free_mb: u64) {
        let entry = &mut self.entries[h];
        if entry.free_mb == free_mb {
            return;
        }
        for id in entry.pools.iter().flatten() {
            let pool = &mut self.pools[*id].hosts;
            pool.remove(&(entry.free_mb, h as u32));
            pool.insert((free_mb, h as u32));
        }
        entry.free_mb = free_mb;
    }

    /// Offers `consider` the hosts offering `runtime` with at least `need_mb`
    /// free, pool by pool in `order`, until it has accepted `per_pool` hosts of
    /// that pool. `consider` returns whether the host is feasible.
    pub fn walk(
        &self,
        runtime: RuntimeKind,
        need_mb: u64,
        order: Order,
        per_pool: usize,
        mut consider: impl FnMut(usize) -> bool,
    ) {
        for &id in &self.by_runtime[slot(runtime)] {
            let fitting = self.pools[id].hosts.range((need_mb, 0)..);
            let mut accepted = 0;
            let mut offer = |&(_, h): &(u64, u32)| {
                if consider(h as usize) {
                    accepted += 1;
                }
                accepted < per_pool
            };
            match order {
                Order::TightestFirst => {
                    for key in fitting {
                        if !offer(key) {
                            break;
                        }
                    }
                }
                Order::RoomiestFirst => {
                    for key in fitting.rev() {
                        if !offer(key) {
                            break;
                        }
                    }
                }
            }
        }
    }
}

const RUNTIMES: usize = 4;

fn slot(runtime: RuntimeKind) -> usize {
    match runtime {
        RuntimeKind::Kvm => 0,
        RuntimeKind::Docker => 1,
        RuntimeKind::Fake => 2,
        // No host runs it (the cloud broker does); a host claiming it gets
        // nothing, since requests never ask for it.
        RuntimeKind::Cloud => 3,
    }
}

/// Hosts whose memory limits are within a factor of two share a pool.
fn size_class(memory_limit_mb: u64) -> u32 {
    u64::BITS - memory_limit_mb.leading_zeros()
}

#[derive(Debug)]
struct Pool {
    size: u32,
    /// (free memory in MiB, host position): ordered by free memory, then by
    /// host id (positions follow host ids).
    hosts: BTreeSet<(u64, u32)>,
}

#[derive(Debug)]
struct Entry {
    /// The pool for each runtime slot the host offers.
    pools: [Option<usize>; RUNTIMES],
    free_mb: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_powers_of_two() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(1), 1);
        assert_eq!(size_class(16_384), size_class(32_767));
        assert_ne!(size_class(16_384), size_class(32_768));
    }
}
