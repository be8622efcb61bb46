//! Reading values out of saphyr's spanned YAML tree: every error carries the
//! node's line and the dotted key, and every string value is interpolated.
//!
//! Scalars are kept as written (saphyr's `early_parse` off) and typed here,
//! field by field: `1.10` stays "1.10" in an environment variable, `no` is the
//! string "no" (YAML 1.2), and a number is read only where a number belongs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use saphyr::{MarkedYaml, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::Parser;

use crate::duration::parse_duration;
use crate::template::{TemplateError, interpolate};

pub(super) type Node<'a> = MarkedYaml<'a>;

/// One `key: value` of a mapping, with the key's line.
pub(super) struct Entry<'n, 'a> {
    pub key: String,
    pub line: usize,
    pub value: &'n Node<'a>,
}

/// Parses `text` into one YAML document.
pub(super) fn load<'a>(text: &'a str, file: &str) -> Result<Node<'a>, TemplateError> {
    let mut loader: YamlLoader<'a, Node<'a>> = YamlLoader::default();
    loader.early_parse(false);
    let mut parser = Parser::new_from_str(text);
    let scan = parser
        .load(&mut loader, true)
        .err()
        .or_else(|| loader.error().cloned());
    if let Some(e) = scan {
        return Err(
            TemplateError::new(file, format!("invalid YAML: {}", e.info()))
                .at_line(e.marker().line()),
        );
    }
    let mut docs = loader.into_documents();
    if docs.len() > 1 {
        return Err(TemplateError::new(
            file,
            "holds several YAML documents (separated by '---'): keep one",
        )
        .at_line(docs[1].span.start.line()));
    }
    docs.pop()
        .filter(|d| !matches!(d.data, YamlData::BadValue))
        .ok_or_else(|| TemplateError::new(file, "the file is empty: it needs at least 'services:'"))
}

/// Reads typed values out of nodes of one file.
pub(super) struct Reader<'v> {
    pub file: &'v str,
    pub vars: &'v BTreeMap<String, String>,
    /// The template's file paths, when checking references to them.
    pub files: Option<&'v BTreeSet<&'v str>>,
}

