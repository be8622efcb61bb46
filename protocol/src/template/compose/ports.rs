//! `ports`: the short (`"127.0.0.1:8080:80/udp"`) and long (`target:`) forms.

use std::net::IpAddr;

use super::PortMapping;
use super::yaml::{Node, Reader, is_mapping, line};
use crate::template::{Protocol, TemplateError};

pub(super) fn port(r: &Reader, node: &Node, key: &str) -> Result<PortMapping, TemplateError> {
    if !is_mapping(node) {
        let text = r.string(node, key)?;
        return parse_port(&text)
            .map_err(|why| r.err(line(node), key, format!("port '{text}': {why}")));
    }
    let opts = r.mapping(node, key)?;
    r.only(
        &opts,
        &["target", "published", "protocol", "host_ip"],
        key,
        "in a port",
    )?;
    let get = |k: &str| opts.iter().find(|e| e.key == k);
    let Some(target) = get("target") else {
        return Err(r.err(
            line(node),
            key,
            "a port needs 'target', the port inside the container",
        ));
    };
    let mut p = PortMapping {
        target: r.number(target.value, &format!("{key}.target"), 1..=65535)? as u16,
        published: None,
        host_ip: None,
        protocol: Protocol::Tcp,
    };
    if let Some(e) = get("published") {
        p.published = Some(r.number(e.value, &format!("{key}.published"), 1..=65535)? as u16);
    }
    if let Some(e) = get("protocol") {
        let text = r.string(e.value, &format!("{key}.protocol"))?;
        p.protocol = parse_protocol(&text).map_err(|why| r.err(e.line, key, why))?;
    }
    if let Some(e) = get("host_ip") {
        let text = r.string(e.value, &format!("{key}.host_ip"))?;
        p.host_ip = Some(text.parse().map_err(|_| {
            r.err(
                e.line,
                key,
                format!("host_ip '{text}' is not an IP address"),
            )
        })?);
    }
    Ok(p)
}

/// The short port syntax: `80`, `8080:80`, `127.0.0.1:8080:80`,
/// `127.0.0.1::80`, `[::1]:8080:80`, each optionally `/tcp` or `/udp`.
pub(crate) fn parse_port(s: &str) -> Result<PortMapping, String> {
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, proto)) => (spec, parse_protocol(proto)?),
        None => (s, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(v6) = spec.strip_prefix('[') {
        let (ip, rest) = v6
            .split_once("]:")
            .ok_or("an IPv6 address in brackets is followed by ':'")?;
        (Some(ip), rest)
    } else {
        match spec.matches(':').count() {
            0 | 1 => (None, spec),
            2 => spec
                .split_once(':')
                .map(|(ip, rest)| (Some(ip), rest))
                .unwrap_or((None, spec)),
            _ => return Err("too many ':' (write an IPv6 address in brackets)".into()),
        }
    };
    let host_ip = host_ip
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|_| format!("'{ip}' is not an IP address"))
        })
        .transpose()?;
    let number = |p: &str| -> Result<u16, String> {
        if p.contains('-') {
            return Err("port ranges are not supported: list each port".into());
        }
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("'{p}' is not a port (1 to 65535)"))
    };
    let (published, target) = match rest.split_once(':') {
        Some(("", target)) => (None, number(target)?),
        Some((published, target)) => (Some(number(published)?), number(target)?),
        None => (None, number(rest)?),
    };
    Ok(PortMapping {
        target,
        published,
        host_ip,
        protocol,
    })
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!(
            "protocol '{other}' is not supported (supported: tcp, udp)"
        )),
    }
}
