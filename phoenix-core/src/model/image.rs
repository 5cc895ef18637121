use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::TransitionError;
use crate::id::ImageId;
use crate::time::Timestamp;

/// Where an image is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    /// Being baked.
    Building,
    /// Baked, not yet tested.
    Built,
    /// Tests ran and their evidence is recorded.
    Tested,
    /// Every recorded test passed; fit for production.
    Certified,
    /// In use by a release.
    Released,
    /// No longer to be used for new pools.
    Deprecated,
    /// Gone from the provider.
    Deleted,
}

impl ImageState {
    /// States a pool may be launched from when certification is required.
    pub fn is_certified(self) -> bool {
        matches!(self, Self::Certified | Self::Released)
    }

    fn allowed(self, to: Self) -> bool {
        use ImageState::*;
        matches!(
            (self, to),
            (Building, Built)
                | (Building, Deleted)
                | (Built, Tested)
                | (Built, Deprecated)
                | (Built, Deleted)
                | (Tested, Certified)
                | (Tested, Deprecated)
                | (Tested, Deleted)
                | (Certified, Released)
                | (Certified, Deprecated)
                | (Released, Deprecated)
                // An operator may bring a deprecated image back for a rollback.
                | (Deprecated, Released)
                | (Deprecated, Deleted)
        )
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Building => "building",
            Self::Built => "built",
            Self::Tested => "tested",
            Self::Certified => "certified",
            Self::Released => "released",
            Self::Deprecated => "deprecated",
            Self::Deleted => "deleted",
        };
        f.write_str(s)
    }
}

/// What ran against an image, when, and with what result: operators hand
/// this to auditors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestEvidence {
    /// The test suite or check that ran.
    pub suite: String,
    /// When it finished.
    pub at: Timestamp,
    /// Whether it passed.
    pub passed: bool,
    /// A summary or a link to the full report.
    pub details: String,
    /// The digest of the image the tests ran against: evidence proves
    /// something only about that content.
    #[serde(default)]
    pub digest: Option<String>,
    /// Where the full test log or report is kept (a path, a URL, a CI
    /// job): what an auditor opens to check the verdict. Records written
    /// before this field existed read as `None`.
    #[serde(default)]
    pub log: Option<String>,
}

/// The longest value [`TestEvidence::summary`] returns: AWS tags hold 256
/// characters, and the other providers' properties at least as many.
pub const EVIDENCE_SUMMARY_MAX: usize = 255;

impl TestEvidence {
    /// Evidence that `suite` finished at `at` with `passed`, for no
    /// particular digest (the catalog fills in the image's), with no
    /// details and no log.
    pub fn new(suite: impl Into<String>, at: Timestamp, passed: bool) -> Self {
        Self {
            suite: suite.into(),
            at,
            passed,
            details: String::new(),
            digest: None,
            log: None,
        }
    }

    /// With a summary or link.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// For the content with this digest.
    pub fn with_digest(mut self, digest: impl Into<String>) -> Self {
        self.digest = Some(digest.into());
        self
    }

    /// With a reference to the full log.
    pub fn with_log(mut self, log: impl Into<String>) -> Self {
        self.log = Some(log.into());
        self
    }

    /// One line for a provider property (an AMI tag, a Glance property, a
    /// vSphere attribute): `suite passed at <time> for <digest> log <ref>`,
    /// cut to [`EVIDENCE_SUMMARY_MAX`] characters. The record and the
    /// [`EvidenceReport`] keep the whole entry.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} at {} for {}",
            self.suite,
            if self.passed { "passed" } else { "failed" },
            self.at.to_rfc3339(),
            self.digest.as_deref().unwrap_or("unknown digest"),
        );
        if let Some(log) = &self.log {
            s.push_str(" log ");
            s.push_str(log);
        }
        if s.chars().count() > EVIDENCE_SUMMARY_MAX {
            s = s.chars().take(EVIDENCE_SUMMARY_MAX - 1).collect();
            s.push('…');
        }
        s
    }
}

/// One evidence entry in an [`EvidenceReport`], with whether it speaks of
/// the image's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceEntry {
    /// The recorded evidence, as recorded.
    #[serde(flatten)]
    pub evidence: TestEvidence,
    /// True when it ran against the image's digest: only such evidence
    /// can certify it.
    pub for_this_digest: bool,
}

