//! A demo fleet: many deployments and roles serving v1, for campaigns.

use std::collections::BTreeMap;

use crate::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName};
use crate::model::{Deployment, Environment, Role};
use crate::Phoenix;

use super::{DemoError, SimCloud};

impl SimCloud {
    /// Registers `n` deployments `d00`, `d01`, … — the first `max(1, n/5)`
    /// in environment `staging`, the rest in `prod` — each with the roles
    /// `roles` of `size` servers, records releases `v1` and `v2` of each
    /// (one certified image per role and version, shared by the fleet),
    /// deploys `v1` everywhere, and then watches each role's balancer's
    /// floor at the whole fleet: every server keeps serving. Build
    /// `phoenix` with [`SimCloud::phoenix_with_roles`] when there is more
    /// than one role, so that each role has its balancer.
    pub async fn demo_fleet(
        &self,
        phoenix: &Phoenix,
        n: usize,
        roles: &[&str],
        size: usize,
    ) -> Result<Vec<Deployment>, DemoError> {
        let staging = (n / 5).max(1);
        let mut images: BTreeMap<(&str, &str), crate::id::ImageId> = BTreeMap::new();
        for v in ["v1", "v2"] {
            for role in roles {
                let image = self.certified_image(role, v);
                phoenix.register_image(&image).await?;
                images.insert((role, v), image.id);
            }
        }
        let mut fleet = Vec::with_capacity(n);
        for i in 0..n {
            let env = if i < staging { "staging" } else { "prod" };
            let mut d = Deployment::new(
                DeploymentId::new(format!("d{i:02}"))?,
                Environment {
                    name: EnvironmentName::new(env)?,
                    production: env == "prod",
                    production_like: env == "staging",
                },
            );
            for role in roles {
                d = d.with_role(Role::new(RoleName::new(*role)?, size));
            }
            phoenix.register(&d).await?;
            for v in ["v1", "v2"] {
                let mut map = BTreeMap::new();
                for role in roles {
                    if let Some(img) = images.get(&(*role, v)) {
                        map.insert(RoleName::new(*role)?, img.clone());
                    }
                }
                phoenix
                    .create_release(&d.id, ReleaseLabel::new(v)?, map)
                    .await?;
            }
            fleet.push(d);
        }
        let v1 = ReleaseLabel::new("v1")?;
        for d in &fleet {
            for role in d.roles.keys() {
                let plan = phoenix.plan_deploy(&d.id, role, &v1).await?;
                phoenix.apply(plan).await?;
            }
        }
        for role in roles {
            let lb = if roles.len() == 1 {
                self.balancer()
            } else {
                self.balancer_named(role)
            };
            lb.watch_floor(n * size);
        }
        Ok(fleet)
    }
}
