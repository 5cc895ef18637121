//! EC2: instances (`Compute`).

mod compute;
mod instance;

pub use compute::{Ec2Compute, Ec2ComputeBuilder, DESCRIBE_BATCH};
