//! Rackspace Cloud Load Balancers against Mimic, and whole Phoenix
//! operations on Mimic (Nova, the Nova images API and Cloud Load
//! Balancers over one session): a blue-green cycle with rollback, servers
//! that go to ERROR, stay in BUILD or whose launch answer is lost, a
//! provision that aborts without orphans, and the describe budget. The
//! test script starts Mimic (`scripts/peers/mimic.sh`) and exports
//! `PHOENIX_MIMIC_URL`; each test authenticates as its own user, so it
//! has its own tenant.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::conformance::load_balancer::{
    LbExtras, LbFixture, OutOfBand, Sidelined, Unparsable,
};
use phoenix_core::conformance::{self};
use phoenix_core::events::Outcome;
use phoenix_core::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName, ServerId};
use phoenix_core::labels::{keys, LabelSelector};
use phoenix_core::memory_store::MemoryStore;
use phoenix_core::model::{
    Deployment, Environment, ImageState, PoolState, Role, ServerStatus, TestEvidence,
};
use phoenix_core::policy::Policy;
use phoenix_core::ports::{
    BootConfig, BootContext, BootFormat, BootPayload, Check, Compute, Images, LoadBalancer,
    MemberHealth, MemberState, PortError, Probe, ProbeOutcome, ProbeTarget, Target,
};
use phoenix_core::retry::RetryPolicy;
use phoenix_core::time::{Clock, SystemClock};
use phoenix_core::Phoenix;
use phoenix_lb::rackspace_clb::RackspaceClb;
use phoenix_providers::openstack::busy::Patience;
use phoenix_providers::openstack::testing::Mimic;
use phoenix_providers::openstack::{ApiRequest, ImageApi, NovaCompute, OpenStackImages, Session};
use secrecy::SecretSlice;
use serde_json::json;

const NEEDS_MIMIC: &str = "PHOENIX_MIMIC_URL is set by scripts/test (scripts/peers/mimic.sh)";

fn mimic() -> Mimic {
    Mimic::from_env().expect(NEEDS_MIMIC)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retries: 4,
        jitter_seed: Some(11),
    }
}

fn session(prefix: &str) -> Session {
    mimic()
        .session(&conformance::unique(prefix), fast_retry())
        .unwrap()
}

fn patience() -> Patience {
    Patience {
        wait: Duration::from_secs(30),
        poll: Duration::from_millis(50),
    }
}

fn target(i: u8) -> Target {
    Target {
        server: ServerId::new(format!("node-server-{i}")).unwrap(),
        endpoint: SocketAddr::from(([10, 9, 0, i], 80)),
    }
}

/// Cloud Load Balancers calls made behind the balancer's back, as an
/// operator or a detach that stopped part-way makes them.
struct Behind {
    session: Session,
    lb: u64,
}

/// A node by host name: the API takes one, and the balancer cannot tell
/// which address, let alone which server, it sends traffic to.
const HOST_NAME: &str = "backend.example.invalid";

impl Behind {
    async fn node_at(&self, address: &str, port: u16) -> u64 {
        let clb = RackspaceClb::builder(self.session.clone(), self.lb).build();
        clb.nodes()
            .await
            .unwrap()
            .into_iter()
            .find(|n| n.address == address && n.port == port)
            .unwrap_or_else(|| panic!("no node at {address}:{port}"))
            .id
    }
}

#[async_trait]
impl OutOfBand for Behind {
    fn sidelines(&self) -> Vec<Sidelined> {
        vec![Sidelined::Draining, Sidelined::Disabled]
    }

    async fn sideline(&self, member: &Target, how: Sidelined) {
        let condition = match how {
            Sidelined::Draining => "DRAINING",
            Sidelined::Disabled => "DISABLED",
            other => panic!("not offered: {other:?}"),
        };
        let (lb, ip) = (self.lb, member.endpoint.ip().to_string());
        let node = self.node_at(&ip, member.endpoint.port()).await;
        self.session
            .send(ApiRequest::put(
                "rax:load-balancer",
                "/loadbalancers/{id}/nodes/{node}",
                format!("/loadbalancers/{lb}/nodes/{node}"),
                json!({"node": {"condition": condition}}),
            ))
            .await
            .unwrap();
    }

