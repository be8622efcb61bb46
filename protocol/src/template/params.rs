//! Parameters: the values given at `env create`, and Compose-style `${VAR}`
//! interpolation of them.

use std::collections::BTreeMap;

use super::{Manifest, ParamSpec, TemplateError};

/// The value a required parameter takes while a template is checked at push
/// time, when no value is known yet. A number, so it fits wherever a parameter
/// is likely to be used (an image tag, a port, a password).
pub const PLACEHOLDER: &str = "1";

/// The parameters of a new environment: `given` plus the defaults of those not
/// given. A name the template does not declare is refused, naming the declared
/// ones; so is a missing required parameter (one without a default).
pub fn resolve_params(
    manifest: &Manifest,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TemplateError> {
    let err = |key: &str, message: String| {
        TemplateError::new("", message)
            .with_key(key)
            .in_template(&manifest.name)
    };
    if let Some(unknown) = given.keys().find(|k| !manifest.params.contains_key(*k)) {
        let declared = if manifest.params.is_empty() {
            "the template declares no parameters".to_string()
        } else {
            let names: Vec<&str> = manifest.params.keys().map(String::as_str).collect();
            format!("declared: {}", names.join(", "))
        };
        return Err(err(
            unknown,
            format!("unknown parameter '{unknown}' ({declared})"),
        ));
    }
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, spec) in &manifest.params {
        match given.get(name).or(spec.default.as_ref()) {
            Some(v) => {
                out.insert(name.clone(), v.clone());
            }
            None => missing.push(name.as_str()),
        }
    }
    match missing.as_slice() {
        [] => Ok(out),
        [one] => Err(err(
            one,
            format!("parameter '{one}' is required (it has no default): give it a value"),
        )),
        many => Err(err(
            many[0],
            format!(
                "parameters {} are required (they have no default): give them values",
                many.join(", ")
            ),
        )),
    }
}

/// The variables a template is checked with before any environment exists: the
/// defaults, and [`PLACEHOLDER`] for required parameters.
pub fn check_vars(manifest: &Manifest) -> BTreeMap<String, String> {
    param_values(&manifest.params, true)
}

/// The parameters' defaults; with `placeholders`, [`PLACEHOLDER`] for the
/// required ones, else those are left out.
pub(crate) fn param_values(
    params: &BTreeMap<String, ParamSpec>,
    placeholders: bool,
) -> BTreeMap<String, String> {
    params
        .iter()
        .filter_map(|(name, spec)| {
            let placeholder = placeholders.then(|| PLACEHOLDER.to_string());
            Some((name.clone(), spec.default.clone().or(placeholder)?))
        })
        .collect()
}

/// Substitutes variables the way Docker Compose does: `$VAR` and `${VAR}`;
/// `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset);
/// `${VAR:+other}` and `${VAR+other}`; `${VAR:?message}` and `${VAR?message}`
/// (an error); `$$` for a literal `$`. Defaults may themselves hold variables.
/// A variable that is not in `vars` and has no default is an error naming it;
/// the error's line is counted in `text` and its file is left empty for the
/// caller to fill in.
pub fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    Interpolator { text, vars }.run(0, text.len(), &mut out)?;
    Ok(out)
}

struct Interpolator<'a> {
    text: &'a str,
    vars: &'a BTreeMap<String, String>,
}

