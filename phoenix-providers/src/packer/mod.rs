//! The `packer` feature: bake images with [Packer], the tool teams already
//! use for AMIs, vSphere templates and OpenStack images.
//!
//! [`PackerImages`] is an [`Images`] port whose [`bake`](Images::bake)
//! runs `packer build -machine-readable` on the team's template with the
//! release's variables, streams its progress as [`BakeEvent`]s, writes the
//! whole output to a build log, reads the artifacts from the
//! machine-readable records, and registers the image through an inner
//! [`Images`] port (the local image store for a template that builds a
//! directory; a cloud's images port for a template whose artifact is an
//! AMI or a Glance image) with its provenance as properties:
//!
//! | property | value |
//! |---|---|
//! | [`TEMPLATE_DIGEST_PROPERTY`] | `sha256:` of the template (a file, or a directory's `*.pkr.hcl`/`*.pkr.json`/`*.json` files) |
//! | [`TEMPLATE_PROPERTY`] | the template's path |
//! | [`PACKER_VERSION_PROPERTY`] | `packer version`, such as `1.6.6` |
//! | [`BASE_IMAGE_PROPERTY`] | the request's base image, when it names one |
//! | [`BUILD_LOG_PROPERTY`] | the build log's path |
//! | [`ARTIFACT_PROPERTY`] | the artifact's id or files |
//! | [`BUILDER_ID_PROPERTY`] | the builder (or post-processor) that made it |
//!
//! Everything else ([`list`](Images::list), [`get`](Images::get),
//! properties, [`delete`](Images::delete)) goes to the inner port.
//!
//! # Variables
//!
//! Each bake passes variables in a `-var-file` readable only by its user
//! and removed after the build (so that credentials stay out of `ps` and
//! out of the build log): the builder's
//! [`var`](PackerImagesBuilder::var)s, then the request's properties
//! named `packer-var.<k>`
//! ([`VAR_PROPERTY_PREFIX`], not passed on as image properties), then,
//! when configured, the request's name, version and base under the
//! variable names [`name_var`](PackerImagesBuilder::name_var),
//! [`version_var`](PackerImagesBuilder::version_var) and
//! [`base_var`](PackerImagesBuilder::base_var) (none of these unless
//! asked: an HCL2 template warns about variables it does not declare).
//! The file is JSON, which JSON templates and HCL2 templates both read.
//!
//! # Progress
//!
//! The [`Images`] port has no event channel (the core's events belong to
//! a deployment's operations), so progress goes to an optional sink given
//! to the builder ([`events`](PackerImagesBuilder::events)): a function
//! called with each [`BakeEvent`] (packer's messages, each artifact, the
//! registration, the end). [`channel_sink`] makes one that feeds a tokio
//! channel.
//!
//! # Cancellation
//!
//! Packer runs in its own process group. Dropping the bake (a deadline, a
//! cancelled task) interrupts it as Ctrl-C would (`SIGINT` to the group),
//! so packer deletes what it created in the cloud and exits; if it is
//! still running after [`cancel_grace`](PackerImagesBuilder::cancel_grace)
//! (default two minutes) the group is killed.
//!
//! # Errors
//!
//! [`PackerError`] says what failed and why: packer missing, the template
//! invalid (exit status and packer's last error lines), a build failure
//! (transient-looking cloud errors are retryable), no artifact, the
//! registration refused. [`Images::bake`] returns it as the cause of a
//! [`PortError`] whose kind the executor's retry policy reads.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "local")]
//! # async fn bake() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! use phoenix_core::ports::{BakeRequest, BakeSource, Images};
//! use phoenix_providers::local::LocalImages;
//! use phoenix_providers::packer::{PackerImages, TEMPLATE_DIGEST_PROPERTY};
//!
//! let local = Arc::new(LocalImages::builder().root(".phoenix/local").build()?);
//! let images = PackerImages::builder()
//!     .template("images/web.json")
//!     .var("region", "eu-west-1")
//!     .version_var("version")
//!     .log_dir(".phoenix/packer-logs")
//!     .events(Arc::new(|e| eprintln!("{e}")))
//!     .inner(local)
//!     .build()?;
//! let image = images
//!     .bake(&BakeRequest {
//!         // Not read: packer's artifact is what gets registered.
//!         source: BakeSource::Artifact(String::new()),
//!         name: "web".into(),
//!         version: "2026.12.04-1".into(),
//!         base: Some("debian-12".into()),
//!         properties: BTreeMap::new(),
//!     })
//!     .await?;
//! println!("{} from template {}", image.id, image.properties[TEMPLATE_DIGEST_PROPERTY]);
//! # Ok(())
//! # }
//! ```
//!
//! [Packer]: https://www.packer.io/