impl Reader<'_> {
    /// An error at `line` about `key`.
    pub fn err(&self, line: usize, key: &str, message: impl Into<String>) -> TemplateError {
        TemplateError::new(self.file, message)
            .at_line(line)
            .with_key(key)
    }

    /// An error for a value of the wrong shape.
    pub fn expected(&self, node: &Node, key: &str, what: &str) -> TemplateError {
        self.err(
            line(node),
            key,
            format!("'{key}' must be {what}, not {}", describe(node)),
        )
    }

    /// The entries of a mapping, merge keys (`<<: *anchor`) applied.
    pub fn mapping<'n, 'a>(
        &self,
        node: &'n Node<'a>,
        key: &str,
    ) -> Result<Vec<Entry<'n, 'a>>, TemplateError> {
        let YamlData::Mapping(map) = &node.data else {
            return Err(self.expected(node, key, "a mapping"));
        };
        let mut out: Vec<Entry> = Vec::new();
        let mut merged: Vec<Entry> = Vec::new();
        for (k, v) in map {
            let Some(name) = raw_scalar(k) else {
                return Err(self.err(line(k), key, format!("keys of '{key}' must be strings")));
            };
            if name == "<<" && is_plain(k) {
                let sources: Vec<&Node> = match &v.data {
                    YamlData::Sequence(items) => items.iter().collect(),
                    _ => vec![v],
                };
                for s in sources {
                    merged.extend(self.mapping(s, key)?);
                }
                continue;
            }
            out.push(Entry {
                key: name.to_string(),
                line: line(k),
                value: v,
            });
        }
        for m in merged {
            if !out.iter().any(|e| e.key == m.key) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The items of a sequence.
    pub fn list<'n, 'a>(
        &self,
        node: &'n Node<'a>,
        key: &str,
    ) -> Result<&'n [Node<'a>], TemplateError> {
        match &node.data {
            YamlData::Sequence(items) => Ok(items),
            _ => Err(self.expected(node, key, "a list")),
        }
    }

    /// A scalar as a string, interpolated; `None` for null.
    pub fn opt_string(&self, node: &Node, key: &str) -> Result<Option<String>, TemplateError> {
        if is_null(node) {
            return Ok(None);
        }
        let Some(raw) = raw_scalar(node) else {
            return Err(self.expected(node, key, "a string"));
        };
        interpolate(raw, self.vars).map(Some).map_err(|mut e| {
            e.file = self.file.to_string();
            e.line = Some(line(node) + e.line.unwrap_or(1) - 1);
            e
        })
    }

    /// A scalar as a string, interpolated; null is refused.
    pub fn string(&self, node: &Node, key: &str) -> Result<String, TemplateError> {
        self.opt_string(node, key)?
            .ok_or_else(|| self.expected(node, key, "a string"))
    }

    /// A string that must not be empty.
    pub fn non_empty(&self, node: &Node, key: &str) -> Result<String, TemplateError> {
        let s = self.string(node, key)?;
        if s.trim().is_empty() {
            return Err(self.err(line(node), key, format!("'{key}' is empty")));
        }
        Ok(s)
    }

    /// `true` or `false`.
    pub fn bool(&self, node: &Node, key: &str) -> Result<bool, TemplateError> {
        match self.string(node, key)?.as_str() {
            "true" | "True" | "TRUE" => Ok(true),
            "false" | "False" | "FALSE" => Ok(false),
            _ => Err(self.expected(node, key, "true or false")),
        }
    }

    /// A whole number in `range`.
    pub fn number(
        &self,
        node: &Node,
        key: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, TemplateError> {
        let s = self.string(node, key)?;
        let n: u32 = s
            .parse()
            .map_err(|_| self.expected(node, key, "a whole number"))?;
        if !range.contains(&n) {
            return Err(self.err(
                line(node),
                key,
                format!(
                    "'{key}' is {n}, out of range: {} to {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(n)
    }

    /// A duration such as `10s` or `1m30s`.
    pub fn duration(&self, node: &Node, key: &str) -> Result<Duration, TemplateError> {
        let s = self.string(node, key)?;
        parse_duration(&s).map_err(|e| self.err(line(node), key, format!("'{key}': {e}")))
    }

    /// Refuses keys outside `supported` (extension keys `x-*` pass), naming
    /// the key, where it is, and the supported ones.
    pub fn only(
        &self,
        entries: &[Entry],
        supported: &[&str],
        key: &str,
        within: &str,
    ) -> Result<(), TemplateError> {
        for e in entries {
            if !supported.contains(&e.key.as_str()) && !e.key.starts_with("x-") {
                return Err(self.err(
                    e.line,
                    &join(key, &e.key),
                    format!(
                        "unsupported key '{}' {within} (supported: {})",
                        e.key,
                        supported.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A `KEY=VALUE` list or a mapping, as used by `environment` and `labels`;
    /// `bare` is the value of a key written without one (`None`: refused).
    pub fn key_values(
        &self,
        node: &Node,
        key: &str,
        bare: Option<&str>,
    ) -> Result<BTreeMap<String, String>, TemplateError> {
        let mut out = BTreeMap::new();
        let no_value = |l: usize, k: &str| {
            self.err(
                l,
                key,
                format!(
                    "'{k}' in '{key}' has no value: write {k}=value (a parameter can be \
                    passed as {k}=${{NAME}})"
                ),
            )
        };
        if let YamlData::Sequence(items) = &node.data {
            for item in items {
                let text = self.string(item, key)?;
                let (k, v) = match text.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => match bare {
                        Some(b) => (text.clone(), b.to_string()),
                        None => return Err(no_value(line(item), &text)),
                    },
                };
                if k.is_empty() {
                    return Err(self.err(
                        line(item),
                        key,
                        format!("'{text}' in '{key}' has no name"),
                    ));
                }
                if out.insert(k.clone(), v).is_some() {
                    return Err(self.err(
                        line(item),
                        key,
                        format!("'{k}' is set twice in '{key}'"),
                    ));
                }
            }
            return Ok(out);
        }
        for e in self.mapping(node, key)? {
            let v = match (self.opt_string(e.value, key)?, bare) {
                (Some(v), _) => v,
                (None, Some(b)) => b.to_string(),
                (None, None) => return Err(no_value(e.line, &e.key)),
            };
            out.insert(e.key, v);
        }
        Ok(out)
    }
}

/// A dotted key path: `services.web` + `image`.
pub(super) fn join(key: &str, name: &str) -> String {
    if key.is_empty() {
        name.to_string()
    } else {
        format!("{key}.{name}")
    }
}

/// 1-based line where a node starts.
pub(super) fn line(node: &Node) -> usize {
    node.span.start.line()
}

/// Whether a node is YAML null: empty, `~` or `null` written plainly.
pub(super) fn is_null(node: &Node) -> bool {
    match &node.data {
        YamlData::Representation(s, ScalarStyle::Plain, _) => {
            matches!(s.as_ref(), "" | "~" | "null" | "Null" | "NULL")
        }
        YamlData::BadValue => true,
        _ => false,
    }
}

/// Whether a node is null or an empty mapping (`{}`), as compose allows for
/// declarations without options.
pub(super) fn is_empty_decl(node: &Node) -> bool {
    is_null(node) || matches!(&node.data, YamlData::Mapping(m) if m.is_empty())
}

/// Whether a node is a mapping.
pub(super) fn is_mapping(node: &Node) -> bool {
    matches!(node.data, YamlData::Mapping(_))
}

/// The text of a scalar as written, before interpolation. A scalar with a
/// tag outside YAML's core schema (compose's `!reset`, `!override`) is not one.
pub(super) fn raw_scalar<'n>(node: &'n Node) -> Option<&'n str> {
    match &node.data {
        YamlData::Representation(s, _, tag)
            if tag.as_ref().is_none_or(|t| t.is_yaml_core_schema()) =>
        {
            Some(s.as_ref())
        }
        _ => None,
    }
}

fn is_plain(node: &Node) -> bool {
    matches!(
        node.data,
        YamlData::Representation(_, ScalarStyle::Plain, _)
    )
}

fn describe(node: &Node) -> String {
    if is_null(node) {
        return "empty".into();
    }
    match &node.data {
        YamlData::Sequence(_) => "a list".into(),
        YamlData::Mapping(_) => "a mapping".into(),
        YamlData::Representation(_, _, Some(tag)) if !tag.is_yaml_core_schema() => {
            format!("a value tagged '{tag}' (YAML tags are not supported)")
        }
        YamlData::Tagged(tag, _) => format!("a value tagged '{tag}' (YAML tags are not supported)"),
        YamlData::Representation(s, _, _) => format!("'{s}'"),
        _ => "this value".into(),
    }
}
