//! EC2: instances (`Compute`) and AMIs (`Images`).

mod compute;
mod images;
mod instance;

pub use compute::{Ec2Compute, Ec2ComputeBuilder, DESCRIBE_BATCH, TERMINATE_BATCH};
pub use images::{Ec2Images, Ec2ImagesBuilder, BASE_TAG, NAME_TAG, STATE_TAG, VERSION_TAG};
