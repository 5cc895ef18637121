//! The promotion check: [`prove`] reads a staging deployment's records
//! for the proof a [`PromotionRule`] asks for.

use std::time::Duration;

use crate::id::{DeploymentId, ImageId, RoleName};
use crate::model::{Deployment, Pool, PoolState, PromotionProof, PromotionRule};
use crate::records::Snapshot;
use crate::time::{elapsed_between, human, Timestamp};

/// Why a release may not go live yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {image} of role {role} is not promoted from {from}: {reason}")]
pub struct NotPromoted {
    /// The staging deployment.
    pub from: DeploymentId,
    /// The role.
    pub role: RoleName,
    /// The image.
    pub image: ImageId,
    /// Why.
    pub reason: String,
}

/// Finds the proof that `image` served role `role` live and healthy in
/// `staging` for at least `rule.soak` by `now`.
///
/// A pool's last live span counts until now while the pool is live, or
/// until it left traffic for a standby or retirement; a pool that failed
/// proves nothing. The staging environment must not be production and must be
/// marked production-like, and must define the role with the same size
/// (flavor) and port as `production`.
pub fn prove(
    rule: &PromotionRule,
    production: &Deployment,
    staging: &Snapshot,
    role: &RoleName,
    image: &ImageId,
    now: Timestamp,
) -> Result<PromotionProof, NotPromoted> {
    let refuse = |reason: String| NotPromoted {
        from: rule.from.clone(),
        role: role.clone(),
        image: image.clone(),
        reason,
    };
    let dep = staging.deployment();
    if dep.environment.production {
        return Err(refuse(format!(
            "its environment {} is production, not staging",
            dep.environment.name
        )));
    }
    if !dep.environment.production_like {
        return Err(refuse(format!(
            "its environment {} is not marked production-like",
            dep.environment.name
        )));
    }
    let (Some(theirs), Some(ours)) = (dep.roles.get(role), production.roles.get(role)) else {
        return Err(refuse(format!("it does not define role {role}")));
    };
    if theirs.flavor != ours.flavor || theirs.port != ours.port {
        return Err(refuse(format!(
            "its role {role} differs (flavor {:?}, port {}; here {:?}, {})",
            theirs.flavor, theirs.port, ours.flavor, ours.port
        )));
    }
    let mut best: Option<PromotionProof> = None;
    for release in staging
        .releases
        .values()
        .filter(|r| r.image_for(role) == Some(image))
    {
        for pool in staging
            .pools_of(role)
            .filter(|p| p.release == release.label)
        {
            if let Some((since, lasted)) = last_good_live_span(pool, now) {
                if best.as_ref().is_none_or(|b| lasted > b.live_for) {
                    best = Some(PromotionProof {
                        from: rule.from.clone(),
                        role: role.clone(),
                        image: image.clone(),
                        release: release.label.clone(),
                        pool: pool.id.clone(),
                        live_since: since,
                        live_for: lasted,
                        required: rule.soak,
                        config_fingerprint: release.config_fingerprint.clone(),
                    });
                }
            }
        }
    }
    match best {
        Some(p) if p.live_for >= rule.soak => Ok(p),
        Some(p) => Err(refuse(format!(
            "it was live there for {} of the {} required (pool {}, since {})",
            human(p.live_for),
            human(rule.soak),
            p.pool,
            p.live_since.format("%Y-%m-%d %H:%M:%S UTC"),
        ))),
        None => Err(refuse("it never served there".into())),
    }
}

/// How long a pool last served: until now while it is live, or until it
/// left traffic for a standby or retirement; none when it never served
/// or failed.
fn last_good_live_span(pool: &Pool, now: Timestamp) -> Option<(Timestamp, Duration)> {
    let since = pool.last_live_at()?;
    match (pool.state, pool.left_live) {
        (PoolState::Failed, _) => None,
        (PoolState::Live, _) => Some((since, elapsed_between(since, now))),
        (_, Some(left)) if left >= since => Some((since, elapsed_between(since, left))),
        _ => None,
    }
}

/// The proof the deployment's promotion rule asks for before `image`
/// goes live for `role`, read from the staging deployment's records now;
/// `None` when the deployment has no rule.
pub(crate) async fn check(
    records: &crate::records::Records,
    production: &Deployment,
    role: &RoleName,
    image: &ImageId,
    now: Timestamp,
) -> Result<Option<PromotionProof>, super::PlanningError> {
    let Some(rule) = &production.promotion else {
        return Ok(None);
    };
    let staging = match records.snapshot(&rule.from).await {
        Ok(s) => s,
        Err(crate::records::RecordError::UnknownDeployment(_)) => {
            return Err(NotPromoted {
                from: rule.from.clone(),
                role: role.clone(),
                image: image.clone(),
                reason: "that deployment is not registered".into(),
            }
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some(prove(rule, production, &staging, role, image, now)?))
}
