//! The one error type of the template format: where (template, file, line, key)
//! and what, so a person can find the spot and fix it.

use std::fmt;

/// Something wrong with a template, its files or its parameters.
///
/// Displays as `template web-db: compose.yaml line 12: unsupported key 'deploy'
/// in service 'web' (supported: …)`; each part is left out when unknown. An empty
/// `file` means the error is not about a file (a parameter given at `env create`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", Location(self))]
pub struct TemplateError {
    /// The template's name, once `metrom.toml` has told it.
    pub template: Option<String>,
    /// Path of the file inside the template folder, or "" when no file is at fault.
    pub file: String,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// The key at fault, dotted for nested keys (`resources.vcpus`,
    /// `services.web.deploy`).
    pub key: Option<String>,
    /// What was wrong and, where it helps, what to do.
    pub message: String,
}

impl TemplateError {
    /// An error about `file` as a whole.
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> TemplateError {
        TemplateError {
            template: None,
            file: file.into(),
            line: None,
            key: None,
            message: message.into(),
        }
    }

    /// Sets the line (builder-style).
    pub fn at_line(mut self, line: usize) -> TemplateError {
        self.line = Some(line);
        self
    }

    /// Sets the key (builder-style).
    pub fn with_key(mut self, key: impl Into<String>) -> TemplateError {
        self.key = Some(key.into());
        self
    }

    /// Names the template, unless the error already does.
    pub fn in_template(mut self, name: &str) -> TemplateError {
        if self.template.is_none() {
            self.template = Some(name.to_string());
        }
        self
    }
}

/// The `template x: file line n: ` prefix.
struct Location<'a>(&'a TemplateError);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if let Some(t) = &e.template {
            write!(f, "template {t}: ")?;
        }
        if !e.file.is_empty() {
            f.write_str(&e.file)?;
            if let Some(line) = e.line {
                write!(f, " line {line}")?;
            }
            f.write_str(": ")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_every_known_part() {
        let e = TemplateError::new("compose.yaml", "unsupported key 'deploy'")
            .at_line(12)
            .with_key("services.web.deploy")
            .in_template("web-db");
        assert_eq!(
            e.to_string(),
            "template web-db: compose.yaml line 12: unsupported key 'deploy'"
        );
        assert_eq!(
            TemplateError::new("metrom.toml", "missing").to_string(),
            "metrom.toml: missing"
        );
        assert_eq!(
            TemplateError::new("", "unknown parameter 'X'")
                .in_template("t")
                .to_string(),
            "template t: unknown parameter 'X'"
        );
        // The first template named wins.
        assert_eq!(e.in_template("other").template.as_deref(), Some("web-db"));
    }
}
