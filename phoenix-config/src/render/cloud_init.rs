//! cloud-init user data: a `#cloud-config` document (`users`,
//! `write_files`, `bootcmd`, `runcmd`), wrapped with the shell scripts in a
//! multi-part MIME message when there are scripts.
//!
//! The environment variables are written to the configured `env_file`
//! (default [`crate::DEFAULT_ENV_FILE`], mode 0600) in systemd
//! `EnvironmentFile` syntax. Files owned by a user the configuration
//! creates are written with `defer: true`, after cloud-init has created
//! the users.

use secrecy::ExposeSecret;
use serde::Serialize;

use super::mime::{multipart, Part};
use super::{env_file_text, Rendered, RenderedCommand};
use crate::error::ConfigError;

/// The MIME type of a cloud-config part.
pub const CLOUD_CONFIG_TYPE: &str = "text/cloud-config";
/// The MIME type of a shell script part.
pub const SHELL_SCRIPT_TYPE: &str = "text/x-shellscript";

#[derive(Serialize)]
struct CloudConfig<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    users: Vec<UserItem<'a>>,
    write_files: Vec<WriteFile<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bootcmd: Vec<Command<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runcmd: Vec<Command<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserItem<'a> {
    /// The distribution's default user, kept when others are added.
    Default(&'static str),
    User(User<'a>),
}

#[derive(Serialize)]
struct User<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    system: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    homedir: Option<&'a str>,
}

#[derive(Serialize)]
struct WriteFile<'a> {
    path: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    permissions: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    defer: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Command<'a> {
    Argv(Vec<&'a str>),
    Shell(&'a str),
}

fn commands(list: &[RenderedCommand]) -> Vec<Command<'_>> {
    list.iter()
        .map(|c| match c {
            RenderedCommand::Argv(args) => {
                Command::Argv(args.iter().map(|a| a.expose_secret()).collect())
            }
            RenderedCommand::Shell(line) => Command::Shell(line.expose_secret()),
        })
        .collect()
}

/// The `#cloud-config` document alone.
pub(crate) fn cloud_config(r: &Rendered) -> Result<Vec<u8>, ConfigError> {
    let env_text = env_file_text(&r.env);
    let mut write_files: Vec<WriteFile<'_>> = r
        .files
        .iter()
        .map(|f| WriteFile {
            path: &f.path,
            content: f.content.expose_secret(),
            owner: f.owner.as_deref(),
            permissions: format!("{:04o}", f.mode),
            defer: f.defer,
        })
        .collect();
    write_files.push(WriteFile {
        path: &r.env_file,
        content: env_text.expose_secret(),
        owner: Some("root:root"),
        permissions: "0600".into(),
        defer: false,
    });
    let mut users = Vec::new();
    if !r.users.is_empty() {
        users.push(UserItem::Default("default"));
        users.extend(r.users.iter().map(|u| {
            UserItem::User(User {
                name: &u.name,
                system: u.system,
                groups: u.groups.iter().map(String::as_str).collect(),
                shell: u.shell.as_deref(),
                homedir: u.home.as_deref(),
            })
        }));
    }
    let doc = CloudConfig {
        users,
        write_files,
        bootcmd: commands(&r.boot),
        runcmd: commands(&r.run),
    };
    let yaml = serde_norway::to_string(&doc).map_err(|e| ConfigError::Limit {
        mechanism: "cloud-config",
        reason: format!("cannot write YAML: {e}"),
    })?;
    let mut out = b"#cloud-config\n".to_vec();
    out.extend_from_slice(yaml.as_bytes());
    Ok(out)
}

/// The user data: the cloud-config document, or a multi-part message of
/// it and the scripts.
pub(crate) fn user_data(r: &Rendered) -> Result<Vec<u8>, ConfigError> {
    let config = cloud_config(r)?;
    if r.scripts.is_empty() {
        return Ok(config);
    }
    let mut parts = vec![Part {
        content_type: CLOUD_CONFIG_TYPE,
        file_name: "cloud-config.yaml",
        body: &config,
    }];
    parts.extend(r.scripts.iter().map(|s| Part {
        content_type: SHELL_SCRIPT_TYPE,
        file_name: &s.file_name,
        body: s.content.expose_secret().as_bytes(),
    }));
    Ok(multipart(&parts))
}
