//! The image store: baking artifacts into read-only, content-addressed
//! directories, reading their manifests and verifying their digests.
//! Synchronous; the ports call it on tokio's blocking pool.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use phoenix_core::id::ImageId;
use phoenix_core::model::Image;
use phoenix_core::ports::{BakeRequest, BakeSource};
use phoenix_core::time::SharedClock;

use super::atomic_file::{read_json, write_json_atomic};
use super::digest::{
    check_relative, content_digest, copy_hashing, first_change, scan, walk, FileEntry, Walked,
};
use super::error::{ImageChange, LocalError};
use super::layout::{image_id_for, is_image_id, Layout};
use super::manifest::{
    parse_state, ImageMeta, Manifest, DEFAULT_ENTRYPOINT, ENTRYPOINT_PROPERTY, MANIFEST_FILE,
    STATE_PROPERTY,
};

const EXECUTABLE: u32 = 0o555;
const READ_ONLY: u32 = 0o444;

static STAGING: AtomicU64 = AtomicU64::new(0);

/// Images under one root.
#[derive(Debug)]
pub(crate) struct ImageStore {
    layout: Layout,
    clock: SharedClock,
    /// Serialises read-modify-write of sidecars within this process.
    meta_lock: Mutex<()>,
}

impl ImageStore {
    pub(crate) fn new(layout: Layout, clock: SharedClock) -> Self {
        Self {
            layout,
            clock,
            meta_lock: Mutex::new(()),
        }
    }

    /// The directory of an image, `None` for ids this provider never makes.
    pub(crate) fn directory(&self, id: &ImageId) -> Option<PathBuf> {
        self.dir(id)
    }

    fn dir(&self, id: &ImageId) -> Option<PathBuf> {
        is_image_id(id.as_str()).then(|| self.layout.image_dir(id.as_str()))
    }

