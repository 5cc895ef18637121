use crate::id::ReleaseLabel;
use crate::plan::{OperationKind, Plan};
use crate::policy::FailurePolicy;

use super::{provision_steps, PlanInput, PlanningError};

/// Creates and verifies a pool of `size` servers (the role's desired count
/// when `None`) for a release; it ends Ready, not behind the balancer.
/// A failure cleans up what was launched.
pub fn provision(
    input: &PlanInput<'_>,
    release: &ReleaseLabel,
    size: Option<usize>,
) -> Result<Plan, PlanningError> {
    input.check()?;
    let role = input.role_spec()?;
    let size = size.unwrap_or(role.desired);
    let image = input.image_of(release)?;
    let pool = input.new_pool_id(release)?;
    let steps = provision_steps(&pool, &input.role, release, &image, size);
    Ok(input.plan(
        OperationKind::Provision,
        format!(
            "provision pool {pool} of {size} {} server(s) for release {release} in {}",
            input.role,
            input.snap.deployment().environment.name
        ),
        steps,
        FailurePolicy::Rollback,
        None,
        None,
    ))
}
