//! The configuration of one (environment, role, release) once its layers
//! are merged and checked: every required key present, every name and
//! path well formed, every template compiled with its variables defined.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use phoenix_core::id::{EnvironmentName, RoleName};

use crate::error::ConfigError;
use crate::secret::{Scope, SecretRef, SecretSource, DEFAULT_COMMAND_TIMEOUT, DEFAULT_VERSION};
use crate::spec::{LayerSpec, When};
use crate::template::{self, SecretUse, Template};
use crate::tree::Node;

/// The file cloud servers get their environment variables in when the
/// configuration names none.
pub const DEFAULT_ENV_FILE: &str = "/etc/phoenix/environment";

/// Environment variables Phoenix sets itself on every server.
pub const IDENTITY_VARIABLES: &[&str] = &[
    "PHOENIX_DEPLOYMENT",
    "PHOENIX_ENVIRONMENT",
    "PHOENIX_ROLE",
    "PHOENIX_RELEASE",
    "PHOENIX_IMAGE",
    "PHOENIX_POOL",
    "PHOENIX_SERVER",
    "PHOENIX_INDEX",
];

/// A file's content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    Literal(String),
    Template(Template),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileEntry {
    pub(crate) id: String,
    pub(crate) path: String,
    pub(crate) mode: u32,
    pub(crate) owner: Option<String>,
    pub(crate) body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Argv(Vec<Template>),
    Shell(Template),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandEntry {
    pub(crate) id: String,
    pub(crate) when: When,
    pub(crate) action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScriptEntry {
    pub(crate) id: String,
    pub(crate) body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct UserEntry {
    pub(crate) name: String,
    pub(crate) system: bool,
    pub(crate) groups: Vec<String>,
    pub(crate) shell: Option<String>,
    pub(crate) home: Option<String>,
}

/// One merged, checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) values: toml::Table,
    pub(crate) env: BTreeMap<String, Template>,
    pub(crate) labels: BTreeMap<String, Template>,
    /// By id.
    pub(crate) files: Vec<FileEntry>,
    /// By (order, id).
    pub(crate) commands: Vec<CommandEntry>,
    /// By (order, id).
    pub(crate) scripts: Vec<ScriptEntry>,
    pub(crate) users: Vec<UserEntry>,
    pub(crate) secrets: BTreeMap<String, SecretRef>,
    /// The secrets its templates use.
    pub(crate) used_secrets: BTreeSet<String>,
    pub(crate) config_drive: bool,
    pub(crate) env_file: String,
}

/// What the model needs to know about the configuration set.
pub(crate) struct Scene<'a> {
    pub(crate) root: &'a Path,
    pub(crate) environment: &'a EnvironmentName,
    pub(crate) role: &'a RoleName,
    pub(crate) environments: &'a BTreeSet<EnvironmentName>,
}

struct Checker<'a> {
    merged: &'a Node,
    scene: &'a Scene<'a>,
}

