//! Images and releases: registration, test evidence, promotion, and the
//! certification check that decides what production may launch.

use std::collections::BTreeMap;

use crate::id::{DeploymentId, ImageId, ReleaseLabel, RoleName};
use crate::model::{Deployment, EvidenceReport, Image, ImageState, Release, TestEvidence};
use crate::ops::PlanningError;
use crate::policy::Policy;
use crate::ports::{Expect, PortError};
use crate::records::Snapshot;

use super::{CatalogError, Phoenix};

/// The provider property that carries the latest recorded test evidence
/// ([`TestEvidence::summary`]).
pub const EVIDENCE_PROPERTY: &str = "phoenix-evidence";
/// The provider property that counts the recorded test evidence entries.
pub const EVIDENCE_COUNT_PROPERTY: &str = "phoenix-evidence-count";

impl Phoenix {
    /// Checks that an image may be launched in the deployment's
    /// environment: it exists, and where the environment is production or
    /// the policy requires it, it is certified *by evidence*: Phoenix's
    /// own record of it holds passing test evidence for its digest. A
    /// provider's metadata (an image property saying "certified") alone
    /// is never enough; an image Phoenix has no record of is treated as
    /// merely built.
    pub async fn check_launchable(
        &self,
        deployment: &Deployment,
        image: &ImageId,
        policy: &Policy,
    ) -> Result<(), PlanningError> {
        let recorded = self.records.image(image).await?.map(|s| s.value);
        let image_record = match recorded {
            Some(img) => img,
            None => {
                let images = self.ports.images.clone();
                let timeout = self.policy.calls.timeout;
                match self
                    .policy
                    .retry
                    .run(|| async {
                        tokio::time::timeout(timeout, images.get(image))
                            .await
                            .unwrap_or_else(|_| {
                                Err(PortError::temporary(
                                    "reading an image",
                                    "no answer in time",
                                ))
                            })
                    })
                    .await
                {
                    Ok(mut img) => {
                        // The provider's word is a claim, not a record:
                        // nothing it says certifies the image.
                        if img.state.is_certified() {
                            img.state = ImageState::Built;
                        }
                        img.evidence.clear();
                        img
                    }
                    Err(e) if e.is_not_found() => {
                        return Err(PlanningError::UnknownImage(image.clone()))
                    }
                    Err(e) => return Err(PlanningError::Read(e)),
                }
            }
        };
        let state = image_record.state;
        let refuse = |reason: &str| PlanningError::ImageNotLaunchable {
            image: image.clone(),
            state,
            reason: reason.to_owned(),
        };
        let needs_proof = deployment.environment.production || policy.provision.require_certified;
        match state {
            ImageState::Building | ImageState::Deleted => Err(refuse("it cannot be launched")),
            s if (s.is_certified() || s == ImageState::Deprecated) && !needs_proof => Ok(()),
            s if s.is_certified() || s == ImageState::Deprecated => {
                if image_record.proven() {
                    Ok(())
                } else {
                    Err(refuse(
                        "its record holds no passing test evidence for its digest",
                    ))
                }
            }
            _ if deployment.environment.production => {
                Err(refuse("production only launches certified images"))
            }
            _ if policy.provision.require_certified => {
                Err(refuse("the policy requires certified images"))
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn check_release_image(
        &self,
        snap: &Snapshot,
        role: &RoleName,
        release: &ReleaseLabel,
        policy: &Policy,
    ) -> Result<(), PlanningError> {
        let r = snap
            .releases
            .get(release)
            .ok_or_else(|| PlanningError::UnknownRelease(release.clone()))?;
        let image = r
            .image_for(role)
            .ok_or_else(|| PlanningError::NoImageForRole {
                release: release.clone(),
                role: role.clone(),
            })?;
        self.check_launchable(snap.deployment(), image, policy)
            .await
    }

    /// Records an image (from a bake) in the records, so that its
    /// lifecycle and evidence are kept for auditors.
    pub async fn register_image(&self, image: &Image) -> Result<(), CatalogError> {
        match self.records.image(&image.id).await? {
            Some(_) => Ok(()),
            None => {
                self.records.put_image(image, Expect::Absent).await?;
                Ok(())
            }
        }
    }

    async fn image_record(&self, id: &ImageId) -> Result<(Image, u64), CatalogError> {
        if let Some(stored) = self.records.image(id).await? {
            return Ok((stored.value, stored.version));
        }
        let images = self.ports.images.clone();
        match self.policy.retry.run(|| images.get(id)).await {
            Ok(mut img) => {
                // The provider's word is a claim, not a record (as in
                // check_launchable): an image first recorded here starts
                // as built, whatever its properties say, and only the
                // evidence recorded here can take it further.
                if matches!(
                    img.state,
                    ImageState::Tested | ImageState::Certified | ImageState::Released
                ) {
                    img.state = ImageState::Built;
                }
                img.evidence.clear();
                let version = self.records.put_image(&img, Expect::Absent).await?;
                Ok((img, version))
            }
            Err(e) if e.is_not_found() => Err(CatalogError::UnknownImage(id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Records test evidence on an image: in the records (every entry,
    /// which is what certification reads) and, where the provider stores
    /// properties, on the provider's image too ([`EVIDENCE_PROPERTY`]: the
    /// latest entry's [`summary`](TestEvidence::summary);
    /// [`EVIDENCE_COUNT_PROPERTY`]: how many are recorded), for whoever
    /// looks in the cloud's console. The provider's copy is a courtesy:
    /// certification never reads it. Evidence without a digest is taken to
    /// speak of the image's current digest.
    pub async fn record_evidence(
        &self,
        id: &ImageId,
        evidence: TestEvidence,
    ) -> Result<Image, CatalogError> {
        let (mut image, version) = self.image_record(id).await?;
        let mut evidence = evidence;
        // Evidence speaks of the content it ran against.
        if evidence.digest.is_none() {
            evidence.digest = image.digest.clone();
        }
        let summary = evidence.summary();
        image.record_evidence(evidence)?;
        self.records
            .put_image(&image, Expect::Version(version))
            .await?;
        if self.ports.images.capabilities().properties {
            let mut props = BTreeMap::new();
            props.insert(EVIDENCE_PROPERTY.to_owned(), summary);
            props.insert(
                EVIDENCE_COUNT_PROPERTY.to_owned(),
                image.evidence.len().to_string(),
            );
            let images = self.ports.images.clone();
            self.policy
                .retry
                .run(|| images.set_properties(id, &props))
                .await?;
        }
        Ok(image)
    }

    /// The evidence report of one image, for auditors: Phoenix's record
    /// of it (an image only the provider knows is recorded first, with the
    /// provider's claims of certification set aside, as
    /// [`check_launchable`](Self::check_launchable) does) with every
    /// evidence entry and whether it certifies the image. Serialise it
    /// with `serde_json`.
    pub async fn evidence_report(&self, id: &ImageId) -> Result<EvidenceReport, CatalogError> {
        if let Some(stored) = self.records.image(id).await? {
            return Ok(EvidenceReport::of(&stored.value));
        }
        let images = self.ports.images.clone();
        match self.policy.retry.run(|| images.get(id)).await {
            Ok(mut img) => {
                if img.state.is_certified() {
                    img.state = ImageState::Built;
                }
                img.evidence.clear();
                Ok(EvidenceReport::of(&img))
            }
            Err(e) if e.is_not_found() => Err(CatalogError::UnknownImage(id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// The evidence reports of every image Phoenix has recorded, in id
    /// order: the export an auditor asks for.
    pub async fn evidence_reports(&self) -> Result<Vec<EvidenceReport>, CatalogError> {
        Ok(self
            .records
            .images()
            .await?
            .iter()
            .map(|s| EvidenceReport::of(&s.value))
            .collect())
    }

    /// Moves an image along its lifecycle (checked), records it, and tags
    /// the provider's image with its new state.
    pub async fn promote(&self, id: &ImageId, to: ImageState) -> Result<Image, CatalogError> {
        let (mut image, version) = self.image_record(id).await?;
        image.transition(to)?;
        self.records
            .put_image(&image, Expect::Version(version))
            .await?;
        if self.ports.images.capabilities().properties {
            let mut props = BTreeMap::new();
            props.insert("phoenix-image-state".to_owned(), to.to_string());
            let images = self.ports.images.clone();
            self.policy
                .retry
                .run(|| images.set_properties(id, &props))
                .await?;
        }
        Ok(image)
    }

    /// Records a release: every role of the deployment must have an image
    /// that may be launched in its environment. The configuration
    /// fingerprint combines each role's fingerprint from the boot
    /// configuration. Images are promoted to `Released`.
    pub async fn create_release(
        &self,
        deployment: &DeploymentId,
        label: ReleaseLabel,
        images: BTreeMap<RoleName, ImageId>,
    ) -> Result<Release, CatalogError> {
        let snap = self.records.snapshot(deployment).await?;
        let dep = snap.deployment().clone();
        let mut fingerprints = Vec::new();
        for role in dep.roles.keys() {
            let image = images.get(role).ok_or_else(|| CatalogError::MissingRole {
                release: label.clone(),
                role: role.clone(),
            })?;
            match self.check_launchable(&dep, image, &self.policy).await {
                Ok(()) => {}
                Err(PlanningError::UnknownImage(i)) => return Err(CatalogError::UnknownImage(i)),
                Err(PlanningError::ImageNotLaunchable {
                    image,
                    state,
                    reason,
                }) => {
                    return Err(CatalogError::NotLaunchable {
                        image,
                        state,
                        reason,
                    })
                }
                Err(PlanningError::Read(e)) => return Err(CatalogError::Port(e)),
                Err(PlanningError::Records(e)) => return Err(CatalogError::Records(e)),
                Err(other) => {
                    return Err(CatalogError::Port(PortError::permanent(
                        "checking the image",
                        other.to_string(),
                    )))
                }
            }
            let boot = self.ports.boot.clone();
            let env = dep.environment.name.clone();
            let fp = self
                .policy
                .retry
                .run(|| boot.fingerprint(&env, role, &label))
                .await?;
            fingerprints.push(format!("{role}={fp}"));
        }
        let release = Release {
            label,
            deployment: deployment.clone(),
            images: images.clone(),
            config_fingerprint: crate::fingerprint_of(&fingerprints.join("\n")),
            created_at: self.clock.now(),
        };
        self.records.record_release(&release).await?;
        for image in images.values() {
            let (current, _) = self.image_record(image).await?;
            if current.state == ImageState::Certified {
                self.promote(image, ImageState::Released).await?;
            }
        }
        Ok(release)
    }
}
