//! ELBv2's answers, as Phoenix reads them.

use phoenix_core::ports::{MemberHealth, MemberState};
use phoenix_providers::aws::xml::Members;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TargetRef {
    #[serde(rename = "Id")]
    pub(crate) id: String,
    #[serde(rename = "Port", default)]
    pub(crate) port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Health {
    #[serde(rename = "State", default)]
    pub(crate) state: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TargetHealthDescription {
    #[serde(rename = "Target")]
    pub(crate) target: TargetRef,
    #[serde(rename = "TargetHealth")]
    pub(crate) health: Health,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeTargetHealthResult {
    #[serde(rename = "TargetHealthDescriptions", default)]
    pub(crate) descriptions: Members<TargetHealthDescription>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeTargetHealth {
    #[serde(rename = "DescribeTargetHealthResult")]
    pub(crate) result: DescribeTargetHealthResult,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WeightedGroup {
    #[serde(rename = "TargetGroupArn")]
    pub(crate) arn: String,
    #[serde(rename = "Weight", default)]
    pub(crate) weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ForwardConfig {
    #[serde(rename = "TargetGroups", default)]
    pub(crate) groups: Members<WeightedGroup>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Action {
    #[serde(rename = "Type", default)]
    pub(crate) kind: String,
    #[serde(rename = "TargetGroupArn", default)]
    pub(crate) target_group: Option<String>,
    #[serde(rename = "ForwardConfig", default)]
    pub(crate) forward: Option<ForwardConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Listener {
    #[serde(rename = "DefaultActions", default)]
    pub(crate) actions: Members<Action>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeListenersResult {
    #[serde(rename = "Listeners", default)]
    pub(crate) listeners: Members<Listener>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DescribeListeners {
    #[serde(rename = "DescribeListenersResult")]
    pub(crate) result: DescribeListenersResult,
}

impl Listener {
    /// The weight the listener's forward action gives each target group
    /// (a plain forward to one group is weight 1).
    pub(crate) fn weights(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for a in &self.actions.members {
            if a.kind != "forward" {
                continue;
            }
            match &a.forward {
                Some(f) if !f.groups.members.is_empty() => {
                    for g in &f.groups.members {
                        out.push((g.arn.clone(), g.weight.unwrap_or(1)));
                    }
                }
                _ => out.extend(a.target_group.iter().map(|g| (g.clone(), 1))),
            }
        }
        out
    }
}

/// A target's state and health as Phoenix sees them. `unused` takes no
/// traffic (its group is on no listener, or its zone is off); `draining`
/// is being deregistered; `unavailable` means health checks are off.
pub(crate) fn member_of(state: &str) -> (MemberState, MemberHealth) {
    match state {
        "healthy" => (MemberState::Active, MemberHealth::Healthy),
        "unhealthy" | "unhealthy.draining" => (MemberState::Active, MemberHealth::Unhealthy),
        "initial" | "unavailable" => (MemberState::Active, MemberHealth::Unknown),
        "draining" => (MemberState::Draining, MemberHealth::Unknown),
        "unused" => (MemberState::Disabled, MemberHealth::Unknown),
        // A state this version does not know: take it as taking traffic,
        // so that no guard believes it idle.
        _ => (MemberState::Active, MemberHealth::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_samples() {
        let d: DescribeTargetHealth = phoenix_providers::aws::xml::parse(
            r#"<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeTargetHealthResult><TargetHealthDescriptions>
      <member><HealthCheckPort>80</HealthCheckPort><TargetHealth><State>healthy</State></TargetHealth>
        <Target><Port>80</Port><Id>i-0376fadf</Id></Target></member>
      <member><HealthCheckPort>80</HealthCheckPort><TargetHealth><State>draining</State><Reason>Target.DeregistrationInProgress</Reason></TargetHealth>
        <Target><Port>80</Port><Id>i-0376fade</Id></Target></member>
  </TargetHealthDescriptions></DescribeTargetHealthResult>
  <ResponseMetadata><RequestId>c534f810</RequestId></ResponseMetadata>
</DescribeTargetHealthResponse>"#,
        )
        .unwrap();
        let m = &d.result.descriptions.members;
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].target.id.as_str(), m[0].target.port),
            ("i-0376fadf", Some(80))
        );
        assert_eq!(member_of(&m[1].health.state).0, MemberState::Draining);
        assert_eq!(member_of("unused").0, MemberState::Disabled);
        assert_eq!(member_of("brand-new").0, MemberState::Active);
    }

    #[test]
    fn weights_of_plain_and_weighted_forwards() {
        let d: DescribeListeners = phoenix_providers::aws::xml::parse(
            "<R><DescribeListenersResult><Listeners><member><DefaultActions><member><Type>forward</Type>\
<ForwardConfig><TargetGroups><member><TargetGroupArn>a</TargetGroupArn><Weight>100</Weight></member>\
<member><TargetGroupArn>b</TargetGroupArn><Weight>0</Weight></member></TargetGroups></ForwardConfig></member></DefaultActions></member></Listeners></DescribeListenersResult></R>",
        )
        .unwrap();
        assert_eq!(
            d.result.listeners.members[0].weights(),
            [("a".to_owned(), 100), ("b".to_owned(), 0)]
        );
        let d: DescribeListeners = phoenix_providers::aws::xml::parse(
            "<R><DescribeListenersResult><Listeners><member><DefaultActions><member><Type>forward</Type>\
<TargetGroupArn>a</TargetGroupArn></member></DefaultActions></member></Listeners></DescribeListenersResult></R>",
        )
        .unwrap();
        assert_eq!(
            d.result.listeners.members[0].weights(),
            [("a".to_owned(), 1)]
        );
    }
}
