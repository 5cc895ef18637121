//! `Compute` on EC2 instances (the "instances" mode: Phoenix owns each
//! slot's instance).
//!
//! - Launch: one `RunInstances` per slot (each slot has its own token,
//!   name and boot payload), sent concurrently, with the slot's token as
//!   `ClientToken`, Phoenix's labels as tags through `TagSpecifications`,
//!   and subnets spread across zones by slot index. Before launching it
//!   looks the batch's tokens up in one `DescribeInstances`, so that a
//!   peer that ignores `ClientToken` (moto) does not launch twice either.
//! - Describe and list: one `DescribeInstances` per 200 ids (an
//!   `instance-id` filter, so unknown ids are absent rather than failing
//!   the call) or per label selector (`tag:` filters), all pages.
//! - Stop, start and terminate are idempotent; terminating an id EC2 does
//!   not know succeeds, unless this adapter launched it within the
//!   consistency window: then it is "not visible yet", a temporary error,
//!   so that the caller tries again instead of recording a leak as gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::labels::{keys, LabelSelector};
use phoenix_core::model::Server;
use phoenix_core::ports::{
    BootFormat, BootPayload, Compute, ComputeCapabilities, ErrorKind, LaunchRequest, PortError,
};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::instance::{DescribeInstances, RunInstances};
use crate::api_stats::DescribeStats;
use crate::aws::config::Service;
use crate::aws::error::{aws_error, aws_error_code};
use crate::aws::query::{AwsClient, QueryRequest};

/// Most ids one `DescribeInstances` filter takes.
pub const DESCRIBE_BATCH: usize = 200;

/// Most instances one `TerminateInstances` call removes.
pub const TERMINATE_BATCH: usize = 200;

/// How the instances are launched.
#[derive(Debug, Clone, Default)]
enum Template {
    #[default]
    None,
    Id(String, String),
    Name(String, String),
}

/// `Compute` on EC2 instances.
#[derive(Debug, Clone)]
pub struct Ec2Compute {
    client: AwsClient,
    instance_type: String,
    subnets: Vec<String>,
    security_groups: Vec<String>,
    key_name: Option<String>,
    instance_profile: Option<String>,
    template: Template,
    client_token_honoured: bool,
    consistency_window: Duration,
    launch_batch: usize,
    /// Instances this adapter launched, with when: EC2 may answer
    /// `InvalidInstanceID.NotFound` for them during the consistency window,
    /// and that is "not visible yet", never "gone".
    recent: Arc<Mutex<HashMap<String, Instant>>>,
    describe_stats: Arc<Mutex<DescribeStats>>,
}

/// Builds an [`Ec2Compute`].
#[derive(Debug, Clone)]
pub struct Ec2ComputeBuilder {
    inner: Ec2Compute,
}

impl Ec2Compute {
    /// Starts a builder over a shared client.
    pub fn builder(client: AwsClient) -> Ec2ComputeBuilder {
        Ec2ComputeBuilder {
            inner: Self {
                client,
                instance_type: "t3.micro".into(),
                subnets: Vec::new(),
                security_groups: Vec::new(),
                key_name: None,
                instance_profile: None,
                template: Template::None,
                client_token_honoured: true,
                consistency_window: Duration::from_secs(120),
                launch_batch: 20,
                recent: Arc::default(),
                describe_stats: Arc::default(),
            },
        }
    }

    /// The shared client (its counts, bucket and configuration).
    pub fn client(&self) -> &AwsClient {
        &self.client
    }