    /// Bakes an artifact (an executable file or a directory) into an image.
    pub(crate) fn bake(&self, request: &BakeRequest) -> Result<Image, LocalError> {
        let artifact = match &request.source {
            BakeSource::Artifact(path) => PathBuf::from(path),
            BakeSource::Server(id) => {
                return Err(LocalError::Unsupported(format!(
                "the local provider bakes images from build artifacts only, not from server {id}: \
                     a local server is a process, there is no disk to capture"
            )))
            }
        };
        check_text("image name", &request.name)?;
        check_text("image version", &request.version)?;
        let entrypoint = request
            .properties
            .get(ENTRYPOINT_PROPERTY)
            .map_or(DEFAULT_ENTRYPOINT, String::as_str)
            .to_owned();
        check_relative("entrypoint", &entrypoint)?;
        if entrypoint == MANIFEST_FILE {
            return Err(LocalError::invalid(
                "entrypoint",
                format!("{MANIFEST_FILE} is reserved for the image manifest"),
            ));
        }
        if let Some(state) = request.properties.get(STATE_PROPERTY) {
            parse_state(state)?;
        }

        let staging = self.layout.images_dir().join(format!(
            ".bake-{}-{}",
            std::process::id(),
            STAGING.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&staging)
            .map_err(|e| LocalError::io("create staging directory", &staging, e))?;
        let result = self.bake_staged(request, &artifact, &entrypoint, &staging);
        if staging.exists() {
            // Best effort: a leftover `.bake-*` directory is never listed.
            let _ = remove_tree(&staging);
        }
        result
    }

    fn bake_staged(
        &self,
        request: &BakeRequest,
        artifact: &Path,
        entrypoint: &str,
        staging: &Path,
    ) -> Result<Image, LocalError> {
        let meta = std::fs::metadata(artifact).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LocalError::NotFound(format!("artifact {}", artifact.display()))
            } else {
                LocalError::io("inspect artifact", artifact, e)
            }
        })?;
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        if meta.is_file() {
            if meta.permissions().mode() & 0o111 == 0 {
                return Err(LocalError::invalid(
                    format!("artifact {}", artifact.display()),
                    "the file is not executable; it would be the image's entrypoint",
                ));
            }
            if let Some(parent) = Path::new(entrypoint).parent() {
                create_staged_dirs(staging, parent, &mut dirs)?;
            }
            files.push(stage_file(artifact, staging, entrypoint, EXECUTABLE)?);
        } else if meta.is_dir() {
            for w in walk(artifact, &[])? {
                match w {
                    Walked::Dir(rel) => {
                        let d = staging.join(&rel);
                        std::fs::create_dir(&d)
                            .map_err(|e| LocalError::io("create directory", &d, e))?;
                        dirs.push(d);
                    }
                    Walked::File(rel, mode) => {
                        if rel == MANIFEST_FILE {
                            return Err(LocalError::invalid(
                                format!("artifact {}", artifact.display()),
                                format!("it holds a top-level {MANIFEST_FILE}, a name reserved for the image manifest"),
                            ));
                        }
                        let mode = if mode & 0o111 != 0 {
                            EXECUTABLE
                        } else {
                            READ_ONLY
                        };
                        files.push(stage_file(&artifact.join(&rel), staging, &rel, mode)?);
                    }
                }
            }
            match files.iter().find(|f| f.path == entrypoint) {
                Some(f) if f.mode == EXECUTABLE => {}
                Some(_) => {
                    return Err(LocalError::invalid(
                        format!("artifact {}", artifact.display()),
                        format!("its entrypoint {entrypoint:?} is not executable"),
                    ))
                }
                None => {
                    return Err(LocalError::invalid(
                        format!("artifact {}", artifact.display()),
                        format!(
                            "it has no entrypoint {entrypoint:?} (name another with the \
                             {ENTRYPOINT_PROPERTY} property)"
                        ),
                    ))
                }
            }
        } else {
            return Err(LocalError::invalid(
                format!("artifact {}", artifact.display()),
                "must be an executable file or a directory",
            ));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let digest = content_digest(&files);
        let id = image_id_for(&digest, &request.name, &request.version)?;
        let target = self.layout.image_dir(id.as_str());

        if target.exists() {
            // Same content, name and version: the same image.
            return self.existing_after_bake(&id);
        }
        let manifest = Manifest::new(
            id.clone(),
            request.name.clone(),
            request.version.clone(),
            request.base.clone(),
            self.clock.now(),
            entrypoint.to_owned(),
            digest,
            files,
        );
        write_json_atomic(&staging.join(MANIFEST_FILE), &manifest, READ_ONLY)?;
        for d in dirs.iter().rev().map(PathBuf::as_path).chain([staging]) {
            set_mode(d, EXECUTABLE)?;
        }
        {
            let _guard = self.meta_lock.lock().unwrap_or_else(|p| p.into_inner());
            let meta = ImageMeta {
                properties: request.properties.clone(),
            };
            write_json_atomic(&self.layout.image_meta(id.as_str()), &meta, 0o644)?;
        }
        match std::fs::rename(staging, &target) {
            Ok(()) => {}
            // A concurrent bake of the same content won the race.
            Err(_) if target.join(MANIFEST_FILE).exists() => {
                return self.existing_after_bake(&id);
            }
            Err(e) => {
                let _ = std::fs::remove_file(self.layout.image_meta(id.as_str()));
                return Err(LocalError::io("publish image", &target, e));
            }
        }
        self.get(&id)
    }

    fn existing_after_bake(&self, id: &ImageId) -> Result<Image, LocalError> {
        self.verify(id)?;
        self.get(id)
    }

    /// The manifest of an image; `NotFound` when it does not exist.
    pub(crate) fn manifest(&self, id: &ImageId) -> Result<Manifest, LocalError> {
        let dir = self
            .dir(id)
            .ok_or_else(|| LocalError::NotFound(format!("image {id}")))?;
        if !dir.is_dir() {
            return Err(LocalError::NotFound(format!("image {id}")));
        }
        let path = dir.join(MANIFEST_FILE);
        let manifest: Manifest = read_json(&path)?.ok_or_else(|| {
            LocalError::io(
                "read manifest",
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "the manifest is missing"),
            )
        })?;
        if manifest.id != *id {
            return Err(LocalError::ImageModified {
                image: id.to_string(),
                change: ImageChange::ManifestTampered {
                    detail: format!("it names image {}", manifest.id),
                },
            });
        }
        Ok(manifest)
    }

    fn meta(&self, id: &ImageId) -> Result<ImageMeta, LocalError> {
        Ok(read_json(&self.layout.image_meta(id.as_str()))?.unwrap_or_default())
    }

    /// One image.
    pub(crate) fn get(&self, id: &ImageId) -> Result<Image, LocalError> {
        let manifest = self.manifest(id)?;
        manifest.to_image(&self.meta(id)?)
    }

    /// Every image, by id.
    pub(crate) fn list(&self) -> Result<Vec<Image>, LocalError> {
        let dir = self.layout.images_dir();
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| LocalError::io("list", &dir, e))? {
            let entry = entry.map_err(|e| LocalError::io("list", &dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_image_id(&name) && entry.path().is_dir() {
                if let Ok(id) = ImageId::new(name) {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        ids.iter().map(|id| self.get(id)).collect()
    }

    /// Recomputes the digest and compares it with the manifest; returns
    /// the manifest when the image is intact.
    pub(crate) fn verify(&self, id: &ImageId) -> Result<Manifest, LocalError> {
        let manifest = self.manifest(id)?;
        let modified = |change| LocalError::ImageModified {
            image: id.to_string(),
            change,
        };
        let recorded = content_digest(&manifest.files);
        if recorded != manifest.digest
            || image_id_for(&recorded, &manifest.name, &manifest.version)? != *id
        {
            return Err(modified(ImageChange::ManifestTampered {
                detail: "its file list, digest, name or version no longer give the image id".into(),
            }));
        }
        let found = scan(&self.layout.image_dir(id.as_str()), &[MANIFEST_FILE])?;
        if let Some(change) = first_change(&manifest.files, &found) {
            return Err(modified(change));
        }
        Ok(manifest)
    }

    /// The absolute path of an image's entrypoint.
    pub(crate) fn entrypoint(&self, manifest: &Manifest) -> PathBuf {
        self.layout
            .image_dir(manifest.id.as_str())
            .join(&manifest.entrypoint)
    }

    /// Merges properties into the sidecar.
    pub(crate) fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), LocalError> {
        if let Some(state) = properties.get(STATE_PROPERTY) {
            parse_state(state)?;
        }
        let _guard = self.meta_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.manifest(id)?;
        let mut meta = self.meta(id)?;
        meta.properties
            .extend(properties.iter().map(|(k, v)| (k.clone(), v.clone())));
        write_json_atomic(&self.layout.image_meta(id.as_str()), &meta, 0o644)
    }

    /// Deletes an image and its sidecar; deleting one that is gone succeeds.
    pub(crate) fn delete(&self, id: &ImageId) -> Result<(), LocalError> {
        let Some(dir) = self.dir(id) else {
            return Ok(());
        };
        if dir.exists() {
            remove_tree(&dir)?;
        }
        let meta = self.layout.image_meta(id.as_str());
        match std::fs::remove_file(&meta) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LocalError::io("remove", &meta, e)),
        }
    }
}

