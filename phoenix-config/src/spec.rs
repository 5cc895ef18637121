//! The schema of a layer file, as serde reads it. Every field is optional
//! because an upper layer may set any part of an entry; what must be
//! present is checked once the layers are merged (see `model`).

use std::collections::BTreeMap;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// One layer file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LayerSpec {
    /// Dotted key paths removed from the layers below.
    #[serde(default)]
    pub(crate) unset: Vec<String>,
    #[serde(default)]
    pub(crate) values: toml::Table,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) files: BTreeMap<String, FileSpec>,
    #[serde(default)]
    pub(crate) commands: BTreeMap<String, CommandSpec>,
    #[serde(default)]
    pub(crate) scripts: BTreeMap<String, ScriptSpec>,
    #[serde(default)]
    pub(crate) users: BTreeMap<String, UserSpec>,
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, SecretSpec>,
    #[serde(default)]
    pub(crate) openstack: OpenStackSpec,
    #[serde(default)]
    pub(crate) cloud_init: CloudInitSpec,
}

/// The top-level sections `unset` may name.
pub(crate) const SECTIONS: &[&str] = &[
    "values",
    "env",
    "labels",
    "files",
    "commands",
    "scripts",
    "users",
    "secrets",
    "openstack",
    "cloud_init",
];

/// A file written at boot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    pub(crate) path: Option<String>,
    pub(crate) mode: Option<Mode>,
    pub(crate) owner: Option<String>,
    /// Literal content, written as is.
    pub(crate) content: Option<String>,
    /// A template rendered at boot-configuration time.
    pub(crate) template: Option<String>,
}

/// A command run at boot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandSpec {
    /// Program and arguments, each a template; run without a shell.
    pub(crate) argv: Option<Vec<String>>,
    /// A shell command line (a template), run by `sh -c`.
    pub(crate) shell: Option<String>,
    pub(crate) when: Option<When>,
    pub(crate) order: Option<i64>,
}

/// When a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum When {
    /// Early, on every boot (cloud-init `bootcmd`).
    Boot,
    /// Late, on the first boot only (cloud-init `runcmd`).
    FirstBoot,
}

/// A shell script delivered as its own part (multi-part user data).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScriptSpec {
    pub(crate) content: Option<String>,
    pub(crate) template: Option<String>,
    pub(crate) order: Option<i64>,
}

/// A user created at boot (cloud-init `users`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserSpec {
    pub(crate) system: Option<bool>,
    pub(crate) groups: Option<Vec<String>>,
    pub(crate) shell: Option<String>,
    pub(crate) home: Option<String>,
}

/// A secret reference.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretSpec {
    /// The environment variable of the rendering process that holds it.
    pub(crate) env: Option<String>,
    /// A file that holds it (relative paths are relative to the
    /// configuration directory).
    pub(crate) file: Option<String>,
    /// A command whose standard output is the secret.
    pub(crate) command: Option<Vec<String>>,
    /// The environments allowed to receive it.
    pub(crate) scope: Option<Vec<String>>,
    /// The operator-declared version.
    pub(crate) version: Option<String>,
    /// How long the command may run.
    pub(crate) timeout_secs: Option<u64>,
}

/// OpenStack settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenStackSpec {
    pub(crate) config_drive: Option<bool>,
}

/// cloud-init settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloudInitSpec {
    /// Where the environment variables are written on cloud servers.
    pub(crate) env_file: Option<String>,
}

/// Unix permissions: an integer (write it in octal, `0o640`) or a string
/// of octal digits (`"0640"`, `"640"`, `"0o640"`), at most `0o777`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mode(pub(crate) u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl Visitor<'_> for ModeVisitor {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("permissions as an octal integer (0o640) or string (\"0640\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mode, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .map(Mode)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "permissions {v} (octal {v:o}) are out of range: write them in octal, \
                             0o640 or \"0640\""
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mode, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                let digits = v.strip_prefix("0o").unwrap_or(v);
                if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(E::custom(format!(
                        "`{v}` is not an octal mode like \"0640\""
                    )));
                }
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .map(Mode)
                    .ok_or_else(|| E::custom(format!("mode `{v}` is above 0777")))
            }
        }
        deserializer.deserialize_any(ModeVisitor)
    }
}

/// The keys of a table that exclude each other, by the table's path.
pub(crate) fn alternatives(path: &[String]) -> &'static [&'static [&'static str]] {
    match path {
        [section, _] if section == "files" || section == "scripts" => &[&["content", "template"]],
        [section, _] if section == "commands" => &[&["argv", "shell"]],
        [section, _] if section == "secrets" => &[&["env", "file", "command"]],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Deserialize)]
    struct M {
        mode: Mode,
    }

    fn mode(text: &str) -> Result<u32, String> {
        toml::from_str::<M>(text)
            .map(|m| m.mode.0)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(mode("mode = 0o640").unwrap(), 0o640);
        assert_eq!(mode("mode = \"0640\"").unwrap(), 0o640);
        assert_eq!(mode("mode = \"0o600\"").unwrap(), 0o600);
        assert_eq!(mode("mode = \"755\"").unwrap(), 0o755);
        // Decimal 644 is the classic mistake: it is 0o1204.
        assert!(mode("mode = 644").unwrap_err().contains("octal"));
        assert!(mode("mode = \"0689\"").is_err());
        assert!(mode("mode = \"\"").is_err());
        assert!(mode("mode = -1").is_err());
        assert!(mode("mode = true").is_err());
    }
}
