//! The `local` provider (default feature): the embedded default, which runs
//! the Phoenix Server pattern on one machine with nothing installed.
//!
//! - **Images** ([`LocalImages`]) are immutable, content-addressed artifact
//!   directories: an executable (the entrypoint) and any files, copied,
//!   made read-only, and described by a manifest (name, version, creation
//!   time, SHA-256 per file and a digest over them all). The digest is
//!   verified before every launch; a modified image is refused with an
//!   error naming the file that changed, appeared or disappeared.
//! - **Servers** ([`LocalCompute`]) are processes started from an image's
//!   entrypoint, each in its own process group, on its own loopback port,
//!   in a fresh runtime directory, receiving the boot configuration
//!   ([`BootPayload::Local`]) as files and environment variables: the local
//!   equivalent of cloud-init. They outlive the orchestrator; their records
//!   on disk let a restarted orchestrator re-adopt them.
//!
//! # On disk
//!
//! ```text
//! <root>/                           PHOENIX_LOCAL_ROOT, default ./.phoenix/local
//!   images/
//!     img-<16 hex>/                 read-only (dirs 0555, files 0555/0444)
//!       manifest.json               name, version, created_at, entrypoint,
//!                                   digest, files [{path, mode, size, sha256}]
//!       entrypoint                  (or the name the manifest gives)
//!       …                           the artifact's other files
//!     img-<16 hex>.meta.json        mutable sidecar: properties, incl.
//!                                   phoenix-image-state (default built)
//!   servers/
//!     srv-<16 hex>/                 mode 0700; id derived from the launch token
//!       server.json                 record (0600, replaced atomically): id, name,
//!                                   labels, image, port, token, launched_at,
//!                                   state running|stopped|terminated,
//!                                   process {pid, start_ticks, started_at},
//!                                   exit {code, signal}
//!       boot-env.json               boot environment (0600), for start after stop;
//!                                   removed at terminate
//!       stdout.log, stderr.log      the process's output, appended
//!       run/                        runtime directory and working directory:
//!                                   the boot files, with their modes;
//!                                   removed at terminate
//! ```
//!
//! # Decisions
//!
//! - **Image ids** are `img-` and 16 hex digits of a SHA-256 over the
//!   content digest, the name and the version: baking the same content
//!   under the same name and version is idempotent, while the same binary
//!   baked as `v1` and as `v2` gives two images (with equal digests), as a
//!   pipeline that labels one build twice expects.
//! - **Server ids** are `srv-` and 16 hex digits of a SHA-256 of the launch
//!   token, so a repeated launch finds the same directory: launches are
//!   idempotent even across orchestrator restarts.
//! - **Environment**: a server process gets a clean environment: `PATH`,
//!   the boot environment, then `PORT`, `PHOENIX_SERVER_ID` and
//!   `PHOENIX_RUNTIME_DIR` (which win over the payload). Nothing else of the
//!   orchestrator's environment (credentials included) leaks into servers.
//! - **Secrets across stop/start**: the boot environment is kept in
//!   `boot-env.json` (0600) and the boot files stay in `run/`; both are
//!   removed when the server is terminated. Values never appear in logs,
//!   errors or `Debug` output.
//! - **Liveness** reads `/proc/<pid>/stat` and compares the recorded start
//!   time, so a reused pid is never mistaken for (or signalled as) a
//!   server; zombies count as ended and are reaped with `waitpid(WNOHANG)`
//!   when they are our children. This needs Linux's `/proc`.
//! - **Terminated servers** are absent from `describe` and `list`; their
//!   record and logs stay as a tombstone (no secrets) until
//!   [`LocalCompute::purge_terminated`]. Launching a terminated server's
//!   token again returns it with status `Deleted`.
//! - The `flavor` of a launch request and the `owner` of boot files are
//!   ignored: a local server runs as the orchestrator's user.

mod atomic_file;
mod blocking;
mod boot_files;
mod compute;
pub mod demo_app;
mod digest;
mod error;
mod image_store;
mod images;
mod layout;
mod logs;
mod manifest;
mod process;
mod records;
mod servers;

pub use boot_files::RESERVED_ENV;
pub use compute::{LocalCompute, LocalComputeBuilder};
pub use error::{ImageChange, LocalError};
pub use images::{LocalImages, LocalImagesBuilder};
pub use layout::{root_from_env, DEFAULT_ROOT, ROOT_ENV};
pub use manifest::{DEFAULT_ENTRYPOINT, ENTRYPOINT_PROPERTY, STATE_PROPERTY};

#[cfg(doc)]
use phoenix_core::ports::BootPayload;
