//! AWS Elastic Load Balancing v2 (feature `elbv2`): [`Elbv2TargetGroup`]
//! puts servers in one target group; [`Elbv2BlueGreen`] switches a
//! listener between two target groups by weight, in one call, once the new
//! pool passes ELBv2's own health checks.
//! Both share the AWS client of `phoenix-providers` (signing, retries,
//! request bucket, call counts) and read endpoints from EC2.
//!
//! ```no_run
//! use phoenix_core::ports::LoadBalancer;
//! use phoenix_lb::elbv2::Elbv2BlueGreen;
//! use phoenix_providers::aws::{AwsClient, AwsConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = AwsClient::new(AwsConfig::from_env().await?)?;
//! let lb = Elbv2BlueGreen::new(
//!     client.clone(),
//!     "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2",
//!     "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-blue/73e2d6bc24d8a067",
//!     "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-green/09a0d4b1e2d3a5b7",
//! );
//! println!("{} members", lb.members().await?.len());
//! # Ok(())
//! # }
//! ```

mod blue_green;
mod groups;
mod target_group;
mod wire;

pub use blue_green::Elbv2BlueGreen;
pub use target_group::{Elbv2TargetGroup, MAX_BATCH};
