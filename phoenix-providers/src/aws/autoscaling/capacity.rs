//! What a group holds, as the slots see it, and giving back what no slot
//! holds: removing instances from a group's capacity, releasing the
//! capacity a launch could not bind, deleting a group nothing holds.

use std::collections::BTreeSet;

use phoenix_core::id::ServerId;
use phoenix_core::labels::keys;
use phoenix_core::model::{Server, ServerStatus};
use phoenix_core::ports::{Compute, PortError};

use super::compute::AsgCompute;
use super::group::Capacity;
use super::wire::GroupInstance;

impl AsgCompute {
    /// The group's counted instances as the slots see them.
    pub(super) async fn members(&self, name: &str) -> Result<Members, PortError> {
        let Some(g) = self.groups.describe(name).await? else {
            return Ok(Members::default());
        };
        let counted: Vec<&str> = g
            .instances
            .members
            .iter()
            .filter(|i| i.counted())
            .map(|i| i.id.as_str())
            .collect();
        self.sort_members(&counted).await
    }

    /// Sorts group members (by id) into bound, free and failed, from what
    /// EC2 says of them.
    pub(super) async fn sort_members(&self, ids: &[&str]) -> Result<Members, PortError> {
        let known: Vec<ServerId> = ids
            .iter()
            .filter_map(|i| ServerId::new((*i).to_owned()).ok())
            .collect();
        let servers = self.ec2.describe(&known).await?;
        let mut m = Members::default();
        for id in ids {
            let seen = servers.iter().find(|s| s.id.as_str() == *id);
            if seen.is_some_and(|s| s.labels.get(keys::TOKEN).is_some()) {
                m.bound += 1;
                continue;
            }
            m.unbound.push((*id).to_owned());
            match seen {
                Some(s)
                    if matches!(s.status, ServerStatus::Deleted | ServerStatus::Error { .. }) =>
                {
                    m.failed.push((*id).to_owned());
                }
                Some(s) => m.free.push(s.clone()),
                // EC2 does not show it yet: neither free nor failed.
                None => {}
            }
        }
        m.free.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(m)
    }

    /// Removes one group's instances from its capacity, lowering it so
    /// that the group replaces none: those in service are detached (in
    /// batches), those still launching are terminated through the group
    /// (they cannot be detached). The caller then terminates them all.
    pub(super) async fn remove_from_group(
        &self,
        name: &str,
        ids: &[String],
    ) -> Result<(), PortError> {
        let Some(g) = self.groups.describe(name).await? else {
            return Ok(());
        };
        let (in_service, launching): (Vec<&GroupInstance>, Vec<&GroupInstance>) = g
            .instances
            .members
            .iter()
            .filter(|i| i.counted() && ids.contains(&i.id))
            .partition(|i| i.lifecycle == "InService");
        let counted = in_service.len() + launching.len();
        if counted == 0 {
            return Ok(());
        }
        let left = g.desired.saturating_sub(counted as u32);
        if g.min > left {
            self.groups.resize(name, left, g.max, g.desired).await?;
        }
        let detach: Vec<String> = in_service.iter().map(|i| i.id.clone()).collect();
        if !detach.is_empty() {
            self.groups.detach(name, &detach).await?;
        }
        for i in launching {
            self.groups
                .terminate_in_group(&i.id, Capacity::Lower)
                .await?;
        }
        self.groups.resize(name, left, left, left).await
    }

    /// Removes the group's counted instances no slot holds (the group
    /// launched them for requests it could not bind in time), lowering
    /// its capacity to what the slots hold; deletes the group when that
    /// is nothing.
    pub(super) async fn release_unbound(&self, name: &str) -> Result<(), PortError> {
        let members = self.members(name).await?;
        if members.unbound.is_empty() {
            return Ok(());
        }
        if members.bound > 0 {
            self.remove_from_group(name, &members.unbound).await?;
            let ids: Vec<ServerId> = members
                .unbound
                .iter()
                .filter_map(|i| ServerId::new(i.clone()).ok())
                .collect();
            for answer in self.ec2.terminate_many(&ids).await {
                answer?;
            }
        }
        self.settle_group(name, &members.unbound.into_iter().collect())
            .await
    }

    /// Deletes the group (its instances and template with it) once no
    /// slot holds anything in it: nothing remains but what was just
    /// terminated, or what remains is instances no slot took (a
    /// replacement the group launched for a dead slot's instance, say),
    /// which would otherwise run on with nothing to remove them. A group
    /// with instances in standby (a cold pool) is kept. Otherwise brings
    /// its bounds back to its desired capacity (an earlier removal may
    /// have stopped half-way).
    pub(super) async fn settle_group(
        &self,
        name: &str,
        gone: &BTreeSet<String>,
    ) -> Result<(), PortError> {
        let Some(g) = self.groups.describe(name).await? else {
            return Ok(());
        };
        let remaining: Vec<&str> = g
            .instances
            .members
            .iter()
            .filter(|i| {
                !gone.contains(&i.id)
                    && !i.lifecycle.starts_with("Terminat")
                    && !i.lifecycle.starts_with("Detach")
            })
            .map(|i| i.id.as_str())
            .collect();
        let standby = g
            .instances
            .members
            .iter()
            .any(|i| i.lifecycle.contains("Standby"));
        if !standby && (remaining.is_empty() || self.sort_members(&remaining).await?.bound == 0) {
            return self.groups.delete(name).await;
        }
        if !standby && (g.min != g.desired || g.max != g.desired) {
            self.groups
                .resize(name, g.desired, g.desired, g.desired)
                .await?;
        }
        Ok(())
    }
}

/// A group's counted instances as the slots see them.
#[derive(Debug, Default)]
pub(super) struct Members {
    /// Live instances no slot holds yet, by id.
    pub(super) free: Vec<Server>,
    /// How many a slot holds.
    pub(super) bound: u32,
    /// Ones no slot holds that EC2 reads terminated or failed while the
    /// group still counts them.
    pub(super) failed: Vec<String>,
    /// Every one no slot holds: free, failed, or not shown by EC2 yet.
    pub(super) unbound: Vec<String>,
}
