//! The Auto Scaling group mode (`AsgCompute`) against moto, directly and
//! through the fault layer: the Compute conformance suite, AWS's own
//! replacements bound to the dead slot, cold standby as a group of size 0,
//! the group deleted with its last instance, and nothing left running
//! that no slot holds (instances that fail before a slot takes them, a
//! launch the group cannot fill, a replacement no slot took yet).

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use phoenix_core::conformance::{self, compute::ComputeFixture};
use phoenix_core::id::{
    DeploymentId, EnvironmentName, IdempotencyToken, ImageId, OperationId, PoolId, ReleaseLabel,
    RoleName, ServerId,
};
use phoenix_core::labels::{keys, LabelSelector, Labels};
use phoenix_core::model::ServerStatus;
use phoenix_core::ports::{BootPayload, Compute, LaunchRequest};
use phoenix_providers::aws::testing::{FaultProxy, Faults};
use phoenix_providers::aws::{AsgCompute, AwsClient, Ec2Compute, QueryRequest, Service};
use secrecy::SecretString;

const NEEDS_MOTO: &str = "PHOENIX_MOTO_URL is set by scripts/test (scripts/peers/moto.sh)";

fn moto() -> String {
    std::env::var("PHOENIX_MOTO_URL").expect(NEEDS_MOTO)
}

fn groups(client: &AwsClient) -> AsgCompute {
    let ec2 = Ec2Compute::builder(client.clone())
        .client_token_honoured(false)
        .build();
    AsgCompute::builder(ec2)
        .bind_within(Duration::from_secs(20))
        .poll(Duration::from_millis(200))
        .build()
}

async fn an_ami(client: &AwsClient) -> ImageId {
    let body = client
        .call(&QueryRequest::new(Service::Ec2, "DescribeImages").param("Owner.1", "amazon"))
        .await
        .unwrap();
    let start = body.find("<imageId>").unwrap() + "<imageId>".len();
    let end = start + body[start..].find('<').unwrap();
    ImageId::new(body[start..end].to_owned()).unwrap()
}

fn user_data(text: &str) -> BootPayload {
    use base64::Engine;
    BootPayload::AwsUserData {
        base64: SecretString::from(base64::engine::general_purpose::STANDARD.encode(text)),
    }
}

fn fixture(image: ImageId) -> ComputeFixture {
    ComputeFixture {
        image,
        flavor: None,
        boot: Box::new(|_| user_data("#cloud-config\n")),
        ready_within: Duration::from_secs(30),
        poll: Duration::from_millis(100),
    }
}

struct Pool {
    deployment: DeploymentId,
    pool: PoolId,
    op: OperationId,
}

impl Pool {
    fn new() -> Self {
        Self {
            deployment: DeploymentId::new(conformance::unique("dep")).unwrap(),
            pool: PoolId::new(conformance::unique("pool")).unwrap(),
            op: OperationId::new(conformance::unique("op")).unwrap(),
        }
    }

    fn request(&self, image: &ImageId, slot: u32, attempt: u32) -> LaunchRequest {
        let token = IdempotencyToken::derive(&self.op, &self.pool, slot, attempt);
        LaunchRequest {
            name: format!("{}-{slot}-r{attempt}", self.pool),
            image: image.clone(),
            flavor: None,
            boot: user_data("#cloud-config\n"),
            labels: Labels::for_server(
                &self.deployment,
                &EnvironmentName::new("test").unwrap(),
                &RoleName::new("web").unwrap(),
                &ReleaseLabel::new("v1").unwrap(),
                &self.pool,
                slot,
                &token,
            ),
            token,
        }
    }

