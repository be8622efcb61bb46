//! `metrom.toml`: what an environment of the template needs and offers.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::policy::PolicySpec;
use super::{TemplateError, interpolate, resolve_params};
use crate::messages::env::{Resources, RuntimeKind};
use check::{Checker, check_name};
use toml_error::toml_error;

/// The manifest's file name in a template folder.
pub const MANIFEST_FILE: &str = "metrom.toml";
/// The compose file used when `[compose] file` is not set.
pub const DEFAULT_COMPOSE_FILE: &str = "compose.yaml";

/// A parsed and checked `metrom.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    /// Runtimes in order of preference.
    pub runtime: Vec<RuntimePref>,
    /// The VM base image; set whenever `runtime` holds kvm or cloud.
    pub image: Option<String>,
    /// Registry (`host[:port]`) for compose images that name none.
    pub registry: Option<String>,
    pub resources: Resources,
    pub ports: Vec<PortSpec>,
    pub packages: Vec<String>,
    pub repos: Vec<RepoSpec>,
    pub params: BTreeMap<String, ParamSpec>,
    pub policies: PolicySpec,
    /// Path of the compose file inside the template.
    pub compose_file: String,
}

/// Where a template may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimePref {
    Kvm,
    Docker,
    Cloud,
}

/// A port the environment exposes, forwarded from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A transport protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A source repository cloned (git) or checked out (svn) into the owner's home.
///
/// `url`, `branch` and `revision` may name parameters (`${APP_REPO}`) as
/// written in `metrom.toml`; [`Manifest::repos_for`] gives an environment's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSpec {
    pub url: String,
    pub kind: RepoKind,
    /// git only.
    pub branch: Option<String>,
    /// An svn revision (a number or HEAD) or a git commit id.
    pub revision: Option<String>,
    /// Relative to the owner's home; derived from the URL when not written.
    pub path: String,
}

/// A version control system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    #[default]
    Git,
    Svn,
}

/// A parameter the template takes at `env create`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// No default: the parameter is required.
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Never shown by `env show`.
    #[serde(default)]
    pub secret: bool,
}

impl RuntimePref {
    /// The on-premises runtime this preference names; `None` for cloud.
    pub fn on_prem(&self) -> Option<RuntimeKind> {
        match self {
            RuntimePref::Kvm => Some(RuntimeKind::Kvm),
            RuntimePref::Docker => Some(RuntimeKind::Docker),
            RuntimePref::Cloud => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RuntimePref::Kvm => "kvm",
            RuntimePref::Docker => "docker",
            RuntimePref::Cloud => "cloud",
        }
    }

    /// Whether it boots a VM from the template's base image.
    pub fn needs_image(&self) -> bool {
        matches!(self, RuntimePref::Kvm | RuntimePref::Cloud)
    }
}

impl fmt::Display for RuntimePref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RepoKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RepoKind::Git => "git",
            RepoKind::Svn => "svn",
        }
    }
}

impl fmt::Display for RepoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RepoSpec {
    /// `git https://git.lan/app.git (branch main) → app`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.url)?;
        if let Some(b) = &self.branch {
            write!(f, " (branch {b})")?;
        }
        if let Some(r) = &self.revision {
            write!(f, " (revision {r})")?;
        }
        write!(f, " → {}", self.path)
    }
}

impl ParamSpec {
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
}

impl Manifest {
    /// Parses and checks the text of `metrom.toml`. Errors name the file, the
    /// line, the key and, once known, the template.
    pub fn parse(text: &str) -> Result<Manifest, TemplateError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let checker = Checker { text };
        let name = raw.name.get_ref().clone();
        check_name(&name).map_err(|m| checker.at(raw.name.span(), "name", m))?;
        checker.build(raw).map_err(|e| e.in_template(&name))
    }
}

impl Manifest {
    /// The repositories of one environment: `${NAME}` in their URL, branch
    /// and revision replaced by the parameters ([`resolve_params`] of
    /// `params`), and the results checked.
    pub fn repos_for(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Result<Vec<RepoSpec>, TemplateError> {
        let vars = resolve_params(self, params)?;
        let err = |key: &str, message: String| {
            TemplateError::new("", message)
                .with_key(key)
                .in_template(&self.name)
        };
        let mut out = Vec::new();
        for r in &self.repos {
            let fill = |key: &str, s: &str| {
                let value = interpolate(s, &vars).map_err(|e| err(key, e.message))?;
                check::check_repo_field(key, &value, r.kind).map_err(|m| err(key, m))?;
                Ok::<_, TemplateError>(value)
            };
            out.push(RepoSpec {
                url: fill("repos.url", &r.url)?,
                kind: r.kind,
                branch: r
                    .branch
                    .as_deref()
                    .map(|b| fill("repos.branch", b))
                    .transpose()?,
                revision: r
                    .revision
                    .as_deref()
                    .map(|v| fill("repos.revision", v))
                    .transpose()?,
                path: r.path.clone(),
            });
        }
        Ok(out)
    }
}

/// Derives a repository's default checkout path from its URL: the last path
/// component without `.git`; for svn, a final `trunk` names its parent instead.
pub fn default_repo_path(url: &str, kind: RepoKind) -> Option<String> {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => url.rsplit_once(':').map_or(url, |(_, p)| p),
    };
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if kind == RepoKind::Svn && parts.len() > 1 && parts.last() == Some(&"trunk") {
        parts.pop();
    }
    let last = parts.last()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_string())
}

/// Parses a size written with a binary unit (`512MiB`, `4GiB`, `1TiB`) into MiB.
pub fn parse_size_mib(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let unit = t[digits..].trim();
    let scale = match unit {
        "MiB" => 1,
        "GiB" => 1024,
        "TiB" => 1024 * 1024,
        _ => {
            return Err(format!(
                "invalid size '{s}': write a whole number with MiB, GiB or TiB, such as 4GiB"
            ));
        }
    };
    t[..digits]
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("invalid size '{s}': write a whole number with MiB, GiB or TiB"))
}

mod check;
mod toml_error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    runtime: Option<Spanned<Vec<RuntimePref>>>,
    image: Option<Spanned<String>>,
    registry: Option<Spanned<String>>,
    resources: RawResources,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    repos: Vec<RawRepo>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, ParamSpec>,
    policies: Option<Spanned<PolicySpec>>,
    compose: Option<RawCompose>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    vcpus: Spanned<i64>,
    memory: Spanned<String>,
    disk: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    port: Spanned<i64>,
    #[serde(default)]
    protocol: Protocol,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    url: Spanned<String>,
    #[serde(default, rename = "type")]
    kind: RepoKind,
    branch: Option<Spanned<String>>,
    revision: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompose {
    file: Spanned<String>,
}

#[cfg(test)]
mod tests;
