use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use phoenix_core::id::ImageId;
use phoenix_core::model::{Image, ImageState, TestEvidence};
use phoenix_core::ports::{BakeRequest, BakeSource, Images};

use super::demo::DEMO_APP_ARG;
use super::stack::LocalStack;
use crate::error::StackError;

impl LocalStack {
    /// Bakes version `version` of the app and certifies it
    /// ([`Self::bake_only`], then [`Self::certify`]).
    pub async fn bake(&self, version: &str) -> Result<Image, StackError> {
        let image = self.bake_only(version).await?;
        self.certify(&image.id).await
    }

    /// Bakes version `version` of the app: a build output directory (the
    /// app binary, an entrypoint that starts it in demo-app mode, a
    /// VERSION file) becomes an immutable, content-addressed image,
    /// recorded as built (not yet launchable where certification is
    /// required). The build output is removed once the image holds it.
    pub async fn bake_only(&self, version: &str) -> Result<Image, StackError> {
        self.bake_build(version, None).await
    }

    /// Bakes and certifies version `version` of the app with a defect that
    /// its smoke test misses: `percent`% of its requests to `/` answer
    /// `500` once it has served a few (the demo app's
    /// `PHOENIX_DEMO_FAIL_PERCENT`, set by the image's entrypoint). What a
    /// canary stage is for.
    pub async fn bake_defective(&self, version: &str, percent: u8) -> Result<Image, StackError> {
        let image = self.bake_build(version, Some(percent.min(100))).await?;
        self.certify(&image.id).await
    }

    /// The release `label` made of a defective build
    /// ([`Self::bake_defective`]): `percent`% of its requests to `/`
    /// answer `500` once it has served a few. An existing release of that
    /// label is returned as it is.
    pub async fn release_defective(
        &self,
        label: &str,
        percent: u8,
    ) -> Result<phoenix_core::model::Release, StackError> {
        let label: phoenix_core::id::ReleaseLabel = label
            .parse()
            .map_err(|e| StackError::Unexpected(format!("invalid release label {label}: {e}")))?;
        let snap = self.phoenix.snapshot(&self.deployment).await?;
        if let Some(r) = snap.releases.get(&label) {
            return Ok(r.clone());
        }
        let image = self.bake_defective(label.as_str(), percent).await?;
        let mut images = BTreeMap::new();
        images.insert(self.role.clone(), image.id);
        Ok(self
            .phoenix
            .create_release(&self.deployment, label, images)
            .await?)
    }

    async fn bake_build(
        &self,
        version: &str,
        fail_percent: Option<u8>,
    ) -> Result<Image, StackError> {
        let build = self.dir.join("build").join(version);
        if build.exists() {
            // A build output left by an earlier run is rebuilt from scratch.
            make_writable(&build);
            std::fs::remove_dir_all(&build).map_err(StackError::io("cannot clear", &build))?;
        }
        std::fs::create_dir_all(&build).map_err(StackError::io("cannot create", &build))?;
        let app = build.join("app");
        std::fs::copy(&self.app, &app).map_err(StackError::io("cannot copy the app to", &app))?;
        let entry = build.join("entrypoint");
        std::fs::write(
            &entry,
            match fail_percent {
                None => format!("#!/bin/sh\nexec \"$(dirname \"$0\")/app\" {DEMO_APP_ARG}\n"),
                Some(p) => format!(
                    "#!/bin/sh\n{}={p} exec \"$(dirname \"$0\")/app\" {DEMO_APP_ARG}\n",
                    phoenix_providers::local::demo_app::FAIL_PERCENT_VAR
                ),
            },
        )
        .map_err(StackError::io("cannot write", &entry))?;
        for f in [&app, &entry] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755))
                .map_err(StackError::io("cannot make executable", f))?;
        }
        let stamp = build.join("VERSION");
        std::fs::write(&stamp, format!("{version}\n"))
            .map_err(StackError::io("cannot write", &stamp))?;

        let image = self
            .images
            .bake(&BakeRequest {
                source: BakeSource::Artifact(build.display().to_string()),
                name: "phoenix-demo".into(),
                version: version.to_owned(),
                base: Some("phoenix-demo-app".into()),
                properties: BTreeMap::new(),
            })
            .await?;
        // The image holds its own copy: the build output is not kept (an
        // app binary is large, and a fleet of releases adds up).
        make_writable(&build);
        std::fs::remove_dir_all(&build).map_err(StackError::io("cannot remove", &build))?;
        self.phoenix.register_image(&image).await?;
        Ok(image)
    }

    /// Certifies an image: its integrity (every file's digest, the
    /// entrypoint) is checked and recorded as test evidence for its
    /// digest, then it is promoted to tested and certified. An image
    /// certified already is returned as it is; a failed check is recorded
    /// and returned as the error.
    pub async fn certify(&self, id: &ImageId) -> Result<Image, StackError> {
        let image = self.images.get(id).await?;
        let recorded = self.phoenix.records().image(&image.id).await?;
        let state = recorded.map_or(image.state, |s| s.value.state);
        if matches!(state, ImageState::Built | ImageState::Tested) {
            let check = self.images.verify(&image.id).await;
            let evidence = TestEvidence {
                suite: "image-integrity".into(),
                at: chrono::Utc::now(),
                passed: check.is_ok(),
                details: match &check {
                    Ok(()) => format!(
                        "digest {} verified; entrypoint executable",
                        image.digest.as_deref().unwrap_or("?")
                    ),
                    Err(e) => e.chain(),
                },
                digest: image.digest.clone(),
                log: None,
            };
            if state == ImageState::Built {
                self.phoenix.record_evidence(&image.id, evidence).await?;
                self.phoenix.promote(&image.id, ImageState::Tested).await?;
            }
            check?;
            return Ok(self
                .phoenix
                .promote(&image.id, ImageState::Certified)
                .await?);
        }
        Ok(image)
    }
}

fn make_writable(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
        }
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}
