//! Auto Scaling's answers, as Phoenix reads them.

use serde::Deserialize;

use crate::aws::xml::Members;

/// An instance as its group sees it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GroupInstance {
    #[serde(rename = "InstanceId")]
    pub(crate) id: String,
    #[serde(rename = "LifecycleState", default)]
    pub(crate) lifecycle: String,
}

impl GroupInstance {
    /// Counted in the group's desired capacity (launching or in service):
    /// not in standby, not on its way out.
    pub(crate) fn counted(&self) -> bool {
        self.lifecycle.starts_with("Pending") || self.lifecycle == "InService"
    }
}

/// One group.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Group {
    #[serde(rename = "AutoScalingGroupName")]
    pub(crate) name: String,
    #[serde(rename = "MinSize", default)]
    pub(crate) min: u32,
    #[serde(rename = "MaxSize", default)]
    pub(crate) max: u32,
    #[serde(rename = "DesiredCapacity", default)]
    pub(crate) desired: u32,
    #[serde(rename = "Instances", default)]
    pub(crate) instances: Members<GroupInstance>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeGroupsResult {
    #[serde(rename = "AutoScalingGroups", default)]
    pub(crate) groups: Members<Group>,
    #[serde(rename = "NextToken", default)]
    pub(crate) next_token: Option<String>,
}

/// `DescribeAutoScalingGroups`' answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeGroups {
    #[serde(rename = "DescribeAutoScalingGroupsResult")]
    pub(crate) result: DescribeGroupsResult,
}

/// An instance and the group it belongs to.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GroupedInstance {
    #[serde(rename = "InstanceId")]
    pub(crate) id: String,
    #[serde(rename = "AutoScalingGroupName")]
    pub(crate) group: String,
    #[serde(rename = "LifecycleState", default)]
    pub(crate) lifecycle: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeInstancesResult {
    #[serde(rename = "AutoScalingInstances", default)]
    pub(crate) instances: Members<GroupedInstance>,
    #[serde(rename = "NextToken", default)]
    pub(crate) next_token: Option<String>,
}

/// `DescribeAutoScalingInstances`' answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeInstances {
    #[serde(rename = "DescribeAutoScalingInstancesResult")]
    pub(crate) result: DescribeInstancesResult,
}

#[cfg(test)]
mod tests {
    use super::*;

    // From the Auto Scaling API reference's DescribeAutoScalingGroups example.
    const GROUPS: &str = r#"<DescribeAutoScalingGroupsResponse xmlns="https://autoscaling.amazonaws.com/doc/2011-01-01/">
  <DescribeAutoScalingGroupsResult>
    <AutoScalingGroups>
      <member>
        <AutoScalingGroupName>my-asg</AutoScalingGroupName>
        <MinSize>1</MinSize><MaxSize>5</MaxSize><DesiredCapacity>2</DesiredCapacity>
        <Instances>
          <member><InstanceId>i-05b4f7d5be44822a6</InstanceId><LifecycleState>InService</LifecycleState><HealthStatus>Healthy</HealthStatus></member>
          <member><InstanceId>i-0c20ac468fa3049e8</InstanceId><LifecycleState>Standby</LifecycleState><HealthStatus>Healthy</HealthStatus></member>
          <member><InstanceId>i-0d20ac468fa3049e8</InstanceId><LifecycleState>Pending:Wait</LifecycleState><HealthStatus>Healthy</HealthStatus></member>
        </Instances>
      </member>
    </AutoScalingGroups>
  </DescribeAutoScalingGroupsResult>
  <ResponseMetadata><RequestId>08c3bedc-8421-11e3-9bb5-bfa219b29cce</RequestId></ResponseMetadata>
</DescribeAutoScalingGroupsResponse>"#;

    #[test]
    fn reads_a_group_and_its_instances() {
        let d: DescribeGroups = crate::aws::xml::parse(GROUPS).unwrap();
        let g = &d.result.groups.members[0];
        assert_eq!(
            (g.name.as_str(), g.min, g.max, g.desired),
            ("my-asg", 1, 5, 2)
        );
        let i = &g.instances.members;
        assert!(i[0].counted());
        assert!(!i[1].counted());
        assert!(i[2].counted());
        assert!(d.result.next_token.is_none());
    }
}
