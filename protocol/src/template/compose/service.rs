//! One service of a compose file, key by key, every documented form.

use std::collections::BTreeMap;

use super::mounts::{mount, template_file};
use super::ports::port;
use super::yaml::{Entry, Node, Reader, is_mapping, is_null, line, raw_scalar};
use super::{Compose, Condition, HealthTest, Healthcheck, Restart, SERVICE_KEYS, Service};
use crate::template::TemplateError;

/// What a service is read against.
pub(super) struct Context<'c> {
    pub name: &'c str,
    /// Line of the service's name.
    pub line: usize,
    /// The compose file so far: top-level volumes and networks, all service names.
    pub compose: &'c Compose,
    /// Folder of the compose file inside the template ("" for its root).
    pub base: &'c str,
}

/// Lines of what is checked across services.
#[derive(Default)]
pub(super) struct Lines {
    pub ports: Vec<usize>,
    pub depends_on: BTreeMap<String, usize>,
}

/// Checks a service, volume or network name: compose's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(super) fn check_object_name(
    r: &Reader,
    line: usize,
    key: &str,
    kind: &str,
    name: &str,
) -> Result<(), TemplateError> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(r.err(
            line,
            key,
            format!("invalid {kind} name '{name}': use letters, digits, '_', '.' and '-'"),
        ))
    }
}

pub(super) fn read(
    r: &Reader,
    ctx: &Context,
    node: &Node,
) -> Result<(Service, Lines), TemplateError> {
    let svc_key = format!("services.{}", ctx.name);
    let entries = r.mapping(node, &svc_key)?;
    if let Some(e) = entries.iter().find(|e| e.key == "build") {
        return Err(r.err(
            e.line,
            &format!("{svc_key}.build"),
            format!(
                "unsupported key 'build' in service '{}': build the image beforehand and push \
                 it to your registry, then name it with 'image' (supported: {})",
                ctx.name,
                SERVICE_KEYS.join(", ")
            ),
        ));
    }
    r.only(
        &entries,
        SERVICE_KEYS,
        &svc_key,
        &format!("in service '{}'", ctx.name),
    )?;
    let get = |k: &str| entries.iter().find(|e| e.key == k);
    let key = |k: &str| format!("{svc_key}.{k}");
    let Some(image) = get("image") else {
        return Err(r.err(
            ctx.line,
            &key("image"),
            format!(
                "service '{}' has no image: add image: <name>:<tag>",
                ctx.name
            ),
        ));
    };
    let image_text = r.non_empty(image.value, &key("image"))?;
    if image_text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(r.err(
            image.line,
            &key("image"),
            format!("invalid image '{image_text}'"),
        ));
    }
    let mut lines = Lines::default();
    let mut svc = Service {
        image: image_text,
        command: None,
        entrypoint: None,
        environment: BTreeMap::new(),
        env_file: Vec::new(),
        ports: Vec::new(),
        volumes: Vec::new(),
        depends_on: BTreeMap::new(),
        healthcheck: None,
        restart: None,
        networks: Vec::new(),
        labels: BTreeMap::new(),
        working_dir: None,
        user: None,
    };
    for e in &entries {
        let k = key(&e.key);
        let v = e.value;
        match e.key.as_str() {
            "command" => svc.command = words(r, v, &k)?,
            "entrypoint" => svc.entrypoint = words(r, v, &k)?,
            "environment" => svc.environment = r.key_values(v, &k, None)?,
            "labels" => svc.labels = r.key_values(v, &k, Some(""))?,
            "env_file" => {
                for item in listed(v) {
                    svc.env_file
                        .push(template_file(r, ctx, item, &k, "env_file")?);
                }
            }
            "ports" => {
                for item in r.list(v, &k)? {
                    svc.ports.push(port(r, item, &k)?);
                    lines.ports.push(line(item));
                }
            }
            "volumes" => {
                for item in r.list(v, &k)? {
                    svc.volumes.push(mount(r, ctx, item, &k)?);
                }
            }
            "depends_on" => depends_on(r, ctx, e, &mut svc, &mut lines)?,
            "healthcheck" => svc.healthcheck = Some(healthcheck(r, ctx, e)?),
            "restart" => svc.restart = Some(restart(r, v, &k)?),
            "networks" => svc.networks = networks(r, ctx, v, &k)?,
            "working_dir" => {
                let dir = r.non_empty(v, &k)?;
                if !dir.starts_with('/') {
                    return Err(r.err(
                        line(v),
                        &k,
                        format!("working_dir '{dir}' must be an absolute path"),
                    ));
                }
                svc.working_dir = Some(dir);
            }
            "user" => svc.user = Some(r.non_empty(v, &k)?),
            _ => {}
        }
    }
    Ok((svc, lines))
}

