//! Atomic file replacement: write a temporary file next to the target,
//! flush it to disk, rename it over the target.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::LocalError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically; the file gets `mode` (it is
/// created with it, so secrets are never readable by others even briefly).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LocalError> {
    let dir = path.parent().ok_or_else(|| {
        LocalError::invalid(path.display().to_string(), "has no parent directory")
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| LocalError::io("create", &tmp, e))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| LocalError::io("set permissions of", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| LocalError::io("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| LocalError::io("flush", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| LocalError::io("replace", path, e))
    })();
    if result.is_err() {
        // Best effort: the temporary file is hidden and never read.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `value` as pretty JSON to `path` atomically.
pub(crate) fn write_json_atomic<T: serde::Serialize>(
    path: &Path,
    value: &T,
    mode: u32,
) -> Result<(), LocalError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| LocalError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes, mode)
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, LocalError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LocalError::io("read", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| LocalError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn replaces_with_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_json_atomic(&p, &vec![1, 2], 0o600).unwrap();
        write_json_atomic(&p, &vec![3], 0o600).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&p).unwrap(), Some(vec![3]));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            read_json::<Vec<i32>>(&dir.path().join("none")).unwrap(),
            None
        );
        std::fs::write(&p, b"{").unwrap();
        assert!(matches!(
            read_json::<Vec<i32>>(&p),
            Err(LocalError::Corrupt { .. })
        ));
    }
}