impl Checker<'_> {
    fn path(key: &str) -> Vec<String> {
        key.split('.').map(str::to_owned).collect()
    }

    fn location(&self, key: &[String]) -> crate::error::Location {
        self.merged
            .nearest_origin(key)
            .map(|o| o.location())
            .unwrap_or(crate::error::Location {
                file: "base.toml".into(),
                line: 1,
                column: None,
            })
    }

    fn invalid(&self, key: &[String], message: impl Into<String>) -> ConfigError {
        ConfigError::InvalidKey {
            location: self.location(key),
            key: key.join("."),
            message: message.into(),
        }
    }

    fn missing(&self, key: &[String]) -> ConfigError {
        ConfigError::MissingKey {
            location: self.location(key),
            key: key.join("."),
            environment: self.scene.environment.to_string(),
            role: self.scene.role.to_string(),
        }
    }

    fn template(&self, key: &[String], source: String) -> Template {
        let origin =
            self.merged
                .nearest_origin(key)
                .cloned()
                .unwrap_or_else(|| crate::tree::Origin {
                    file: "base.toml".into(),
                    line: 1,
                });
        Template {
            key: key.join("."),
            source,
            origin,
        }
    }

    fn key(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    fn one_of<T>(
        &self,
        entry: &[String],
        a: (&str, Option<T>),
        b: (&str, Option<T>),
    ) -> Result<(bool, T), ConfigError> {
        let with = |k: &str| {
            let mut p = entry.to_vec();
            p.push(k.to_owned());
            p
        };
        match (a.1, b.1) {
            (Some(x), None) => Ok((true, x)),
            (None, Some(y)) => Ok((false, y)),
            (Some(_), Some(_)) => Err(self.invalid(
                &with(b.0),
                format!("set either `{}` or `{}`, not both", a.0, b.0),
            )),
            (None, None) => Err(self.missing(&with(&format!("{}` or `{}", a.0, b.0)))),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_entry_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Nova's metadata key pattern, `[a-zA-Z0-9-_:. ]{1,255}`: labels must be
/// valid metadata keys on every provider, and Nova's is the narrowest.
pub(crate) fn is_label_key(s: &str) -> bool {
    (1..=255).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | ' '))
}

fn check_absolute_path(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') {
        return Err("must be an absolute path");
    }
    if p.ends_with('/') {
        return Err("must name a file, not a directory");
    }
    if p.contains('\0') || p.contains('\n') {
        return Err("must not contain NUL or newline characters");
    }
    if p.split('/').any(|c| c == ".." || c == ".") {
        return Err("must not contain `.` or `..` components");
    }
    Ok(())
}

fn check_owner(o: &str) -> bool {
    let mut parts = o.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    parts.next().is_none()
        && is_user_name(user)
        && group.is_none_or(|g| g.is_empty() || is_user_name(g))
}

