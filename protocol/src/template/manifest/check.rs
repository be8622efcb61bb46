//! The checks of a manifest that need its spans: ranges, names, uniqueness.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::toml_error::{key_line, line_of};
use super::{
    DEFAULT_COMPOSE_FILE, MANIFEST_FILE, Manifest, ParamSpec, PortSpec, RawManifest, RawPort,
    RawRepo, RawResources, RepoKind, RepoSpec, RuntimePref, default_repo_path, parse_size_mib,
};
use crate::messages::env::Resources;
use crate::template::params::param_values;
use crate::template::policy::PolicySpec;
use crate::template::{TemplateError, check_file_path, interpolate};

/// The checks that need the raw, spanned manifest.
pub(super) struct Checker<'a> {
    pub text: &'a str,
}

impl Checker<'_> {
    pub fn at(&self, span: Range<usize>, key: &str, message: String) -> TemplateError {
        TemplateError::new(MANIFEST_FILE, message)
            .at_line(line_of(self.text, span.start))
            .with_key(key)
    }

    pub fn build(&self, raw: RawManifest) -> Result<Manifest, TemplateError> {
        let at = |span, key: &str, message| self.at(span, key, message);
        let (runtime, runtime_span) = match raw.runtime {
            Some(r) => (r.get_ref().clone(), r.span()),
            None => (vec![RuntimePref::Kvm, RuntimePref::Docker], raw.name.span()),
        };
        if runtime.is_empty() {
            return Err(at(
                runtime_span,
                "runtime",
                "runtime is empty: list at least one of kvm, docker, cloud".into(),
            ));
        }
        if let Some(dup) = runtime
            .iter()
            .enumerate()
            .find(|(i, r)| runtime[..*i].contains(r))
        {
            return Err(at(
                runtime_span,
                "runtime",
                format!("runtime '{}' is listed twice", dup.1),
            ));
        }
        let image = raw.image.map(|i| {
            check_image_name(i.get_ref()).map_err(|m| at(i.span(), "image", m))?;
            Ok::<_, TemplateError>(i.into_inner())
        });
        let image = image.transpose()?;
        if image.is_none()
            && let Some(r) = runtime.iter().find(|r| r.needs_image())
        {
            return Err(at(
                runtime_span,
                "image",
                format!(
                    "image is required: runtime '{r}' boots a VM from a base image \
                         (such as image = \"debian-12\"); or set runtime = [\"docker\"]"
                ),
            ));
        }
        let registry = raw.registry.map(|r| {
            check_registry(r.get_ref()).map_err(|m| at(r.span(), "registry", m))?;
            Ok::<_, TemplateError>(r.into_inner())
        });
        let registry = registry.transpose()?;
        let resources = self.resources(&raw.resources)?;
        let ports = self.ports(raw.ports)?;
        let mut packages = Vec::new();
        for p in raw.packages {
            check_package(p.get_ref()).map_err(|m| at(p.span(), "packages", m))?;
            if packages.contains(p.get_ref()) {
                return Err(at(
                    p.span(),
                    "packages",
                    format!("package '{}' is listed twice", p.get_ref()),
                ));
            }
            packages.push(p.into_inner());
        }
        let mut params = BTreeMap::new();
        for (name, spec) in raw.params {
            check_param_name(name.get_ref())
                .map_err(|m| at(name.span(), &format!("params.{}", name.get_ref()), m))?;
            params.insert(name.into_inner(), spec);
        }
        let repos = self.repos(raw.repos, &params)?;
        let policies = match raw.policies {
            Some(p) => {
                let span = p.span();
                let p = p.into_inner();
                p.validate().map_err(|e| {
                    let key = e.key();
                    let line = key_line(
                        self.text,
                        span.clone(),
                        key.rsplit('.').next().unwrap_or(key),
                    );
                    at(span, &format!("policies.{key}"), e.to_string()).at_line(line)
                })?;
                p
            }
            None => PolicySpec::default(),
        };
        let compose_file = match raw.compose {
            Some(c) => {
                check_file_path(c.file.get_ref()).map_err(|e| {
                    let m = format!("file '{}': {}", c.file.get_ref(), e.message);
                    at(c.file.span(), "compose.file", m)
                })?;
                c.file.into_inner()
            }
            None => DEFAULT_COMPOSE_FILE.to_string(),
        };
        Ok(Manifest {
            name: raw.name.into_inner(),
            description: raw.description,
            runtime,
            image,
            registry,
            resources,
            ports,
            packages,
            repos,
            params,
            policies,
            compose_file,
        })
    }

    fn resources(&self, r: &RawResources) -> Result<Resources, TemplateError> {
        let at = |span, key: &str, message| self.at(span, key, message);
        let vcpus = *r.vcpus.get_ref();
        if !(1..=64).contains(&vcpus) {
            return Err(at(
                r.vcpus.span(),
                "resources.vcpus",
                format!("vcpus = {vcpus} is out of range: 1 to 64"),
            ));
        }
        let memory = parse_size_mib(r.memory.get_ref())
            .map_err(|m| at(r.memory.span(), "resources.memory", m))?;
        if !(128..=256 * 1024).contains(&memory) {
            return Err(at(
                r.memory.span(),
                "resources.memory",
                format!(
                    "memory = \"{}\" is out of range: 128MiB to 256GiB",
                    r.memory.get_ref()
                ),
            ));
        }
        let disk =
            parse_size_mib(r.disk.get_ref()).map_err(|m| at(r.disk.span(), "resources.disk", m))?;
        if disk % 1024 != 0 {
            return Err(at(
                r.disk.span(),
                "resources.disk",
                format!(
                    "disk = \"{}\" is not a whole number of GiB",
                    r.disk.get_ref()
                ),
            ));
        }
        if !(1..=4096).contains(&(disk / 1024)) {
            return Err(at(
                r.disk.span(),
                "resources.disk",
                format!(
                    "disk = \"{}\" is out of range: 1GiB to 4TiB",
                    r.disk.get_ref()
                ),
            ));
        }
        Ok(Resources {
            vcpus: vcpus as u32,
            memory_mb: memory,
            disk_gb: disk / 1024,
        })
    }

    fn ports(&self, raw: Vec<RawPort>) -> Result<Vec<PortSpec>, TemplateError> {
        let at = |span, key: &str, message| self.at(span, key, message);
        let mut ports: Vec<PortSpec> = Vec::new();
        for p in raw {
            let name = p.name.get_ref();
            check_label(name).map_err(|m| {
                at(
                    p.name.span(),
                    "ports.name",
                    format!("port name '{name}': {m}"),
                )
            })?;
            if ports.iter().any(|q| &q.name == name) {
                return Err(at(
                    p.name.span(),
                    "ports.name",
                    format!("port name '{name}' is used twice"),
                ));
            }
            let n = *p.port.get_ref();
            let port = u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                at(
                    p.port.span(),
                    "ports.port",
                    format!("port {n} is out of range: 1 to 65535"),
                )
            })?;
            if let Some(q) = ports
                .iter()
                .find(|q| q.port == port && q.protocol == p.protocol)
            {
                return Err(at(
                    p.port.span(),
                    "ports.port",
                    format!(
                        "port {port}/{} is listed twice ('{}' and '{name}')",
                        p.protocol, q.name
                    ),
                ));
            }
            ports.push(PortSpec {
                name: name.clone(),
                port,
                protocol: p.protocol,
            });
        }
        Ok(ports)
    }

    fn repos(
        &self,
        raw: Vec<RawRepo>,
        params: &BTreeMap<String, ParamSpec>,
    ) -> Result<Vec<RepoSpec>, TemplateError> {
        let at = |span, key: &str, message| self.at(span, key, message);
        let placeholders = param_values(params, true);
        let defaults = param_values(params, false);
        let mut repos: Vec<RepoSpec> = Vec::new();
        for r in raw {
            let fields = [
                ("repos.url", Some(&r.url)),
                ("repos.branch", r.branch.as_ref()),
                ("repos.revision", r.revision.as_ref()),
            ];
            if let (Some(b), RepoKind::Svn) = (&r.branch, r.kind) {
                return Err(at(
                    b.span(),
                    "repos.branch",
                    "branch applies to git repositories: for svn, put the branch in the URL".into(),
                ));
            }
            // Every ${NAME} names a parameter; a value is checked now when the
            // defaults give it, else by Manifest::repos_for.
            for (key, field) in fields {
                let Some(field) = field else { continue };
                interpolate(field.get_ref(), &placeholders)
                    .map_err(|e| at(field.span(), key, e.message))?;
                if let Ok(value) = interpolate(field.get_ref(), &defaults) {
                    check_repo_field(key, &value, r.kind).map_err(|m| at(field.span(), key, m))?;
                }
            }
            let url = r.url.get_ref();
            let path = match &r.path {
                Some(p) => {
                    check_file_path(p.get_ref()).map_err(|e| {
                        at(
                            p.span(),
                            "repos.path",
                            format!("path '{}': {}", p.get_ref(), e.message),
                        )
                    })?;
                    p.get_ref().clone()
                }
                None if url.contains('$') => {
                    return Err(at(
                        r.url.span(),
                        "repos.path",
                        format!(
                            "set path: the URL '{url}' uses a parameter, so no folder name can \
                                be derived from it"
                        ),
                    ));
                }
                None => default_repo_path(url, r.kind).ok_or_else(|| {
                    at(
                        r.url.span(),
                        "repos.path",
                        format!("cannot derive a path from '{url}': set path"),
                    )
                })?,
            };
            if let Some(other) = repos.iter().find(|o| o.path == path) {
                return Err(at(
                    r.path.as_ref().map_or(r.url.span(), |p| p.span()),
                    "repos.path",
                    format!(
                        "path '{path}' is used by '{}' too: set a different path",
                        other.url
                    ),
                ));
            }
            repos.push(RepoSpec {
                url: url.clone(),
                kind: r.kind,
                branch: r.branch.map(Spanned::into_inner),
                revision: r.revision.map(Spanned::into_inner),
                path,
            });
        }
        Ok(repos)
    }
}

