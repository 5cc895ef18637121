//! The `aws` provider: EC2 instances and AMIs over the Query APIs, with a
//! thin reqwest client signed by `aws-sigv4` (the official SDK takes five
//! minutes and 8 GB of RAM to build on two cores).
//!
//! - [`AwsConfig`] says which region, endpoints and credentials: in code,
//!   or [`AwsConfig::from_env`] the way the AWS CLI reads them.
//! - [`AwsClient`] signs, sends, retries with the shared retry policy,
//!   paces calls through the region's [`RequestBucket`], classifies errors
//!   (keeping the AWS error code: [`aws_error_code`]) and counts calls.
//! - [`Ec2Compute`] implements `Compute` on EC2 instances, [`AsgCompute`]
//!   on one Auto Scaling group per pool, [`Ec2Images`] implements `Images`
//!   on AMIs.
//!
//! ```no_run
//! use phoenix_core::ports::Compute;
//! use phoenix_providers::aws::{AwsClient, AwsConfig, Ec2Compute};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // AWS_PROFILE / AWS_REGION, or AWS_ENDPOINT_URL=http://127.0.0.1:5000 for moto.
//! let client = AwsClient::new(AwsConfig::from_env().await?)?;
//! let compute = Ec2Compute::builder(client.clone()).instance_type("t3.small").build();
//! println!("{:?}", compute.capabilities());
//! # Ok(())
//! # }
//! ```

pub mod autoscaling;
pub mod config;
pub mod credentials;
pub mod ec2;
pub mod error;
pub mod query;
#[cfg(feature = "aws-testing")]
pub mod testing;
pub mod throttle;
pub mod xml;

pub use autoscaling::{AsgCompute, AsgComputeBuilder};
pub use config::{AwsConfig, AwsConfigBuilder, Service};
pub use ec2::{Ec2Compute, Ec2ComputeBuilder, Ec2Images, Ec2ImagesBuilder};
pub use error::{aws_error, aws_error_code, AwsApiError, AwsConfigError};
pub use query::{AwsClient, QueryRequest};
pub use throttle::RequestBucket;
