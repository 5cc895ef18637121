//! What the AWS tests of the executor share: a site in moto (VPC, subnets,
//! a load balancer with a listener over two target groups) behind the
//! fault layer, a Phoenix wired to it, a deployment with one role, and
//! releases on moto's stock AMI certified by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phoenix_config::ConfigSet;
use phoenix_core::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName};
use phoenix_core::memory_store::MemoryStore;
use phoenix_core::model::{Deployment, Environment, ImageState, Role, TestEvidence};
use phoenix_core::policy::Policy;
use phoenix_core::ports::{Compute, Images, LoadBalancer};
use phoenix_core::retry::RetryPolicy;
use phoenix_core::time::{Clock, SystemClock};
use phoenix_core::Phoenix;
use phoenix_providers::aws::testing::{stock_ami, FaultProxy, Faults, RunningProbe, Site};
use phoenix_providers::aws::{AwsClient, Ec2Compute, Ec2Images};

pub const NEEDS_MOTO: &str = "PHOENIX_MOTO_URL is set by scripts/test (scripts/peers/moto.sh)";

/// A client of `url` (moto, or the fault layer in front of it).
pub fn client(url: &str) -> AwsClient {
    phoenix_providers::aws::testing::moto_client(url, 8).unwrap()
}

/// moto's address.
pub fn moto() -> String {
    std::env::var("PHOENIX_MOTO_URL").expect(NEEDS_MOTO)
}

/// The site, the fault layer and a Phoenix on them.
pub struct AwsWorld {
    /// moto itself (the truth, not through the faults).
    pub moto: String,
    pub proxy: FaultProxy,
    /// A client through the fault layer.
    pub client: AwsClient,
    pub site: Site,
    pub ec2: Arc<Ec2Compute>,
    pub lb: Arc<dyn LoadBalancer>,
    pub phoenix: Phoenix,
    pub shop: DeploymentId,
    pub web: RoleName,
}

/// Makes the compute port on the EC2 adapter.
pub type MakeCompute<'a> = Box<dyn FnOnce(Arc<Ec2Compute>) -> Arc<dyn Compute> + 'a>;
/// Makes the balancer port on the site.
pub type MakeBalancer<'a> = Box<dyn FnOnce(&AwsClient, &Site) -> Arc<dyn LoadBalancer> + 'a>;

/// How a world is made.
pub struct WorldSpec<'a> {
    /// Names the site and the deployment (unique per test run).
    pub name: &'a str,
    pub faults: Faults,
    pub desired: usize,
    /// The compute port on the EC2 adapter (instances or groups).
    pub compute: MakeCompute<'a>,
    /// The balancer port on the site.
    pub balancer: MakeBalancer<'a>,
    /// Changes to the test policy (fast polls, no bake, short drains).
    pub policy: Box<dyn FnOnce(Policy) -> Policy + 'a>,
    /// Releases to create, each on the stock AMI.
    pub releases: &'a [&'a str],
}

impl AwsWorld {
    pub async fn new(spec: WorldSpec<'_>) -> Self {
        let moto = moto();
        let proxy = FaultProxy::start(&moto, spec.faults).await.unwrap();
        let client = client(&proxy.url());
        // Unique in a moto that outlives one run (a failed test leaves its
        // site behind): at most 28 characters.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let site_name = format!("{:.21}-{:06x}", spec.name, nanos & 0xff_ffff);
        let site = Site::create(&client, &site_name, 8080).await.unwrap();
        let ec2 = Arc::new(
            Ec2Compute::builder(client.clone())
                .subnets(site.subnets.clone())
                .client_token_honoured(false)
                .consistency_window(Duration::from_secs(2))
                .build(),
        );
        let compute = (spec.compute)(ec2.clone());
        let images = Arc::new(Ec2Images::builder(client.clone()).build());
        let lb = (spec.balancer)(&client, &site);
        let boot = ConfigSet::from_files(
            spec.name,
            [
                ("base.toml", "[env]\nRELEASE = \"{{ release }}\"\n"),
                ("env/prod.toml", ""),
                ("role/web.toml", ""),
            ],
        )
        .unwrap();
        let mut policy = Policy::default();
        policy.provision.poll_interval = Duration::from_millis(200);
        policy.provision.replace_budget = 3;
        // A server that never comes up fails the test in a minute, not in
        // the default quarter of an hour.
        policy.provision.server_deadline = Duration::from_secs(60);
        policy.rollout.bake_time = Duration::ZERO;
        policy.rollout.drain = Duration::from_millis(200);
        policy.retry = RetryPolicy {
            initial_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        };
        let phoenix = Phoenix::builder()
            .compute(compute)
            .images(images.clone())
            .balancer(lb.clone())
            .boot_config(Arc::new(boot))
            .probe(Arc::new(RunningProbe(ec2.clone())))
            .store(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
            .policy((spec.policy)(policy))
            .holder(spec.name)
            .build()
            .unwrap();
        let shop = DeploymentId::new(spec.name.to_lowercase()).unwrap();
        let web = RoleName::new("web").unwrap();
        phoenix
            .register(
                &Deployment::new(
                    shop.clone(),
                    Environment {
                        name: EnvironmentName::new("prod").unwrap(),
                        production: true,
                        production_like: false,
                    },
                )
                .with_role(Role {
                    name: web.clone(),
                    desired: spec.desired,
                    flavor: None,
                    port: 8080,
                }),
            )
            .await
            .unwrap();
        let ami = stock_ami(&client).await.unwrap();
        let mut image = images.get(&ami).await.unwrap();
        image.state = ImageState::Certified;
        image.evidence.push(TestEvidence {
            suite: "acceptance".into(),
            at: SystemClock.now(),
            passed: true,
            details: "stock AMI".into(),
            digest: image.digest.clone(),
            log: None,
        });
        phoenix.register_image(&image).await.unwrap();
        for label in spec.releases {
            let mut by_role = BTreeMap::new();
            by_role.insert(web.clone(), ami.clone());
            phoenix
                .create_release(&shop, ReleaseLabel::new(*label).unwrap(), by_role)
                .await
                .unwrap();
        }
        Self {
            moto,
            proxy,
            client,
            site,
            ec2,
            lb,
            phoenix,
            shop,
            web,
        }
    }

    /// A client of moto itself, past the fault layer.
    pub fn direct(&self) -> Ec2Compute {
        Ec2Compute::builder(client(&self.moto)).build()
    }
}
