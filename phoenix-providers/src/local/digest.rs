//! Content digests of image directories.
//!
//! The digest is a SHA-256 over a canonical listing of the image's files:
//! one line per regular file, sorted by relative path, holding the file's
//! permission bits, the SHA-256 of its content and its path. The manifest
//! keeps the per-file entries so that a failed verification names the file
//! that changed, appeared or disappeared.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{ImageChange, LocalError};

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    /// Path relative to the image directory, `/`-separated.
    pub(crate) path: String,
    /// Permission bits (`0o555` or `0o444` once baked).
    pub(crate) mode: u32,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Hex SHA-256 of the content.
    pub(crate) sha256: String,
}

/// Lowercase hex of a SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The image digest (`sha256:<hex>`) of entries sorted by path.
pub(crate) fn content_digest(entries: &[FileEntry]) -> String {
    let mut hasher = Sha256::new();
    for e in entries {
        // The path is JSON-quoted so that no file name can forge a line.
        let quoted = serde_json::Value::String(e.path.clone()).to_string();
        hasher.update(format!("{:04o} {} {} {quoted}\n", e.mode, e.size, e.sha256).as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Copies `from` to `to` (created new), returning the size and hex SHA-256
/// of the bytes written.
pub(crate) fn copy_hashing(from: &Path, to: &Path) -> Result<(u64, String), LocalError> {
    let mut src = File::open(from).map_err(|e| LocalError::io("open", from, e))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| LocalError::io("create", to, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| LocalError::io("read", from, e))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        dst.write_all(chunk)
            .map_err(|e| LocalError::io("write", to, e))?;
        size += n as u64;
    }
    dst.sync_all().map_err(|e| LocalError::io("flush", to, e))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Size and hex SHA-256 of one file.
pub(crate) fn hash_file(path: &Path) -> Result<(u64, String), LocalError> {
    let mut file = File::open(path).map_err(|e| LocalError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| LocalError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// A regular file or directory found while walking a tree.
#[derive(Debug)]
pub(crate) enum Walked {
    /// A directory, relative path.
    Dir(String),
    /// A regular file, relative path and permission bits.
    File(String, u32),
}

/// Walks `dir` depth first, parents before children, refusing symbolic
/// links and special files (an image holds its content, nothing it points
/// to) and names that are not UTF-8. `skip` names top-level entries to
/// leave out.
pub(crate) fn walk(dir: &Path, skip: &[&str]) -> Result<Vec<Walked>, LocalError> {
    let mut out = Vec::new();
    walk_into(dir, "", skip, &mut out)?;
    Ok(out)
}

fn walk_into(
    dir: &Path,
    prefix: &str,
    skip: &[&str],
    out: &mut Vec<Walked>,
) -> Result<(), LocalError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| LocalError::io("list", dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| LocalError::io("list", dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|n| {
            LocalError::invalid(
                format!("{}", dir.join(&n).display()),
                "file names in an image must be UTF-8",
            )
        })?;
        if prefix.is_empty() && skip.contains(&name.as_str()) {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| LocalError::io("inspect", &path, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(Walked::Dir(rel.clone()));
            walk_into(&path, &rel, skip, out)?;
        } else if ft.is_file() {
            out.push(Walked::File(rel, meta.permissions().mode() & 0o7777));
        } else {
            return Err(LocalError::invalid(
                format!("{}", path.display()),
                "an image may only hold regular files and directories (no links or devices)",
            ));
        }
    }
    Ok(())
}

/// Hashes every regular file under `dir` (except top-level `skip`),
/// sorted by path.
pub(crate) fn scan(dir: &Path, skip: &[&str]) -> Result<Vec<FileEntry>, LocalError> {
    let mut entries = Vec::new();
    for w in walk(dir, skip)? {
        if let Walked::File(rel, mode) = w {
            let (size, sha256) = hash_file(&dir.join(&rel))?;
            entries.push(FileEntry {
                path: rel,
                mode,
                size,
                sha256,
            });
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The first difference between what a manifest records and what is on
/// disk, in path order; `None` when they match.
pub(crate) fn first_change(expected: &[FileEntry], found: &[FileEntry]) -> Option<ImageChange> {
    let exp: BTreeMap<&str, &FileEntry> = expected.iter().map(|e| (e.path.as_str(), e)).collect();
    let got: BTreeMap<&str, &FileEntry> = found.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut paths: Vec<&str> = exp.keys().chain(got.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        match (exp.get(path), got.get(path)) {
            (Some(_), None) => return Some(ImageChange::Removed { path: path.into() }),
            (None, Some(_)) => return Some(ImageChange::Added { path: path.into() }),
            (Some(e), Some(g)) if e.sha256 != g.sha256 || e.size != g.size => {
                return Some(ImageChange::Modified { path: path.into() })
            }
            (Some(e), Some(g)) if e.mode != g.mode => {
                return Some(ImageChange::ModeChanged {
                    path: path.into(),
                    expected: e.mode,
                    found: g.mode,
                })
            }
            _ => {}
        }
    }
    None
}

/// Checks that a relative path stays inside its directory: not empty, not
/// absolute, no `..`, `.` or empty components, no NUL.
pub(crate) fn check_relative(what: &str, path: &str) -> Result<(), LocalError> {
    if path.is_empty() {
        return Err(LocalError::invalid(what, "the path is empty"));
    }
    if path.contains('\0') {
        return Err(LocalError::invalid(
            format!("{what} {path:?}"),
            "the path contains a NUL byte",
        ));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(LocalError::invalid(
            format!("{what} {path:?}"),
            "absolute paths are refused: paths are relative to the runtime directory",
        ));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => {
                return Err(LocalError::invalid(
                    format!("{what} {path:?}"),
                    "`..` is refused: nothing may be written outside the runtime directory",
                ))
            }
            _ => {
                return Err(LocalError::invalid(
                    format!("{what} {path:?}"),
                    "the path must be a plain relative path",
                ))
            }
        }
    }
    if path.ends_with('/') || path.contains("//") {
        return Err(LocalError::invalid(
            format!("{what} {path:?}"),
            "the path must name a file",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry(path: &str, mode: u32, sha: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            mode,
            size: 1,
            sha256: sha.into(),
        }
    }

    #[test]
    fn digest_depends_on_paths_modes_and_content() {
        let a = vec![entry("a", 0o444, "00"), entry("b", 0o555, "11")];
        let d = content_digest(&a);
        assert!(d.starts_with("sha256:") && d.len() == 71);
        assert_eq!(d, content_digest(&a.clone()));
        let mut b = a.clone();
        b[0].mode = 0o555;
        assert_ne!(d, content_digest(&b));
        let mut c = a.clone();
        c[1].path = "c".into();
        assert_ne!(d, content_digest(&c));
        let mut e = a.clone();
        e[1].sha256 = "12".into();
        assert_ne!(d, content_digest(&e));
    }

    #[test]
    fn changes_name_the_file() {
        let a = vec![entry("a", 0o444, "00"), entry("b", 0o555, "11")];
        assert_eq!(first_change(&a, &a), None);
        let mut m = a.clone();
        m[1].sha256 = "12".into();
        assert_eq!(
            first_change(&a, &m).and_then(|c| c.path().map(str::to_owned)),
            Some("b".into())
        );
        assert!(matches!(
            first_change(&a, &a[..1]),
            Some(ImageChange::Removed { path }) if path == "b"
        ));
        let mut added = a.clone();
        added.push(entry("c", 0o444, "22"));
        assert!(matches!(
            first_change(&a, &added),
            Some(ImageChange::Added { path }) if path == "c"
        ));
        let mut mode = a.clone();
        mode[0].mode = 0o644;
        assert!(matches!(
            first_change(&a, &mode),
            Some(ImageChange::ModeChanged { path, .. }) if path == "a"
        ));
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert!(check_relative("file", "phoenix.env").is_ok());
        assert!(check_relative("file", "conf/app.toml").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "./a",
            "a/",
            "a//b",
            "a\0b",
        ] {
            assert!(
                matches!(check_relative("file", bad), Err(LocalError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }
}
