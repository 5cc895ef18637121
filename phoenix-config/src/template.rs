//! Templates: minijinja, strict about undefined values, checked when the
//! configuration loads (every variable a template names must exist) and
//! rendered when a boot payload is built.
//!
//! Variables: `deployment`, `environment`, `role`, `release`, `image`,
//! `pool`, `server_name`, `index` (the slot, an integer), `values` (the
//! merged `[values]` tables) and, except in labels, `secrets.<name>`.
//! Booleans render as `true`/`false`.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use secrecy::SecretString;

use crate::error::ConfigError;
use crate::secret::{scrub, SecretRef};
use crate::tree::Origin;

/// The per-server variables every template may use.
pub(crate) const CONTEXT_VARIABLES: &[&str] = &[
    "deployment",
    "environment",
    "role",
    "release",
    "image",
    "pool",
    "server_name",
    "index",
];

/// Global functions of the engine, which `undeclared_variables` reports.
const GLOBALS: &[&str] = &["range", "dict", "namespace", "debug", "loop"];

/// Methods of maps, which look like attributes to `undeclared_variables`.
const MAP_METHODS: &[&str] = &["items", "keys", "values", "get"];

/// A template as written in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    /// The dotted key path it was written at (`files.app.template`).
    pub(crate) key: String,
    pub(crate) source: String,
    pub(crate) origin: Origin,
}

/// Whether a template may use secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretUse {
    Allowed,
    /// Labels become provider tags and metadata, which are not secret.
    Forbidden,
}

/// The engine every template renders with.
pub(crate) fn engine() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // File contents must come out byte for byte, final newline included.
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Configuration files and environment variables spell booleans the
    // TOML way, not Python's `True`.
    env.set_formatter(|out, state, value| {
        if value.kind() == minijinja::value::ValueKind::Bool {
            let text = if value.is_true() { "true" } else { "false" };
            out.write_str(text).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "cannot write output")
                    .with_source(e)
            })
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env
}

fn message(e: &minijinja::Error) -> String {
    let what = e
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| e.kind().to_string());
    match e.line() {
        Some(line) => format!("{what} (template line {line})"),
        None => what,
    }
}

/// Compiles a template and checks every variable it names; returns the
/// secrets it uses.
pub(crate) fn check(
    engine: &Environment<'static>,
    template: &Template,
    values: &toml::Table,
    secrets: &BTreeMap<String, SecretRef>,
    secret_use: SecretUse,
) -> Result<BTreeSet<String>, ConfigError> {
    let compiled =
        engine
            .template_from_str(&template.source)
            .map_err(|e| ConfigError::TemplateSyntax {
                location: template.origin.location(),
                key: template.key.clone(),
                message: message(&e),
            })?;
    let mut used = BTreeSet::new();
    // Sorted, so that the first error reported is always the same one.
    let variables: BTreeSet<String> = compiled.undeclared_variables(true).into_iter().collect();
    for variable in variables {
        let undefined = |hint: &str| ConfigError::UndefinedVariable {
            location: template.origin.location(),
            key: template.key.clone(),
            variable: variable.clone(),
            hint: hint.to_owned(),
        };
        let segments: Vec<&str> = variable.split('.').collect();
        match segments.as_slice() {
            [first, ..] if CONTEXT_VARIABLES.contains(first) || GLOBALS.contains(first) => {}
            ["values", rest @ ..] => check_value_path(values, rest).map_err(|_| undefined(""))?,
            ["secrets", ..] if secret_use == SecretUse::Forbidden => return Err(undefined(
                " (labels become provider metadata, which is not secret: they cannot use secrets)",
            )),
            ["secrets"] => return Err(undefined(" (name one secret: secrets.<name>)")),
            ["secrets", name, ..] => {
                if !secrets.contains_key(*name) {
                    return Err(undefined(" (no such secret is declared)"));
                }
                used.insert((*name).to_owned());
            }
            _ => return Err(undefined("")),
        }
    }
    Ok(used)
}

fn check_value_path(table: &toml::Table, path: &[&str]) -> Result<(), ()> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    match table.get(*first) {
        Some(toml::Value::Table(t)) => check_value_path(t, rest),
        // Past a scalar or a list, attributes are the engine's methods.
        Some(_) => Ok(()),
        None if MAP_METHODS.contains(first) => Ok(()),
        None => Err(()),
    }
}