/// Checks a repository's `url`, `branch` or `revision` (named by `key`) as
/// it will be used.
pub(super) fn check_repo_field(key: &str, value: &str, kind: RepoKind) -> Result<(), String> {
    match key {
        "repos.url" => check_repo_url(value, kind),
        "repos.branch" => check_token(value).map_err(|m| format!("branch: {m}")),
        _ => check_revision(value, kind),
    }
}

/// `Ok` when `ok`, else the error `why` describes.
fn require(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    require(ok, || {
        format!(
            "invalid name '{name}': 1 to 40 characters of a-z, 0-9 and '-', starting with a letter"
        )
    })
}

fn check_label(s: &str) -> Result<(), String> {
    if (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err("use 1 to 40 characters of a-z, 0-9 and '-'".into())
    }
}

fn check_image_name(s: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    require(ok, || {
        format!(
            "invalid image '{s}': a base image name of letters, digits, '.', '_' and '-' (see \
                metrom image list)"
        )
    })
}

fn check_registry(s: &str) -> Result<(), String> {
    if s.contains("://") {
        return Err(format!(
            "registry '{s}': write host[:port] without a scheme, such as registry.lan:5000"
        ));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:_[]".contains(&b));
    require(ok, || {
        format!("invalid registry '{s}': write host[:port], such as registry.lan:5000")
    })
}

fn check_package(s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
    require(ok, || {
        format!("invalid package name '{s}': Debian package names use a-z, 0-9, '+', '.' and '-'")
    })
}

fn check_param_name(s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    require(ok, || {
        format!(
            "invalid parameter name '{s}': use letters, digits and '_' (such as DB_PASSWORD), \
                so ${{{s}}} can name it"
        )
    })
}

fn check_token(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("'{s}' must be non-empty, without spaces"))
    } else {
        Ok(())
    }
}