    /// Calls made by `describe` so far.
    pub fn describe_stats(&self) -> DescribeStats {
        *self
            .describe_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts counting `describe` calls from zero.
    pub fn reset_describe_stats(&self) {
        *self
            .describe_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = DescribeStats::default();
    }

    /// The request's user data, refusing payloads of other formats.
    pub(crate) fn user_data(op: String, r: &LaunchRequest) -> Result<String, PortError> {
        match &r.boot {
            BootPayload::AwsUserData { base64 } => Ok(base64.expose_secret().to_owned()),
            other => Err(PortError::new(
                op,
                ErrorKind::Invalid(format!(
                    "EC2 takes EC2 user data, not a {} payload",
                    payload_kind(other)
                )),
            )),
        }
    }

    /// A launch template's data for `r` (the Auto Scaling mode's one
    /// template per pool): image, type, user data, groups, key and
    /// profile as `LaunchTemplateData.*`. Instance tags are readable from
    /// the instance metadata, so that each instance can learn the slot
    /// Phoenix binds it to.
    pub(crate) fn template_data(
        &self,
        op: String,
        r: &LaunchRequest,
    ) -> Result<Vec<(String, String)>, PortError> {
        let d = |k: &str| format!("LaunchTemplateData.{k}");
        let mut out = vec![
            (d("ImageId"), r.image.as_str().to_owned()),
            (
                d("InstanceType"),
                r.flavor
                    .clone()
                    .unwrap_or_else(|| self.instance_type.clone()),
            ),
            (d("UserData"), Self::user_data(op, r)?),
            (d("MetadataOptions.HttpTokens"), "required".into()),
            (d("MetadataOptions.InstanceMetadataTags"), "enabled".into()),
        ];
        for (i, g) in self.security_groups.iter().enumerate() {
            out.push((d(&format!("SecurityGroupId.{}", i + 1)), g.clone()));
        }
        if let Some(k) = &self.key_name {
            out.push((d("KeyName"), k.clone()));
        }
        match &self.instance_profile {
            Some(p) if p.starts_with("arn:") => out.push((d("IamInstanceProfile.Arn"), p.clone())),
            Some(p) => out.push((d("IamInstanceProfile.Name"), p.clone())),
            None => {}
        }
        Ok(out)
    }

    /// The subnets slots are spread across.
    pub(crate) fn subnet_ids(&self) -> &[String] {
        &self.subnets
    }

    fn run_request(&self, r: &LaunchRequest) -> Result<QueryRequest, PortError> {
        let op = format!("ec2 RunInstances {}", r.name);
        let user_data = Self::user_data(op, r)?;
        let mut q = QueryRequest::new(Service::Ec2, "RunInstances")
            .not_idempotent()
            .param("ImageId", r.image.as_str())
            .param("MinCount", "1")
            .param("MaxCount", "1")
            .param("ClientToken", r.token.as_str())
            .param("UserData", user_data);
        match &self.template {
            Template::None => {}
            Template::Id(id, version) => {
                q = q
                    .param("LaunchTemplate.LaunchTemplateId", id)
                    .param("LaunchTemplate.Version", version);
            }
            Template::Name(name, version) => {
                q = q
                    .param("LaunchTemplate.LaunchTemplateName", name)
                    .param("LaunchTemplate.Version", version);
            }
        }
        if r.flavor.is_some() || matches!(self.template, Template::None) {
            q = q.param(
                "InstanceType",
                r.flavor.as_deref().unwrap_or(&self.instance_type),
            );
        }
        if !self.subnets.is_empty() {
            let slot = r.labels.slot().unwrap_or(0) as usize;
            q = q.param("SubnetId", &self.subnets[slot % self.subnets.len()]);
        }
        if !self.security_groups.is_empty() {
            q = q.list("SecurityGroupId", self.security_groups.iter().cloned());
        }
        if let Some(k) = &self.key_name {
            q = q.param("KeyName", k);
        }
        match &self.instance_profile {
            Some(p) if p.starts_with("arn:") => q = q.param("IamInstanceProfile.Arn", p),
            Some(p) => q = q.param("IamInstanceProfile.Name", p),
            None => {}
        }
        q = q.param("TagSpecification.1.ResourceType", "instance");
        let tags = std::iter::once(("Name", r.name.as_str())).chain(r.labels.iter());
        for (i, (k, v)) in tags.enumerate() {
            q = q
                .param(format!("TagSpecification.1.Tag.{}.Key", i + 1), k)
                .param(format!("TagSpecification.1.Tag.{}.Value", i + 1), v);
        }
        Ok(q)
    }

    async fn describe_where(&self, q: QueryRequest) -> Result<Vec<Server>, PortError> {
        Ok(self.describe_pages(q).await?.0)
    }

    /// The servers a describe finds, and how many pages it took.
    async fn describe_pages(&self, q: QueryRequest) -> Result<(Vec<Server>, u64), PortError> {
        let q = q.param("MaxResults", "1000");
        let pages: Vec<DescribeInstances> = self
            .client
            .pages(&q, "NextToken", |p: &DescribeInstances| {
                p.next_token.clone()
            })
            .await?;
        let servers = pages
            .iter()
            .flat_map(|p| &p.reservation_set.items)
            .flat_map(|r| &r.instances_set.items)
            .filter_map(|i| i.to_server())
            .collect();
        Ok((servers, pages.len() as u64))
    }

    /// Live instances carrying any of `tokens`, by token.
    pub(crate) async fn by_token(
        &self,
        tokens: &[&str],
    ) -> Result<HashMap<String, Server>, PortError> {
        let q = QueryRequest::new(Service::Ec2, "DescribeInstances")
            .filter(format!("tag:{}", keys::TOKEN), tokens.iter().copied())
            .filter(
                "instance-state-name",
                ["pending", "running", "stopping", "stopped"],
            );
        Ok(self
            .describe_where(q)
            .await?
            .into_iter()
            .filter_map(|s| Some((s.labels.get(keys::TOKEN)?.to_owned(), s)))
            .collect())
    }

    async fn launch_one(&self, r: &LaunchRequest) -> Result<Server, PortError> {
        let q = self.run_request(r)?;
        let answer: RunInstances = self.client.call_xml(&q).await?;
        let instance = answer
            .instances_set
            .items
            .into_iter()
            .next()
            .ok_or_else(|| {
                PortError::new(
                    q.operation(),
                    ErrorKind::BadResponse("RunInstances answered no instance".into()),
                )
            })?;
        self.note_launched(&instance.instance_id);
        instance.to_server().ok_or_else(|| {
            PortError::new(
                q.operation(),
                ErrorKind::BadResponse(format!("unusable instance id {:?}", instance.instance_id)),
            )
        })
    }

    /// Remembers that this adapter brought `id` up just now (EC2 may not
    /// know it for a while).
    pub(crate) fn note_launched(&self, id: &str) {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.consistency_window;
        recent.retain(|_, at| now.duration_since(*at) <= window);
        recent.insert(id.to_owned(), now);
    }

    async fn instances_call(&self, action: &'static str, id: &ServerId) -> Result<(), PortError> {
        let q = QueryRequest::new(Service::Ec2, action).param("InstanceId.1", id.as_str());
        match self.client.call(&q).await {
            Ok(_) => Ok(()),
            Err(e) if is_unknown_instance(&e) && self.launched_within_window(id) => {
                Err(self.not_visible_yet(q.operation(), id).with_source(e))
            }
            Err(e) if action == "TerminateInstances" && is_unknown_instance(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Terminates `ids` in one `TerminateInstances` call. EC2 fails the
    /// whole call when one id is unknown and names the unknown ids in its
    /// message: those are set aside (gone, or not visible yet when this
    /// adapter launched them within the window) and the call is sent again
    /// for the others, so one stale id never keeps the rest alive.
    async fn terminate_batch(&self, ids: &[ServerId]) -> Vec<Result<(), PortError>> {
        let mut results: Vec<Option<Result<(), PortError>>> = ids.iter().map(|_| None).collect();
        let mut left: Vec<usize> = (0..ids.len()).collect();
        while !left.is_empty() {
            let q = QueryRequest::new(Service::Ec2, "TerminateInstances").list(
                "InstanceId",
                left.iter().map(|&i| ids[i].as_str().to_owned()),
            );
            let e = match self.client.call(&q).await {
                Ok(_) => {
                    for &i in &left {
                        results[i] = Some(Ok(()));
                    }
                    break;
                }
                Err(e) => e,
            };
            let named = unknown_ids_named(&e);
            let (unknown, known): (Vec<usize>, Vec<usize>) = left
                .iter()
                .partition(|&&i| named.iter().any(|n| n == ids[i].as_str()));
            if !is_unknown_instance(&e) || unknown.is_empty() {
                for &i in &left {
                    results[i] = Some(Err(e.for_another()));
                }
                break;
            }
            for &i in &unknown {
                let id = &ids[i];
                results[i] = Some(if self.launched_within_window(id) {
                    Err(self
                        .not_visible_yet(q.operation(), id)
                        .with_source(e.for_another()))
                } else {
                    Ok(())
                });
            }
            left = known;
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(PortError::new(
                        "ec2 TerminateInstances",
                        ErrorKind::BadResponse("no answer for this instance".into()),
                    ))
                })
            })
            .collect()
    }

    fn not_visible_yet(&self, operation: String, id: &ServerId) -> PortError {
        PortError::temporary(
            operation,
            format!(
                "{id} is not visible yet (launched within EC2's consistency window of {}s)",
                self.consistency_window.as_secs()
            ),
        )
    }

    fn launched_within_window(&self, id: &ServerId) -> bool {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(id.as_str())
            .is_some_and(|at| at.elapsed() <= self.consistency_window)
    }
}

fn is_unknown_instance(e: &PortError) -> bool {
    aws_error_code(e).is_some_and(|c| c == "InvalidInstanceID.NotFound")
}

/// The instance ids an `InvalidInstanceID.NotFound` message names (EC2:
/// "The instance IDs 'i-1, i-2' do not exist"; one id: "The instance ID
/// 'i-1' does not exist").
fn unknown_ids_named(e: &PortError) -> Vec<String> {
    let Some(api) = aws_error(e) else {
        return Vec::new();
    };
    api.message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("i-") && w.len() > 2)
        .map(str::to_owned)
        .collect()
}

