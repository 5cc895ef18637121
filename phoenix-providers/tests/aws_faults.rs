//! The EC2 adapter through the fault layer (`aws::testing::FaultProxy`) in
//! front of moto: what moto leaves out of EC2 — throttling, 5xx, answers
//! lost after the call took effect, instances invisible right after
//! launch, pending states, and `ClientToken` honoured or not.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use phoenix_core::conformance::{self, compute::ComputeFixture};
use phoenix_core::id::{
    DeploymentId, EnvironmentName, IdempotencyToken, ImageId, OperationId, PoolId, ReleaseLabel,
    RoleName,
};
use phoenix_core::labels::{keys, LabelSelector, Labels};
use phoenix_core::model::ServerStatus;
use phoenix_core::ports::{BootPayload, Compute, ErrorKind, LaunchRequest};
use phoenix_providers::aws::testing::{FaultProxy, Faults};
use phoenix_providers::aws::{aws_error_code, AwsClient, Ec2Compute, QueryRequest, Service};
use secrecy::SecretString;

const NEEDS_MOTO: &str = "PHOENIX_MOTO_URL is set by scripts/test (scripts/peers/moto.sh)";

fn moto() -> String {
    std::env::var("PHOENIX_MOTO_URL").expect(NEEDS_MOTO)
}

fn client(url: &str) -> AwsClient {
    phoenix_providers::aws::testing::moto_client(url, 6).unwrap()
}

