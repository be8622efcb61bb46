//! toml's errors in our words, with the line and the key.

use std::ops::Range;

use super::MANIFEST_FILE;
use crate::template::TemplateError;

/// Turns a toml error into ours: its line, the key written there, and serde's
/// "unknown field" in our words.
pub(super) fn toml_error(text: &str, e: &toml::de::Error) -> TemplateError {
    let msg = e.message().trim();
    let mut err = TemplateError::new(MANIFEST_FILE, msg);
    let Some(span) = e.span() else {
        return err;
    };
    err.line = Some(line_of(text, span.start));
    let table = table_at(text, span.start);
    let join = |k: &str| {
        if table.is_empty() {
            k.to_string()
        } else {
            format!("{table}.{k}")
        }
    };
    let names: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let supported = if names.len() > 1 {
            names[1..].join(", ")
        } else {
            "none".into()
        };
        err.message = format!("unknown key '{key}' (supported: {supported})");
        err.key = Some(join(key));
    } else if let Some(rest) = msg.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or_default();
        err.message = format!("missing key '{key}'");
        err.key = Some(join(key));
    } else {
        err.key = key_written_at(text, span.start).map(|k| join(&k));
    }
    err
}

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..floor(text, offset)].matches('\n').count() + 1
}

/// `offset` within `text`, moved back to a character boundary.
fn floor(text: &str, offset: usize) -> usize {
    let mut o = offset.min(text.len());
    while !text.is_char_boundary(o) {
        o -= 1;
    }
    o
}

fn line_start(text: &str, offset: usize) -> usize {
    text[..floor(text, offset)].rfind('\n').map_or(0, |i| i + 1)
}

fn line_text(text: &str, offset: usize) -> &str {
    let start = line_start(text, offset);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    &text[start..end]
}

/// The key of a `key = value` line.
fn key_written_at(text: &str, offset: usize) -> Option<String> {
    let (key, _) = line_text(text, offset).split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

/// The `[table]` or `[[table]]` header in force at a byte offset ("" for the root).
fn table_at(text: &str, offset: usize) -> String {
    let here = line_text(text, offset);
    std::iter::once(here)
        .chain(text[..line_start(text, offset)].lines().rev())
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

/// The line where `key = ` is written in the table that starts at `span`
/// (up to the next table header), or the span's first line.
pub(super) fn key_line(text: &str, span: Range<usize>, key: &str) -> usize {
    let start = floor(text, span.start);
    let mut offset = start;
    for (i, l) in text[start..].split_inclusive('\n').enumerate() {
        if i > 0 && l.trim_start().starts_with('[') {
            break;
        }
        if l.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            return line_of(text, offset);
        }
        offset += l.len();
    }
    line_of(text, start)
}