impl Interpolator<'_> {
    /// Interpolates `text[from..to]` into `out`.
    fn run(&self, from: usize, to: usize, out: &mut String) -> Result<(), TemplateError> {
        let t = self.text;
        let mut i = from;
        while i < to {
            let Some(rel) = t[i..to].find('$') else {
                out.push_str(&t[i..to]);
                break;
            };
            let dollar = i + rel;
            out.push_str(&t[i..dollar]);
            let rest = &t[dollar + 1..to];
            if rest.starts_with('$') {
                out.push('$');
                i = dollar + 2;
            } else if rest.starts_with('{') {
                i = self.braced(dollar, to, out)?;
            } else {
                let len = name_len(rest);
                if len == 0 {
                    return Err(self.error(
                        dollar,
                        None,
                        "'$' must be followed by a variable name or '{': write '$$' for a \
                            literal '$'"
                            .into(),
                    ));
                }
                let name = &rest[..len];
                out.push_str(self.get(dollar, name)?);
                i = dollar + 1 + len;
            }
        }
        Ok(())
    }

    /// `${…}` starting at `dollar`; returns the offset after its `}`.
    fn braced(&self, dollar: usize, to: usize, out: &mut String) -> Result<usize, TemplateError> {
        let t = self.text;
        let start = dollar + 2;
        let close = matching_brace(t, start, to)
            .ok_or_else(|| self.error(dollar, None, "'${' without its closing '}'".into()))?;
        let inner = &t[start..close];
        let len = name_len(inner);
        let name = &inner[..len];
        if len == 0 {
            return Err(self.error(
                dollar,
                None,
                format!("'${{{inner}}}' does not start with a variable name"),
            ));
        }
        let op_at = start + len;
        let op: &str = ["}", ":-", "-", ":+", "+", ":?", "?"]
            .into_iter()
            .find(|op| t[op_at..=close].starts_with(op))
            .ok_or_else(|| {
                self.error(
                    dollar,
                    Some(name),
                    format!(
                        "invalid '${{{inner}}}': use ${{{name}}}, ${{{name}:-default}} or \
                         ${{{name}-default}}"
                    ),
                )
            })?;
        let value = self.vars.get(name).map(String::as_str);
        let arg = (op_at + op.len(), close);
        let empty_counts = op.starts_with(':');
        let set = value.is_some_and(|v| !(empty_counts && v.is_empty()));
        match op {
            "}" => out.push_str(self.get(dollar, name)?),
            ":-" | "-" if set => out.push_str(value.unwrap_or_default()),
            ":-" | "-" => self.run(arg.0, arg.1, out)?,
            ":+" | "+" if set => self.run(arg.0, arg.1, out)?,
            ":+" | "+" => {}
            _ if set => out.push_str(value.unwrap_or_default()),
            _ => {
                let mut why = String::new();
                self.run(arg.0, arg.1, &mut why)?;
                let why = if why.is_empty() {
                    "it is required".into()
                } else {
                    why
                };
                return Err(self.error(dollar, Some(name), format!("variable '{name}': {why}")));
            }
        }
        Ok(close + 1)
    }

    fn get(&self, at: usize, name: &str) -> Result<&str, TemplateError> {
        self.vars.get(name).map(String::as_str).ok_or_else(|| {
            self.error(
                at,
                Some(name),
                format!(
                    "variable '{name}' is not set: declare it under [params.{name}] in \
                     metrom.toml, give a default with ${{{name}:-value}}, or write $$ for a \
                     literal '$'"
                ),
            )
        })
    }

    fn error(&self, at: usize, key: Option<&str>, message: String) -> TemplateError {
        let mut e =
            TemplateError::new("", message).at_line(self.text[..at].matches('\n').count() + 1);
        e.key = key.map(str::to_string);
        e
    }
}

/// Length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.first()
        .is_none_or(|c| !(c.is_ascii_alphabetic() || *c == b'_'))
    {
        return 0;
    }
    b.iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count()
}