/// Builds and checks the model of a merged tree.
pub(crate) fn resolve(merged: &Node, scene: &Scene<'_>) -> Result<Resolved, ConfigError> {
    let c = Checker { merged, scene };
    let value = merged.to_value();
    let spec: LayerSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = Checker::path(&e.path().to_string());
        c.invalid(&key, e.inner().message().to_owned())
    })?;

    let mut env = BTreeMap::new();
    for (name, source) in spec.env {
        let key = Checker::key(&["env", &name]);
        if !is_identifier(&name) {
            return Err(c.invalid(
                &key,
                "an environment variable name is letters, digits and _, not starting with a digit",
            ));
        }
        if IDENTITY_VARIABLES.contains(&name.as_str()) {
            return Err(c.invalid(&key, "this variable is set by Phoenix itself"));
        }
        env.insert(name, c.template(&key, source));
    }

    let mut labels = BTreeMap::new();
    for (name, source) in spec.labels {
        let key = Checker::key(&["labels", &name]);
        if !is_label_key(&name) {
            return Err(c.invalid(
                &key,
                "a label key is 1 to 255 of A-Z a-z 0-9 - _ : . and space",
            ));
        }
        if name.starts_with("phoenix-") {
            return Err(c.invalid(&key, "labels starting with `phoenix-` are Phoenix's own"));
        }
        labels.insert(name, c.template(&key, source));
    }

    let mut files = Vec::new();
    let mut paths = BTreeMap::new();
    for (id, f) in spec.files {
        let entry = Checker::key(&["files", &id]);
        let key = |k: &str| Checker::key(&["files", &id, k]);
        if !is_entry_id(&id) {
            return Err(c.invalid(&entry, "an id is 1 to 64 of A-Z a-z 0-9 _ -"));
        }
        let path = f.path.ok_or_else(|| c.missing(&key("path")))?;
        check_absolute_path(&path).map_err(|m| c.invalid(&key("path"), m))?;
        if let Some(other) = paths.insert(path.clone(), id.clone()) {
            return Err(c.invalid(&key("path"), format!("file `{other}` writes the same path")));
        }
        if let Some(o) = &f.owner {
            if !check_owner(o) {
                return Err(c.invalid(&key("owner"), "an owner is `user` or `user:group`"));
            }
        }
        let (literal, text) = c.one_of(&entry, ("content", f.content), ("template", f.template))?;
        let body = if literal {
            Body::Literal(text)
        } else {
            Body::Template(c.template(&key("template"), text))
        };
        files.push(FileEntry {
            id,
            path,
            mode: f.mode.map(|m| m.0).unwrap_or(0o644),
            owner: f.owner,
            body,
        });
    }

    let mut commands = Vec::new();
    for (id, cmd) in spec.commands {
        let entry = Checker::key(&["commands", &id]);
        if !is_entry_id(&id) {
            return Err(c.invalid(&entry, "an id is 1 to 64 of A-Z a-z 0-9 _ -"));
        }
        let action = match (cmd.argv, cmd.shell) {
            (Some(argv), None) => {
                let key = Checker::key(&["commands", &id, "argv"]);
                if argv.is_empty() {
                    return Err(c.invalid(&key, "argv names at least the program"));
                }
                Action::Argv(argv.into_iter().map(|a| c.template(&key, a)).collect())
            }
            (None, Some(shell)) => {
                let key = Checker::key(&["commands", &id, "shell"]);
                if shell.trim().is_empty() {
                    return Err(c.invalid(&key, "the command line is empty"));
                }
                Action::Shell(c.template(&key, shell))
            }
            (Some(_), Some(_)) => {
                return Err(c.invalid(
                    &Checker::key(&["commands", &id, "shell"]),
                    "set either `argv` or `shell`, not both",
                ))
            }
            (None, None) => {
                return Err(c.missing(&Checker::key(&["commands", &id, "argv` or `shell"])))
            }
        };
        commands.push((
            cmd.order.unwrap_or(0),
            CommandEntry {
                id,
                when: cmd.when.unwrap_or(When::FirstBoot),
                action,
            },
        ));
    }
    commands.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));

    let mut scripts = Vec::new();
    for (id, s) in spec.scripts {
        let entry = Checker::key(&["scripts", &id]);
        if !is_entry_id(&id) {
            return Err(c.invalid(&entry, "an id is 1 to 64 of A-Z a-z 0-9 _ -"));
        }
        let (literal, text) = c.one_of(&entry, ("content", s.content), ("template", s.template))?;
        let body = if literal {
            if !text.starts_with("#!") {
                return Err(c.invalid(
                    &Checker::key(&["scripts", &id, "content"]),
                    "a script starts with `#!` (cloud-init executes it)",
                ));
            }
            Body::Literal(text)
        } else {
            Body::Template(c.template(&Checker::key(&["scripts", &id, "template"]), text))
        };
        scripts.push((s.order.unwrap_or(0), ScriptEntry { id, body }));
    }
    scripts.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));

    let mut users = Vec::new();
    for (name, u) in spec.users {
        let key = Checker::key(&["users", &name]);
        if !is_user_name(&name) || name == "root" || name == "default" {
            return Err(c.invalid(
                &key,
                "a user name is lowercase letters, digits, _ and -, and not root or default",
            ));
        }
        for g in u.groups.iter().flatten() {
            if !is_user_name(g) {
                return Err(c.invalid(
                    &Checker::key(&["users", &name, "groups"]),
                    format!("`{g}` is not a group name"),
                ));
            }
        }
        if let Some(h) = &u.home {
            check_absolute_path(h)
                .map_err(|m| c.invalid(&Checker::key(&["users", &name, "home"]), m))?;
        }
        users.push(UserEntry {
            name,
            system: u.system.unwrap_or(false),
            groups: u.groups.unwrap_or_default(),
            shell: u.shell,
            home: u.home,
        });
    }

    let mut secrets = BTreeMap::new();
    for (name, s) in spec.secrets {
        let key = |k: &str| Checker::key(&["secrets", &name, k]);
        let entry = Checker::key(&["secrets", &name]);
        if !is_identifier(&name) {
            return Err(c.invalid(
                &entry,
                "a secret name is letters, digits and _ (templates say secrets.<name>)",
            ));
        }
        let source = match (s.env, s.file, s.command) {
            (Some(var), None, None) => {
                if !is_identifier(&var) {
                    return Err(c.invalid(&key("env"), "not an environment variable name"));
                }
                SecretSource::Env(var)
            }
            (None, Some(file), None) => {
                let path = scene.root.join(&file);
                SecretSource::File {
                    written: file,
                    path,
                }
            }
            (None, None, Some(argv)) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(
                        c.invalid(&key("command"), "the command names at least its program")
                    );
                }
                SecretSource::Command {
                    argv,
                    dir: scene.root.to_path_buf(),
                }
            }
            (None, None, None) => return Err(c.missing(&key("env` or `file` or `command"))),
            _ => return Err(c.invalid(&entry, "set exactly one of `env`, `file` and `command`")),
        };
        let scope = s.scope.ok_or_else(|| c.missing(&key("scope")))?;
        if scope.is_empty() {
            return Err(c.invalid(
                &key("scope"),
                "name at least one environment: a secret nobody may receive is a mistake",
            ));
        }
        for entry in &scope {
            let name_part = entry.strip_suffix('*').unwrap_or(entry);
            if entry.strip_suffix('*').is_some() {
                if name_part.is_empty() {
                    return Err(c.invalid(
                        &key("scope"),
                        "`*` alone would send the secret everywhere: list the environments",
                    ));
                }
            } else {
                let declared = EnvironmentName::new(entry.as_str())
                    .map(|e| scene.environments.contains(&e))
                    .unwrap_or(false);
                if !declared {
                    return Err(c.invalid(
                        &key("scope"),
                        format!("`{entry}` is not a declared environment (env/{entry}.toml)"),
                    ));
                }
            }
        }
        let version = s.version.unwrap_or_else(|| DEFAULT_VERSION.to_owned());
        if version.is_empty() {
            return Err(c.invalid(&key("version"), "the version is empty"));
        }
        let timeout = match s.timeout_secs {
            None => DEFAULT_COMMAND_TIMEOUT,
            Some(t @ 1..=600) => Duration::from_secs(t),
            Some(_) => return Err(c.invalid(&key("timeout_secs"), "between 1 and 600 seconds")),
        };
        secrets.insert(
            name.clone(),
            SecretRef {
                name,
                source,
                scope: Scope::new(scope),
                version,
                timeout,
            },
        );
    }

    let env_file = spec
        .cloud_init
        .env_file
        .unwrap_or_else(|| DEFAULT_ENV_FILE.to_owned());
    check_absolute_path(&env_file)
        .map_err(|m| c.invalid(&Checker::key(&["cloud_init", "env_file"]), m))?;
    if paths.contains_key(&env_file) {
        return Err(c.invalid(
            &Checker::key(&["cloud_init", "env_file"]),
            "a file entry writes the same path",
        ));
    }

    let mut resolved = Resolved {
        values: spec.values,
        env,
        labels,
        files,
        commands: commands.into_iter().map(|(_, c)| c).collect(),
        scripts: scripts.into_iter().map(|(_, s)| s).collect(),
        users,
        secrets,
        used_secrets: BTreeSet::new(),
        config_drive: spec.openstack.config_drive.unwrap_or(false),
        env_file,
    };
    resolved.used_secrets = check_templates(&resolved)?;
    Ok(resolved)
}