fn payload_kind(p: &BootPayload) -> &'static str {
    match p {
        BootPayload::CloudInit { .. } => "cloud-init",
        BootPayload::AwsUserData { .. } => "EC2 user data",
        BootPayload::OpenStack { .. } => "OpenStack",
        BootPayload::Guestinfo { .. } => "vSphere guestinfo",
        BootPayload::Local { .. } => "local",
    }
}

#[async_trait]
impl Compute for Ec2Compute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            max_launch_batch: self.launch_batch,
            max_describe_batch: DESCRIBE_BATCH,
            max_terminate_batch: TERMINATE_BATCH,
            stop_start: true,
            idempotent_launch: self.client_token_honoured,
            consistency_window: self.consistency_window,
            boot_format: BootFormat::AwsUserData,
        }
    }

    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        let tokens: Vec<&str> = requests.iter().map(|r| r.token.as_str()).collect();
        // A lookup that fails leaves the launch to ClientToken alone; the
        // executor adopts by token whatever a lost answer created.
        let existing = self.by_token(&tokens).await.unwrap_or_default();
        let launches = requests.iter().map(|r| async {
            match existing.get(r.token.as_str()) {
                Some(s) => Ok(s.clone()),
                None => self.launch_one(r).await,
            }
        });
        futures::future::join_all(launches).await
    }

    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut requests = 0;
        for chunk in ids.chunks(DESCRIBE_BATCH) {
            let q = QueryRequest::new(Service::Ec2, "DescribeInstances")
                .filter("instance-id", chunk.iter().map(|i| i.as_str().to_owned()));
            let (found, pages) = self.describe_pages(q).await?;
            requests += pages;
            out.extend(found);
        }
        self.describe_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(requests, ids.len());
        Ok(out)
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError> {
        let mut q = QueryRequest::new(Service::Ec2, "DescribeInstances");
        for (k, v) in selector.iter() {
            q = q.filter(format!("tag:{k}"), [v]);
        }
        let all = self.describe_where(q).await?;
        // The filter is the provider's; the selector is the contract.
        Ok(all
            .into_iter()
            .filter(|s| s.labels.matches(selector))
            .collect())
    }

    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        self.instances_call("StopInstances", id).await
    }

    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        self.instances_call("StartInstances", id).await
    }

    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        self.instances_call("TerminateInstances", id).await
    }

    async fn terminate_many(&self, ids: &[ServerId]) -> Vec<Result<(), PortError>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(TERMINATE_BATCH) {
            out.extend(self.terminate_batch(chunk).await);
        }
        out
    }
}

