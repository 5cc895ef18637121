//! `Compute` on one Auto Scaling group per pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::labels::{keys, LabelSelector};
use phoenix_core::model::Server;
use phoenix_core::ports::{Compute, ComputeCapabilities, LaunchRequest, PortError};
use tokio::time::Instant;

use super::group::{group_name, Capacity, Groups, NewGroup};
use crate::aws::ec2::{Ec2Compute, TERMINATE_BATCH};

/// `Compute` on EC2 Auto Scaling: one group (and one launch template)
/// per pool, `min = max = desired`. See the module documentation for how
/// slots map onto the group's instances.
#[derive(Debug, Clone)]
pub struct AsgCompute {
    pub(super) ec2: Ec2Compute,
    pub(super) groups: Groups,
    zones: Vec<String>,
    bind_within: Duration,
    poll: Duration,
    /// One change to a group at a time: binding reads which instances are
    /// free and tags them; two binds at once would take the same one.
    changes: Arc<tokio::sync::Mutex<()>>,
}

/// Builds an [`AsgCompute`].
#[derive(Debug, Clone)]
pub struct AsgComputeBuilder {
    inner: AsgCompute,
}

impl AsgCompute {
    /// A builder over an EC2 adapter, whose client, instance type,
    /// subnets, security groups, key and instance profile the groups'
    /// launch templates use.
    pub fn builder(ec2: Ec2Compute) -> AsgComputeBuilder {
        let region = ec2.client().config().region().to_owned();
        let groups = Groups {
            client: ec2.client().clone(),
        };
        AsgComputeBuilder {
            inner: Self {
                ec2,
                groups,
                zones: vec![format!("{region}a")],
                bind_within: Duration::from_secs(45),
                poll: Duration::from_secs(2),
                changes: Arc::default(),
            },
        }
    }

    /// The EC2 adapter underneath (describes, stops and starts).
    pub fn ec2(&self) -> &Ec2Compute {
        &self.ec2
    }

    /// The group of a pool, as Auto Scaling answers it: `(min, max,
    /// desired, instance ids)`, or `None` when it has none.
    pub async fn group_of(
        &self,
        deployment: &str,
        pool: &str,
    ) -> Result<Option<(u32, u32, u32, Vec<String>)>, PortError> {
        let name = group_name(deployment, pool);
        Ok(self.groups.describe(&name).await?.map(|g| {
            let ids = g.instances.members.iter().map(|i| i.id.clone()).collect();
            (g.min, g.max, g.desired, ids)
        }))
    }

    /// Launches one pool's requests: sizes its group to the slots bound
    /// plus these, then binds each request to an instance the group
    /// launched and no slot holds yet.
    async fn launch_pool(&self, requests: &[&LaunchRequest]) -> Vec<Result<Server, PortError>> {
        match self.launch_pool_inner(requests).await {
            Ok(results) => results,
            Err(e) => requests.iter().map(|_| Err(e.for_another())).collect(),
        }
    }

    async fn launch_pool_inner(
        &self,
        requests: &[&LaunchRequest],
    ) -> Result<Vec<Result<Server, PortError>>, PortError> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        let (deployment, pool) = pool_of(first)?;
        let name = group_name(deployment, pool);
        let op = format!("autoscaling launch into {name}");
        let data = self.ec2.template_data(op.clone(), first)?;
        let bound = self.members(&name).await?.bound;
        let want = bound + requests.len() as u32;
        match self.groups.describe(&name).await? {
            None => {
                // A group runs on its template: only a pool without a
                // group may lack one.
                let release = first.labels.get(keys::RELEASE).unwrap_or_default();
                self.groups.ensure_template(&name, release, data).await?;
                let tags = first
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != keys::SLOT && *k != keys::TOKEN)
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                self.groups
                    .create(&NewGroup {
                        name: &name,
                        size: want,
                        subnets: self.ec2.subnet_ids(),
                        zones: &self.zones,
                        tags,
                    })
                    .await?;
            }
            // Set, never added to: sending the same requests again (a lost
            // answer, a resumed step) asks for the same size.
            Some(g) if g.desired < want => {
                self.groups
                    .resize(&name, want, want.max(g.max), want)
                    .await?;
            }
            Some(_) => {}
        }

        let mut results: Vec<Option<Result<Server, PortError>>> =
            requests.iter().map(|_| None).collect();
        let deadline = Instant::now() + self.bind_within;
        loop {
            let members = self.members(&name).await?;
            let waiting: Vec<usize> = (0..requests.len())
                .filter(|i| results[*i].is_none())
                .collect();
            for (i, server) in waiting.iter().zip(members.free) {
                results[*i] = Some(self.bind(requests[*i], server).await);
            }
            if results.iter().all(Option::is_some) {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            // The group counts them until its health check replaces them,
            // and waiting for that costs the whole bind time: replaced now.
            for id in &members.failed {
                self.groups
                    .terminate_in_group(id, Capacity::Replace)
                    .await?;
            }
            tokio::time::sleep(self.poll).await;
        }
        if results.iter().any(Option::is_none) {
            // What the group launched for the requests left unbound goes:
            // no slot holds it, so nothing else would ever remove it (the
            // caller gives up, or sends the requests again, which sizes
            // the group anew).
            if let Err(e) = self.release_unbound(&name).await {
                tracing::warn!(group = %name, error = %e.chain(), "could not release the capacity no request took; the next change to the group does");
            }
        }
        Ok(results
            .into_iter()
            .zip(requests)
            .map(|(r, req)| {
                r.unwrap_or_else(|| {
                    Err(PortError::temporary(
                        op.clone(),
                        format!(
                            "the group has launched no instance for {} within {}s yet",
                            req.name,
                            self.bind_within.as_secs()
                        ),
                    ))
                })
            })
            .collect())
    }

    /// Tags an instance with a slot's name and labels: from then on it is
    /// that slot's server, found by its token.
    async fn bind(&self, r: &LaunchRequest, mut server: Server) -> Result<Server, PortError> {
        let tags: Vec<(&str, &str)> = std::iter::once(("Name", r.name.as_str()))
            .chain(r.labels.iter())
            .collect();
        self.groups.tag(server.id.as_str(), &tags).await?;
        self.ec2.note_launched(server.id.as_str());
        server.name = r.name.clone();
        server.labels = r.labels.clone();
        Ok(server)
    }
}

