//! The ELBv2 and Elastic IP balancers against moto, started by the test
//! script (`scripts/peers/moto.sh`, which exports `PHOENIX_MOTO_URL`). Each
//! test builds its own VPC, load balancer, target groups and instances.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use phoenix_core::conformance::{self, load_balancer::LbExtras, load_balancer::LbFixture};
use phoenix_core::id::{
    DeploymentId, EnvironmentName, IdempotencyToken, OperationId, PoolId, ReleaseLabel, RoleName,
};
use phoenix_core::labels::Labels;
use phoenix_core::ports::{BootPayload, Compute, LaunchRequest, LoadBalancer, MemberState, Target};
use phoenix_lb::elastic_ip::ElasticIpBalancer;
use phoenix_lb::elbv2::{Elbv2BlueGreen, Elbv2TargetGroup};
use phoenix_providers::aws::testing::{
    first_text, stock_ami, FaultProxy, Faults, Site as MotoSite,
};
use phoenix_providers::aws::{AwsClient, Ec2Compute, QueryRequest, Service};
use secrecy::SecretString;

const NEEDS_MOTO: &str = "PHOENIX_MOTO_URL is set by scripts/test (scripts/peers/moto.sh)";

fn client() -> AwsClient {
    client_at(&std::env::var("PHOENIX_MOTO_URL").expect(NEEDS_MOTO))
}

fn client_at(url: &str) -> AwsClient {
    phoenix_providers::aws::testing::moto_client(url, 3).unwrap()
}

/// The text of the first `<tag>` in an answer.
fn first(body: &str, tag: &str) -> String {
    first_text(body, tag).unwrap_or_else(|| panic!("no {tag} in {body}"))
}

async fn call(client: &AwsClient, q: QueryRequest) -> String {
    client.call(&q).await.unwrap()
}

/// A VPC with two subnets, a load balancer with a listener forwarding to
/// two target groups (all weight on the first), and `n` instances.
struct Site {
    client: AwsClient,
    compute: Ec2Compute,
    listener: String,
    groups: [String; 2],
    targets: Vec<Target>,
    /// Two more instances at the first target's address (an address
    /// reused; moto does not refuse the duplicate).
    reuse: Vec<Target>,
}

async fn site(n: u32) -> Site {
    site_at(n, client()).await
}

/// ELBv2's timing through the fault layer: targets `initial` for half a
/// second after registration, `draining` for the group's delay.
async fn timed() -> FaultProxy {
    FaultProxy::start(
        &std::env::var("PHOENIX_MOTO_URL").expect(NEEDS_MOTO),
        Faults {
            health_delay: Duration::from_millis(500),
            deregistration_delay: true,
            ..Faults::default()
        },
    )
    .await
    .unwrap()
}