mod error;
pub mod machine;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use phoenix_core::id::ImageId;
use phoenix_core::model::Image;
use phoenix_core::ports::{BakeRequest, BakeSource, ImageCapabilities, Images, PortError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

pub use error::PackerError;
pub use machine::Artifact;

use machine::{parse_line, Output, Seen};

/// The environment variable naming the packer binary.
pub const PACKER_ENV: &str = "PHOENIX_PACKER";
/// Property: `sha256:<hex>` of the template.
pub const TEMPLATE_DIGEST_PROPERTY: &str = "packer-template-sha256";
/// Property: the template's path.
pub const TEMPLATE_PROPERTY: &str = "packer-template";
/// Property: the packer version that baked the image.
pub const PACKER_VERSION_PROPERTY: &str = "packer-version";
/// Property: the base image the bake started from.
pub const BASE_IMAGE_PROPERTY: &str = "packer-base-image";
/// Property: where the build log is.
pub const BUILD_LOG_PROPERTY: &str = "packer-build-log";
/// Property: the artifact's id (or its files, comma-separated).
pub const ARTIFACT_PROPERTY: &str = "packer-artifact";
/// Property: the builder or post-processor that produced the artifact.
pub const BUILDER_ID_PROPERTY: &str = "packer-builder-id";
/// Property every Phoenix cloud adapter reads as the image's name (an
/// adopted artifact gets it).
pub const NAME_PROPERTY: &str = "phoenix-image";
/// Property every Phoenix cloud adapter reads as the image's version.
pub const VERSION_PROPERTY: &str = "phoenix-version";
/// Property every Phoenix cloud adapter reads as the image's base.
pub const BASE_PROPERTY: &str = "phoenix-base";
/// Property every Phoenix cloud adapter reads as the lifecycle state.
pub const STATE_PROPERTY: &str = "phoenix-image-state";
/// Request properties named `packer-var.<name>` are passed to packer as
/// variable `name` and not set on the image.
pub const VAR_PROPERTY_PREFIX: &str = "packer-var.";

/// Progress of a bake, for whoever follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BakeEvent {
    /// Packer was started.
    Started {
        /// The template.
        template: String,
        /// Its digest.
        template_digest: String,
        /// Packer's version.
        packer_version: String,
        /// The build log.
        log: String,
    },
    /// A message packer shows to people.
    Progress {
        /// The build it belongs to.
        target: Option<String>,
        /// `say`, `message` or `error`.
        level: String,
        /// The text.
        text: String,
    },
    /// A build produced an artifact.
    Artifact(Artifact),
    /// A build failed.
    BuildError {
        /// The build.
        target: Option<String>,
        /// Why.
        message: String,
    },
    /// Packer is done; the artifact is being registered.
    Registering {
        /// The artifact (a path or an id).
        artifact: String,
    },
    /// The image is registered.
    Finished {
        /// Its id.
        image: ImageId,
        /// Its digest, where the back end gives one.
        digest: Option<String>,
    },
    /// The bake failed.
    Failed {
        /// The error chain.
        error: String,
    },
}

impl fmt::Display for BakeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started {
                template,
                packer_version,
                log,
                ..
            } => write!(
                f,
                "packer {packer_version}: building {template} (log {log})"
            ),
            Self::Progress { text, .. } => f.write_str(text.trim()),
            Self::Artifact(a) => write!(
                f,
                "artifact {}#{} from {}: {}",
                a.target,
                a.index,
                a.builder_id.as_deref().unwrap_or("?"),
                a.id.clone().unwrap_or_else(|| a.files.join(", "))
            ),
            Self::BuildError { target, message } => {
                write!(
                    f,
                    "build {} failed: {message}",
                    target.as_deref().unwrap_or("?")
                )
            }
            Self::Registering { artifact } => write!(f, "registering {artifact}"),
            Self::Finished { image, .. } => write!(f, "image {image} registered"),
            Self::Failed { error } => write!(f, "bake failed: {error}"),
        }
    }
}

