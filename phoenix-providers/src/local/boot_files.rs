//! The local equivalent of cloud-init: a [`BootPayload::Local`] becomes
//! files in the server's runtime directory and environment variables of
//! its process.
//!
//! The environment is also kept in `servers/<id>/boot-env.json`, created
//! with mode 0600 and removed at terminate, so that `start` after `stop`
//! gives the process the same environment (the runtime files stay in
//! place across stop and start). Values are never logged: [`BootEnv`]'s
//! `Debug` shows names only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use phoenix_core::ports::BootPayload;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::atomic_file::write_atomic;
use super::digest::check_relative;
use super::error::LocalError;

/// Environment variables the provider sets itself; a payload's values for
/// them are replaced.
pub const RESERVED_ENV: [&str; 3] = ["PORT", "PHOENIX_SERVER_ID", "PHOENIX_RUNTIME_DIR"];

/// One file to write into the runtime directory.
#[derive(Debug)]
pub(crate) struct RuntimeFile {
    /// Relative path, checked.
    pub(crate) path: String,
    /// Permission bits.
    pub(crate) mode: u32,
    /// Content (secret; `Debug` is redacted).
    pub(crate) content: SecretSlice<u8>,
}

/// Boot environment variables. `Debug` shows the names only.
#[derive(Default)]
pub(crate) struct BootEnv(pub(crate) BTreeMap<String, SecretString>);

impl fmt::Debug for BootEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Checks a payload and copies what the blocking pool needs out of it.
pub(crate) fn from_payload(
    payload: &BootPayload,
) -> Result<(Vec<RuntimeFile>, BootEnv), LocalError> {
    let BootPayload::Local { files, env } = payload else {
        return Err(LocalError::invalid(
            "boot payload",
            format!(
                "the local provider takes the Local format, not {:?}",
                payload.format()
            ),
        ));
    };
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        check_relative("boot file", &f.path)?;
        if f.mode & !0o777 != 0 {
            return Err(LocalError::invalid(
                format!("boot file {:?} mode {:o}", f.path, f.mode),
                "only permission bits (0o777) are accepted",
            ));
        }
        if out.iter().any(|o: &RuntimeFile| o.path == f.path) {
            return Err(LocalError::invalid(
                format!("boot file {:?}", f.path),
                "it is listed twice",
            ));
        }
        out.push(RuntimeFile {
            path: f.path.clone(),
            mode: f.mode,
            content: SecretSlice::from(f.content.expose_secret().to_vec()),
        });
    }
    let mut vars = BTreeMap::new();
    for (name, value) in env {
        check_env_name(name)?;
        if value.expose_secret().contains('\0') {
            return Err(LocalError::invalid(
                format!("environment variable {name}"),
                "its value contains a NUL byte",
            ));
        }
        vars.insert(
            name.clone(),
            SecretString::from(value.expose_secret().to_owned()),
        );
    }
    Ok((out, BootEnv(vars)))
}

fn check_env_name(name: &str) -> Result<(), LocalError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(LocalError::invalid(
            format!("environment variable name {name:?}"),
            "names are letters, digits and underscores, not starting with a digit",
        ))
    }
}

/// Writes the files into `run_dir` (which this provider just created, so
/// it holds no links to follow), each with its mode.
pub(crate) fn write_files(run_dir: &Path, files: &[RuntimeFile]) -> Result<(), LocalError> {
    for f in files {
        let path = run_dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| LocalError::io("create directory", parent, e))?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&path)
            .map_err(|e| LocalError::io("create boot file", &path, e))?;
        // The umask may have narrowed the mode at creation.
        file.set_permissions(std::fs::Permissions::from_mode(f.mode))
            .map_err(|e| LocalError::io("set permissions of", &path, e))?;
        file.write_all(f.content.expose_secret())
            .map_err(|e| LocalError::io("write boot file", &path, e))?;
    }
    Ok(())
}

/// Saves the environment (mode 0600).
pub(crate) fn save_env(path: &Path, env: &BootEnv) -> Result<(), LocalError> {
    let plain: BTreeMap<&str, &str> = env
        .0
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    let bytes = serde_json::to_vec(&plain).map_err(|source| LocalError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes, 0o600)
}

/// Loads the environment saved at launch.
pub(crate) fn load_env(path: &Path) -> Result<BootEnv, LocalError> {
    let bytes =
        std::fs::read(path).map_err(|e| LocalError::io("read boot environment", path, e))?;
    let plain: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|source| LocalError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
    Ok(BootEnv(
        plain
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use phoenix_core::ports::BootFile;

    fn payload(path: &str, mode: u32, env: &[(&str, &str)]) -> BootPayload {
        BootPayload::Local {
            files: vec![BootFile {
                path: path.into(),
                mode,
                owner: None,
                content: SecretSlice::from(b"secret-canary".to_vec()),
            }],
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretString::from((*v).to_owned())))
                .collect(),
        }
    }

    #[test]
    fn payloads_are_checked_and_debug_hides_values() {
        let (files, env) = from_payload(&payload("conf/a", 0o600, &[("A_B", "v-canary")])).unwrap();
        let shown = format!("{files:?} {env:?}");
        assert!(
            !shown.contains("canary") && shown.contains("A_B"),
            "{shown}"
        );
        for bad in [
            payload("../x", 0o600, &[]),
            payload("/etc/x", 0o600, &[]),
            payload("x", 0o4755, &[]),
            payload("x", 0o600, &[("1A", "v")]),
            payload("x", 0o600, &[("A=B", "v")]),
            payload("x", 0o600, &[("A", "v\0")]),
            BootPayload::CloudInit {
                user_data: SecretSlice::from(vec![]),
            },
        ] {
            assert!(matches!(
                from_payload(&bad),
                Err(LocalError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn files_land_with_their_modes_and_env_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (files, env) = from_payload(&payload("conf/a", 0o640, &[("K", "v")])).unwrap();
        write_files(dir.path(), &files).unwrap();
        let p = dir.path().join("conf/a");
        assert_eq!(std::fs::read(&p).unwrap(), b"secret-canary");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let envp = dir.path().join("env.json");
        save_env(&envp, &env).unwrap();
        assert_eq!(
            std::fs::metadata(&envp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = load_env(&envp).unwrap();
        assert_eq!(
            back.0.get("K").map(|v| v.expose_secret().to_owned()),
            Some("v".into())
        );
    }
}