async fn site_at(n: u32, client: AwsClient) -> Site {
    let name = conformance::unique("lb");
    let moto = MotoSite::create(&client, &name, 8080).await.unwrap();
    let subnets = moto.subnets.clone();
    let image = stock_ami(&client).await.unwrap();
    let first_subnet = subnets[0].clone();
    let compute = Ec2Compute::builder(client.clone())
        .subnets(vec![first_subnet.clone()])
        .client_token_honoured(false)
        .build();
    let pool = PoolId::new(conformance::unique("pool")).unwrap();
    let op = OperationId::new(conformance::unique("op")).unwrap();
    let requests: Vec<LaunchRequest> = (0..n)
        .map(|slot| {
            let token = IdempotencyToken::derive(&op, &pool, slot, 0);
            use base64::Engine;
            LaunchRequest {
                name: format!("{pool}-{slot}"),
                image: image.clone(),
                flavor: None,
                boot: BootPayload::AwsUserData {
                    base64: SecretString::from(
                        base64::engine::general_purpose::STANDARD.encode("#cloud-config\n"),
                    ),
                },
                labels: Labels::for_server(
                    &DeploymentId::new(conformance::unique("dep")).unwrap(),
                    &EnvironmentName::new("test").unwrap(),
                    &RoleName::new("web").unwrap(),
                    &ReleaseLabel::new("v1").unwrap(),
                    &pool,
                    slot,
                    &token,
                ),
                token,
            }
        })
        .collect();
    let targets: Vec<Target> = compute
        .launch(&requests)
        .await
        .into_iter()
        .map(|r| {
            let s = r.unwrap();
            Target {
                endpoint: SocketAddr::new(s.addresses[0], 8080),
                server: s.id,
            }
        })
        .collect();
    // moto gives an address once per subnet: each server that reuses the
    // first target's address lives in a twin VPC with the same ranges.
    let mut reuse = Vec::new();
    for _ in 0..2 {
        let twin = first(
            &call(
                &client,
                QueryRequest::new(Service::Ec2, "CreateVpc").param("CidrBlock", "10.0.0.0/16"),
            )
            .await,
            "vpcId",
        );
        let twin_subnet = first(
            &call(
                &client,
                QueryRequest::new(Service::Ec2, "CreateSubnet")
                    .param("VpcId", &twin)
                    // The range of the site's first subnet.
                    .param("CidrBlock", "10.0.16.0/20")
                    .param("AvailabilityZone", "eu-west-1a"),
            )
            .await,
            "subnetId",
        );
        let at = targets[0].endpoint;
        let body = call(
            &client,
            QueryRequest::new(Service::Ec2, "RunInstances")
                .param("ImageId", image.as_str())
                .param("MinCount", "1")
                .param("MaxCount", "1")
                .param("SubnetId", &twin_subnet)
                .param("PrivateIpAddress", at.ip().to_string()),
        )
        .await;
        reuse.push(Target {
            server: phoenix_core::id::ServerId::new(first(&body, "instanceId")).unwrap(),
            endpoint: at,
        });
    }
    Site {
        client,
        compute,
        listener: moto.listener.clone(),
        groups: moto.groups.clone(),
        targets,
        reuse,
    }
}