/// Receives bake events. It is called on the bake's task: keep it quick.
pub type BakeEventSink = Arc<dyn Fn(BakeEvent) + Send + Sync>;

/// A sink that sends every event to an unbounded tokio channel.
pub fn channel_sink() -> (
    BakeEventSink,
    tokio::sync::mpsc::UnboundedReceiver<BakeEvent>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink: BakeEventSink = Arc::new(move |e| {
        let _ = tx.send(e);
    });
    (sink, rx)
}

/// How the artifact packer reports becomes an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Registration {
    /// The artifact's files (one file, or the directory that holds them
    /// all) are baked through the inner port as
    /// [`BakeSource::Artifact`]: the local image store.
    #[default]
    BakeFiles,
    /// The artifact's id, after the
    /// [`id_prefix`](PackerImagesBuilder::id_prefix), is baked through the
    /// inner port as [`BakeSource::Artifact`]: `vsphere-clone` reports the
    /// VM's name, so a prefix such as `/DC0/vm/` makes it the inventory
    /// path `VsphereImages` clones its template from.
    BakeId,
    /// The artifact's id is an image the inner port already has (an AMI,
    /// a Glance image): it is looked up and tagged with its provenance and
    /// with the name, version, base and state properties the Phoenix cloud
    /// adapters read ([`NAME_PROPERTY`], [`VERSION_PROPERTY`],
    /// [`BASE_PROPERTY`], [`STATE_PROPERTY`] `built`). Packer's
    /// `region:ami-…[,region:ami-…]` is read as the first AMI.
    AdoptId,
}

/// The result of a Packer bake.
#[derive(Debug, Clone)]
pub struct PackerBake {
    /// The registered image.
    pub image: Image,
    /// The artifact it was registered from.
    pub artifact: Artifact,
    /// Every artifact packer reported.
    pub artifacts: Vec<Artifact>,
    /// The build log.
    pub log: PathBuf,
    /// The packer version.
    pub packer_version: String,
    /// The template's digest.
    pub template_digest: String,
}

/// Bakes images with `packer build` and registers them through an inner
/// [`Images`] port. See the [module documentation](self).
#[derive(Clone)]
pub struct PackerImages {
    packer: PathBuf,
    template: PathBuf,
    vars: BTreeMap<String, String>,
    name_var: Option<String>,
    version_var: Option<String>,
    base_var: Option<String>,
    work_dir: Option<PathBuf>,
    log_dir: PathBuf,
    inner: Arc<dyn Images>,
    events: Option<BakeEventSink>,
    registration: Registration,
    builder_id: Option<String>,
    id_prefix: String,
    cancel_grace: Duration,
}

impl fmt::Debug for PackerImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Variables may hold secrets (credentials, tokens): names only.
        f.debug_struct("PackerImages")
            .field("packer", &self.packer)
            .field("template", &self.template)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("log_dir", &self.log_dir)
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

/// Builds [`PackerImages`].
#[derive(Default)]
pub struct PackerImagesBuilder {
    packer: Option<PathBuf>,
    template: Option<PathBuf>,
    vars: BTreeMap<String, String>,
    name_var: Option<String>,
    version_var: Option<String>,
    base_var: Option<String>,
    work_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    inner: Option<Arc<dyn Images>>,
    events: Option<BakeEventSink>,
    registration: Registration,
    builder_id: Option<String>,
    id_prefix: String,
    cancel_grace: Option<Duration>,
}