impl Resolved {
    /// Every template with whether it may use secrets, in a fixed order.
    pub(crate) fn templates(&self) -> Vec<(&Template, SecretUse)> {
        let mut out = Vec::new();
        out.extend(self.env.values().map(|t| (t, SecretUse::Allowed)));
        out.extend(self.labels.values().map(|t| (t, SecretUse::Forbidden)));
        for f in &self.files {
            out.extend(body_template(&f.body).map(|t| (t, SecretUse::Allowed)));
        }
        for c in &self.commands {
            match &c.action {
                Action::Argv(args) => out.extend(args.iter().map(|t| (t, SecretUse::Allowed))),
                Action::Shell(t) => out.push((t, SecretUse::Allowed)),
            }
        }
        for s in &self.scripts {
            out.extend(body_template(&s.body).map(|t| (t, SecretUse::Allowed)));
        }
        out
    }
}

fn body_template(body: &Body) -> Option<&Template> {
    match body {
        Body::Template(t) => Some(t),
        Body::Literal(_) => None,
    }
}

fn check_templates(resolved: &Resolved) -> Result<BTreeSet<String>, ConfigError> {
    let engine = template::engine();
    let mut used = BTreeSet::new();
    for (t, secret_use) in resolved.templates() {
        used.extend(template::check(
            &engine,
            t,
            &resolved.values,
            &resolved.secrets,
            secret_use,
        )?);
    }
    Ok(used)
}
