//! `volumes` of a service (short and long forms) and `env_file`: what they
//! mount, and that the template files they name are in the template.

use super::service::{Context, check_object_name};
use super::yaml::{Entry, Node, Reader, is_mapping, line};
use super::{Mount, MountSource};
use crate::template::TemplateError;
use crate::template::files::resolve_relative;

/// A path relative to the compose file that must name a file of the template.
pub(super) fn template_file(
    r: &Reader,
    ctx: &Context,
    node: &Node,
    key: &str,
    what: &str,
) -> Result<String, TemplateError> {
    if is_mapping(node) {
        return Err(r.err(
            line(node),
            key,
            format!("'{key}': write each {what} as a path (the long form is not supported)"),
        ));
    }
    let written = r.non_empty(node, key)?;
    let path = resolve_relative(ctx.base, &written).map_err(|why| {
        r.err(
            line(node),
            key,
            format!("{what} '{written}': {why}: keep it inside the template"),
        )
    })?;
    if let Some(files) = r.files
        && !files.contains(path.as_str())
    {
        return Err(r.err(
            line(node),
            key,
            format!(
                "{what} '{written}' is not in the template: add the file '{path}' to \
                    the template folder"
            ),
        ));
    }
    Ok(path)
}

pub(super) fn mount(
    r: &Reader,
    ctx: &Context,
    node: &Node,
    key: &str,
) -> Result<Mount, TemplateError> {
    let at = line(node);
    if !is_mapping(node) {
        let text = r.string(node, key)?;
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [target] => (None, *target, None),
            [source, target] => (Some(*source), *target, None),
            [source, target, mode] => (Some(*source), *target, Some(*mode)),
            _ => {
                return Err(r.err(
                    at,
                    key,
                    format!("volume '{text}': write source:target[:ro]"),
                ));
            }
        };
        let mut read_only = false;
        for opt in mode.into_iter().flat_map(|m| m.split(',')) {
            match opt {
                "ro" => read_only = true,
                "rw" => read_only = false,
                other => {
                    return Err(r.err(
                        at,
                        key,
                        format!(
                            "volume '{text}': option '{other}' is not supported (supported: ro, rw)"
                        ),
                    ));
                }
            }
        }
        let source = match source {
            None => MountSource::Anonymous,
            Some(s) if s.starts_with(['.', '/', '~']) => bind_source(r, ctx, at, key, s)?,
            Some(s) => named_volume(r, ctx, at, key, s)?,
        };
        return finish_mount(r, at, key, source, target, read_only);
    }
    let opts = r.mapping(node, key)?;
    r.only(
        &opts,
        &["type", "source", "target", "read_only"],
        key,
        "in a volume",
    )?;
    let get = |k: &str| opts.iter().find(|e| e.key == k);
    let text = |e: &Entry| r.non_empty(e.value, &format!("{key}.{}", e.key));
    let kind = match get("type") {
        Some(e) => text(e)?,
        None => {
            return Err(r.err(
                at,
                key,
                "a volume in long form needs 'type' (volume or bind)",
            ));
        }
    };
    let source = get("source").map(text).transpose()?;
    let source = match (kind.as_str(), source) {
        ("volume", None) => MountSource::Anonymous,
        ("volume", Some(s)) => named_volume(r, ctx, at, key, &s)?,
        ("bind", Some(s)) => bind_source(r, ctx, at, key, &s)?,
        ("bind", None) => return Err(r.err(at, key, "a bind mount needs 'source'")),
        (other, _) => {
            return Err(r.err(
                at,
                key,
                format!("volume type '{other}' is not supported (supported: volume, bind)"),
            ));
        }
    };
    let Some(target) = get("target") else {
        return Err(r.err(
            at,
            key,
            "a volume needs 'target', the path inside the container",
        ));
    };
    let target = text(target)?;
    let read_only = match get("read_only") {
        Some(e) => r.bool(e.value, &format!("{key}.read_only"))?,
        None => false,
    };
    finish_mount(r, at, key, source, &target, read_only)
}

fn finish_mount(
    r: &Reader,
    at: usize,
    key: &str,
    source: MountSource,
    target: &str,
    read_only: bool,
) -> Result<Mount, TemplateError> {
    if !target.starts_with('/') {
        return Err(r.err(
            at,
            key,
            format!("volume target '{target}' must be an absolute path inside the container"),
        ));
    }
    Ok(Mount {
        source,
        target: target.to_string(),
        read_only,
    })
}

fn named_volume(
    r: &Reader,
    ctx: &Context,
    at: usize,
    key: &str,
    name: &str,
) -> Result<MountSource, TemplateError> {
    check_object_name(r, at, key, "volume", name)?;
    if !ctx.compose.volumes.contains_key(name) {
        return Err(r.err(
            at,
            key,
            format!(
                "volume '{name}' is not declared: add it under the top-level 'volumes:' (or \
                write ./{name} for a folder of the template)"
            ),
        ));
    }
    Ok(MountSource::Volume(name.to_string()))
}

fn bind_source(
    r: &Reader,
    ctx: &Context,
    at: usize,
    key: &str,
    s: &str,
) -> Result<MountSource, TemplateError> {
    if s.starts_with('~') {
        return Err(r.err(
            at,
            key,
            format!(
                "bind source '{s}': '~' is not supported; use ./ for \
            a template folder or an absolute path"
            ),
        ));
    }
    if s.starts_with('/') {
        return Ok(MountSource::Host(s.to_string()));
    }
    let path = resolve_relative(ctx.base, s).map_err(|why| {
        r.err(
            at,
            key,
            format!("bind source '{s}': {why}: keep it inside the template"),
        )
    })?;
    if let Some(files) = r.files {
        let prefix = format!("{path}/");
        let exists = path.is_empty()
            || files.contains(path.as_str())
            || files.iter().any(|f| f.starts_with(&prefix));
        if !exists {
            return Err(r.err(
                at,
                key,
                format!(
                    "bind source '{s}' is not in the template: add '{path}' to the template folder"
                ),
            ));
        }
    }
    Ok(MountSource::Template(path))
}