/// `command` and `entrypoint`: a list, or a string split as a shell would.
fn words(r: &Reader, node: &Node, key: &str) -> Result<Option<Vec<String>>, TemplateError> {
    if is_null(node) {
        return Ok(None);
    }
    if raw_scalar(node).is_some() {
        let text = r.string(node, key)?;
        return split_words(&text)
            .map(Some)
            .map_err(|why| r.err(line(node), key, format!("'{key}': {why}")));
    }
    let items = r.list(node, key)?;
    items
        .iter()
        .map(|i| r.string(i, key))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Splits a command line into words like a POSIX shell, without expansions:
/// blanks separate words; single quotes keep everything; double quotes keep
/// everything but `\"`, `\\`, `\$` and `` \` ``; a backslash outside quotes
/// keeps the next character.
pub(crate) fn split_words(s: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                words.extend(word.take());
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("a single quote is not closed"),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("a double quote is not closed"),
                        },
                        Some(c) => w.push(c),
                        None => return Err("a double quote is not closed"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("it ends with a lone backslash"),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// A node that may be one item or a list of them.
fn listed<'n, 'a>(node: &'n Node<'a>) -> Vec<&'n Node<'a>> {
    match &node.data {
        saphyr::YamlData::Sequence(items) => items.iter().collect(),
        _ => vec![node],
    }
}

fn depends_on(
    r: &Reader,
    ctx: &Context,
    e: &Entry,
    svc: &mut Service,
    lines: &mut Lines,
) -> Result<(), TemplateError> {
    let key = format!("services.{}.depends_on", ctx.name);
    let mut deps: Vec<(String, usize, Condition)> = Vec::new();
    if is_mapping(e.value) {
        for d in r.mapping(e.value, &key)? {
            let mut condition = Condition::ServiceStarted;
            if !is_null(d.value) {
                let opts = r.mapping(d.value, &format!("{key}.{}", d.key))?;
                r.only(
                    &opts,
                    &["condition"],
                    &key,
                    &format!("in depends_on '{}'", d.key),
                )?;
                if let Some(c) = opts.iter().find(|o| o.key == "condition") {
                    let text = r.string(c.value, &key)?;
                    condition = match text.as_str() {
                        "service_started" => Condition::ServiceStarted,
                        "service_healthy" => Condition::ServiceHealthy,
                        "service_completed_successfully" => Condition::ServiceCompletedSuccessfully,
                        other => {
                            return Err(r.err(
                                c.line,
                                &key,
                                format!(
                                    "condition '{other}' is not supported (supported: \
                                     service_started, service_healthy, \
                                     service_completed_successfully)"
                                ),
                            ));
                        }
                    };
                }
            }
            deps.push((d.key, d.line, condition));
        }
    } else {
        for item in r.list(e.value, &key)? {
            deps.push((
                r.non_empty(item, &key)?,
                line(item),
                Condition::ServiceStarted,
            ));
        }
    }
    for (name, at, condition) in deps {
        if !ctx.compose.service_order.contains(&name) {
            return Err(r.err(
                at,
                &key,
                format!(
                    "service '{}' depends on '{name}', which is not a service of this file \
                        (services: {})",
                    ctx.name,
                    ctx.compose.service_order.join(", ")
                ),
            ));
        }
        if svc.depends_on.insert(name.clone(), condition).is_some() {
            return Err(r.err(at, &key, format!("'{name}' is listed twice in depends_on")));
        }
        lines.depends_on.insert(name, at);
    }
    Ok(())
}

fn healthcheck(r: &Reader, ctx: &Context, e: &Entry) -> Result<Healthcheck, TemplateError> {
    let key = format!("services.{}.healthcheck", ctx.name);
    let opts = r.mapping(e.value, &key)?;
    r.only(
        &opts,
        &[
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "disable",
        ],
        &key,
        &format!("in the healthcheck of service '{}'", ctx.name),
    )?;
    let mut h = Healthcheck::default();
    for o in &opts {
        let k = format!("{key}.{}", o.key);
        match o.key.as_str() {
            "test" => h.test = Some(health_test(r, o.value, &k)?),
            "interval" => h.interval = Some(r.duration(o.value, &k)?),
            "timeout" => h.timeout = Some(r.duration(o.value, &k)?),
            "start_period" => h.start_period = Some(r.duration(o.value, &k)?),
            "retries" => h.retries = Some(r.number(o.value, &k, 0..=u32::MAX)?),
            _ => {}
        }
    }
    if let Some(d) = opts.iter().find(|o| o.key == "disable")
        && r.bool(d.value, &format!("{key}.disable"))?
    {
        if h.test.as_ref().is_some_and(|t| *t != HealthTest::Disabled) {
            return Err(r.err(
                d.line,
                &key,
                "healthcheck sets both 'test' and 'disable: true': keep one",
            ));
        }
        h.test = Some(HealthTest::Disabled);
    }
    Ok(h)
}

fn health_test(r: &Reader, node: &Node, key: &str) -> Result<HealthTest, TemplateError> {
    if raw_scalar(node).is_some() {
        return Ok(HealthTest::Shell(r.non_empty(node, key)?));
    }
    let items = r.list(node, key)?;
    let words: Vec<String> = items
        .iter()
        .map(|i| r.string(i, key))
        .collect::<Result<_, _>>()?;
    let bad = |why: &str| {
        r.err(
            line(node),
            key,
            format!(
                "'{key}': {why} (write [\"CMD\", \"prog\", \"arg\"], \
            [\"CMD-SHELL\", \"command\"], [\"NONE\"] or a string)"
            ),
        )
    };
    match words.split_first() {
        Some((first, [])) if first == "NONE" => Ok(HealthTest::Disabled),
        Some((first, args)) if first == "CMD" && !args.is_empty() => {
            Ok(HealthTest::Cmd(args.to_vec()))
        }
        Some((first, [cmd])) if first == "CMD-SHELL" => Ok(HealthTest::Shell(cmd.clone())),
        Some((first, _)) if first == "CMD-SHELL" => Err(bad("CMD-SHELL takes one command string")),
        Some((first, _)) if first == "CMD" => Err(bad("CMD needs a program")),
        Some((first, _)) => Err(bad(&format!(
            "a test list starts with CMD, CMD-SHELL or NONE, not '{first}'"
        ))),
        None => Err(bad("the test is empty")),
    }
}

fn restart(r: &Reader, node: &Node, key: &str) -> Result<Restart, TemplateError> {
    let text = r.string(node, key)?;
    let policy = match text.as_str() {
        "no" => Restart::No,
        "always" => Restart::Always,
        "unless-stopped" => Restart::UnlessStopped,
        "on-failure" => Restart::OnFailure { max_retries: None },
        other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(n)) => Restart::OnFailure {
                max_retries: Some(n),
            },
            _ => {
                return Err(r.err(
                    line(node),
                    key,
                    format!(
                        "restart '{other}' is not supported \
                    (supported: no, always, on-failure, on-failure:N, unless-stopped)"
                    ),
                ));
            }
        },
    };
    Ok(policy)
}

fn networks(
    r: &Reader,
    ctx: &Context,
    node: &Node,
    key: &str,
) -> Result<Vec<String>, TemplateError> {
    let mut names: Vec<(String, usize)> = Vec::new();
    if is_mapping(node) {
        for e in r.mapping(node, key)? {
            if !super::yaml::is_empty_decl(e.value) {
                let opts = r.mapping(e.value, key)?;
                r.only(
                    &opts,
                    &[],
                    key,
                    &format!("in network '{}' of service '{}'", e.key, ctx.name),
                )?;
            }
            names.push((e.key, e.line));
        }
    } else {
        for item in r.list(node, key)? {
            names.push((r.non_empty(item, key)?, line(item)));
        }
    }
    for (name, at) in &names {
        if name != "default" && !ctx.compose.networks.contains(name) {
            return Err(r.err(
                *at,
                key,
                format!("network '{name}' is not declared: add it under the top-level 'networks:'"),
            ));
        }
    }
    Ok(names.into_iter().map(|(n, _)| n).collect())
}