    fn selector(&self) -> LabelSelector {
        LabelSelector::deployment(&self.deployment).with(keys::POOL, self.pool.as_str())
    }
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn compute_conformance_in_group_mode_on_moto() {
    let client = phoenix_providers::aws::testing::moto_client(&moto(), 3).unwrap();
    let image = an_ami(&client).await;
    conformance::compute::run(&groups(&client), &fixture(image)).await;
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn compute_conformance_in_group_mode_through_throttling_and_5xx() {
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            throttle: 0.2,
            server_error: 0.05,
            seed: 12,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = phoenix_providers::aws::testing::moto_client(&proxy.url(), 8).unwrap();
    let image = an_ami(&client).await;
    conformance::compute::run(&groups(&client), &fixture(image)).await;
    let injected = proxy.injected();
    assert!(
        injected.keys().any(|k| k.starts_with("throttle")),
        "the layer throttled: {injected:?}"
    );
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_replacement_aws_launched_is_bound_to_the_dead_slot_not_orphaned() {
    let client = phoenix_providers::aws::testing::moto_client(&moto(), 3).unwrap();
    let image = an_ami(&client).await;
    let asg = groups(&client);
    let p = Pool::new();
    let first: Vec<_> = asg
        .launch(&(0..3).map(|i| p.request(&image, i, 0)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (min, max, desired, members) = asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((min, max, desired, members.len()), (3, 3, 3, 3));
    for (i, s) in first.iter().enumerate() {
        assert_eq!(s.labels.slot(), Some(i as u32));
        assert!(members.contains(&s.id.as_str().to_owned()));
    }

    // Sending the same requests again launches nothing and binds nothing new.
    client.stats().reset();
    let again: Vec<_> = asg
        .launch(&(0..3).map(|i| p.request(&image, i, 0)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(
        again,
        first.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        client.stats().count("autoscaling UpdateAutoScalingGroup"),
        0
    );

    // AWS replaces slot 1's instance, which died: the group launches one
    // without Phoenix's slot tags. (moto has no health checks: the test
    // detaches the dead one without lowering the capacity, which makes
    // the group launch the replacement, then terminates it.)
    let dead = first[1].id.clone();
    client
        .call(
            &QueryRequest::new(Service::AutoScaling, "DetachInstances")
                .param(
                    "AutoScalingGroupName",
                    format!("phoenix-{}-{}", p.deployment, p.pool),
                )
                .param("InstanceIds.member.1", dead.as_str())
                .param("ShouldDecrementDesiredCapacity", "false"),
        )
        .await
        .unwrap();
    client
        .call(
            &QueryRequest::new(Service::Ec2, "TerminateInstances")
                .param("InstanceId.1", dead.as_str()),
        )
        .await
        .unwrap();
    let (_, _, desired, members) = asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(desired, 3);
    let replacement = members
        .iter()
        .find(|m| !first.iter().any(|s| s.id.as_str() == m.as_str()))
        .expect("the group launched a replacement")
        .clone();
    let listed = asg.list(&p.selector()).await.unwrap();
    assert!(
        !listed.iter().any(|s| s.id.as_str() == replacement),
        "an unbound replacement is capacity, not a server to call an orphan"
    );
    assert_eq!(
        listed
            .iter()
            .filter(|s| s.status != ServerStatus::Deleted)
            .count(),
        2
    );

    // Phoenix heals slot 1 under a new token: the replacement is bound.
    client.stats().reset();
    let healed = asg.launch(&[p.request(&image, 1, 1)]).await;
    let healed = healed.into_iter().next().unwrap().unwrap();
    assert_eq!(healed.id.as_str(), replacement, "bound, not launched anew");
    assert_eq!(healed.labels.slot(), Some(1));
    assert_eq!(client.stats().count("ec2 RunInstances"), 0);
    assert_eq!(
        client.stats().count("autoscaling UpdateAutoScalingGroup"),
        0
    );
    let (_, _, desired, members) = asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((desired, members.len()), (3, 3), "the group did not grow");
    let listed = asg.list(&p.selector().with(keys::SLOT, "1")).await.unwrap();
    let live: Vec<_> = listed
        .iter()
        .filter(|s| s.status != ServerStatus::Deleted)
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, healed.id);

    let all: Vec<ServerId> = vec![first[0].id.clone(), healed.id.clone(), first[2].id.clone()];
    for r in asg.terminate_many(&all).await {
        r.unwrap();
    }
    assert!(asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn cold_standby_sets_the_group_to_zero_and_keeps_the_instances() {
    let client = phoenix_providers::aws::testing::moto_client(&moto(), 3).unwrap();
    let image = an_ami(&client).await;
    let asg = groups(&client);
    let p = Pool::new();
    let servers: Vec<ServerId> = asg
        .launch(&(0..2).map(|i| p.request(&image, i, 0)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect();
    for id in &servers {
        asg.stop(id).await.unwrap();
    }
    let (min, _, desired, members) = asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (min, desired),
        (0, 0),
        "a cold standby pool is a group of 0"
    );
    assert_eq!(members.len(), 2, "its instances stay, stopped");
    let seen = asg.describe(&servers).await.unwrap();
    assert!(
        seen.iter().all(|s| s.status == ServerStatus::Stopped),
        "{seen:?}"
    );

    // Stopping again is a no-op; starting returns them to service.
    asg.stop(&servers[0]).await.unwrap();
    for id in &servers {
        asg.start(id).await.unwrap();
    }
    let (min, max, desired, members) = asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((min, max, desired, members.len()), (2, 2, 2, 2));
    let seen = asg.describe(&servers).await.unwrap();
    assert!(seen.iter().all(|s| s.status.is_active()), "{seen:?}");

    for r in asg.terminate_many(&servers).await {
        r.unwrap();
    }
    assert!(
        asg.group_of(p.deployment.as_str(), p.pool.as_str())
            .await
            .unwrap()
            .is_none(),
        "the last instance takes the group with it"
    );
    let templates = client
        .call(
            &QueryRequest::new(Service::Ec2, "DescribeLaunchTemplates").param(
                "LaunchTemplateName.1",
                format!("phoenix-{}-{}", p.deployment, p.pool),
            ),
        )
        .await;
    assert!(
        templates.is_err() || !templates.unwrap().contains("<launchTemplateId>"),
        "and its launch template"
    );
}

/// A removal that stopped half-way (the group detached the instances, the
/// answer was lost): terminating them again, though no group holds them
/// now, still deletes their pool's emptied group and its template.
#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_removal_whose_detach_answer_was_lost_still_deletes_the_group() {
    let client = phoenix_providers::aws::testing::moto_client(&moto(), 3).unwrap();
    let image = an_ami(&client).await;
    let asg = groups(&client);
    let p = Pool::new();
    let servers: Vec<ServerId> = asg
        .launch(&(0..2).map(|i| p.request(&image, i, 0)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect();
    let name = format!("phoenix-{}-{}", p.deployment, p.pool);
    client
        .call(
            &QueryRequest::new(Service::AutoScaling, "UpdateAutoScalingGroup")
                .param("AutoScalingGroupName", &name)
                .param("MinSize", "0"),
        )
        .await
        .unwrap();
    client
        .call(
            &QueryRequest::new(Service::AutoScaling, "DetachInstances")
                .param("AutoScalingGroupName", &name)
                .param("InstanceIds.member.1", servers[0].as_str())
                .param("InstanceIds.member.2", servers[1].as_str())
                .param("ShouldDecrementDesiredCapacity", "true"),
        )
        .await
        .unwrap();
    assert!(asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .is_some_and(|(_, _, desired, members)| desired == 0 && members.is_empty()));
    for r in asg.terminate_many(&servers).await {
        r.unwrap();
    }
    assert!(
        asg.group_of(p.deployment.as_str(), p.pool.as_str())
            .await
            .unwrap()
            .is_none(),
        "the emptied group went with its instances"
    );
    let seen = asg.describe(&servers).await.unwrap();
    assert!(seen.iter().all(|s| s.status == ServerStatus::Deleted));
}

/// An `AsgCompute` on `client` that gives a launch `bind_within`.
fn groups_within(client: &AwsClient, bind_within: Duration) -> AsgCompute {
    let ec2 = Ec2Compute::builder(client.clone())
        .client_token_honoured(false)
        .build();
    AsgCompute::builder(ec2)
        .bind_within(bind_within)
        .poll(Duration::from_millis(200))
        .build()
}

/// What of the pool runs, as moto itself sees it (not through the fault
/// layer): instances the group launched carry the pool's tags too.
async fn running_in_moto(direct: &AwsClient, p: &Pool) -> Vec<ServerId> {
    Ec2Compute::builder(direct.clone())
        .build()
        .list(&p.selector())
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.status != ServerStatus::Deleted)
        .map(|s| s.id)
        .collect()
}

/// Every instance the group launches fails at boot. The launch cannot
/// bind its requests and says so (a retryable error); the capacity it
/// asked for goes with it. Nothing else would ever remove it: no slot
/// holds those instances, so the executor has nothing to terminate.
#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_launch_the_group_cannot_fill_leaves_no_instance_behind() {
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            boot_failure: 1.0,
            pending_for: Duration::ZERO,
            seed: 7,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let faulty = phoenix_providers::aws::testing::moto_client(&proxy.url(), 3).unwrap();
    let direct = phoenix_providers::aws::testing::moto_client(&moto(), 3).unwrap();
    let image = an_ami(&direct).await;
    let asg = groups_within(&faulty, Duration::from_secs(3));
    let p = Pool::new();
    let results = asg
        .launch(&(0..2).map(|i| p.request(&image, i, 0)).collect::<Vec<_>>())
        .await;
    for r in &results {
        let e = r.as_ref().expect_err("no instance could be bound");
        assert!(e.is_retryable(), "{e}");
    }
    let injected = proxy.injected();
    assert!(
        injected
            .get("boot failure AutoScaling")
            .copied()
            .unwrap_or(0)
            >= 2,
        "{injected:?}"
    );
    assert_eq!(running_in_moto(&direct, &p).await, Vec::<ServerId>::new());
    assert!(
        groups(&direct)
            .group_of(p.deployment.as_str(), p.pool.as_str())
            .await
            .unwrap()
            .is_none(),
        "a group that holds no slot's instance is not kept"
    );
}

/// Some instances fail at boot before a slot takes them (the group still
/// counts them, as a group does until its health check replaces them).
/// The launch has them replaced and binds every request within its time.
#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_group_instance_that_fails_before_a_slot_takes_it_is_replaced() {
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            boot_failure: 0.5,
            pending_for: Duration::ZERO,
            seed: 11,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let faulty = phoenix_providers::aws::testing::moto_client(&proxy.url(), 3).unwrap();
    let direct = phoenix_providers::aws::testing::moto_client(&moto(), 3).unwrap();
    let image = an_ami(&direct).await;
    let asg = groups_within(&faulty, Duration::from_secs(20));
    let p = Pool::new();
    let servers: Vec<ServerId> = asg
        .launch(&(0..3).map(|i| p.request(&image, i, 0)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect();
    let injected = proxy.injected();
    assert!(
        injected
            .get("boot failure AutoScaling")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{injected:?}"
    );
    let seen = asg.describe(&servers).await.unwrap();
    assert!(seen.iter().all(|s| s.status.is_active()), "{seen:?}");
    let (min, max, desired, members) = asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((min, max, desired), (3, 3, 3));
    let mut members = members;
    members.sort();
    let mut bound: Vec<String> = servers.iter().map(|s| s.as_str().to_owned()).collect();
    bound.sort();
    assert_eq!(members, bound, "the failed ones left the group");

    for r in asg.terminate_many(&servers).await {
        r.unwrap();
    }
    assert_eq!(running_in_moto(&direct, &p).await, Vec::<ServerId>::new());
}

/// A pool torn down while a replacement AWS launched for a dead slot
/// waits for a slot: the replacement goes with the group instead of
/// running on with nothing to hold it.
#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_pool_torn_down_takes_the_replacement_no_slot_took() {
    let client = phoenix_providers::aws::testing::moto_client(&moto(), 3).unwrap();
    let image = an_ami(&client).await;
    let asg = groups(&client);
    let p = Pool::new();
    let servers: Vec<ServerId> = asg
        .launch(&(0..2).map(|i| p.request(&image, i, 0)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect();
    // AWS replaces slot 1's instance, which died (as in the test above).
    client
        .call(
            &QueryRequest::new(Service::AutoScaling, "DetachInstances")
                .param(
                    "AutoScalingGroupName",
                    format!("phoenix-{}-{}", p.deployment, p.pool),
                )
                .param("InstanceIds.member.1", servers[1].as_str())
                .param("ShouldDecrementDesiredCapacity", "false"),
        )
        .await
        .unwrap();
    client
        .call(
            &QueryRequest::new(Service::Ec2, "TerminateInstances")
                .param("InstanceId.1", servers[1].as_str()),
        )
        .await
        .unwrap();
    assert_eq!(
        running_in_moto(&client, &p).await.len(),
        2,
        "slot 0 and the replacement"
    );

    for r in asg.terminate_many(&servers).await {
        r.unwrap();
    }
    assert_eq!(running_in_moto(&client, &p).await, Vec::<ServerId>::new());
    assert!(asg
        .group_of(p.deployment.as_str(), p.pool.as_str())
        .await
        .unwrap()
        .is_none());
}
