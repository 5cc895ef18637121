//! The Auto Scaling calls one pool's group needs, and its launch template.

use phoenix_core::ports::PortError;

use super::wire::{DescribeGroups, DescribeInstances, Group, GroupedInstance};
use crate::aws::config::Service;
use crate::aws::error::aws_error_code;
use crate::aws::query::{AwsClient, QueryRequest};

/// Most ids one `DescribeAutoScalingInstances` call takes.
const DESCRIBE_INSTANCES_BATCH: usize = 50;
/// Most ids one `DetachInstances` call takes.
const DETACH_BATCH: usize = 20;

/// What a new group is made of.
#[derive(Debug)]
pub(crate) struct NewGroup<'a> {
    pub(crate) name: &'a str,
    pub(crate) size: u32,
    pub(crate) subnets: &'a [String],
    pub(crate) zones: &'a [String],
    /// Tags every instance receives at launch (the pool's labels).
    pub(crate) tags: Vec<(String, String)>,
}

/// The Auto Scaling calls, over the shared client.
#[derive(Debug, Clone)]
pub(crate) struct Groups {
    pub(crate) client: AwsClient,
}

impl Groups {
    /// The group, or `None` when there is none by that name.
    pub(crate) async fn describe(&self, name: &str) -> Result<Option<Group>, PortError> {
        let q = QueryRequest::new(Service::AutoScaling, "DescribeAutoScalingGroups")
            .param("AutoScalingGroupNames.member.1", name);
        let pages: Vec<DescribeGroups> = self
            .client
            .pages(&q, "NextToken", |p: &DescribeGroups| {
                p.result.next_token.clone()
            })
            .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.result.groups.members)
            .find(|g| g.name == name))
    }

    /// Creates the group on version 1 of the launch template of the same
    /// name, with `min = max = desired = size`. A group that exists
    /// already (an answer lost, a step resumed) is left as it is.
    pub(crate) async fn create(&self, g: &NewGroup<'_>) -> Result<(), PortError> {
        let size = g.size.to_string();
        let mut q = QueryRequest::new(Service::AutoScaling, "CreateAutoScalingGroup")
            .not_idempotent()
            .param("AutoScalingGroupName", g.name)
            .param("LaunchTemplate.LaunchTemplateName", g.name)
            .param("LaunchTemplate.Version", "1")
            .param("MinSize", &size)
            .param("MaxSize", &size)
            .param("DesiredCapacity", &size)
            .param("HealthCheckType", "EC2");
        if g.subnets.is_empty() {
            q = q.list("AvailabilityZones.member", g.zones.iter().cloned());
        } else {
            q = q.param("VPCZoneIdentifier", g.subnets.join(","));
        }
        for (i, (k, v)) in g.tags.iter().enumerate() {
            let t = |f: &str| format!("Tags.member.{}.{f}", i + 1);
            q = q
                .param(t("ResourceId"), g.name)
                .param(t("ResourceType"), "auto-scaling-group")
                .param(t("Key"), k)
                .param(t("Value"), v)
                .param(t("PropagateAtLaunch"), "true");
        }
        match self.client.call(&q).await {
            Ok(_) => Ok(()),
            Err(e) if aws_error_code(&e) == Some("AlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets the group's bounds and desired capacity.
    pub(crate) async fn resize(
        &self,
        name: &str,
        min: u32,
        max: u32,
        desired: u32,
    ) -> Result<(), PortError> {
        let q = QueryRequest::new(Service::AutoScaling, "UpdateAutoScalingGroup")
            .param("AutoScalingGroupName", name)
            .param("MinSize", min.to_string())
            .param("MaxSize", max.to_string())
            .param("DesiredCapacity", desired.to_string());
        self.client.call(&q).await.map(drop)
    }

    /// Deletes the group (its instances with it) and its launch template;
    /// either being gone already is success.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), PortError> {
        if self.describe(name).await?.is_some() {
            let q = QueryRequest::new(Service::AutoScaling, "DeleteAutoScalingGroup")
                .param("AutoScalingGroupName", name)
                .param("ForceDelete", "true");
            match self.client.call(&q).await {
                Ok(_) => {}
                Err(e) if aws_error_code(&e) == Some("ValidationError") => {}
                Err(e) => return Err(e),
            }
        }
        let q = QueryRequest::new(Service::Ec2, "DeleteLaunchTemplate")
            .param("LaunchTemplateName", name);
        match self.client.call(&q).await {
            Ok(_) => Ok(()),
            Err(e) if aws_error_code(&e).is_some_and(|c| c.contains("NotFound")) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the launch template `name` with the pool's data as its
    /// version 1; one that exists already is the pool's own (the name
    /// is derived from deployment and pool) and is kept.
    pub(crate) async fn ensure_template(
        &self,
        name: &str,
        release: &str,
        data: Vec<(String, String)>,
    ) -> Result<(), PortError> {
        let mut q = QueryRequest::new(Service::Ec2, "CreateLaunchTemplate")
            .not_idempotent()
            .param("LaunchTemplateName", name)
            .param("VersionDescription", release);
        for (k, v) in data {
            q = q.param(k, v);
        }
        match self.client.call(&q).await {
            Ok(_) => Ok(()),
            Err(e) if aws_error_code(&e).is_some_and(|c| c.contains("AlreadyExists")) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The group and lifecycle state of each of `ids` that is in a group.
    pub(crate) async fn grouped(&self, ids: &[String]) -> Result<Vec<GroupedInstance>, PortError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(DESCRIBE_INSTANCES_BATCH) {
            let q = QueryRequest::new(Service::AutoScaling, "DescribeAutoScalingInstances")
                .list("InstanceIds.member", chunk.iter().cloned());
            let pages: Vec<DescribeInstances> = self
                .client
                .pages(&q, "NextToken", |p: &DescribeInstances| {
                    p.result.next_token.clone()
                })
                .await?;
            out.extend(pages.into_iter().flat_map(|p| p.result.instances.members));
        }
        Ok(out)
    }

    /// Takes instances out of the group, lowering its desired capacity, so
    /// that it launches no replacement for them.
    pub(crate) async fn detach(&self, name: &str, ids: &[String]) -> Result<(), PortError> {
        for chunk in ids.chunks(DETACH_BATCH) {
            let q = QueryRequest::new(Service::AutoScaling, "DetachInstances")
                .not_idempotent()
                .param("AutoScalingGroupName", name)
                .list("InstanceIds.member", chunk.iter().cloned())
                .param("ShouldDecrementDesiredCapacity", "true");
            self.client.call(&q).await?;
        }
        Ok(())
    }

    /// Terminates an instance through its group. `Lower` takes its place
    /// out of the desired capacity (for instances still launching, which
    /// cannot be detached); `Replace` keeps it, so that the group launches
    /// a replacement, as its health check would for a failed instance.
    /// One the group no longer holds is left to EC2.
    pub(crate) async fn terminate_in_group(
        &self,
        id: &str,
        capacity: Capacity,
    ) -> Result<(), PortError> {
        let decrement = matches!(capacity, Capacity::Lower);
        // Not sent again blindly: the next removal reads the group first.
        let q = QueryRequest::new(Service::AutoScaling, "TerminateInstanceInAutoScalingGroup")
            .not_idempotent()
            .param("InstanceId", id)
            .param("ShouldDecrementDesiredCapacity", decrement.to_string());
        match self.client.call(&q).await {
            Ok(_) => Ok(()),
            Err(e) if aws_error_code(&e) == Some("ValidationError") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Puts an instance in standby, lowering the desired capacity: the
    /// group neither health-checks nor replaces it there.
    pub(crate) async fn enter_standby(&self, name: &str, id: &str) -> Result<(), PortError> {
        let q = QueryRequest::new(Service::AutoScaling, "EnterStandby")
            .param("AutoScalingGroupName", name)
            .param("InstanceIds.member.1", id)
            .param("ShouldDecrementDesiredCapacity", "true");
        self.client.call(&q).await.map(drop)
    }

    /// Returns an instance from standby, raising the desired capacity.
    pub(crate) async fn exit_standby(&self, name: &str, id: &str) -> Result<(), PortError> {
        let q = QueryRequest::new(Service::AutoScaling, "ExitStandby")
            .param("AutoScalingGroupName", name)
            .param("InstanceIds.member.1", id);
        self.client.call(&q).await.map(drop)
    }

    /// Tags one instance (Phoenix binding it to a slot).
    pub(crate) async fn tag(&self, id: &str, tags: &[(&str, &str)]) -> Result<(), PortError> {
        let mut q = QueryRequest::new(Service::Ec2, "CreateTags").param("ResourceId.1", id);
        for (i, (k, v)) in tags.iter().enumerate() {
            q = q
                .param(format!("Tag.{}.Key", i + 1), *k)
                .param(format!("Tag.{}.Value", i + 1), *v);
        }
        self.client.call(&q).await.map(drop)
    }
}

/// The name of a pool's group and launch template: `phoenix-<deployment>-
/// <pool>` where that is a valid launch template name (letters, digits and
/// `( ) . - / _`, at most 128), else a cleaned, shortened form made unique
/// by a hash of the original.
pub(crate) fn group_name(deployment: &str, pool: &str) -> String {
    use sha2::{Digest, Sha256};
    let raw = format!("phoenix-{deployment}-{pool}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "().-/_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == raw && raw.len() <= 128 {
        return raw;
    }
    let digest = Sha256::digest(raw.as_bytes());
    let hash = hex::encode(&digest[..4]);
    let keep: String = clean.chars().take(119).collect();
    format!("{keep}-{hash}")
}

/// What terminating an instance through its group does to the group's
/// desired capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capacity {
    /// Lowered by one: the group launches nothing in its place.
    Lower,
    /// Kept: the group launches a replacement.
    Replace,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_valid_and_distinct() {
        assert_eq!(group_name("shop", "web-v1-3"), "phoenix-shop-web-v1-3");
        let a = group_name("shop:eu", "web-v1-3");
        let b = group_name("shop@eu", "web-v1-3");
        assert_ne!(a, b, "cleaned names stay distinct");
        let long = group_name(&"d".repeat(200), "p");
        assert!(long.len() <= 128, "{}", long.len());
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "().-/_".contains(c)));
    }
}