impl fmt::Debug for PackerImagesBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackerImagesBuilder")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl PackerImagesBuilder {
    /// The packer binary (default: `PHOENIX_PACKER`, else `packer` on the
    /// `PATH`).
    pub fn packer(mut self, path: impl Into<PathBuf>) -> Self {
        self.packer = Some(path.into());
        self
    }
    /// The template: a JSON file, an HCL2 file, or an HCL2 directory.
    /// Required.
    pub fn template(mut self, path: impl Into<PathBuf>) -> Self {
        self.template = Some(path.into());
        self
    }
    /// A variable passed to every bake (in its variables file).
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }
    /// Passes the request's image name as this variable.
    pub fn name_var(mut self, name: impl Into<String>) -> Self {
        self.name_var = Some(name.into());
        self
    }
    /// Passes the request's image version as this variable.
    pub fn version_var(mut self, name: impl Into<String>) -> Self {
        self.version_var = Some(name.into());
        self
    }
    /// Passes the request's base image, when it names one, as this
    /// variable.
    pub fn base_var(mut self, name: impl Into<String>) -> Self {
        self.base_var = Some(name.into());
        self
    }
    /// Packer's working directory (default: the template's directory);
    /// relative artifact paths are read against it.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }
    /// Where build logs are written (default: `packer-logs` in the working
    /// directory).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }
    /// The port that registers the artifact. Required.
    pub fn inner(mut self, images: Arc<dyn Images>) -> Self {
        self.inner = Some(images);
        self
    }
    /// Where progress goes.
    pub fn events(mut self, sink: BakeEventSink) -> Self {
        self.events = Some(sink);
        self
    }
    /// How the artifact becomes an image (default
    /// [`Registration::BakeFiles`]).
    pub fn registration(mut self, registration: Registration) -> Self {
        self.registration = registration;
        self
    }
    /// Registers only an artifact from this builder or post-processor
    /// (such as `mitchellh.amazonebs`); by default the last artifact that
    /// has what the registration needs.
    pub fn builder_id(mut self, id: impl Into<String>) -> Self {
        self.builder_id = Some(id.into());
        self
    }
    /// Prepended to the artifact's id with [`Registration::BakeId`] (such
    /// as a vSphere folder's inventory path, `/DC0/vm/`).
    pub fn id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.id_prefix = prefix.into();
        self
    }
    /// How long a cancelled packer may clean up before it is killed
    /// (default two minutes).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = Some(grace);
        self
    }

    /// Checks that a template and an inner port are set.
    pub fn build(self) -> Result<PackerImages, PortError> {
        let invalid = |what: &str| {
            PortError::new(
                "packer: configure",
                phoenix_core::ports::ErrorKind::Invalid(format!("{what} is required")),
            )
        };
        let template = self.template.ok_or_else(|| invalid("a template"))?;
        let inner = self.inner.ok_or_else(|| invalid("an inner images port"))?;
        let packer = self.packer.unwrap_or_else(|| {
            std::env::var_os(PACKER_ENV)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("packer"), PathBuf::from)
        });
        let work_dir = self.work_dir.or_else(|| {
            let dir = if template.is_dir() {
                Some(template.as_path())
            } else {
                template.parent()
            };
            dir.filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
        });
        let log_dir = self.log_dir.unwrap_or_else(|| {
            work_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("packer-logs")
        });
        Ok(PackerImages {
            packer,
            template,
            vars: self.vars,
            name_var: self.name_var,
            version_var: self.version_var,
            base_var: self.base_var,
            work_dir,
            log_dir,
            inner,
            events: self.events,
            registration: self.registration,
            builder_id: self.builder_id,
            id_prefix: self.id_prefix,
            cancel_grace: self.cancel_grace.unwrap_or(Duration::from_secs(120)),
        })
    }
}

static LOG_SEQ: AtomicU64 = AtomicU64::new(0);

/// A `-var-file` (mode 0600) removed when the bake ends or is dropped.
struct VarFile(PathBuf);

impl VarFile {
    fn write(path: &Path, vars: &[(String, String)]) -> Result<Self, PackerError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let map: serde_json::Map<String, serde_json::Value> = vars
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let io = |source| PackerError::Io {
            what: "write the variables file",
            path: path.to_path_buf(),
            source,
        };
        let bytes = serde_json::to_vec(&map).map_err(|e| io(std::io::Error::other(e)))?;
        let file = Self(path.to_path_buf());
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(io)?;
        Ok(file)
    }
}

