//! EC2's description of an instance, as `DescribeInstances` and
//! `RunInstances` answer it, and what Phoenix reads from it.

use std::net::IpAddr;

use phoenix_core::id::{ImageId, ServerId};
use phoenix_core::labels::Labels;
use phoenix_core::model::{Server, ServerStatus};
use serde::Deserialize;

use crate::aws::xml::Items;

/// `<tagSet><item><key>…</key><value>…</value></item></tagSet>`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Tag {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct State {
    pub(crate) name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StateReason {
    #[serde(default)]
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

/// One instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Instance {
    pub(crate) instance_id: String,
    #[serde(default)]
    pub(crate) image_id: Option<String>,
    pub(crate) instance_state: State,
    #[serde(default)]
    pub(crate) state_reason: Option<StateReason>,
    #[serde(default)]
    pub(crate) private_ip_address: Option<String>,
    #[serde(default)]
    pub(crate) ip_address: Option<String>,
    #[serde(default)]
    pub(crate) launch_time: Option<String>,
    #[serde(default)]
    pub(crate) tag_set: Items<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Reservation {
    #[serde(default)]
    pub(crate) instances_set: Items<Instance>,
}

/// `DescribeInstances`' answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeInstances {
    #[serde(default)]
    pub(crate) reservation_set: Items<Reservation>,
    #[serde(default)]
    pub(crate) next_token: Option<String>,
}

/// `RunInstances`' answer: one reservation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunInstances {
    #[serde(default)]
    pub(crate) instances_set: Items<Instance>,
}

/// EC2 instance states as Phoenix sees them. `stopping` is still on its
/// way (a start now would be refused), so it reads as not settled; a
/// `pending` instance that AWS gave a server-side reason for is failing.
pub(crate) fn status_of(state: &str, reason: Option<&StateReason>) -> ServerStatus {
    match state {
        "pending" => match reason {
            Some(r) if r.code.starts_with("Server.") => ServerStatus::Error {
                message: format!("{}: {}", r.code, r.message),
            },
            _ => ServerStatus::Building,
        },
        "running" => ServerStatus::Active,
        "stopping" => ServerStatus::Building,
        "stopped" => ServerStatus::Stopped,
        "shutting-down" | "terminated" => ServerStatus::Deleted,
        other => ServerStatus::Error {
            message: format!(
                "unknown EC2 state {other:?}{}",
                reason
                    .map(|r| format!(" ({}: {})", r.code, r.message))
                    .unwrap_or_default()
            ),
        },
    }
}

impl Instance {
    /// The instance as a Phoenix server. `None` when its id is not one
    /// Phoenix accepts (then it is not ours).
    pub(crate) fn to_server(&self) -> Option<Server> {
        let id = ServerId::new(self.instance_id.clone()).ok()?;
        let mut labels = Labels::new();
        let mut name = self.instance_id.clone();
        for t in &self.tag_set.items {
            if t.key == "Name" {
                name = t.value.clone();
            } else if t.key.starts_with("phoenix-") {
                labels.insert(t.key.clone(), t.value.clone());
            }
        }
        let addresses: Vec<IpAddr> = [&self.private_ip_address, &self.ip_address]
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse().ok())
            .collect();
        Some(Server {
            id,
            name,
            addresses,
            service_port: None,
            status: status_of(&self.instance_state.name, self.state_reason.as_ref()),
            launched_at: self
                .launch_time
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            image: self
                .image_id
                .as_ref()
                .and_then(|i| ImageId::new(i.clone()).ok()),
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>8f7724cf-496f-496e-8fe3-example</requestId>
  <reservationSet><item><reservationId>r-1234567890abcdef0</reservationId><ownerId>123456789012</ownerId><groupSet/>
    <instancesSet><item>
      <instanceId>i-1234567890abcdef0</instanceId><imageId>ami-bff32ccc</imageId>
      <instanceState><code>16</code><name>running</name></instanceState>
      <privateDnsName>ip-192-168-1-88.eu-west-1.compute.internal</privateDnsName>
      <reason/><keyName>my_keypair</keyName><amiLaunchIndex>0</amiLaunchIndex><productCodes/>
      <instanceType>t2.micro</instanceType><launchTime>2018-05-08T16:46:19.000Z</launchTime>
      <privateIpAddress>192.168.1.88</privateIpAddress><ipAddress>54.194.252.215</ipAddress>
      <tagSet><item><key>Name</key><value>web-v1-0</value></item>
        <item><key>phoenix-pool</key><value>web-v1</value></item>
        <item><key>team</key><value>x</value></item></tagSet>
    </item></instancesSet></item></reservationSet>
  <nextToken>tok2</nextToken>
</DescribeInstancesResponse>"#;

    #[test]
    fn reads_the_api_reference_sample() {
        let d: DescribeInstances = crate::aws::xml::parse(SAMPLE).unwrap();
        assert_eq!(d.next_token.as_deref(), Some("tok2"));
        let i = &d.reservation_set.items[0].instances_set.items[0];
        let s = i.to_server().unwrap();
        assert_eq!(s.id.as_str(), "i-1234567890abcdef0");
        assert_eq!(s.name, "web-v1-0");
        assert_eq!(s.status, ServerStatus::Active);
        assert_eq!(s.addresses.len(), 2);
        assert_eq!(s.addresses[0].to_string(), "192.168.1.88", "private first");
        assert_eq!(s.labels.get("phoenix-pool"), Some("web-v1"));
        assert_eq!(s.labels.get("team"), None, "only Phoenix's tags are labels");
        assert!(s.launched_at.is_some());
    }

    #[test]
    fn every_state_maps() {
        let r = |code: &str| StateReason {
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(status_of("pending", None), ServerStatus::Building);
        assert!(matches!(
            status_of("pending", Some(&r("Server.InternalError"))),
            ServerStatus::Error { .. }
        ));
        assert_eq!(status_of("running", None), ServerStatus::Active);
        assert_eq!(status_of("stopping", None), ServerStatus::Building);
        assert_eq!(status_of("stopped", None), ServerStatus::Stopped);
        assert_eq!(status_of("shutting-down", None), ServerStatus::Deleted);
        assert_eq!(
            status_of("terminated", Some(&r("Client.UserInitiatedShutdown"))),
            ServerStatus::Deleted
        );
        assert!(matches!(
            status_of("weird", None),
            ServerStatus::Error { .. }
        ));
    }
}
