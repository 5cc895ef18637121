//! The AWS adapters against moto, started by the test script
//! (`scripts/peers/moto.sh`, which exports `PHOENIX_MOTO_URL`). moto checks
//! wire shapes and bookkeeping; timing and failures are the fault layer's
//! tests.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use phoenix_core::conformance::{self, compute::ComputeFixture};
use phoenix_core::id::{
    DeploymentId, EnvironmentName, IdempotencyToken, ImageId, OperationId, PoolId, ReleaseLabel,
    RoleName,
};
use phoenix_core::labels::Labels;
use phoenix_core::model::ServerStatus;
use phoenix_core::ports::{BootPayload, Compute, ErrorKind, LaunchRequest};
use phoenix_providers::aws::{aws_error_code, AwsClient, Ec2Compute, QueryRequest, Service};
use secrecy::SecretString;

const NEEDS_MOTO: &str = "PHOENIX_MOTO_URL is set by scripts/test (scripts/peers/moto.sh)";

fn client() -> AwsClient {
    let url = std::env::var("PHOENIX_MOTO_URL").expect(NEEDS_MOTO);
    phoenix_providers::aws::testing::moto_client(&url, 3).unwrap()
}

fn compute(client: &AwsClient) -> Ec2Compute {
    Ec2Compute::builder(client.clone())
        .instance_type("t3.micro")
        .client_token_honoured(false)
        .build()
}

/// One of moto's stock AMIs.
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