/// The request's deployment and pool labels.
fn pool_of(r: &LaunchRequest) -> Result<(&str, &str), PortError> {
    match (r.labels.get(keys::DEPLOYMENT), r.labels.get(keys::POOL)) {
        (Some(d), Some(p)) => Ok((d, p)),
        _ => Err(PortError::new(
            format!("autoscaling launch {}", r.name),
            phoenix_core::ports::ErrorKind::Invalid(
                "a request without deployment and pool labels has no group".into(),
            ),
        )),
    }
}

#[async_trait]
impl Compute for AsgCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            max_terminate_batch: TERMINATE_BATCH,
            stop_start: true,
            // A request is bound to an instance by its token tag, and a
            // group is sized, never grown by a count: sending a token
            // again finds its instance or takes the same free one.
            idempotent_launch: true,
            ..self.ec2.capabilities()
        }
    }

    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        let _change = self.changes.lock().await;
        let tokens: Vec<&str> = requests.iter().map(|r| r.token.as_str()).collect();
        let existing = match self.ec2.by_token(&tokens).await {
            Ok(e) => e,
            Err(e) => return requests.iter().map(|_| Err(e.for_another())).collect(),
        };
        let mut results: Vec<Option<Result<Server, PortError>>> =
            requests.iter().map(|_| None).collect();
        let mut by_pool: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            if let Some(s) = existing.get(r.token.as_str()) {
                results[i] = Some(Ok(s.clone()));
                continue;
            }
            match pool_of(r) {
                Ok((d, p)) => by_pool
                    .entry((d.to_owned(), p.to_owned()))
                    .or_default()
                    .push(i),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for indexes in by_pool.into_values() {
            let pool_requests: Vec<&LaunchRequest> =
                indexes.iter().map(|i| &requests[*i]).collect();
            for (i, r) in indexes.iter().zip(self.launch_pool(&pool_requests).await) {
                results[*i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(PortError::temporary(
                        "autoscaling launch",
                        "no answer for this request",
                    ))
                })
            })
            .collect()
    }

    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError> {
        self.ec2.describe(ids).await
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError> {
        // An instance the group launched that no slot holds yet (a
        // replacement AWS made for a dead one) carries the pool's labels
        // but no token: capacity waiting to be bound, not an orphan.
        Ok(self
            .ec2
            .list(selector)
            .await?
            .into_iter()
            .filter(|s| s.labels.get(keys::TOKEN).is_some() || s.labels.get(keys::POOL).is_none())
            .collect())
    }

    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        let _change = self.changes.lock().await;
        let grouped = self.groups.grouped(&[id.as_str().to_owned()]).await?;
        if let Some(i) = grouped.first() {
            if i.lifecycle == "InService" {
                // Out of the capacity first: a stopped instance in service
                // would be replaced as unhealthy.
                if let Some(g) = self.groups.describe(&i.group).await? {
                    let left = g.desired.saturating_sub(1);
                    if g.min > left {
                        self.groups.resize(&i.group, left, g.max, g.desired).await?;
                    }
                }
                self.groups.enter_standby(&i.group, id.as_str()).await?;
            } else if !i.lifecycle.contains("Standby") {
                return Err(PortError::temporary(
                    format!("autoscaling stop {id}"),
                    format!(
                        "{id} is {} in {}; it can be stopped once in service",
                        i.lifecycle, i.group
                    ),
                ));
            }
        }
        self.ec2.stop(id).await
    }

    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        let _change = self.changes.lock().await;
        self.ec2.start(id).await?;
        let grouped = self.groups.grouped(&[id.as_str().to_owned()]).await?;
        if let Some(i) = grouped.first().filter(|i| i.lifecycle == "Standby") {
            if let Some(g) = self.groups.describe(&i.group).await? {
                if g.desired + 1 > g.max {
                    self.groups
                        .resize(&i.group, g.min, g.desired + 1, g.desired)
                        .await?;
                }
            }
            self.groups.exit_standby(&i.group, id.as_str()).await?;
            if let Some(g) = self.groups.describe(&i.group).await? {
                if g.min < g.desired {
                    self.groups
                        .resize(&i.group, g.desired, g.max.max(g.desired), g.desired)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        self.terminate_many(std::slice::from_ref(id))
            .await
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }

    async fn terminate_many(&self, ids: &[ServerId]) -> Vec<Result<(), PortError>> {
        let _change = self.changes.lock().await;
        let raw: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let grouped = match self.groups.grouped(&raw).await {
            Ok(g) => g,
            Err(e) => return ids.iter().map(|_| Err(e.for_another())).collect(),
        };
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in &grouped {
            by_group
                .entry(i.group.clone())
                .or_default()
                .push(i.id.clone());
        }
        let mut failed: BTreeMap<String, PortError> = BTreeMap::new();
        for (name, members) in &by_group {
            if let Err(e) = self.remove_from_group(name, members).await {
                for m in members {
                    failed.insert(m.clone(), e.for_another());
                }
            }
        }
        let to_terminate: Vec<ServerId> = ids
            .iter()
            .filter(|i| !failed.contains_key(i.as_str()))
            .cloned()
            .collect();
        let mut answers: BTreeMap<String, Result<(), PortError>> = to_terminate
            .iter()
            .map(|i| i.as_str().to_owned())
            .zip(self.ec2.terminate_many(&to_terminate).await)
            .collect();
        // Instances no group holds any more may have left one on an
        // earlier attempt (a detach whose answer was lost): their pool's
        // group is settled too, found by their labels.
        let ungrouped: Vec<ServerId> = ids
            .iter()
            .filter(|i| !grouped.iter().any(|g| g.id == i.as_str()))
            .cloned()
            .collect();
        if !ungrouped.is_empty() {
            if let Ok(found) = self.ec2.describe(&ungrouped).await {
                for s in found {
                    if let (Some(d), Some(p)) =
                        (s.labels.get(keys::DEPLOYMENT), s.labels.get(keys::POOL))
                    {
                        by_group
                            .entry(group_name(d, p))
                            .or_default()
                            .push(s.id.as_str().to_owned());
                    }
                }
            }
        }
        for (name, members) in &by_group {
            let gone: BTreeSet<String> = members
                .iter()
                .filter(|m| answers.get(*m).is_some_and(Result::is_ok))
                .cloned()
                .collect();
            if gone.len() < members.len() {
                continue;
            }
            if let Err(e) = self.settle_group(name, &gone).await {
                // The instances are gone; the group is settled by the
                // next removal. Reported on the first, so that the caller
                // tries again.
                if let Some(m) = members.first() {
                    answers.insert(m.clone(), Err(e));
                }
            }
        }
        ids.iter()
            .map(|i| {
                if let Some(e) = failed.remove(i.as_str()) {
                    return Err(e);
                }
                answers.remove(i.as_str()).unwrap_or(Ok(()))
            })
            .collect()
    }
}

impl AsgComputeBuilder {
    /// Availability zones of groups launched without subnets (default:
    /// the region's `a` zone). With subnets, the group spreads across
    /// their zones.
    pub fn availability_zones<I, S>(mut self, zones: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.zones = zones.into_iter().map(Into::into).collect();
        self
    }

    /// How long a launch waits for the group's instances before it
    /// answers "not yet" for the rest (default 45 s, inside the
    /// executor's call deadline). What the group launched for those is
    /// released with the answer; a later launch sizes the group anew.
    pub fn bind_within(mut self, within: Duration) -> Self {
        self.inner.bind_within = within;
        self
    }

    /// How often a launch looks for the group's new instances (default 2 s).
    pub fn poll(mut self, poll: Duration) -> Self {
        self.inner.poll = poll;
        self
    }

    /// The adapter.
    pub fn build(self) -> AsgCompute {
        self.inner
    }
}
