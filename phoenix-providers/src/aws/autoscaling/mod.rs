//! `Compute` on EC2 Auto Scaling groups (the "group" mode): the AWS-native
//! form of a pool, so that AWS itself replaces an instance that dies while
//! the pool is live.
//!
//! # How slots map onto a group
//!
//! - Each pool has one launch template and one group, both named
//!   `phoenix-<deployment>-<pool>`. The template's version 1 holds the
//!   pool's release (AMI, instance type, user data, security groups, key,
//!   profile); the group runs it with `min = max = desired` and propagates
//!   the pool's labels (deployment, environment, role, release, pool) to
//!   every instance it launches.
//! - A slot is bound to an instance by tagging the instance with the
//!   slot's name, index and idempotency token. Launching `k` slots sets
//!   the group's size to (instances already bound) + `k`, waits for the
//!   group's instances and tags `k` unbound ones.
//! - An instance AWS launched to replace a dead one carries the pool's
//!   labels but no token. [`AsgCompute::list`](phoenix_core::ports::Compute::list)
//!   leaves it out (it is capacity, not an orphan); when Phoenix heals
//!   the dead slot, the new launch binds it instead of growing the group.
//! - An instance that fails before a slot takes it (EC2 reads it
//!   terminated or failed while the group still counts it, as a group
//!   does until its health check replaces it) is terminated through the
//!   group with the capacity kept, so the group launches its replacement
//!   while the launch waits.
//! - Nothing runs in a group that no slot holds: a launch that could not
//!   bind every request in time releases what the group launched for the
//!   rest, and a removal that leaves no bound instance (a replacement no
//!   slot took yet, say) deletes the group with it. Otherwise no one
//!   would ever remove them: the executor knows servers by token only.
//! - Terminating detaches the instances with the capacity lowered (so AWS
//!   replaces none) and terminates them in one EC2 call; the last one
//!   deletes the group and its template. Stopping (cold standby) puts the
//!   instance in standby first, lowering the capacity: a pool in cold
//!   standby is a group of desired size 0 whose stopped instances keep
//!   their ids, and starting returns each to service. A pool in hot
//!   standby keeps its group as it is.
//!
//! # Idempotency
//!
//! The executor may send a launch again with the same token (a lost
//! answer, a resumed step). The adapter first looks the tokens up by tag
//! (a bound instance is answered as it is); the group is then *sized*, not
//! grown by a count, so the same requests ask for the same size, and a
//! request bound nowhere yet takes an instance launched for the earlier
//! attempt. Sizes, tags, detaches and standby moves are each safe to
//! repeat. A launch the group has not served within
//! [`AsgComputeBuilder::bind_within`] answers "not yet" (temporary),
//! releases the capacity it asked for, and is served by a later one.
//!
//! The launch template's user data is the first request's of the pool:
//! per-server values (name, slot) are the instance's tags, which the
//! template makes readable from the instance metadata.
//!
//! ```no_run
//! use phoenix_core::ports::Compute;
//! use phoenix_providers::aws::{AsgCompute, AwsClient, AwsConfig, Ec2Compute};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = AwsClient::new(AwsConfig::from_env().await?)?;
//! let ec2 = Ec2Compute::builder(client)
//!     .subnets(["subnet-0a", "subnet-0b", "subnet-0c"])
//!     .build();
//! let groups = AsgCompute::builder(ec2).build();
//! assert!(groups.capabilities().idempotent_launch);
//! # Ok(())
//! # }
//! ```

mod capacity;
mod compute;
mod group;
mod wire;

pub use compute::{AsgCompute, AsgComputeBuilder};
