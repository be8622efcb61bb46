//! Environment templates: a folder with `metrom.toml`, a compose file and the
//! files they reference — read, checked, digested and written back.
//!
//! Everything a person can get wrong in a template is found by [`parse`] when
//! the template is pushed, and reported as a [`TemplateError`] naming the
//! template, file, line and key. The format is described in docs/templates.md.

mod compose;
mod error;
mod files;
mod manifest;
mod params;
mod policy;

use std::collections::{BTreeMap, BTreeSet};

pub use compose::{
    Compose, Condition, HealthTest, Healthcheck, Mount, MountSource, PortMapping, Restart,
    SERVICE_KEYS, Service, TOP_LEVEL_KEYS, Volume, qualify_image,
};
pub use error::TemplateError;
pub use files::{
    MAX_FILES, MAX_PATH_BYTES, MAX_TOTAL_BYTES, check_file_path, digest, read_dir, write_dir,
};
pub use manifest::{
    DEFAULT_COMPOSE_FILE, MANIFEST_FILE, Manifest, ParamSpec, PortSpec, Protocol, RepoKind,
    RepoSpec, RuntimePref, default_repo_path, parse_size_mib,
};
pub use params::{PLACEHOLDER, check_vars, interpolate, resolve_params};
pub use policy::{
    PolicyError, PolicySpec, ScheduleError, ScheduleSpec, format_window, parse_holiday,
    parse_weekday, parse_window, weekday_name,
};

use crate::messages::env::TemplateFile;

/// A checked template version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub manifest: Manifest,
    /// The compose file as checked at push time: parameter defaults filled in,
    /// required parameters set to [`PLACEHOLDER`]. An environment's own
    /// services come from [`Template::compose_for`].
    pub compose: Compose,
    /// All files, sorted by path.
    pub files: Vec<TemplateFile>,
    /// [`digest`] of the files: the version's identity.
    pub digest: String,
}

/// Checks a whole template: the file set (paths, limits), `metrom.toml`, the
/// compose file (with the parameters' defaults, a placeholder for required
/// ones), and that the files the compose file references are in the template.
pub fn parse(mut files: Vec<TemplateFile>) -> Result<Template, TemplateError> {
    files::check_files(&files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let text = file_text(&files, MANIFEST_FILE)?.ok_or_else(|| {
        TemplateError::new(
            MANIFEST_FILE,
            "missing: a template folder holds metrom.toml (see docs/templates.md)",
        )
    })?;
    let manifest = Manifest::parse(text)?;
    let name = manifest.name.as_str();
    let compose_text = file_text(&files, &manifest.compose_file)
        .map_err(|e| e.in_template(name))?
        .ok_or_else(|| {
            let hint = if manifest.compose_file == DEFAULT_COMPOSE_FILE {
                "add it, or name another file with [compose] file in metrom.toml"
            } else {
                "it is named by [compose] file in metrom.toml"
            };
            TemplateError::new(&manifest.compose_file, format!("missing: {hint}")).in_template(name)
        })?;
    let paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let vars = check_vars(&manifest);
    let compose = compose::read(compose_text, &manifest.compose_file, &vars, Some(&paths))
        .map_err(|e| e.in_template(name))?;
    let digest = digest(&files);
    Ok(Template {
        manifest,
        compose,
        files,
        digest,
    })
}

impl Template {
    /// The compose file of one environment: `params` resolved against the
    /// manifest ([`resolve_params`]) and substituted.
    pub fn compose_for(&self, params: &BTreeMap<String, String>) -> Result<Compose, TemplateError> {
        let name = self.manifest.name.as_str();
        let vars = resolve_params(&self.manifest, params)?;
        let text = file_text(&self.files, &self.manifest.compose_file)
            .map_err(|e| e.in_template(name))?
            .unwrap_or_default();
        Compose::interpolated(text, &self.manifest.compose_file, &vars)
            .map_err(|e| e.in_template(name))
    }

    /// A file of the template by path.
    pub fn file(&self, path: &str) -> Option<&TemplateFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// The text of a file, if the template has it.
fn file_text<'f>(files: &'f [TemplateFile], path: &str) -> Result<Option<&'f str>, TemplateError> {
    let Some(f) = files.iter().find(|f| f.path == path) else {
        return Ok(None);
    };
    std::str::from_utf8(&f.contents)
        .map(Some)
        .map_err(|_| TemplateError::new(path, "not UTF-8 text: save it as UTF-8"))
}

#[cfg(test)]
mod tests;