impl Drop for VarFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Interrupts packer's process group when the bake is dropped before
/// packer exited, and kills it after the grace period.
struct GroupGuard {
    pgid: Option<Pid>,
    grace: Duration,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Some(pgid) = self.pgid else { return };
        if killpg(pgid, Signal::SIGINT).is_err() {
            return;
        }
        let grace = self.grace;
        // Packer cleans up (cloud instances, keys) on SIGINT; a packer
        // that hangs is killed after the grace period.
        let _ = std::thread::Builder::new()
            .name("packer-cancel".into())
            .spawn(move || {
                std::thread::sleep(grace);
                let _ = killpg(pgid, Signal::SIGKILL);
            });
    }
}

impl PackerImages {
    /// A builder.
    pub fn builder() -> PackerImagesBuilder {
        PackerImagesBuilder::default()
    }

    /// The inner port that registers artifacts.
    pub fn inner(&self) -> &Arc<dyn Images> {
        &self.inner
    }

    fn emit(&self, event: BakeEvent) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }

    fn command(&self, program_args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.packer);
        cmd.args(program_args)
            // No calls home to HashiCorp's checkpoint service.
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.work_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Packer's version (`packer -machine-readable version`).
    pub async fn packer_version(&self) -> Result<String, PackerError> {
        let out = self
            .command(&["-machine-readable", "version"])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| PackerError::Missing {
                packer: self.packer.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parsed = Output::default();
        for r in text.lines().filter_map(parse_line) {
            parsed.feed(&r);
        }
        match parsed.version.filter(|v| !v.is_empty()) {
            Some(v) => Ok(v),
            None => {
                // Older packers print `Packer v1.x.y`.
                let plain = text
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stderr).lines())
                    .find_map(|l| l.trim().strip_prefix("Packer v").map(str::to_owned));
                plain.ok_or_else(|| {
                    PackerError::BadOutput(format!(
                        "`{} version` named no version (exit status {})",
                        self.packer.display(),
                        out.status
                    ))
                })
            }
        }
    }

    fn args(&self, request: &BakeRequest) -> Vec<(String, String)> {
        let mut vars = self.vars.clone();
        for (k, v) in &request.properties {
            if let Some(name) = k.strip_prefix(VAR_PROPERTY_PREFIX) {
                vars.insert(name.to_owned(), v.clone());
            }
        }
        if let Some(n) = &self.name_var {
            vars.insert(n.clone(), request.name.clone());
        }
        if let Some(n) = &self.version_var {
            vars.insert(n.clone(), request.version.clone());
        }
        if let (Some(n), Some(base)) = (&self.base_var, &request.base) {
            vars.insert(n.clone(), base.clone());
        }
        vars.into_iter().collect()
    }

    /// Runs packer and registers its artifact: the typed form of
    /// [`Images::bake`].
    pub async fn build(&self, request: &BakeRequest) -> Result<PackerBake, PackerError> {
        let result = self.build_inner(request).await;
        if let Err(e) = &result {
            self.emit(BakeEvent::Failed {
                error: phoenix_core::error_chain(e),
            });
        }
        result
    }

    async fn build_inner(&self, request: &BakeRequest) -> Result<PackerBake, PackerError> {
        let packer_version = self.packer_version().await?;
        let template_digest = template_digest(&self.template).await?;
        tokio::fs::create_dir_all(&self.log_dir)
            .await
            .map_err(|source| PackerError::Io {
                what: "create the log directory",
                path: self.log_dir.clone(),
                source,
            })?;
        let log = self.log_dir.join(format!(
            "{}-{}-{}-{}.log",
            file_part(&request.name),
            file_part(&request.version),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            LOG_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let log_io = |source| PackerError::Io {
            what: "write the build log",
            path: log.clone(),
            source,
        };
        let mut log_file = tokio::fs::File::create(&log).await.map_err(log_io)?;
        self.emit(BakeEvent::Started {
            template: self.template.display().to_string(),
            template_digest: template_digest.clone(),
            packer_version: packer_version.clone(),
            log: log.display().to_string(),
        });

        let mut args: Vec<String> = vec!["build".into(), "-machine-readable".into()];
        let vars = self.args(request);
        // Variables go in a file only we can read, not on the command line
        // where every user's `ps` sees them (they may be credentials).
        let _var_file = if vars.is_empty() {
            None
        } else {
            let file = VarFile::write(&log.with_extension("vars.json"), &vars)?;
            args.push(format!("-var-file={}", file.0.display()));
            Some(file)
        };
        let template_arg = match &self.work_dir {
            // Packer runs in the working directory: an absolute template
            // path is unambiguous.
            Some(_) => {
                std::path::absolute(&self.template).unwrap_or_else(|_| self.template.clone())
            }
            None => self.template.clone(),
        };
        args.push(template_arg.display().to_string());
        let header = format!(
            "# phoenix packer bake of {} {}: {} build -machine-readable {}\n# variables (values not logged): {}\n",
            request.name,
            request.version,
            self.packer.display(),
            template_arg.display(),
            // Variable values may be secrets: the log names them only.
            vars.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        log_file
            .write_all(header.as_bytes())
            .await
            .map_err(log_io)?;

        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(&arg_refs);
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|source| PackerError::Missing {
            packer: self.packer.clone(),
            source,
        })?;
        let mut guard = GroupGuard {
            pgid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
            grace: self.cancel_grace,
        };
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(PackerError::BadOutput(
                "packer's output was not captured".into(),
            ));
        };
        let mut out_lines = BufReader::new(stdout).lines();
        let mut err_lines = BufReader::new(stderr).lines();
        let mut output = Output::default();
        let mut stderr_tail: Vec<String> = Vec::new();
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                line = out_lines.next_line(), if out_open => match line {
                    Ok(Some(line)) => {
                        log_file.write_all(line.as_bytes()).await.map_err(log_io)?;
                        log_file.write_all(b"\n").await.map_err(log_io)?;
                        if let Some(record) = parse_line(&line) {
                            match output.feed(&record) {
                                Seen::Ui { target, level, text } => {
                                    self.emit(BakeEvent::Progress { target, level, text })
                                }
                                Seen::Artifact(a) => self.emit(BakeEvent::Artifact(a)),
                                Seen::Error { target, message } => {
                                    self.emit(BakeEvent::BuildError { target, message })
                                }
                                Seen::Other => {}
                            }
                        }
                    }
                    Ok(None) | Err(_) => out_open = false,
                },
                line = err_lines.next_line(), if err_open => match line {
                    Ok(Some(line)) => {
                        log_file
                            .write_all(format!("# stderr: {line}\n").as_bytes())
                            .await
                            .map_err(log_io)?;
                        if !line.trim().is_empty() {
                            stderr_tail.push(line);
                            if stderr_tail.len() > 20 {
                                stderr_tail.remove(0);
                            }
                        }
                    }
                    Ok(None) | Err(_) => err_open = false,
                },
            }
        }
        let status = child.wait().await.map_err(|source| PackerError::Io {
            what: "wait for packer",
            path: self.packer.clone(),
            source,
        })?;
        guard.disarm();
        log_file
            .write_all(format!("# packer exited: {status}\n").as_bytes())
            .await
            .map_err(log_io)?;
        log_file.flush().await.map_err(log_io)?;

        if !status.success() {
            let mut errors = output.last_errors(5);
            if errors.is_empty() {
                let skip = stderr_tail.len().saturating_sub(5);
                errors = stderr_tail.into_iter().skip(skip).collect();
            }
            let status = status_text(&status);
            if output.artifacts.is_empty() && error::is_template_error(&errors) {
                return Err(PackerError::TemplateInvalid {
                    template: self.template.clone(),
                    status,
                    errors,
                    log,
                });
            }
            let transient = error::looks_transient(&errors);
            return Err(PackerError::BuildFailed {
                template: self.template.clone(),
                status,
                errors,
                log,
                transient,
            });
        }

        let artifact =
            self.pick(&output.artifacts)
                .cloned()
                .ok_or_else(|| PackerError::NoArtifact {
                    template: self.template.clone(),
                    wanted: match (self.registration, &self.builder_id) {
                        (Registration::BakeFiles, None) => "file".to_owned(),
                        (Registration::BakeFiles, Some(b)) => format!("file (from {b})"),
                        (_, None) => "id".to_owned(),
                        (_, Some(b)) => format!("id (from {b})"),
                    },
                    reported: if output.artifacts.is_empty() {
                        "none".to_owned()
                    } else {
                        output
                            .artifacts
                            .iter()
                            .map(|a| {
                                format!(
                                    "{} from {}",
                                    a.id.as_deref().unwrap_or("no id"),
                                    a.builder_id.as_deref().unwrap_or("?")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    log: log.clone(),
                })?;

        let mut properties: BTreeMap<String, String> = request
            .properties
            .iter()
            .filter(|(k, _)| !k.starts_with(VAR_PROPERTY_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        properties.insert(TEMPLATE_DIGEST_PROPERTY.into(), template_digest.clone());
        properties.insert(
            TEMPLATE_PROPERTY.into(),
            self.template.display().to_string(),
        );
        properties.insert(PACKER_VERSION_PROPERTY.into(), packer_version.clone());
        properties.insert(BUILD_LOG_PROPERTY.into(), log.display().to_string());
        if let Some(base) = &request.base {
            properties.insert(BASE_IMAGE_PROPERTY.into(), base.clone());
        }
        if let Some(b) = &artifact.builder_id {
            properties.insert(BUILDER_ID_PROPERTY.into(), b.clone());
        }
        let image = self.register(request, &artifact, properties).await?;
        self.emit(BakeEvent::Finished {
            image: image.id.clone(),
            digest: image.digest.clone(),
        });
        Ok(PackerBake {
            image,
            artifact,
            artifacts: output.artifacts,
            log,
            packer_version,
            template_digest,
        })
    }

    /// The artifact to register: the last complete one that has what the
    /// registration needs (and comes from the configured builder).
    fn pick<'a>(&self, artifacts: &'a [Artifact]) -> Option<&'a Artifact> {
        artifacts.iter().rev().find(|a| {
            a.complete
                && self
                    .builder_id
                    .as_ref()
                    .is_none_or(|b| a.builder_id.as_ref() == Some(b))
                && match self.registration {
                    Registration::BakeFiles => !a.files.is_empty(),
                    Registration::BakeId | Registration::AdoptId => a.id.is_some(),
                }
        })
    }

    fn resolve(&self, file: &str) -> PathBuf {
        let p = PathBuf::from(file);
        match (&self.work_dir, p.is_absolute()) {
            (Some(dir), false) => dir.join(p),
            _ => p,
        }
    }

    async fn register(
        &self,
        request: &BakeRequest,
        artifact: &Artifact,
        mut properties: BTreeMap<String, String>,
    ) -> Result<Image, PackerError> {
        let refused = |what: String, source: PortError| PackerError::Registration {
            artifact: what,
            source,
        };
        match self.registration {
            Registration::BakeFiles => {
                let files: Vec<PathBuf> = artifact.files.iter().map(|f| self.resolve(f)).collect();
                let source = match files.as_slice() {
                    [one] => one.clone(),
                    many => common_dir(many).ok_or_else(|| {
                        refused(
                            artifact.files.join(", "),
                            PortError::new(
                                "packer: register artifact",
                                phoenix_core::ports::ErrorKind::Invalid(
                                    "the artifact's files share no directory".into(),
                                ),
                            ),
                        )
                    })?,
                };
                let shown = source.display().to_string();
                properties.insert(ARTIFACT_PROPERTY.into(), artifact.files.join(","));
                self.emit(BakeEvent::Registering {
                    artifact: shown.clone(),
                });
                self.inner
                    .bake(&BakeRequest {
                        source: BakeSource::Artifact(shown.clone()),
                        name: request.name.clone(),
                        version: request.version.clone(),
                        base: request.base.clone(),
                        properties,
                    })
                    .await
                    .map_err(|e| refused(shown, e))
            }
            Registration::BakeId => {
                let raw = artifact.id.clone().unwrap_or_default();
                properties.insert(ARTIFACT_PROPERTY.into(), raw.clone());
                let id = format!("{}{raw}", self.id_prefix);
                self.emit(BakeEvent::Registering {
                    artifact: id.clone(),
                });
                self.inner
                    .bake(&BakeRequest {
                        source: BakeSource::Artifact(id.clone()),
                        name: request.name.clone(),
                        version: request.version.clone(),
                        base: request.base.clone(),
                        properties,
                    })
                    .await
                    .map_err(|e| refused(id, e))
            }
            Registration::AdoptId => {
                let raw = artifact.id.clone().unwrap_or_default();
                let first = raw.split(',').next().unwrap_or_default();
                let bare = first.rsplit(':').next().unwrap_or(first);
                let id = ImageId::new(bare).map_err(|e| {
                    refused(
                        raw.clone(),
                        PortError::new(
                            "packer: register artifact",
                            phoenix_core::ports::ErrorKind::BadResponse(e.to_string()),
                        ),
                    )
                })?;
                properties.insert(ARTIFACT_PROPERTY.into(), raw.clone());
                properties.insert(NAME_PROPERTY.into(), request.name.clone());
                properties.insert(VERSION_PROPERTY.into(), request.version.clone());
                properties.insert(STATE_PROPERTY.into(), "built".into());
                if let Some(base) = &request.base {
                    properties.insert(BASE_PROPERTY.into(), base.clone());
                }
                self.emit(BakeEvent::Registering {
                    artifact: raw.clone(),
                });
                self.inner
                    .get(&id)
                    .await
                    .map_err(|e| refused(raw.clone(), e))?;
                self.inner
                    .set_properties(&id, &properties)
                    .await
                    .map_err(|e| refused(raw.clone(), e))?;
                self.inner.get(&id).await.map_err(|e| refused(raw, e))
            }
        }
    }
}

#[async_trait]
impl Images for PackerImages {
    fn capabilities(&self) -> ImageCapabilities {
        let inner = self.inner.capabilities();
        ImageCapabilities {
            bake_from_server: false,
            bake_from_artifact: true,
            properties: inner.properties,
        }
    }

    async fn list(&self) -> Result<Vec<Image>, PortError> {
        self.inner.list().await
    }

    async fn get(&self, id: &ImageId) -> Result<Image, PortError> {
        self.inner.get(id).await
    }

    /// Runs packer on the template (the request's `source` is not read:
    /// packer's artifact is what is registered) and registers the artifact
    /// with its provenance.
    async fn bake(&self, request: &BakeRequest) -> Result<Image, PortError> {
        let op = format!(
            "packer: bake {} {} from {}",
            request.name,
            request.version,
            self.template.display()
        );
        self.build(request)
            .await
            .map(|b| b.image)
            .map_err(|e| e.into_port(op))
    }

    async fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), PortError> {
        self.inner.set_properties(id, properties).await
    }

    async fn delete(&self, id: &ImageId) -> Result<(), PortError> {
        self.inner.delete(id).await
    }
}

fn status_text(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "unknown".to_owned(),
    }
}