    async fn add_unparsable(&self) -> Option<Unparsable> {
        let lb = self.lb;
        self.session
            .send(ApiRequest::post(
                "rax:load-balancer",
                "/loadbalancers/{id}/nodes",
                format!("/loadbalancers/{lb}/nodes"),
                json!({"nodes": [{"address": HOST_NAME, "port": 80, "condition": "ENABLED"}]}),
            ))
            .await
            .unwrap();
        Some(Unparsable {
            endpoint: None,
            what: format!("a node at {HOST_NAME}:80"),
        })
    }

    async fn remove_unparsable(&self) {
        let (lb, node) = (self.lb, self.node_at(HOST_NAME, 80).await);
        self.session
            .send(ApiRequest::delete(
                "rax:load-balancer",
                "/loadbalancers/{id}/nodes/{node}",
                format!("/loadbalancers/{lb}/nodes/{node}"),
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn clb_passes_the_load_balancer_conformance_suite() {
    let session = session("clb-conf");
    let id = RackspaceClb::create_balancer(&session, "conformance", "HTTP", 80, &[])
        .await
        .unwrap();
    let lb = RackspaceClb::builder(session.clone(), id)
        .patience(patience())
        .build();
    // Another orchestrator process: it knows nothing of what `lb`
    // attached.
    let second = RackspaceClb::builder(session.clone(), id)
        .patience(patience())
        .build();
    let fixture = LbFixture {
        healthy: vec![target(1), target(2), target(3)],
        unhealthy: None,
        settle: Duration::from_secs(10),
        drain: Duration::from_millis(300),
        poll: Duration::from_millis(50),
    };
    let behind = Behind {
        session: session.clone(),
        lb: id,
    };
    conformance::load_balancer::run_all(
        &lb,
        &fixture,
        &LbExtras {
            second: Some(&second),
            out_of_band: Some(&behind),
            ..LbExtras::default()
        },
    )
    .await;
    RackspaceClb::delete_balancer(&session, id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn changes_wait_while_the_balancer_is_pending_update() {
    let m = mimic();
    let session = session("clb-pending");
    // Mimic keeps a balancer with this metadata PENDING_UPDATE for 5 of
    // its seconds after every change.
    let id = RackspaceClb::create_balancer(
        &session,
        "pending",
        "HTTP",
        80,
        &[("lb_pending_update", "5")],
    )
    .await
    .unwrap();
    let lb = RackspaceClb::builder(session.clone(), id)
        .patience(patience())
        .build();
    lb.attach(&[target(1)]).await.unwrap();
    assert_eq!(lb.status().await.unwrap(), "PENDING_UPDATE");
    let ticker = {
        let m = m.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            m.tick(10.0).await
        })
    };
    lb.attach(&[target(2)]).await.unwrap();
    ticker.await.unwrap().unwrap();
    let stats = session.stats();
    assert!(
        stats.count("rax:load-balancer POST /loadbalancers/{id}/nodes") >= 3,
        "the second add was refused with 422, then made again: {:?}",
        stats.snapshot()
    );
    assert!(stats.count("rax:load-balancer GET /loadbalancers/{id}") >= 2);
    assert_eq!(lb.members().await.unwrap().len(), 2);
    RackspaceClb::delete_balancer(&session, id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn node_health_conditions_and_drains_map_to_members() {
    let m = mimic();
    let session = session("clb-health");
    let id = RackspaceClb::create_balancer(&session, "health", "HTTP", 80, &[])
        .await
        .unwrap();
    let lb = RackspaceClb::builder(session.clone(), id)
        .patience(patience())
        .build();
    lb.attach(&[target(1), target(2)]).await.unwrap();
    let nodes = lb.nodes().await.unwrap();
    m.set_node_status(&session, id, nodes[0].id, "OFFLINE")
        .await
        .unwrap();
    let members = lb.members().await.unwrap();
    let sick = members
        .iter()
        .find(|x| x.endpoint.to_string() == format!("{}:{}", nodes[0].address, nodes[0].port))
        .unwrap();
    assert_eq!(sick.health, MemberHealth::Unhealthy);

    lb.detach(&[target(2).server], Duration::from_millis(400))
        .await
        .unwrap();
    let members = lb.members().await.unwrap();
    let two = members
        .iter()
        .find(|x| x.server == target(2).server)
        .unwrap();
    assert_eq!(two.state, MemberState::Draining);
    assert!(two.carries_traffic());
    // A rollback re-attaches a draining member: it takes traffic again.
    lb.attach(&[target(2)]).await.unwrap();
    let members = lb.members().await.unwrap();
    assert_eq!(
        members
            .iter()
            .find(|x| x.server == target(2).server)
            .unwrap()
            .state,
        MemberState::Active
    );
    lb.detach(&[target(2).server], Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let members = lb.members().await.unwrap();
    assert_eq!(members.len(), 1, "removed once drained: {members:?}");
    RackspaceClb::delete_balancer(&session, id).await.unwrap();
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn a_restarted_balancer_resolves_nodes_through_nova() {
    let session = session("clb-resolve");
    let nova = Arc::new(NovaCompute::builder(session.clone()).flavor("2").build());
    let image = OpenStackImages::builder(session.clone())
        .api(ImageApi::NovaImages)
        .build()
        .list()
        .await
        .unwrap()
        .remove(0)
        .id;
    let req = phoenix_core::ports::LaunchRequest {
        name: "resolve-0".into(),
        image,
        flavor: None,
        boot: boot_payload("resolve-0"),
        labels: phoenix_core::labels::Labels::new(),
        token: phoenix_core::id::IdempotencyToken::derive(
            &"op-r".parse().unwrap(),
            &"pool-r".parse().unwrap(),
            0,
            0,
        ),
    };
    let server = nova.launch(&[req]).await.remove(0).unwrap();
    let seen = nova
        .describe(std::slice::from_ref(&server.id))
        .await
        .unwrap();
    let endpoint = seen[0].endpoint(80).unwrap();
    let id = RackspaceClb::create_balancer(&session, "resolve", "HTTP", 80, &[])
        .await
        .unwrap();
    RackspaceClb::builder(session.clone(), id)
        .build()
        .attach(&[Target {
            server: server.id.clone(),
            endpoint,
        }])
        .await
        .unwrap();
    // A new process knows nothing of what the first attached.
    let forgetful = RackspaceClb::builder(session.clone(), id).build();
    let m = forgetful.members().await.unwrap();
    assert!(m[0].server.as_str().starts_with("clb-node-"), "{m:?}");
    let resolving = RackspaceClb::builder(session.clone(), id)
        .servers(nova.clone())
        .build();
    let m = resolving.members().await.unwrap();
    assert_eq!(m[0].server, server.id);
    nova.terminate(&server.id).await.unwrap();
    RackspaceClb::delete_balancer(&session, id).await.unwrap();
}

fn boot_payload(name: &str) -> BootPayload {
    let mut metadata = BTreeMap::new();
    metadata.insert("boot-name".to_owned(), name.to_owned());
    BootPayload::OpenStack {
        user_data: SecretSlice::from(format!("#cloud-config\nhostname: {name}\n").into_bytes()),
        metadata,
        config_drive: true,
    }
}

/// Nova user data and metadata for each server.
struct TestBoot;

#[async_trait]
impl BootConfig for TestBoot {
    async fn render(
        &self,
        context: &BootContext,
        format: BootFormat,
    ) -> Result<BootPayload, PortError> {
        if format != BootFormat::OpenStack {
            return Err(PortError::permanent("render", format!("{format:?}")));
        }
        Ok(boot_payload(&context.server_name))
    }

    async fn fingerprint(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<String, PortError> {
        Ok(format!("{environment}/{role}/{release}"))
    }
}

/// Mimic's servers run nothing: healthy means ACTIVE in Nova.
struct NovaActive(Arc<NovaCompute>);

#[async_trait]
impl Probe for NovaActive {
    async fn check(&self, target: &ProbeTarget, _check: Check) -> Result<ProbeOutcome, PortError> {
        let seen = self.0.get(&target.server).await?;
        let status = seen.map(|s| s.status);
        Ok(ProbeOutcome {
            passed: status == Some(ServerStatus::Active),
            detail: format!("{status:?}"),
        })
    }
}

struct World {
    session: Session,
    nova: Arc<NovaCompute>,
    clb: Arc<RackspaceClb>,
    phoenix: Phoenix,
    dep: DeploymentId,
    web: RoleName,
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.provision.poll_interval = Duration::from_millis(100);
    p.provision.server_deadline = Duration::from_secs(2);
    p.provision.health_timeout = Duration::from_secs(5);
    p.provision.replace_budget = 2;
    p.provision.concurrency = 8;
    p.rollout.bake_time = Duration::ZERO;
    p.rollout.drain = Duration::from_millis(300);
    p.rollout.progress_deadline = Duration::from_secs(30);
    p.rollout.keep_failed = false;
    p.retry = fast_retry();
    p
}

async fn world(prefix: &str, size: usize, policy: Policy) -> World {
    let session = session(prefix);
    let nova = Arc::new(
        NovaCompute::builder(session.clone())
            .flavor("2")
            .stop_start(false)
            .metadata_items(40)
            .consistency_window(Duration::from_secs(5))
            .build(),
    );
    // Mimic's images are public base images: the account cannot tag them.
    let images = Arc::new(
        OpenStackImages::builder(session.clone())
            .api(ImageApi::NovaImages)
            .write_properties(false)
            .build(),
    );
    let lb_id = RackspaceClb::create_balancer(&session, "web", "HTTP", 80, &[])
        .await
        .unwrap();
    let clb = Arc::new(
        RackspaceClb::builder(session.clone(), lb_id)
            .servers(nova.clone())
            .patience(patience())
            .build(),
    );
    let phoenix = Phoenix::builder()
        .compute(nova.clone())
        .images(images.clone())
        .balancer(clb.clone())
        .boot_config(Arc::new(TestBoot))
        .probe(Arc::new(NovaActive(nova.clone())))
        .store(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
        .policy(policy)
        .holder("rackspace-mimic-test")
        .build()
        .unwrap();
    let dep = DeploymentId::new(conformance::unique("shop")).unwrap();
    let web = RoleName::new("web").unwrap();
    phoenix
        .register(
            &Deployment::new(
                dep.clone(),
                Environment {
                    name: EnvironmentName::new("ci").unwrap(),
                    production: false,
                    production_like: false,
                },
            )
            .with_role(Role {
                name: web.clone(),
                desired: size,
                flavor: Some("2".into()),
                port: 80,
            }),
        )
        .await
        .unwrap();
    let listed = images.list().await.unwrap();
    for (release, mut image) in ["v1", "v2"].into_iter().zip(listed) {
        image.state = ImageState::Certified;
        image.evidence.push(TestEvidence {
            suite: "image-smoke".into(),
            at: SystemClock.now(),
            passed: true,
            details: "mimic base image".into(),
            digest: image.digest.clone(),
            log: None,
        });
        phoenix.register_image(&image).await.unwrap();
        let mut by_role = BTreeMap::new();
        by_role.insert(web.clone(), image.id.clone());
        phoenix
            .create_release(&dep, ReleaseLabel::new(release).unwrap(), by_role)
            .await
            .unwrap();
    }
    World {
        session,
        nova,
        clb,
        phoenix,
        dep,
        web,
    }
}

impl World {
    fn release(v: &str) -> ReleaseLabel {
        ReleaseLabel::new(v).unwrap()
    }

    /// Releases of the servers behind the balancer.
    async fn serving(&self) -> BTreeMap<String, usize> {
        let members = self.clb.members().await.unwrap();
        let servers = self
            .nova
            .describe(&members.iter().map(|m| m.server.clone()).collect::<Vec<_>>())
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for m in members.iter().filter(|m| m.state == MemberState::Active) {
            let s = servers.iter().find(|s| s.id == m.server).unwrap();
            *out.entry(s.labels.get(keys::RELEASE).unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        out
    }

    /// Every Phoenix server of the deployment in Mimic belongs to a
    /// recorded pool, and none of them is a discarded one.
    async fn assert_no_orphans(&self) -> usize {
        let snap = self.phoenix.snapshot(&self.dep).await.unwrap();
        let left = self
            .nova
            .list(&LabelSelector::deployment(&self.dep))
            .await
            .unwrap();
        for s in &left {
            let owner = snap.owner_of(&s.id);
            assert!(owner.is_some(), "orphan server {} ({})", s.id, s.name);
            let discarded = snap
                .pools_of(&self.web)
                .flat_map(|p| p.discarded.iter())
                .any(|d| d.server == s.id);
            assert!(!discarded, "discarded server {} still exists", s.id);
        }
        left.len()
    }

    async fn cleanup(&self) {
        for s in self.nova.list(&LabelSelector::new()).await.unwrap() {
            self.nova.terminate(&s.id).await.unwrap();
        }
        RackspaceClb::delete_balancer(&self.session, self.clb.id())
            .await
            .unwrap();
    }
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn a_blue_green_cycle_with_rollback_on_mimic() {
    let w = world("cycle", 3, policy()).await;
    let apply = |plan| w.phoenix.apply(plan);
    let plan = w
        .phoenix
        .plan_deploy(&w.dep, &w.web, &World::release("v1"))
        .await
        .unwrap();
    assert_eq!(apply(plan).await.unwrap().outcome, Outcome::Succeeded);
    assert_eq!(w.serving().await, [("v1".to_owned(), 3)].into());

    let plan = w
        .phoenix
        .plan_deploy(&w.dep, &w.web, &World::release("v2"))
        .await
        .unwrap();
    assert_eq!(apply(plan).await.unwrap().outcome, Outcome::Succeeded);
    assert_eq!(w.serving().await, [("v2".to_owned(), 3)].into());
    assert_eq!(w.assert_no_orphans().await, 6, "v1 kept as hot standby");

    let plan = w.phoenix.plan_rollback(&w.dep, &w.web, None).await.unwrap();
    assert_eq!(apply(plan).await.unwrap().outcome, Outcome::Succeeded);
    assert_eq!(w.serving().await, [("v1".to_owned(), 3)].into());

    let plan = w.phoenix.plan_reap(&w.dep, &w.web).await.unwrap();
    apply(plan).await.unwrap();
    w.assert_no_orphans().await;
    let stats = w.nova.describe_stats();
    assert_eq!(stats.max_requests_per_call, 1, "{stats:?}");
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn provisioning_replaces_failed_stuck_and_lost_launches_within_budget() {
    let m = mimic();
    let w = world("faults", 3, policy()).await;
    // Servers are named <pool>-<slot>, pools web-v1-<seq>: slot 0 goes to
    // ERROR, slot 1 stays in BUILD, slot 2's answer is lost (created,
    // answered 500). Replacements (named …-r1) boot normally.
    m.server_creation_behavior(&w.session, "error", json!({}), r"^web-v1-\d+-0$")
        .await
        .unwrap();
    m.server_creation_behavior(
        &w.session,
        "build",
        json!({"duration": 1.0e9}),
        r"^web-v1-\d+-1$",
    )
    .await
    .unwrap();
    m.server_creation_behavior(
        &w.session,
        "false-negative",
        json!({"code": 500}),
        r"^web-v1-\d+-2$",
    )
    .await
    .unwrap();
    let plan = w
        .phoenix
        .plan_provision(&w.dep, &w.web, &World::release("v1"), None)
        .await
        .unwrap();
    let report = w.phoenix.apply(plan).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    let snap = w.phoenix.snapshot(&w.dep).await.unwrap();
    let pool = snap.pools_of(&w.web).next().unwrap();
    assert_eq!(pool.state, PoolState::Ready);
    let reasons: Vec<&str> = pool.discarded.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(pool.discarded.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("ERROR")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("BUILD")), "{reasons:?}");
    assert!(pool.discarded.iter().all(|d| d.terminated));
    assert_eq!(
        w.assert_no_orphans().await,
        3,
        "the lost launch was adopted, not repeated"
    );
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn provisioning_aborts_cleanly_when_every_launch_fails() {
    let m = mimic();
    let mut p = policy();
    p.provision.replace_budget = 1;
    let w = world("abort", 2, p).await;
    m.server_creation_behavior(&w.session, "error", json!({}), "^web-v1-.*")
        .await
        .unwrap();
    let plan = w
        .phoenix
        .plan_deploy(&w.dep, &w.web, &World::release("v1"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    let report = err.report().expect("it ran");
    assert_eq!(report.outcome, Outcome::Failed, "{err}");
    assert!(
        report.error.as_deref().unwrap_or("").contains("ERROR"),
        "{err}"
    );
    assert_eq!(w.assert_no_orphans().await, 0, "no server left behind");
    assert!(w.clb.members().await.unwrap().is_empty());
    let snap = w.phoenix.snapshot(&w.dep).await.unwrap();
    let pool = snap.pools_of(&w.web).next().unwrap();
    assert_eq!(pool.state, PoolState::Failed);
    // The budget is per step: both first launches fail in the same
    // round, one is replaced, the other finds the budget spent and fails
    // the step, and the replacement is never sent.
    assert_eq!(pool.discarded.len(), 2, "2 slots, a step budget of 1");
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn describe_calls_per_polling_round_do_not_grow_with_the_pool() {
    let m = mimic();
    let mut rounds = Vec::new();
    for size in [2, 8] {
        let mut p = policy();
        p.provision.server_deadline = Duration::from_secs(60);
        let w = world(&format!("budget{size}"), size, p).await;
        // Servers stay in BUILD until this test makes them ACTIVE, after
        // at least three polling rounds (Mimic's own clock is shared with
        // other tests, so it does not decide).
        m.server_creation_behavior(&w.session, "build", json!({"duration": 1.0e9}), "^web-.*")
            .await
            .unwrap();
        let flipper = {
            let (m, nova, session) = (m.clone(), w.nova.clone(), w.session.clone());
            tokio::spawn(async move {
                for _ in 0..300 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if nova.describe_stats().calls < 3 {
                        continue;
                    }
                    let servers = nova.list(&LabelSelector::new()).await.unwrap();
                    if servers.len() >= size {
                        let ids: Vec<(&str, &str)> =
                            servers.iter().map(|s| (s.id.as_str(), "ACTIVE")).collect();
                        m.set_server_status(&session, &ids).await.unwrap();
                        return true;
                    }
                }
                false
            })
        };
        w.nova.reset_describe_stats();
        let plan = w
            .phoenix
            .plan_provision(&w.dep, &w.web, &World::release("v1"), None)
            .await
            .unwrap();
        let report = w.phoenix.apply(plan).await.unwrap();
        assert!(flipper.await.unwrap(), "the servers were made ACTIVE");
        assert_eq!(report.outcome, Outcome::Succeeded);
        let stats = w.nova.describe_stats();
        assert!(stats.calls >= 3, "several polling rounds: {stats:?}");
        assert_eq!(stats.max_ids_per_call, size as u64);
        assert_eq!(
            stats.max_requests_per_call, 1,
            "one describe call per round for {size} servers: {stats:?}"
        );
        assert_eq!(stats.requests, stats.calls);
        rounds.push(stats);
        w.cleanup().await;
    }
    assert_eq!(
        rounds[0].max_requests_per_call,
        rounds[1].max_requests_per_call
    );
}

#[tokio::test]
#[ignore = "needs mimic: run the full test script"]
async fn images_are_released_without_tagging_public_images() {
    let w = world("images", 1, policy()).await;
    let snap = w.phoenix.snapshot(&w.dep).await.unwrap();
    assert_eq!(snap.releases.len(), 2);
    for r in snap.releases.values() {
        let image = r.image_for(&w.web).unwrap();
        let stored = w.phoenix.records().image(image).await.unwrap().unwrap();
        assert_eq!(stored.value.state, ImageState::Released);
    }
    assert_eq!(
        w.session
            .stats()
            .count("compute POST /images/{id}/metadata"),
        0
    );
    let _ = w.nova.capabilities();
    w.cleanup().await;
}