impl Ec2ComputeBuilder {
    /// The instance type when the role names none (default `t3.micro`).
    pub fn instance_type(mut self, t: impl Into<String>) -> Self {
        self.inner.instance_type = t.into();
        self
    }

    /// Subnets to spread slots across (slot `i` goes to subnet
    /// `i % len`): one per availability zone spreads the pool across zones.
    pub fn subnets<I, S>(mut self, subnets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.subnets = subnets.into_iter().map(Into::into).collect();
        self
    }

    /// Security groups by id.
    pub fn security_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.security_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// The key pair's name.
    pub fn key_name(mut self, key: impl Into<String>) -> Self {
        self.inner.key_name = Some(key.into());
        self
    }

    /// The IAM instance profile, by name or ARN.
    pub fn instance_profile(mut self, profile: impl Into<String>) -> Self {
        self.inner.instance_profile = Some(profile.into());
        self
    }

    /// Launch from a launch template by id (`lt-…`) and version
    /// (`$Latest`, `$Default` or a number); the request's image, user data
    /// and tags still apply, and the instance type when the role sets one.
    pub fn launch_template_id(mut self, id: impl Into<String>, version: impl Into<String>) -> Self {
        self.inner.template = Template::Id(id.into(), version.into());
        self
    }

    /// Launch from a launch template by name and version.
    pub fn launch_template_name(
        mut self,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.inner.template = Template::Name(name.into(), version.into());
        self
    }

    /// Whether the endpoint honours `ClientToken` (EC2 does, and then
    /// declares idempotent launches; moto does not).
    pub fn client_token_honoured(mut self, honoured: bool) -> Self {
        self.inner.client_token_honoured = honoured;
        self
    }

    /// How long a new instance may be missing from describe answers
    /// (default 120 s).
    pub fn consistency_window(mut self, window: Duration) -> Self {
        self.inner.consistency_window = window;
        self
    }

    /// Most launches sent at once (default 20).
    pub fn launch_batch(mut self, n: usize) -> Self {
        self.inner.launch_batch = n.max(1);
        self
    }

    /// The adapter.
    pub fn build(self) -> Ec2Compute {
        self.inner
    }
}