/// What an auditor receives about one image: its identity, content digest,
/// lifecycle state, provenance (the provider properties, such as the
/// template digest, packer version and build log of a Packer bake), every
/// test evidence entry, and whether that evidence certifies it. Serialises
/// to JSON with `serde_json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceReport {
    /// The provider's id.
    pub image: ImageId,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The content digest the evidence must name.
    pub digest: Option<String>,
    /// The image it was baked from, when known.
    pub base: Option<String>,
    /// Its recorded lifecycle state.
    pub state: ImageState,
    /// When it was created.
    pub created_at: Timestamp,
    /// Provenance: the image's provider properties.
    pub provenance: BTreeMap<String, String>,
    /// Every recorded evidence entry, oldest first.
    pub evidence: Vec<EvidenceEntry>,
    /// True when the evidence certifies the image ([`Image::proven`]):
    /// some suite passed for its digest and the latest run of every suite
    /// that ran for its digest passed.
    pub certifies: bool,
    /// Why not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl EvidenceReport {
    /// The report of an image record.
    pub fn of(image: &Image) -> Self {
        let certifies = image.proven();
        let refusal = if certifies {
            None
        } else if image.evidence.is_empty() {
            Some("no test evidence is recorded".to_owned())
        } else if let Some(failed) = image.failing_suites().first() {
            Some(format!("the latest run of suite {failed:?} failed"))
        } else {
            Some("no passing test evidence is recorded for its digest".to_owned())
        };
        Self {
            image: image.id.clone(),
            name: image.name.clone(),
            version: image.version.clone(),
            digest: image.digest.clone(),
            base: image.base.clone(),
            state: image.state,
            created_at: image.created_at,
            provenance: image.properties.clone(),
            evidence: image
                .evidence
                .iter()
                .map(|e| EvidenceEntry {
                    evidence: e.clone(),
                    for_this_digest: e.digest == image.digest,
                })
                .collect(),
            certifies,
            refusal,
        }
    }
}

/// An immutable, provider-scoped machine image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The provider's id.
    pub id: ImageId,
    /// A human name, such as `web`.
    pub name: String,
    /// The version, such as `2026.11.22-3`.
    pub version: String,
    /// The image it was baked from, when known.
    pub base: Option<String>,
    /// A content digest, where the provider gives one.
    pub digest: Option<String>,
    /// Its lifecycle state.
    pub state: ImageState,
    /// When it was created.
    pub created_at: Timestamp,
    /// Recorded test evidence, oldest first.
    pub evidence: Vec<TestEvidence>,
    /// Provider properties or tags.
    pub properties: BTreeMap<String, String>,
}

impl Image {
    /// Moves to `to`, refusing illegal transitions. Certification requires
    /// evidence in which the latest run of every suite passed.
    pub fn transition(&mut self, to: ImageState) -> Result<(), TransitionError> {
        let refuse = |reason: &str| TransitionError {
            entity: "image",
            id: self.id.to_string(),
            from: self.state.to_string(),
            to: to.to_string(),
            reason: reason.to_owned(),
        };
        if !self.state.allowed(to) {
            return Err(refuse("not a legal lifecycle step"));
        }
        if to == ImageState::Tested && self.evidence.is_empty() {
            return Err(refuse("no test evidence is recorded"));
        }
        if to == ImageState::Certified {
            if let Some(failed) = self.failing_suites().first() {
                return Err(refuse(&format!(
                    "the latest run of suite {failed:?} failed"
                )));
            }
            if !self.proven() {
                return Err(refuse(
                    "no passing test evidence is recorded for its digest",
                ));
            }
        }
        self.state = to;
        Ok(())
    }

    /// Records test evidence. Only images that were built and are not yet
    /// certified take evidence: certification is a statement about it.
    pub fn record_evidence(&mut self, evidence: TestEvidence) -> Result<(), TransitionError> {
        if !matches!(self.state, ImageState::Built | ImageState::Tested) {
            return Err(TransitionError {
                entity: "image",
                id: self.id.to_string(),
                from: self.state.to_string(),
                to: self.state.to_string(),
                reason: "test evidence can only be recorded on a built or tested image".into(),
            });
        }
        self.evidence.push(evidence);
        Ok(())
    }

