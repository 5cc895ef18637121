//! [`Site`]: the network and balancer a test or an example needs on moto —
//! a VPC with a subnet in each of two zones, an application load balancer
//! and a listener that forwards to two target groups by weight (all of it
//! on the first) — and moto's stock AMIs.

use phoenix_core::id::ImageId;
use phoenix_core::ports::{ErrorKind, PortError};

use crate::aws::{AwsClient, QueryRequest, Service};

/// What [`Site::create`] made.
#[derive(Debug, Clone)]
pub struct Site {
    /// The VPC.
    pub vpc: String,
    /// One subnet per zone.
    pub subnets: Vec<String>,
    /// The load balancer's ARN.
    pub load_balancer: String,
    /// The listener's ARN.
    pub listener: String,
    /// The two target groups' ARNs (the first has the weight).
    pub groups: [String; 2],
}

/// The text of the first `<tag>` of an answer.
pub fn first_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find('<')?;
    Some(body[start..end].to_owned())
}

async fn field(client: &AwsClient, q: QueryRequest, tag: &str) -> Result<String, PortError> {
    let op = q.operation();
    let body = client.call(&q).await?;
    first_text(&body, tag).ok_or_else(|| {
        PortError::new(
            op,
            ErrorKind::BadResponse(format!("no <{tag}> in the answer")),
        )
    })
}

impl Site {
    /// Creates the site, named `name` (at most 28 characters: target
    /// groups get a two-character suffix), for targets on `port`.
    pub async fn create(client: &AwsClient, name: &str, port: u16) -> Result<Self, PortError> {
        let vpc = field(
            client,
            QueryRequest::new(Service::Ec2, "CreateVpc").param("CidrBlock", "10.0.0.0/16"),
            "vpcId",
        )
        .await?;
        let region = client.config().region().to_owned();
        let mut subnets = Vec::new();
        // /20s: moto never frees a terminated instance's address, and an
        // Auto Scaling group launches everything into its first subnet.
        for (i, zone) in ["a", "b"].iter().enumerate() {
            let q = QueryRequest::new(Service::Ec2, "CreateSubnet")
                .param("VpcId", &vpc)
                .param("CidrBlock", format!("10.0.{}.0/20", (i + 1) * 16))
                .param("AvailabilityZone", format!("{region}{zone}"));
            subnets.push(field(client, q, "subnetId").await?);
        }
        let load_balancer = field(
            client,
            QueryRequest::new(Service::Elbv2, "CreateLoadBalancer")
                .param("Name", name)
                .list("Subnets.member", subnets.clone()),
            "LoadBalancerArn",
        )
        .await?;
        let mut groups = Vec::new();
        for colour in ["b", "g"] {
            let q = QueryRequest::new(Service::Elbv2, "CreateTargetGroup")
                .param("Name", format!("{name}-{colour}"))
                .param("Protocol", "HTTP")
                .param("Port", port.to_string())
                .param("VpcId", &vpc);
            groups.push(field(client, q, "TargetGroupArn").await?);
        }
        let p = "DefaultActions.member.1.ForwardConfig.TargetGroups.member";
        let listener = field(
            client,
            QueryRequest::new(Service::Elbv2, "CreateListener")
                .param("LoadBalancerArn", &load_balancer)
                .param("Protocol", "HTTP")
                .param("Port", "80")
                .param("DefaultActions.member.1.Type", "forward")
                .param(format!("{p}.1.TargetGroupArn"), &groups[0])
                .param(format!("{p}.1.Weight"), "100")
                .param(format!("{p}.2.TargetGroupArn"), &groups[1])
                .param(format!("{p}.2.Weight"), "0"),
            "ListenerArn",
        )
        .await?;
        let [blue, green] = <[String; 2]>::try_from(groups).map_err(|_| {
            PortError::new(
                "moto site",
                ErrorKind::BadResponse("two target groups".into()),
            )
        })?;
        Ok(Self {
            vpc,
            subnets,
            load_balancer,
            listener,
            groups: [blue, green],
        })
    }

    /// Deletes the listener, the load balancer and the target groups.
    pub async fn delete(&self, client: &AwsClient) -> Result<(), PortError> {
        client
            .call(
                &QueryRequest::new(Service::Elbv2, "DeleteListener")
                    .param("ListenerArn", &self.listener),
            )
            .await?;
        client
            .call(
                &QueryRequest::new(Service::Elbv2, "DeleteLoadBalancer")
                    .param("LoadBalancerArn", &self.load_balancer),
            )
            .await?;
        for g in &self.groups {
            client
                .call(
                    &QueryRequest::new(Service::Elbv2, "DeleteTargetGroup")
                        .param("TargetGroupArn", g),
                )
                .await?;
        }
        Ok(())
    }
}

/// One of moto's stock AMIs (owned by `amazon`).
pub async fn stock_ami(client: &AwsClient) -> Result<ImageId, PortError> {
    let id = field(
        client,
        QueryRequest::new(Service::Ec2, "DescribeImages").param("Owner.1", "amazon"),
        "imageId",
    )
    .await?;
    ImageId::new(id.clone()).map_err(|e| {
        PortError::new(
            "ec2 DescribeImages",
            ErrorKind::BadResponse(format!("AMI id {id:?}: {e}")),
        )
    })
}

/// A client for moto (or the fault layer in front of it) in region
/// `eu-west-1`, with any key (moto takes any) and quick retries: at most
/// `retries` after the first attempt, 10 ms to 200 ms apart.
pub fn moto_client(url: &str, retries: usize) -> Result<AwsClient, crate::aws::AwsConfigError> {
    AwsClient::new(
        crate::aws::AwsConfig::builder()
            .region("eu-west-1")
            .endpoint_url(url)
            .credentials(crate::aws::credentials::static_credentials(
                "AKIDMOTO",
                "moto-secret-key",
                None,
            ))
            .retry(phoenix_core::retry::RetryPolicy {
                initial_delay: std::time::Duration::from_millis(10),
                max_delay: std::time::Duration::from_millis(200),
                max_retries: retries,
                jitter_seed: Some(7),
            })
            .build()?,
    )
}