fn check_text(what: &str, value: &str) -> Result<(), LocalError> {
    if value.trim().is_empty() {
        return Err(LocalError::invalid(what, "must not be empty"));
    }
    if value.len() > 255 || value.chars().any(char::is_control) {
        return Err(LocalError::invalid(
            format!("{what} {value:?}"),
            "must be at most 255 bytes without control characters",
        ));
    }
    Ok(())
}

fn create_staged_dirs(
    staging: &Path,
    rel: &Path,
    dirs: &mut Vec<PathBuf>,
) -> Result<(), LocalError> {
    let mut at = staging.to_path_buf();
    for c in rel.components() {
        at.push(c);
        std::fs::create_dir(&at).map_err(|e| LocalError::io("create directory", &at, e))?;
        dirs.push(at.clone());
    }
    Ok(())
}

fn stage_file(from: &Path, staging: &Path, rel: &str, mode: u32) -> Result<FileEntry, LocalError> {
    let to = staging.join(rel);
    let (size, sha256) = copy_hashing(from, &to)?;
    set_mode(&to, mode)?;
    Ok(FileEntry {
        path: rel.to_owned(),
        mode,
        size,
        sha256,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), LocalError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LocalError::io("set permissions of", path, e))
}

/// Removes a read-only tree: gives its directories write permission back
/// first (removing an entry needs write permission on its directory).
pub(crate) fn remove_tree(dir: &Path) -> Result<(), LocalError> {
    restore_write(dir)?;
    std::fs::remove_dir_all(dir).map_err(|e| LocalError::io("remove", dir, e))
}

fn restore_write(dir: &Path) -> Result<(), LocalError> {
    set_mode(dir, 0o755)?;
    for entry in std::fs::read_dir(dir).map_err(|e| LocalError::io("list", dir, e))? {
        let entry = entry.map_err(|e| LocalError::io("list", dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            restore_write(&entry.path())?;
        }
    }
    Ok(())
}
