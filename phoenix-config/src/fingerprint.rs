//! Previews and fingerprints.
//!
//! A [`Preview`] is the configuration of one (environment, role, release)
//! rendered without any secret value: secrets render as placeholders that
//! name their identity and version (`«secret tls_key@3»`), and the
//! per-server variables as placeholders (`«server_name»`, `index` = 0).
//! It is safe to print, diff and store. Its fingerprint is the SHA-256 of
//! its canonical serialisation: every map is sorted, so the fingerprint
//! does not depend on the order keys were written in; any change to
//! rendered content, to a secret's identity or to its version changes it;
//! a secret's value never enters it.

use std::collections::BTreeMap;

use serde::Serialize;

/// Placeholders the preview renders the per-server variables with.
pub const PREVIEW_PLACEHOLDERS: &[(&str, &str)] = &[
    ("deployment", "«deployment»"),
    ("image", "«image»"),
    ("pool", "«pool»"),
    ("server_name", "«server_name»"),
];

/// The placeholder a secret renders as in previews.
pub fn secret_placeholder(name: &str, version: &str) -> String {
    format!("«secret {name}@{version}»")
}

/// A file in a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewFile {
    /// Octal permissions, `0644`.
    pub mode: String,
    /// `user:group`, if set.
    pub owner: Option<String>,
    /// Content, with secrets as placeholders.
    pub content: String,
}

/// A command in a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewCommand {
    /// Program and arguments.
    Argv(Vec<String>),
    /// A shell command line.
    Shell(String),
}

/// A user in a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewUser {
    /// A system account.
    pub system: bool,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Login shell.
    pub shell: Option<String>,
    /// Home directory.
    pub home: Option<String>,
}

/// The non-secret rendering of one (environment, role, release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// Environment.
    pub environment: String,
    /// Role.
    pub role: String,
    /// Release.
    pub release: String,
    /// Merged values, flattened to dotted keys, each value in TOML syntax.
    pub values: BTreeMap<String, String>,
    /// Environment variables, Phoenix's own included.
    pub env: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Files by path.
    pub files: BTreeMap<String, PreviewFile>,
    /// Commands run on every boot, in order.
    pub boot_commands: Vec<PreviewCommand>,
    /// Commands run on the first boot, in order.
    pub run_commands: Vec<PreviewCommand>,
    /// Scripts by file name (which sorts in run order).
    pub scripts: BTreeMap<String, String>,
    /// Users created at boot.
    pub users: BTreeMap<String, PreviewUser>,
    /// The secrets it uses: name → identity (`name@version from source`).
    pub secrets: BTreeMap<String, String>,
    /// Whether OpenStack servers get a config drive.
    pub config_drive: bool,
    /// Where cloud servers get their environment variables.
    pub env_file: String,
}

/// The version of the fingerprint's input format; part of the input, so a
/// format change cannot collide with an old fingerprint.
const FORMAT: &str = "phoenix-config fingerprint v1";

impl Preview {
    /// The fingerprint: hex SHA-256 of the canonical serialisation.
    pub fn fingerprint(&self) -> String {
        // Serialising sorted maps and plain structs cannot fail; if it
        // ever did, the Debug text is just as deterministic.
        let canonical = serde_json::to_string(self).unwrap_or_else(|_| format!("{self:?}"));
        phoenix_core::fingerprint_of(&format!("{FORMAT}\n{canonical}"))
    }

    /// Every setting as `section.key` → short text, for tables and diffs.
    /// File contents show as a digest and size.
    pub fn entries(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.values {
            out.insert(format!("values.{k}"), v.clone());
        }
        for (k, v) in &self.env {
            out.insert(format!("env.{k}"), v.clone());
        }
        for (k, v) in &self.labels {
            out.insert(format!("labels.{k}"), v.clone());
        }
        for (path, f) in &self.files {
            let digest = phoenix_core::fingerprint_of(&f.content);
            out.insert(
                format!("files.{path}"),
                format!(
                    "{} {} {}B sha256:{}",
                    f.mode,
                    f.owner.as_deref().unwrap_or("-"),
                    f.content.len(),
                    digest.get(..8).unwrap_or(&digest)
                ),
            );
        }
        let command = |c: &PreviewCommand| match c {
            PreviewCommand::Argv(a) => a.join(" "),
            PreviewCommand::Shell(s) => s.clone(),
        };
        for (i, c) in self.boot_commands.iter().enumerate() {
            out.insert(format!("bootcmd[{i}]"), command(c));
        }
        for (i, c) in self.run_commands.iter().enumerate() {
            out.insert(format!("runcmd[{i}]"), command(c));
        }
        for (k, v) in &self.scripts {
            out.insert(format!("scripts.{k}"), format!("{}B", v.len()));
        }
        for (k, u) in &self.users {
            out.insert(
                format!("users.{k}"),
                format!("system={} groups={}", u.system, u.groups.join(",")),
            );
        }
        for (k, v) in &self.secrets {
            out.insert(format!("secrets.{k}"), v.clone());
        }
        out.insert(
            "openstack.config_drive".into(),
            self.config_drive.to_string(),
        );
        out.insert("cloud_init.env_file".into(), self.env_file.clone());
        out
    }
}

/// A TOML value in canonical TOML syntax (tables sorted).
pub(crate) fn canonical(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical).collect::<Vec<_>>().join(", ")
            )
        }
        toml::Value::Table(t) => {
            let sorted: BTreeMap<&String, &toml::Value> = t.iter().collect();
            let items: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| {
                    format!(
                        "{} = {}",
                        serde_json::to_string(k).unwrap_or_default(),
                        canonical(v)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Flattens tables to dotted keys (keys with dots or spaces quoted).
pub(crate) fn flatten(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            k.clone()
        } else {
            serde_json::to_string(k).unwrap_or_default()
        };
        let path = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            toml::Value::Table(t) if !t.is_empty() => flatten(t, &path, out),
            other => {
                out.insert(path, canonical(other));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn flattening_is_canonical() {
        let t: toml::Table =
            toml::from_str("b = 1\na = { y = \"s\", x = [1.5, true] }\n\"k.d\" = 2\nempty = {}\n")
                .unwrap();
        let mut out = BTreeMap::new();
        flatten(&t, "", &mut out);
        let expected: BTreeMap<String, String> = [
            ("a.x", "[1.5, true]"),
            ("a.y", "\"s\""),
            ("b", "1"),
            ("empty", "{}"),
            ("\"k.d\"", "2"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        assert_eq!(out, expected);
    }
}