fn request(image: &ImageId, pool: &PoolId, op: &OperationId, slot: u32) -> LaunchRequest {
    let token = IdempotencyToken::derive(op, pool, slot, 0);
    LaunchRequest {
        name: format!("{pool}-{slot}"),
        image: image.clone(),
        flavor: None,
        boot: user_data("#cloud-config\nwrite_files: []\n"),
        labels: Labels::for_server(
            &DeploymentId::new(conformance::unique("dep")).unwrap(),
            &EnvironmentName::new("test").unwrap(),
            &RoleName::new("web").unwrap(),
            &ReleaseLabel::new("v1").unwrap(),
            pool,
            slot,
            &token,
        ),
        token,
    }
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn compute_conformance_on_moto() {
    let client = client();
    let image = an_ami(&client).await;
    let compute = compute(&client);
    conformance::compute::run(
        &compute,
        &ComputeFixture {
            image,
            flavor: None,
            boot: Box::new(|name| user_data(&format!("#cloud-config\nhostname: {name}\n"))),
            ready_within: Duration::from_secs(30),
            poll: Duration::from_millis(100),
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_repeated_token_launches_nothing_where_client_token_is_ignored() {
    let client = client();
    let image = an_ami(&client).await;
    let compute = compute(&client);
    let pool = PoolId::new(conformance::unique("pool")).unwrap();
    let op = OperationId::new(conformance::unique("op")).unwrap();
    let first = compute.launch(&[request(&image, &pool, &op, 0)]).await;
    let first = first.into_iter().next().unwrap().unwrap();
    client.stats().reset();
    let again = compute.launch(&[request(&image, &pool, &op, 0)]).await;
    let again = again.into_iter().next().unwrap().unwrap();
    assert_eq!(
        again.id, first.id,
        "found by its token tag, not launched again"
    );
    assert_eq!(client.stats().count("ec2 RunInstances"), 0);
    assert_eq!(client.stats().count("ec2 DescribeInstances"), 1);
    compute.terminate(&first.id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn ten_launches_and_one_describe_for_ten_instances() {
    let client = client();
    let image = an_ami(&client).await;
    let compute = compute(&client);
    let pool = PoolId::new(conformance::unique("pool")).unwrap();
    let op = OperationId::new(conformance::unique("op")).unwrap();
    let requests: Vec<LaunchRequest> = (0..10).map(|i| request(&image, &pool, &op, i)).collect();
    client.stats().reset();
    let launched: Vec<_> = compute
        .launch(&requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(client.stats().count("ec2 RunInstances"), 10);
    assert_eq!(
        client.stats().count("ec2 DescribeInstances"),
        1,
        "one token lookup"
    );
    let ids: Vec<_> = launched.iter().map(|s| s.id.clone()).collect();
    client.stats().reset();
    let seen = compute.describe(&ids).await.unwrap();
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().all(|s| s.status == ServerStatus::Active));
    assert_eq!(client.stats().count("ec2 DescribeInstances"), 1);
    for id in &ids {
        compute.terminate(id).await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn bad_input_is_a_classified_error_with_the_aws_code_and_no_secret() {
    let client = client();
    let compute = compute(&client);
    let pool = PoolId::new(conformance::unique("pool")).unwrap();
    let op = OperationId::new(conformance::unique("op")).unwrap();
    let mut r = request(&ImageId::new("ami-00000000").unwrap(), &pool, &op, 0);
    r.boot = user_data("#cloud-config\npassword: hunter2-secret\n");
    let out = compute.launch(&[r]).await.into_iter().next().unwrap();
    let e = out.expect_err("an unknown AMI does not launch");
    assert!(
        matches!(e.kind, ErrorKind::NotFound(_) | ErrorKind::Invalid(_)),
        "{e:?}"
    );
    assert!(
        aws_error_code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")),
        "{e:?}"
    );
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("moto-secret-key"), "{shown}");

    let mut r = request(&ImageId::new("ami-00000000").unwrap(), &pool, &op, 1);
    r.boot = BootPayload::CloudInit {
        user_data: secrecy::SecretSlice::from(b"#cloud-config\n".to_vec()),
    };
    let e = compute
        .launch(&[r])
        .await
        .into_iter()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Invalid(_)), "{e:?}");
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn images_conformance_on_moto_bakes_from_a_builder_instance() {
    use phoenix_core::conformance::images::ImagesFixture;
    use phoenix_core::ports::{BakeSource, Images};
    use phoenix_providers::aws::Ec2Images;

    let client = client();
    let image = an_ami(&client).await;
    let compute = compute(&client);
    let pool = PoolId::new(conformance::unique("builder")).unwrap();
    let op = OperationId::new(conformance::unique("op")).unwrap();
    let builder = compute.launch(&[request(&image, &pool, &op, 0)]).await;
    let builder = builder.into_iter().next().unwrap().unwrap();
    let images = Ec2Images::builder(client.clone())
        .poll(Duration::from_millis(100))
        .build();
    conformance::images::run(
        &images,
        &ImagesFixture {
            bake_from: Some(BakeSource::Server(builder.id.clone())),
            existing: None,
        },
    )
    .await;
    let e = images
        .bake(&phoenix_core::ports::BakeRequest {
            source: BakeSource::Artifact("/tmp/x.tar".into()),
            name: "web".into(),
            version: "1".into(),
            base: None,
            properties: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unsupported(_)), "{e:?}");
    compute.terminate(&builder.id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn deleting_an_ami_deletes_its_snapshots() {
    use phoenix_core::ports::{BakeRequest, BakeSource, Images};
    use phoenix_providers::aws::Ec2Images;

    let client = client();
    let image = an_ami(&client).await;
    let compute = compute(&client);
    let pool = PoolId::new(conformance::unique("builder")).unwrap();
    let op = OperationId::new(conformance::unique("op")).unwrap();
    let builder = compute.launch(&[request(&image, &pool, &op, 0)]).await;
    let builder = builder.into_iter().next().unwrap().unwrap();
    let images = Ec2Images::builder(client.clone())
        .poll(Duration::from_millis(100))
        .build();
    let baked = images
        .bake(&BakeRequest {
            source: BakeSource::Server(builder.id.clone()),
            name: "web".into(),
            version: conformance::unique("v"),
            base: Some(image.to_string()),
            properties: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(baked.state, phoenix_core::model::ImageState::Built);
    assert_eq!(baked.base.as_deref(), Some(image.as_str()));
    let snapshots = |body: String| -> Vec<String> {
        body.split("<snapshotId>")
            .skip(1)
            .filter_map(|s| s.split('<').next().map(str::to_owned))
            .collect()
    };
    let body = client
        .call(
            &QueryRequest::new(Service::Ec2, "DescribeImages")
                .param("ImageId.1", baked.id.as_str()),
        )
        .await
        .unwrap();
    let snaps = snapshots(body);
    assert!(!snaps.is_empty(), "the AMI has snapshots");
    images.delete(&baked.id).await.unwrap();
    for snap in snaps {
        let e = client
            .call(
                &QueryRequest::new(Service::Ec2, "DescribeSnapshots").param("SnapshotId.1", &snap),
            )
            .await
            .unwrap_err();
        assert!(
            aws_error_code(&e).is_some_and(|c| c.starts_with("InvalidSnapshot")),
            "{e:?}"
        );
    }
    compute.terminate(&builder.id).await.unwrap();
}
