//! From a checked configuration and one server's context to what that
//! server receives, in every boot mechanism's format.

pub mod aws;
pub mod cloud_init;
pub mod local;
mod mime;
pub mod openstack;
pub mod vsphere;

use std::collections::BTreeMap;
use std::io::Write;

use minijinja::Value;
use secrecy::{ExposeSecret, SecretString};

use crate::error::ConfigError;
use crate::model::{Action, Body, Resolved, UserEntry};
use crate::spec::When;
use crate::template::{self, table_to_jinja, Template};

/// The per-server variables.
#[derive(Debug, Clone)]
pub(crate) struct Vars {
    pub(crate) deployment: String,
    pub(crate) environment: String,
    pub(crate) role: String,
    pub(crate) release: String,
    pub(crate) image: String,
    pub(crate) pool: String,
    pub(crate) server_name: String,
    pub(crate) index: u32,
}

impl Vars {
    fn identity_env(&self) -> BTreeMap<String, String> {
        [
            ("PHOENIX_DEPLOYMENT", self.deployment.clone()),
            ("PHOENIX_ENVIRONMENT", self.environment.clone()),
            ("PHOENIX_ROLE", self.role.clone()),
            ("PHOENIX_RELEASE", self.release.clone()),
            ("PHOENIX_IMAGE", self.image.clone()),
            ("PHOENIX_POOL", self.pool.clone()),
            ("PHOENIX_SERVER", self.server_name.clone()),
            ("PHOENIX_INDEX", self.index.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// A file to write.
pub(crate) struct RenderedFile {
    pub(crate) path: String,
    pub(crate) mode: u32,
    pub(crate) owner: Option<String>,
    pub(crate) content: SecretString,
    /// Written after users are created (its owner is one of them).
    pub(crate) defer: bool,
}

/// A command to run.
pub(crate) enum RenderedCommand {
    Argv(Vec<SecretString>),
    Shell(SecretString),
}

/// A script delivered as its own part.
pub(crate) struct RenderedScript {
    /// Sorts in run order (`010-migrate.sh`).
    pub(crate) file_name: String,
    pub(crate) content: SecretString,
}

/// One server's configuration, rendered. Everything that may hold a
/// secret is wrapped.
pub(crate) struct Rendered {
    pub(crate) server_name: String,
    pub(crate) env: BTreeMap<String, SecretString>,
    pub(crate) files: Vec<RenderedFile>,
    pub(crate) boot: Vec<RenderedCommand>,
    pub(crate) run: Vec<RenderedCommand>,
    pub(crate) scripts: Vec<RenderedScript>,
    pub(crate) users: Vec<UserEntry>,
    /// Not secret: labels cannot use secrets.
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) config_drive: bool,
    pub(crate) env_file: String,
}

/// Renders every template of `resolved` for one server. `secrets` holds
/// the values (or, for previews, placeholders) of the secrets the
/// templates use, all already checked to be in scope.
pub(crate) fn render(
    resolved: &Resolved,
    vars: &Vars,
    secrets: &BTreeMap<String, SecretString>,
) -> Result<Rendered, ConfigError> {
    let engine = template::engine();
    let base: Vec<(&str, Value)> = vec![
        ("deployment", Value::from(vars.deployment.as_str())),
        ("environment", Value::from(vars.environment.as_str())),
        ("role", Value::from(vars.role.as_str())),
        ("release", Value::from(vars.release.as_str())),
        ("image", Value::from(vars.image.as_str())),
        ("pool", Value::from(vars.pool.as_str())),
        ("server_name", Value::from(vars.server_name.as_str())),
        ("index", Value::from(vars.index)),
        ("values", table_to_jinja(&resolved.values)),
    ];
    // Labels get a context without secrets at all, not just a check.
    let public: Value = base.iter().cloned().collect();
    let secret_map: Value = secrets
        .iter()
        .map(|(k, v)| (k.as_str(), Value::from(v.expose_secret())))
        .collect();
    let full: Value = base
        .into_iter()
        .chain(std::iter::once(("secrets", secret_map)))
        .collect();
    let scrub: Vec<SecretString> = secrets.values().cloned().collect();
    let render_secret = |t: &Template| -> Result<SecretString, ConfigError> {
        template::render(&engine, t, &full, &scrub).map(SecretString::from)
    };
    let body = |b: &Body| -> Result<SecretString, ConfigError> {
        match b {
            Body::Literal(text) => Ok(SecretString::from(text.as_str())),
            Body::Template(t) => render_secret(t),
        }
    };

    let mut env: BTreeMap<String, SecretString> = vars
        .identity_env()
        .into_iter()
        .map(|(k, v)| (k, SecretString::from(v)))
        .collect();
    for (name, t) in &resolved.env {
        env.insert(name.clone(), render_secret(t)?);
    }

    let mut labels = BTreeMap::new();
    for (name, t) in &resolved.labels {
        labels.insert(name.clone(), template::render(&engine, t, &public, &[])?);
    }

    let users: Vec<&str> = resolved.users.iter().map(|u| u.name.as_str()).collect();
    let mut files = Vec::new();
    for f in &resolved.files {
        let defer = f
            .owner
            .as_deref()
            .and_then(|o| o.split(':').next())
            .is_some_and(|u| users.contains(&u));
        files.push(RenderedFile {
            path: f.path.clone(),
            mode: f.mode,
            owner: f.owner.clone(),
            content: body(&f.body)?,
            defer,
        });
    }

    let (mut boot, mut run) = (Vec::new(), Vec::new());
    for c in &resolved.commands {
        let rendered = match &c.action {
            Action::Argv(args) => {
                RenderedCommand::Argv(args.iter().map(&render_secret).collect::<Result<_, _>>()?)
            }
            Action::Shell(t) => RenderedCommand::Shell(render_secret(t)?),
        };
        match c.when {
            When::Boot => boot.push(rendered),
            When::FirstBoot => run.push(rendered),
        }
    }

    let mut scripts = Vec::new();
    for (i, s) in resolved.scripts.iter().enumerate() {
        let content = body(&s.body)?;
        if !content.expose_secret().starts_with("#!") {
            if let Body::Template(t) = &s.body {
                return Err(ConfigError::TemplateRender {
                    location: t.origin.location(),
                    key: t.key.clone(),
                    message: "the rendered script does not start with `#!`".into(),
                });
            }
        }
        scripts.push(RenderedScript {
            file_name: format!("{:03}-{}.sh", (i + 1) * 10, s.id),
            content,
        });
    }

    Ok(Rendered {
        server_name: vars.server_name.clone(),
        env,
        files,
        boot,
        run,
        scripts,
        users: resolved.users.clone(),
        labels,
        config_drive: resolved.config_drive,
        env_file: resolved.env_file.clone(),
    })
}

/// The environment as a systemd `EnvironmentFile` (also readable by a
/// POSIX shell): `KEY="value"`, with `\`, `"`, `$`, `` ` `` and newlines
/// escaped.
pub(crate) fn env_file_text(env: &BTreeMap<String, SecretString>) -> SecretString {
    let mut out = String::new();
    for (k, v) in env {
        out.push_str(k);
        out.push_str("=\"");
        for c in v.expose_secret().chars() {
            match c {
                '\\' | '"' | '$' | '`' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push_str("\"\n");
    }
    SecretString::from(out)
}

/// Gzip with a fixed header (no timestamp), so equal input gives equal
/// output.
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>, ConfigError> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .map_err(ConfigError::Compression)
}