/// A name made safe for a file name.
fn file_part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "image".to_owned()
    } else {
        cleaned
    }
}

/// The deepest directory holding every path.
fn common_dir(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut common: PathBuf = paths.first()?.parent()?.to_path_buf();
    for p in paths.iter().skip(1) {
        while !p.starts_with(&common) {
            common = common.parent()?.to_path_buf();
        }
    }
    (!common.as_os_str().is_empty()).then_some(common)
}

/// `sha256:<hex>` of a template file, or of a template directory's
/// template files (names and contents, in name order).
async fn template_digest(template: &Path) -> Result<String, PackerError> {
    let path = template.to_path_buf();
    let io = |what, path: &Path, source| PackerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| io("read the template", &path, e))?;
    let mut hasher = Sha256::new();
    if meta.is_dir() {
        let mut names = Vec::new();
        let mut dir = tokio::fs::read_dir(&path)
            .await
            .map_err(|e| io("read the template directory", &path, e))?;
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(|e| io("read the template directory", &path, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pkr.hcl") || name.ends_with(".pkr.json") || name.ends_with(".json")
            {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let file = path.join(&name);
            let bytes = tokio::fs::read(&file)
                .await
                .map_err(|e| io("read the template", &file, e))?;
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(&bytes);
        }
    } else {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io("read the template", &path, e))?;
        hasher.update(&bytes);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn common_directories() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            common_dir(&[p("/a/b/entrypoint"), p("/a/b/data/x")]),
            Some(p("/a/b"))
        );
        assert_eq!(common_dir(&[p("/a/b/c"), p("/a/d/e")]), Some(p("/a")));
        assert_eq!(common_dir(&[p("x"), p("y")]), None);
    }

    #[test]
    fn file_names_are_clean() {
        assert_eq!(file_part("web/2026 12"), "web_2026_12");
        assert_eq!(file_part(""), "image");
    }
}