    /// True when the evidence proves this image's content: some suite
    /// passed for its digest, and the latest run of every suite that ran
    /// for its digest passed. Evidence about other content (another digest)
    /// proves nothing here.
    pub fn proven(&self) -> bool {
        let mut latest: BTreeMap<&str, bool> = BTreeMap::new();
        for e in self.evidence.iter().filter(|e| e.digest == self.digest) {
            latest.insert(&e.suite, e.passed);
        }
        !latest.is_empty() && latest.values().all(|passed| *passed)
    }

    /// Suites whose latest recorded run failed.
    pub fn failing_suites(&self) -> Vec<String> {
        let mut latest: BTreeMap<&str, bool> = BTreeMap::new();
        for e in &self.evidence {
            latest.insert(&e.suite, e.passed);
        }
        latest
            .into_iter()
            .filter(|(_, passed)| !passed)
            .map(|(s, _)| s.to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, TokioClock};

    fn image() -> Image {
        Image {
            id: ImageId::new("img-1").unwrap(),
            name: "web".into(),
            version: "1".into(),
            base: None,
            digest: None,
            state: ImageState::Building,
            created_at: TokioClock::fixed().now(),
            evidence: vec![],
            properties: BTreeMap::new(),
        }
    }

    fn evidence(suite: &str, passed: bool) -> TestEvidence {
        TestEvidence {
            suite: suite.into(),
            at: TokioClock::fixed().now(),
            passed,
            details: String::new(),
            digest: None,
            log: None,
        }
    }

    #[tokio::test]
    async fn lifecycle_requires_evidence_and_passing_tests() {
        let mut img = image();
        assert!(img.transition(ImageState::Certified).is_err());
        img.transition(ImageState::Built).unwrap();
        let err = img.transition(ImageState::Tested).unwrap_err();
        assert!(err.reason.contains("no test evidence"));
        img.record_evidence(evidence("smoke", false)).unwrap();
        img.transition(ImageState::Tested).unwrap();
        let err = img.transition(ImageState::Certified).unwrap_err();
        assert!(err.reason.contains("smoke"), "{err}");
        img.record_evidence(evidence("smoke", true)).unwrap();
        img.transition(ImageState::Certified).unwrap();
        assert!(img.record_evidence(evidence("late", true)).is_err());
        img.transition(ImageState::Released).unwrap();
        assert!(img.transition(ImageState::Building).is_err());
        img.transition(ImageState::Deprecated).unwrap();
        img.transition(ImageState::Deleted).unwrap();
        assert!(img.transition(ImageState::Released).is_err());
    }

    #[test]
    fn summaries_fit_a_tag_and_reports_say_why() {
        let at = TokioClock::fixed().now();
        let e = TestEvidence::new("smoke", at, true)
            .with_digest("sha256:ab")
            .with_log("x".repeat(400));
        let s = e.summary();
        assert!(s.starts_with("smoke passed at "), "{s}");
        assert!(s.contains("for sha256:ab log xxx"), "{s}");
        assert_eq!(s.chars().count(), EVIDENCE_SUMMARY_MAX);

        let mut img = image();
        img.digest = Some("sha256:cd".into());
        img.evidence.push(e);
        let report = EvidenceReport::of(&img);
        assert!(!report.certifies);
        assert!(!report.evidence[0].for_this_digest);
        assert!(report.refusal.unwrap().contains("digest"));
        let json = serde_json::to_value(EvidenceReport::of(&img)).unwrap();
        assert_eq!(json["evidence"][0]["suite"], "smoke");
        assert_eq!(json["evidence"][0]["for_this_digest"], false);
    }

    #[test]
    fn old_evidence_records_read_without_a_log() {
        let old =
            r#"{"suite":"s","at":"2026-01-01T00:00:00Z","passed":true,"details":"","digest":null}"#;
        let e: TestEvidence = serde_json::from_str(old).unwrap();
        assert_eq!(e.log, None);
    }
}