/// The `}` closing a `${` whose contents start at `from`, counting nested `${`.
fn matching_brace(t: &str, from: usize, to: usize) -> Option<usize> {
    let b = t.as_bytes();
    let mut depth = 0;
    let mut i = from;
    while i < to {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_every_compose_form() {
        let v = vars(&[("USER", "ada"), ("EMPTY", ""), ("PORT", "8080")]);
        for (input, want) in [
            ("plain text", "plain text"),
            ("$USER", "ada"),
            ("${USER}", "ada"),
            ("$USER.home", "ada.home"),
            ("${USER}_x", "ada_x"),
            ("a$$b", "a$b"),
            ("$${USER}", "${USER}"),
            ("${MISSING:-dflt}", "dflt"),
            ("${MISSING-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${USER:-dflt}", "ada"),
            ("${MISSING:-}", ""),
            ("${MISSING:-${PORT}}", "8080"),
            ("${MISSING:-${ALSO:-deep}}", "deep"),
            ("${USER:+set}", "set"),
            ("${MISSING:+set}", ""),
            ("${EMPTY:+set}", ""),
            ("${EMPTY+set}", "set"),
            ("${USER:?needed}", "ada"),
            ("${PORT}:80", "8080:80"),
            ("${MISSING:-a b}c", "a bc"),
            (
                "pg_isready -U $${POSTGRES_USER}",
                "pg_isready -U ${POSTGRES_USER}",
            ),
        ] {
            assert_eq!(interpolate(input, &v).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn names_what_is_wrong_and_where() {
        let v = vars(&[]);
        let e = interpolate("a: 1\nb: ${DB_PASSWORD}\n", &v).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("DB_PASSWORD"));
        assert!(
            e.message.starts_with(
                "variable 'DB_PASSWORD' is not set: declare it under [params.DB_PASSWORD]"
            ),
            "{e}"
        );
        assert_eq!(interpolate("$X", &v).unwrap_err().key.as_deref(), Some("X"));
        for (input, want) in [
            ("cost: 5$", "write '$$' for a literal '$'"),
            ("$1", "write '$$' for a literal '$'"),
            ("${X", "without its closing '}'"),
            ("${}", "does not start with a variable name"),
            ("${X!y}", "invalid '${X!y}'"),
            (
                "${TOKEN:?set TOKEN first}",
                "variable 'TOKEN': set TOKEN first",
            ),
            ("${TOKEN?}", "variable 'TOKEN': it is required"),
        ] {
            let e = interpolate(input, &v).unwrap_err();
            assert!(e.message.contains(want), "{input}: {e}");
        }
    }

    fn manifest(params: &[(&str, Option<&str>)]) -> Manifest {
        let mut m = Manifest::parse(
            "name = \"web-db\"\nruntime = [\"docker\"]\n\
             [resources]\nvcpus = 1\nmemory = \"1GiB\"\ndisk = \"1GiB\"\n",
        )
        .unwrap();
        for (name, default) in params {
            let spec = ParamSpec {
                default: default.map(str::to_string),
                ..ParamSpec::default()
            };
            m.params.insert(name.to_string(), spec);
        }
        m
    }

    #[test]
    fn resolves_defaults_and_given_values() {
        let m = manifest(&[("DB_PASSWORD", Some("dev")), ("APP_TOKEN", None)]);
        let got = resolve_params(&m, &vars(&[("APP_TOKEN", "t0k")])).unwrap();
        assert_eq!(got, vars(&[("APP_TOKEN", "t0k"), ("DB_PASSWORD", "dev")]));
        let got = resolve_params(&m, &vars(&[("APP_TOKEN", "t"), ("DB_PASSWORD", "x")])).unwrap();
        assert_eq!(got["DB_PASSWORD"], "x");
        assert_eq!(
            check_vars(&m),
            vars(&[("APP_TOKEN", "1"), ("DB_PASSWORD", "dev")])
        );
    }

    #[test]
    fn refuses_unknown_and_missing_parameters() {
        let m = manifest(&[("DB_PASSWORD", Some("dev")), ("APP_TOKEN", None)]);
        let e = resolve_params(&m, &vars(&[("APP_TOKEN", "t"), ("DB_PASWORD", "x")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template web-db: unknown parameter 'DB_PASWORD' (declared: APP_TOKEN, DB_PASSWORD)"
        );
        assert_eq!(e.key.as_deref(), Some("DB_PASWORD"));
        let e = resolve_params(&m, &vars(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template web-db: parameter 'APP_TOKEN' is required (it has no default): \
             give it a value"
        );
        let m2 = manifest(&[("A", None), ("B", None)]);
        let e = resolve_params(&m2, &vars(&[])).unwrap_err();
        assert!(e.message.starts_with("parameters A, B are required"), "{e}");
        let e = resolve_params(&manifest(&[]), &vars(&[("X", "1")])).unwrap_err();
        assert!(
            e.message.ends_with("(the template declares no parameters)"),
            "{e}"
        );
    }
}