/// Renders a template. Error messages are scrubbed of `secrets`.
pub(crate) fn render(
    engine: &Environment<'static>,
    template: &Template,
    context: &Value,
    secrets: &[SecretString],
) -> Result<String, ConfigError> {
    engine
        .render_str(&template.source, context)
        .map_err(|e| ConfigError::TemplateRender {
            location: template.origin.location(),
            key: template.key.clone(),
            message: scrub(&message(&e), secrets),
        })
}

/// A TOML value as a template value (dates become their TOML text).
pub(crate) fn to_jinja(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => a.iter().map(to_jinja).collect(),
        toml::Value::Table(t) => table_to_jinja(t),
    }
}

/// A TOML table as a template map.
pub(crate) fn table_to_jinja(table: &toml::Table) -> Value {
    table
        .iter()
        .map(|(k, v)| (k.as_str(), to_jinja(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t(source: &str) -> Template {
        Template {
            key: "env.X".into(),
            source: source.into(),
            origin: Origin {
                file: "base.toml".into(),
                line: 3,
            },
        }
    }

    fn values() -> toml::Table {
        toml::from_str("[app]\nport = 8080\nname = \"shop\"\n").unwrap()
    }

    fn run_check(source: &str, use_: SecretUse) -> Result<BTreeSet<String>, ConfigError> {
        let secrets = BTreeMap::new();
        check(&engine(), &t(source), &values(), &secrets, use_)
    }

    #[test]
    fn known_variables_pass() {
        let used = run_check(
            "{{ environment }}-{{ index + 1 }}:{{ values.app.port }}{% for k, v in values.app.items() %}{{ k }}{% endfor %}{{ range(3) | list | length }}",
            SecretUse::Allowed,
        )
        .unwrap();
        assert!(used.is_empty());
    }

    #[test]
    fn undefined_values_are_named_with_file_line_and_key() {
        let e = run_check("{{ values.app.prot }}", SecretUse::Allowed).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("base.toml:3"), "{text}");
        assert!(
            text.contains("env.X") && text.contains("values.app.prot"),
            "{text}"
        );
        let e = run_check("{{ enviroment }}", SecretUse::Allowed).unwrap_err();
        assert!(e.to_string().contains("enviroment"));
    }

    #[test]
    fn secrets_must_be_declared_named_and_allowed() {
        assert!(run_check("{{ secrets.db }}", SecretUse::Allowed)
            .unwrap_err()
            .to_string()
            .contains("no such secret"));
        assert!(run_check("{{ secrets }}", SecretUse::Allowed)
            .unwrap_err()
            .to_string()
            .contains("name one secret"));
        assert!(run_check("{{ secrets.db }}", SecretUse::Forbidden)
            .unwrap_err()
            .to_string()
            .contains("cannot use secrets"));
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = run_check("{{ values.app.port ", SecretUse::Allowed).unwrap_err();
        assert!(matches!(e, ConfigError::TemplateSyntax { .. }), "{e}");
    }

    #[test]
    fn rendering_is_strict_and_scrubbed() {
        let ctx = minijinja::context! { secret => "hunter2" };
        let out = render(&engine(), &t("a={{ secret }}\n"), &ctx, &[]).unwrap();
        assert_eq!(out, "a=hunter2\n");
        let e = render(&engine(), &t("{{ nope }}"), &ctx, &[]).unwrap_err();
        assert!(matches!(e, ConfigError::TemplateRender { .. }));
        let e = render(
            &engine(),
            &t("{{ secret ~ undefined_thing }}"),
            &ctx,
            &[SecretString::from("hunter2")],
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn toml_values_convert() {
        let v: toml::Table = toml::from_str("a = [1, 2.5, true]\nd = 1979-05-27\n").unwrap();
        let j = table_to_jinja(&v);
        let out = engine()
            .render_str(
                "{{ v.a[0] }} {{ v.a[1] }} {{ v.a[2] }} {{ v.d }}",
                minijinja::context! { v => j },
            )
            .unwrap();
        assert_eq!(out, "1 2.5 true 1979-05-27");
    }
}
