//! Where the local provider keeps its images and servers under its root
//! directory, and how ids map to directory names.

use std::path::{Path, PathBuf};

use phoenix_core::id::{IdempotencyToken, ImageId, ServerId};

use super::digest::sha256_hex;
use super::error::LocalError;

/// The environment variable naming the root directory.
pub const ROOT_ENV: &str = "PHOENIX_LOCAL_ROOT";

/// The root used when neither a builder nor [`ROOT_ENV`] names one.
pub const DEFAULT_ROOT: &str = "./.phoenix/local";

const IMAGE_PREFIX: &str = "img-";
const SERVER_PREFIX: &str = "srv-";
const ID_HEX: usize = 16;

/// The root from `PHOENIX_LOCAL_ROOT`, or `./.phoenix/local`.
pub fn root_from_env() -> PathBuf {
    std::env::var_os(ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

/// The paths under one root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Creates the directories and resolves the root to an absolute path
    /// (servers run with their runtime directory as working directory).
    pub(crate) fn open(root: &Path) -> Result<Self, LocalError> {
        for dir in [root.join("images"), root.join("servers")] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| LocalError::io("create directory", &dir, e))?;
        }
        let root = root
            .canonicalize()
            .map_err(|e| LocalError::io("resolve root directory", root, e))?;
        Ok(Self { root })
    }

    /// The root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `images/`.
    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `images/<id>/`, the immutable image directory.
    pub(crate) fn image_dir(&self, id: &str) -> PathBuf {
        self.images_dir().join(id)
    }

    /// `images/<id>.meta.json`, the mutable sidecar (state, properties).
    pub(crate) fn image_meta(&self, id: &str) -> PathBuf {
        self.images_dir().join(format!("{id}.meta.json"))
    }

    /// `servers/`.
    pub(crate) fn servers_dir(&self) -> PathBuf {
        self.root.join("servers")
    }

    /// `servers/<id>/`.
    pub(crate) fn server_dir(&self, id: &str) -> PathBuf {
        self.servers_dir().join(id)
    }

    /// `servers/<id>/server.json`.
    pub(crate) fn server_record(&self, id: &str) -> PathBuf {
        self.server_dir(id).join("server.json")
    }

    /// `servers/<id>/run/`, the runtime directory.
    pub(crate) fn run_dir(&self, id: &str) -> PathBuf {
        self.server_dir(id).join("run")
    }

    /// `servers/<id>/boot-env.json` (mode 0600): the boot environment,
    /// kept so that `start` can start the server again.
    pub(crate) fn boot_env(&self, id: &str) -> PathBuf {
        self.server_dir(id).join("boot-env.json")
    }

    /// `servers/<id>/stdout.log`.
    pub(crate) fn stdout_log(&self, id: &str) -> PathBuf {
        self.server_dir(id).join("stdout.log")
    }

    /// `servers/<id>/stderr.log`.
    pub(crate) fn stderr_log(&self, id: &str) -> PathBuf {
        self.server_dir(id).join("stderr.log")
    }
}

fn is_local_id(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == ID_HEX && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// True when `id` has the shape of an image id this provider makes, so it
/// can be used as a directory name (anything else is simply absent).
pub(crate) fn is_image_id(id: &str) -> bool {
    is_local_id(id, IMAGE_PREFIX)
}

/// True when `id` has the shape of a server id this provider makes.
pub(crate) fn is_server_id(id: &str) -> bool {
    is_local_id(id, SERVER_PREFIX)
}

/// The image id of a content digest under a name and version.
pub(crate) fn image_id_for(digest: &str, name: &str, version: &str) -> Result<ImageId, LocalError> {
    let key = format!(
        "{digest}\n{}\n{name}\n{}\n{version}",
        name.len(),
        version.len()
    );
    let hex = sha256_hex(key.as_bytes());
    let id = format!("{IMAGE_PREFIX}{}", &hex[..ID_HEX]);
    ImageId::new(id).map_err(|e| LocalError::invalid("image id", e.to_string()))
}

/// The server id of a launch token: a launch is idempotent because the
/// same token always names the same server directory.
pub(crate) fn server_id_for(token: &IdempotencyToken) -> Result<ServerId, LocalError> {
    let hex = sha256_hex(token.as_str().as_bytes());
    let id = format!("{SERVER_PREFIX}{}", &hex[..ID_HEX]);
    ServerId::new(id).map_err(|e| LocalError::invalid("server id", e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ids_are_derived_and_recognised() {
        let token = IdempotencyToken::new("abc").unwrap();
        let id = server_id_for(&token).unwrap();
        assert!(is_server_id(id.as_str()));
        assert_eq!(id, server_id_for(&token).unwrap());
        assert!(!is_server_id(".."));
        assert!(!is_server_id("srv-../../etc"));
        let img = image_id_for("sha256:00", "web", "1").unwrap();
        assert!(is_image_id(img.as_str()));
        assert_ne!(img, image_id_for("sha256:00", "web", "2").unwrap());
        assert!(!is_image_id(id.as_str()));
    }
}