fn fixture(site: &Site) -> LbFixture {
    LbFixture {
        healthy: site.targets.clone(),
        unhealthy: None,
        settle: Duration::from_secs(10),
        drain: Duration::from_secs(1),
        poll: Duration::from_millis(100),
    }
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn target_group_conformance_on_moto() {
    let site = site(3).await;
    let lb = Elbv2TargetGroup::new(site.client.clone(), &site.groups[0]);
    let second = Elbv2TargetGroup::new(site.client.clone(), &site.groups[0]);
    conformance::load_balancer::run_all(
        &lb,
        &fixture(&site),
        &LbExtras {
            second: Some(&second),
            reuse: site.reuse.clone(),
            ..LbExtras::default()
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn blue_green_conformance_on_moto() {
    let site = site(3).await;
    let lb = Elbv2BlueGreen::new(
        site.client.clone(),
        &site.listener,
        &site.groups[0],
        &site.groups[1],
    )
    .healthy_within(Duration::from_secs(10), Duration::from_millis(100));
    let second = Elbv2BlueGreen::new(
        site.client.clone(),
        &site.listener,
        &site.groups[0],
        &site.groups[1],
    );
    conformance::load_balancer::run_all(
        &lb,
        &fixture(&site),
        &LbExtras {
            second: Some(&second),
            reuse: site.reuse.clone(),
            ..LbExtras::default()
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_blue_green_switch_is_one_listener_call_whatever_the_pool_size() {
    let mut totals = Vec::new();
    for n in [2u32, 10] {
        let site = site(2 * n).await;
        let lb = Elbv2BlueGreen::new(
            site.client.clone(),
            &site.listener,
            &site.groups[0],
            &site.groups[1],
        )
        .healthy_within(Duration::from_secs(10), Duration::from_millis(100));
        let (blue, green) = site.targets.split_at(n as usize);
        lb.attach(blue).await.unwrap();
        let blue_ids: Vec<_> = blue.iter().map(|t| t.server.clone()).collect();
        site.client.stats().reset();
        lb.swap(green, &blue_ids, Duration::from_secs(0))
            .await
            .unwrap();
        let stats = site.client.stats();
        assert_eq!(
            stats.count("elasticloadbalancing ModifyListener"),
            1,
            "n={n}"
        );
        assert_eq!(
            stats.count("elasticloadbalancing RegisterTargets"),
            1,
            "n={n}"
        );
        assert_eq!(
            stats.count("elasticloadbalancing DeregisterTargets"),
            1,
            "n={n}"
        );
        totals.push(stats.total());
        eprintln!("blue-green switch of {n} servers: {:?}", stats.snapshot());
        let members = lb.members().await.unwrap();
        assert_eq!(members.len(), n as usize);
        for t in green {
            let m = members.iter().find(|m| m.server == t.server).unwrap();
            assert_eq!((m.endpoint, m.state), (t.endpoint, MemberState::Active));
        }
        // The switch moved the weight to the other group.
        let listener = call(
            &site.client,
            QueryRequest::new(Service::Elbv2, "DescribeListeners")
                .param("ListenerArns.member.1", &site.listener),
        )
        .await;
        let green_at = listener.find(&site.groups[1]).unwrap();
        assert!(
            listener[green_at..]
                .starts_with(&format!("{}</TargetGroupArn><Weight>100", site.groups[1])),
            "{listener}"
        );
        for t in site.targets.iter().chain(&site.reuse) {
            site.compute.terminate(&t.server).await.unwrap();
        }
    }
    assert_eq!(
        totals[0], totals[1],
        "the same calls for 2 and for 10 servers"
    );
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn elastic_ip_conformance_on_moto() {
    let site = site(3).await;
    let body = call(
        &site.client,
        QueryRequest::new(Service::Ec2, "AllocateAddress").param("Domain", "vpc"),
    )
    .await;
    let allocation = first(&body, "allocationId");
    let lb = ElasticIpBalancer::new(site.client.clone(), &allocation, 8080);
    let second = ElasticIpBalancer::new(site.client.clone(), &allocation, 8080);
    conformance::load_balancer::run_all(
        &lb,
        &fixture(&site),
        &LbExtras {
            second: Some(&second),
            reuse: site.reuse.clone(),
            single: true,
            ..LbExtras::default()
        },
    )
    .await;
    // Moving the address is one call.
    lb.attach(&site.targets[..1]).await.unwrap();
    site.client.stats().reset();
    lb.swap(
        &site.targets[1..2],
        std::slice::from_ref(&site.targets[0].server),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(site.client.stats().count("ec2 AssociateAddress"), 1);
    let m = lb.members().await.unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].server, site.targets[1].server);
    assert_eq!(m[0].endpoint, site.targets[1].endpoint);
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn target_group_conformance_with_elbv2_timing() {
    let proxy = timed().await;
    let site = site_at(3, client_at(&proxy.url())).await;
    let lb = Elbv2TargetGroup::new(site.client.clone(), &site.groups[0]);
    let second = Elbv2TargetGroup::new(site.client.clone(), &site.groups[0]);
    conformance::load_balancer::run_all(
        &lb,
        &fixture(&site),
        &LbExtras {
            second: Some(&second),
            reuse: site.reuse.clone(),
            ..LbExtras::default()
        },
    )
    .await;
    let injected = proxy.injected();
    assert!(
        injected
            .get("draining DeregisterTargets")
            .is_some_and(|n| *n > 0),
        "targets drained: {injected:?}"
    );
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn blue_green_conformance_with_elbv2_timing() {
    let proxy = timed().await;
    let site = site_at(3, client_at(&proxy.url())).await;
    let lb = Elbv2BlueGreen::new(
        site.client.clone(),
        &site.listener,
        &site.groups[0],
        &site.groups[1],
    )
    .healthy_within(Duration::from_secs(10), Duration::from_millis(100));
    let second = Elbv2BlueGreen::new(
        site.client.clone(),
        &site.listener,
        &site.groups[0],
        &site.groups[1],
    );
    conformance::load_balancer::run_all(
        &lb,
        &fixture(&site),
        &LbExtras {
            second: Some(&second),
            reuse: site.reuse.clone(),
            ..LbExtras::default()
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_blue_green_switch_waits_for_elbv2_to_find_the_new_pool_healthy() {
    let proxy = timed().await;
    let site = site_at(4, client_at(&proxy.url())).await;
    let lb = Elbv2BlueGreen::new(
        site.client.clone(),
        &site.listener,
        &site.groups[0],
        &site.groups[1],
    )
    .healthy_within(Duration::from_secs(10), Duration::from_millis(50));
    let (blue, green) = site.targets.split_at(2);
    lb.attach(blue).await.unwrap();
    let started = std::time::Instant::now();
    let blue_ids: Vec<_> = blue.iter().map(|t| t.server.clone()).collect();
    lb.swap(green, &blue_ids, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "the weight moved only once the new pool passed its checks"
    );
    let m = lb.members().await.unwrap();
    for t in green {
        let found = m.iter().find(|m| m.server == t.server).unwrap();
        assert_eq!(found.state, MemberState::Active);
    }
    for id in &blue_ids {
        let found = m.iter().find(|m| &m.server == id);
        assert!(
            found.is_none_or(|m| m.state != MemberState::Active),
            "the old pool takes no new traffic: {m:?}"
        );
    }
}

/// Attaches a target while its deregistration drains, with the answer to
/// `RegisterTargets` arriving only after the drain ended: ELBv2 ignored
/// the registration of the draining target, and then the target went. The
/// attach must not report success for a target that is not a member (CI
/// met this race once in the conformance suite).
async fn attach_across_the_end_of_a_drain(lb: &dyn LoadBalancer, proxy: &FaultProxy, site: &Site) {
    let a = &site.targets[0];
    lb.attach(std::slice::from_ref(a)).await.unwrap();
    conformance::eventually(
        "the member is healthy",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let m = lb.members().await.ok()?;
            m.iter()
                .any(|m| m.server == a.server && m.is_serving_healthy())
                .then_some(())
        },
    )
    .await;
    lb.detach(std::slice::from_ref(&a.server), Duration::from_secs(1))
        .await
        .unwrap();
    proxy.set_faults(Faults {
        health_delay: Duration::from_millis(500),
        deregistration_delay: true,
        slow_answers: vec![("RegisterTargets".into(), Duration::from_millis(1500))],
        ..Faults::default()
    });
    let first = lb.attach(std::slice::from_ref(a)).await;
    assert!(
        proxy.injected().contains_key("slow answer RegisterTargets"),
        "the registration's answer came late: {:?}",
        proxy.injected()
    );
    let m = lb.members().await.unwrap();
    match first {
        Ok(()) => assert!(
            m.iter()
                .any(|m| m.server == a.server && m.state == MemberState::Active),
            "an attach that succeeded left its target a member: {m:?}"
        ),
        Err(e) => assert!(e.is_retryable(), "{e}"),
    }
    // Whatever the first attach said, attaching again brings it back.
    conformance::eventually(
        "attached again",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { lb.attach(std::slice::from_ref(a)).await.ok() },
    )
    .await;
    let m = lb.members().await.unwrap();
    assert!(
        m.iter()
            .any(|m| m.server == a.server && m.state == MemberState::Active),
        "{m:?}"
    );
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_target_group_attach_across_the_end_of_a_drain_is_a_member_or_a_retry() {
    let proxy = timed().await;
    let site = site_at(1, client_at(&proxy.url())).await;
    let lb = Elbv2TargetGroup::new(site.client.clone(), &site.groups[0]);
    attach_across_the_end_of_a_drain(&lb, &proxy, &site).await;
}

#[tokio::test]
#[ignore = "needs moto: run the full test script"]
async fn a_blue_green_attach_across_the_end_of_a_drain_is_a_member_or_a_retry() {
    let proxy = timed().await;
    let site = site_at(1, client_at(&proxy.url())).await;
    let lb = Elbv2BlueGreen::new(
        site.client.clone(),
        &site.listener,
        &site.groups[0],
        &site.groups[1],
    );
    attach_across_the_end_of_a_drain(&lb, &proxy, &site).await;
}