fn compute(client: &AwsClient, honoured: bool, window: Duration) -> Ec2Compute {
    Ec2Compute::builder(client.clone())
        .client_token_honoured(honoured)
        .consistency_window(window)
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

    fn request(&self, image: &ImageId, slot: u32, payload: &str) -> LaunchRequest {
        let token = IdempotencyToken::derive(&self.op, &self.pool, slot, 0);
        LaunchRequest {
            name: format!("{}-{slot}", self.pool),
            image: image.clone(),
            flavor: None,
            boot: user_data(payload),
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

    /// Instances moto has for this pool, whatever the proxy hides.
    async fn in_moto(&self) -> Vec<phoenix_core::model::Server> {
        let direct = compute(&client(&moto()), false, Duration::ZERO);
        direct
            .list(&LabelSelector::deployment(&self.deployment).with(keys::POOL, self.pool.as_str()))
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.status != ServerStatus::Deleted)
            .collect()
    }
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn conformance_holds_through_throttling_and_pending_states() {
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            throttle: 0.3,
            pending_for: Duration::from_millis(500),
            seed: 3,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = client(&proxy.url());
    let image = an_ami(&client).await;
    conformance::compute::run(
        &compute(&client, false, Duration::from_secs(5)),
        &ComputeFixture {
            image,
            flavor: None,
            boot: Box::new(|name| user_data(&format!("#cloud-config\nhostname: {name}\n"))),
            ready_within: Duration::from_secs(30),
            poll: Duration::from_millis(100),
        },
    )
    .await;
    let injected: u64 = proxy
        .injected()
        .iter()
        .filter(|(k, _)| k.starts_with("throttle"))
        .map(|(_, n)| n)
        .sum();
    assert!(injected >= 3, "the proxy throttled: {:?}", proxy.injected());
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_launch_whose_answer_was_lost_is_found_by_token_not_launched_twice() {
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            lost_answer: 1.0,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = client(&proxy.url());
    let image = an_ami(&client).await;
    let ec2 = compute(&client, false, Duration::from_secs(5));
    let p = Pool::new();
    client.stats().reset();
    let first = ec2.launch(&[p.request(&image, 0, "#cloud-config\n")]).await;
    let e = first.into_iter().next().unwrap().unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Temporary(_)), "{e:?}");
    assert_eq!(
        client.stats().count("ec2 RunInstances"),
        1,
        "a 5xx on a launch is not retried blindly: it may have launched"
    );
    assert_eq!(p.in_moto().await.len(), 1, "it did launch");

    proxy.set_faults(Faults::default());
    let again = ec2.launch(&[p.request(&image, 0, "#cloud-config\n")]).await;
    let again = again.into_iter().next().unwrap().unwrap();
    let there = p.in_moto().await;
    assert_eq!(there.len(), 1, "no second instance");
    assert_eq!(there[0].id, again.id);
    ec2.terminate(&again.id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn client_token_honoured_like_ec2_and_ignored_like_moto() {
    let hidden = Duration::from_secs(3);
    for honoured in [true, false] {
        let proxy = FaultProxy::start(
            &moto(),
            Faults {
                invisible_for: hidden,
                honour_client_token: honoured,
                ..Faults::default()
            },
        )
        .await
        .unwrap();
        let client = client(&proxy.url());
        let image = an_ami(&client).await;
        let ec2 = compute(&client, honoured, hidden);
        assert_eq!(ec2.capabilities().idempotent_launch, honoured);
        let p = Pool::new();
        let a = ec2.launch(&[p.request(&image, 0, "#cloud-config\n")]).await;
        let a = a.into_iter().next().unwrap().unwrap();
        // Invisible to the token lookup, so only ClientToken can help.
        let b = ec2.launch(&[p.request(&image, 0, "#cloud-config\n")]).await;
        let b = b.into_iter().next().unwrap().unwrap();
        let there = p.in_moto().await;
        if honoured {
            assert_eq!(
                a.id, b.id,
                "EC2 answers the same instance for the same token"
            );
            assert_eq!(there.len(), 1);
            let c = ec2
                .launch(&[p.request(&image, 0, "#cloud-config\nrotated: secret\n")])
                .await;
            let e = c.into_iter().next().unwrap().unwrap_err();
            assert_eq!(aws_error_code(&e), Some("IdempotentParameterMismatch"));
            assert!(matches!(e.kind, ErrorKind::Conflict(_)), "{e:?}");
        } else {
            // Why the adapter declares no idempotent launch here: the
            // executor must wait out the consistency window instead.
            assert_ne!(a.id, b.id, "a peer that ignores ClientToken launches twice");
            assert_eq!(there.len(), 2);
        }
        tokio::time::sleep(hidden).await;
        for s in there {
            ec2.terminate(&s.id).await.unwrap();
        }
    }
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_terminate_right_after_launch_is_not_taken_for_gone() {
    let hidden = Duration::from_millis(1500);
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            invisible_for: hidden,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = client(&proxy.url());
    let image = an_ami(&client).await;
    let ec2 = compute(&client, false, Duration::from_secs(10));
    let p = Pool::new();
    let s = ec2.launch(&[p.request(&image, 0, "#cloud-config\n")]).await;
    let s = s.into_iter().next().unwrap().unwrap();
    assert!(
        ec2.describe(std::slice::from_ref(&s.id))
            .await
            .unwrap()
            .is_empty(),
        "not visible yet"
    );
    let e = ec2.terminate(&s.id).await.unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Temporary(_)),
        "unknown, not gone: {e:?}"
    );
    assert_eq!(p.in_moto().await.len(), 1, "still running");
    tokio::time::sleep(hidden).await;
    ec2.terminate(&s.id).await.unwrap();
    assert!(p.in_moto().await.is_empty(), "terminated for real");
    // An id it never launched that EC2 does not know is gone.
    ec2.terminate(&phoenix_core::id::ServerId::new("i-0123456789abcdef0").unwrap())
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn instances_boot_through_pending() {
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            pending_for: Duration::from_millis(800),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = client(&proxy.url());
    let image = an_ami(&client).await;
    let ec2 = compute(&client, false, Duration::from_secs(5));
    let p = Pool::new();
    let s = ec2.launch(&[p.request(&image, 0, "#cloud-config\n")]).await;
    let s = s.into_iter().next().unwrap().unwrap();
    assert_eq!(s.status, ServerStatus::Building);
    assert_eq!(
        ec2.describe(std::slice::from_ref(&s.id)).await.unwrap()[0].status,
        ServerStatus::Building
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        ec2.describe(std::slice::from_ref(&s.id)).await.unwrap()[0].status,
        ServerStatus::Active
    );
    ec2.terminate(&s.id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn reads_are_retried_through_5xx_and_launches_are_not() {
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            server_error: 1.0,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = client(&proxy.url());
    let ec2 = compute(&client, false, Duration::from_secs(5));
    let e = ec2
        .describe(&[phoenix_core::id::ServerId::new("i-0123456789abcdef0").unwrap()])
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Temporary(_)), "{e:?}");
    assert_eq!(aws_error_code(&e), Some("InternalError"));
    assert_eq!(
        client.stats().count("ec2 DescribeInstances"),
        7,
        "one call and six retries, then the error"
    );
    client.stats().reset();
    let p = Pool::new();
    let image = ImageId::new("ami-12c6146b").unwrap();
    let r = ec2.launch(&[p.request(&image, 0, "#cloud-config\n")]).await;
    assert!(r[0].is_err());
    assert_eq!(
        client.stats().count("ec2 RunInstances"),
        1,
        "never repeated blindly"
    );
}

/// EC2 fails a whole `TerminateInstances` when one id is unknown: the
/// adapter sets the ids the answer names aside and terminates the rest in
/// the same batch; an id it launched moments ago is "not visible yet",
/// never "gone".
#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_batch_terminate_is_not_failed_by_one_unknown_id() {
    let direct = client(&moto());
    let image = an_ami(&direct).await;
    let p = Pool::new();
    let old = compute(&direct, false, Duration::from_secs(10));
    let settled: Vec<_> = old
        .launch(&[
            p.request(&image, 0, "#cloud-config\n"),
            p.request(&image, 1, "#cloud-config\n"),
            p.request(&image, 2, "#cloud-config\n"),
        ])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let hidden = Duration::from_millis(1500);
    let proxy = FaultProxy::start(
        &moto(),
        Faults {
            invisible_for: hidden,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = client(&proxy.url());
    let ec2 = compute(&client, false, Duration::from_secs(10));
    let fresh = ec2.launch(&[p.request(&image, 3, "#cloud-config\n")]).await;
    let fresh = fresh.into_iter().next().unwrap().unwrap();
    let never = phoenix_core::id::ServerId::new("i-0123456789abcdef0").unwrap();

    let mut ids: Vec<_> = settled.iter().map(|s| s.id.clone()).collect();
    ids.insert(1, never.clone());
    ids.push(fresh.id.clone());
    client.stats().reset();
    let results = ec2.terminate_many(&ids).await;
    assert_eq!(results.len(), ids.len(), "one result per id, in order");
    for (id, r) in ids.iter().zip(&results) {
        if id == &fresh.id {
            let e = r.as_ref().unwrap_err();
            assert!(
                matches!(e.kind, ErrorKind::Temporary(_)),
                "launched moments ago: not visible yet, not gone: {e:?}"
            );
        } else {
            assert!(r.is_ok(), "{id}: {r:?}");
        }
    }
    let calls = client.stats().count("ec2 TerminateInstances");
    assert!(
        calls <= 3,
        "one call, again without each unknown id: {calls} calls"
    );
    let left: Vec<_> = p.in_moto().await.into_iter().map(|s| s.id).collect();
    assert_eq!(
        left,
        vec![fresh.id.clone()],
        "only the invisible one is left"
    );
    tokio::time::sleep(hidden).await;
    let again = ec2.terminate_many(std::slice::from_ref(&fresh.id)).await;
    assert!(again[0].is_ok(), "{again:?}");
    assert!(p.in_moto().await.is_empty(), "terminated for real");
}
