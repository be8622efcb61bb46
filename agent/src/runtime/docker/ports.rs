//! Host ports for published container ports. Every environment's published
//! ports come from the agent's range (`docker_port_range`), never from the
//! compose file's own numbers, so two environments of one template never
//! collide. An environment keeps its ports: they are recorded in
//! `<docker dir>/envs/<env id>/ports.json` (kept by a rebuild and by
//! `--keep-data`) and on the containers (`io.metrom.ports`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use metrom_protocol::template::Protocol;

use super::plan::PortKey;
use crate::config::PortRange;

pub const PORTS_FILE: &str = "ports.json";

/// Chooses a host port for every key. A key keeps its `previous` port while
/// that is in the range, not `taken` by another environment, and either
/// `ours` (bound by this environment's own containers) or `free` on the
/// host. Others get the lowest port of the range that is none of those
/// things. Pure but for `free`.
pub fn allocate(
    keys: &[PortKey],
    previous: &BTreeMap<String, u16>,
    taken: &BTreeSet<u16>,
    ours: &BTreeSet<u16>,
    range: PortRange,
    free: impl Fn(u16, Protocol) -> bool,
) -> Result<BTreeMap<PortKey, u16>, String> {
    let mut out = BTreeMap::new();
    let mut used: BTreeSet<u16> = BTreeSet::new();
    let usable = |p: u16, proto: Protocol, used: &BTreeSet<u16>| {
        range.contains(p)
            && !taken.contains(&p)
            && !used.contains(&p)
            && (ours.contains(&p) || free(p, proto))
    };
    // Keys that keep their port go first, so a new key cannot take one.
    for k in keys {
        if let Some(&p) = previous.get(&k.text())
            && usable(p, k.protocol, &used)
        {
            used.insert(p);
            out.insert(k.clone(), p);
        }
    }
    let mut next = range.first;
    for k in keys {
        if out.contains_key(k) {
            continue;
        }
        loop {
            if next > range.last || next < range.first {
                return Err(format!(
                    "no free host port left in docker_port_range {range} for {}: widen the range in agent.toml",
                    k.text()
                ));
            }
            let p = next;
            next = next.wrapping_add(1);
            if !ours.contains(&p) && usable(p, k.protocol, &used) {
                used.insert(p);
                out.insert(k.clone(), p);
                break;
            }
        }
    }
    Ok(out)
}

/// Whether nothing on this host listens on the port (any address).
pub fn free_on_host(port: u16, proto: Protocol) -> bool {
    match proto {
        Protocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
    }
}

/// The ports recorded for one environment.
pub fn load(env_dir: &Path) -> BTreeMap<String, u16> {
    std::fs::read(env_dir.join(PORTS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Every port recorded by environments other than `except`.
pub fn recorded_elsewhere(envs_dir: &Path, except: &str) -> BTreeSet<u16> {
    let Ok(entries) = std::fs::read_dir(envs_dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != except)
        .flat_map(|e| load(&e.path()).into_values())
        .collect()
}

pub fn save(env_dir: &Path, ports: &BTreeMap<PortKey, u16>) -> std::io::Result<()> {
    std::fs::create_dir_all(env_dir)?;
    let map: BTreeMap<String, u16> = ports.iter().map(|(k, p)| (k.text(), *p)).collect();
    let tmp = env_dir.join(format!("{PORTS_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&map)?)?;
    std::fs::rename(&tmp, env_dir.join(PORTS_FILE))
}

/// Parses an `io.metrom.ports` label: `<target>/<proto>=<host>,…`.
pub fn parse_label(text: &str) -> Vec<(u16, Protocol, u16)> {
    text.split(',')
        .filter_map(|item| {
            let (port, host) = item.split_once('=')?;
            let (target, proto) = port.split_once('/')?;
            let proto = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return None,
            };
            Some((target.parse().ok()?, proto, host.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str, t: u16) -> PortKey {
        PortKey {
            service: s.into(),
            target: t,
            protocol: Protocol::Tcp,
        }
    }

    const RANGE: PortRange = PortRange {
        first: 100,
        last: 104,
    };

    #[test]
    fn previous_ports_are_kept_and_new_ones_fill_the_gaps() {
        let keys = [key("web", 80), key("db", 5432), key("web", 443)];
        let previous = BTreeMap::from([("db:5432/tcp".to_string(), 100)]);
        let taken = BTreeSet::from([101]);
        let got = allocate(&keys, &previous, &taken, &BTreeSet::new(), RANGE, |_, _| {
            true
        })
        .unwrap();
        assert_eq!(got[&key("db", 5432)], 100);
        assert_eq!(got[&key("web", 80)], 102);
        assert_eq!(got[&key("web", 443)], 103);
    }

    #[test]
    fn a_previous_port_someone_else_holds_is_replaced() {
        let keys = [key("web", 80)];
        let previous = BTreeMap::from([("web:80/tcp".to_string(), 100)]);
        // Taken by another environment.
        let got = allocate(
            &keys,
            &previous,
            &BTreeSet::from([100]),
            &BTreeSet::new(),
            RANGE,
            |_, _| true,
        )
        .unwrap();
        assert_eq!(got[&key("web", 80)], 101);
        // Bound by something else on the host.
        let got = allocate(
            &keys,
            &previous,
            &BTreeSet::new(),
            &BTreeSet::new(),
            RANGE,
            |p, _| p != 100,
        )
        .unwrap();
        assert_eq!(got[&key("web", 80)], 101);
        // Bound by our own running container: kept.
        let got = allocate(
            &keys,
            &previous,
            &BTreeSet::new(),
            &BTreeSet::from([100]),
            RANGE,
            |p, _| p != 100,
        )
        .unwrap();
        assert_eq!(got[&key("web", 80)], 100);
        // Out of the (new) range: replaced.
        let previous = BTreeMap::from([("web:80/tcp".to_string(), 9)]);
        let got = allocate(
            &keys,
            &previous,
            &BTreeSet::new(),
            &BTreeSet::new(),
            RANGE,
            |_, _| true,
        )
        .unwrap();
        assert_eq!(got[&key("web", 80)], 100);
    }

    #[test]
    fn a_full_range_is_an_error_naming_the_key() {
        let keys: Vec<PortKey> = (0..6).map(|i| key("web", 80 + i)).collect();
        let e = allocate(
            &keys,
            &BTreeMap::new(),
            &BTreeSet::new(),
            &BTreeSet::new(),
            RANGE,
            |_, _| true,
        )
        .unwrap_err();
        assert!(e.contains("web:85/tcp") && e.contains("100-104"), "{e}");
        let range = PortRange {
            first: 65535,
            last: 65535,
        };
        let e = allocate(
            &keys[..2],
            &BTreeMap::new(),
            &BTreeSet::new(),
            &BTreeSet::new(),
            range,
            |_, _| true,
        )
        .unwrap_err();
        assert!(e.contains("web:81/tcp"), "{e}");
    }

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_label("80/tcp=20000,53/udp=20001,bad"),
            vec![(80, Protocol::Tcp, 20000), (53, Protocol::Udp, 20001)]
        );
    }
}
