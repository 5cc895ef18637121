//! # phoenix-config
//!
//! Layered environment and role configuration for [`phoenix_core`]'s
//! [`BootConfig`](phoenix_core::ports::BootConfig) port. Operators describe
//! once what differs between environments and roles; every new server
//! receives exactly its configuration at boot.
//!
//! # Layout
//!
//! | file | layer | applies to |
//! |---|---|---|
//! | `base.toml` (required) | 1 | everything |
//! | `env/<environment>.toml` | 2 | one environment; declares it |
//! | `role/<role>.toml` | 3 | one role; declares it |
//! | `env/<environment>/<role>.toml` | 4 | one role in one environment |
//! | `release/<release>.toml` | 5 | one release, in every environment |
//!
//! Any other `*.toml` file is an error (a misspelt directory would
//! otherwise be ignored); other files are ignored. Every environment ×
//! role × release override is merged and checked when the directory
//! loads.
//!
//! # Merging
//!
//! Tables merge key by key; strings, numbers, booleans, dates and lists
//! are replaced whole by the upper layer. A layer's `unset = ["files.motd",
//! "values.db"]` removes those paths from the layers below before the
//! layer's own keys apply. Among alternative keys (a file's `content` and
//! `template`, a command's `argv` and `shell`, a secret's `env`, `file`
//! and `command`) setting one drops the others set below. Merging is
//! idempotent, the empty layer changes nothing, and merging is
//! associative for layers that agree on which paths are tables.
//!
//! # Content
//!
//! `[values]` (free-form, for templates), `[env]` (variables),
//! `[labels]` (provider metadata: no secrets), `[files.<id>]` (`path`,
//! `mode`, `owner`, literal `content` or `template`), `[commands.<id>]`
//! (`argv` or `shell`, `when = "boot" | "first-boot"`, `order`),
//! `[scripts.<id>]` (shell scripts, multi-part user data), `[users.<name>]`,
//! `[secrets.<name>]`, `[openstack] config_drive`, `[cloud_init] env_file`.
//! Templates are minijinja, strict: a template that names an undefined
//! variable fails to load, with file, line and key.
//!
//! # Secrets
//!
//! A secret is a reference (`env`, `file` or `command`) with a `scope` of
//! environments (names, or prefixes like `ci-*`) and an operator-declared
//! `version` ([`DEFAULT_VERSION`] when absent). It is resolved only when a
//! payload is rendered for an environment in its scope; anywhere else the
//! render fails with [`ConfigError::SecretOutOfScope`], naming the secret
//! and the environment. Values stay in [`secrecy`] wrappers and appear in
//! no error, log, preview or fingerprint.
//!
//! # Renderers
//!
//! Every [`BootFormat`](phoenix_core::ports::BootFormat): cloud-init
//! (`#cloud-config`, multi-part MIME with scripts), EC2 user data (16 KiB,
//! gzip when needed), OpenStack (Nova limits, config drive), vSphere
//! guestinfo, local files and environment; see [`render`]. The
//! fingerprint of a configuration ([`ConfigSet::fingerprint`]) hashes its
//! [`Preview`]: rendered content with secrets as identities and versions.
//!
//! ```
//! use phoenix_config::ConfigSet;
//! use phoenix_core::ports::{BootContext, BootFormat, BootPayload};
//! use secrecy::ExposeSecret;
//!
//! let config = ConfigSet::from_files(
//!     "/etc/phoenix/config",
//!     [
//!         ("base.toml", r#"
//!             [values]
//!             port = 8080
//!             [env]
//!             PORT = "{{ values.port }}"
//!             [files.motd]
//!             path = "/etc/motd"
//!             template = "{{ role }} in {{ environment }}\n"
//!         "#),
//!         ("env/prod.toml", ""),
//!         ("env/staging.toml", "[values]\nport = 9090\n"),
//!         ("role/web.toml", ""),
//!     ],
//! )?;
//!
//! let (prod, staging) = ("prod".parse()?, "staging".parse()?);
//! let (web, v1) = ("web".parse()?, "v1".parse()?);
//! let preview = config.preview(&staging, &web, &v1)?;
//! assert_eq!(preview.env["PORT"], "9090");
//! assert_ne!(
//!     config.fingerprint(&prod, &web, &v1)?,
//!     config.fingerprint(&staging, &web, &v1)?,
//! );
//!
//! let context = BootContext {
//!     deployment: "shop".parse()?,
//!     environment: prod,
//!     role: web,
//!     release: v1,
//!     image: "img-1".parse()?,
//!     pool: "pool-1".parse()?,
//!     server_name: "web-1".into(),
//!     index: 0,
//! };
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let payload = runtime.block_on(config.render(&context, BootFormat::Local))?;
//! let BootPayload::Local { files, env } = payload else { unreachable!() };
//! assert_eq!(env["PORT"].expose_secret(), "8080");
//! assert_eq!(files[0].path, "etc/motd");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config_set;
mod error;
mod fingerprint;
mod load;
mod merge;
mod model;
pub mod render;
mod secret;
mod spec;
mod template;
mod tree;

pub use config_set::ConfigSet;
pub use error::{ConfigError, Location};
pub use fingerprint::{
    secret_placeholder, Preview, PreviewCommand, PreviewFile, PreviewUser, PREVIEW_PLACEHOLDERS,
};
pub use model::{DEFAULT_ENV_FILE, IDENTITY_VARIABLES};
/// Re-exported: payloads and secrets come in its wrappers.
pub use secrecy;
pub use secret::{Scope, SecretRef, SecretSource, DEFAULT_COMMAND_TIMEOUT, DEFAULT_VERSION};