fn check_revision(s: &str, kind: RepoKind) -> Result<(), String> {
    match kind {
        RepoKind::Svn
            if s == "HEAD" || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Ok(())
        }
        RepoKind::Svn => Err(format!("svn revision '{s}': write a number or HEAD")),
        RepoKind::Git
            if (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(())
        }
        RepoKind::Git => Err(format!(
            "git revision '{s}': write a commit id (hex); for a branch, use branch"
        )),
    }
}

fn check_repo_url(url: &str, kind: RepoKind) -> Result<(), String> {
    let (schemes, example): (&[&str], _) = match kind {
        RepoKind::Git => (
            &["https", "http", "git", "ssh", "file"],
            "https://git.lan/team/app.git or git@git.lan:team/app.git",
        ),
        RepoKind::Svn => (
            &["svn", "svn+ssh", "http", "https", "file"],
            "https://svn.lan/repos/app/trunk",
        ),
    };
    let bad = |why: &str| Err(format!("{kind} URL '{url}': {why} (such as {example})"));
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("a URL has no spaces");
    }
    match url.split_once("://") {
        Some((scheme, rest)) => {
            if !schemes.contains(&scheme) {
                return bad(&format!(
                    "scheme '{scheme}' is not one of {}",
                    schemes.join(", ")
                ));
            }
            if rest.is_empty() || (scheme != "file" && rest.starts_with('/')) {
                return bad("no host");
            }
            Ok(())
        }
        // scp-like: [user@]host:path
        None if kind == RepoKind::Git => match url.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => {
                Ok(())
            }
            _ => bad("not a URL"),
        },
        None => bad("not a URL"),
    }
}
