//! A full Phoenix cycle on Rackspace: Nova servers from certified images
//! with their configuration (phoenix-config's OpenStack renderer: user
//! data, metadata, config drive), behind a Cloud Load Balancer, all over
//! one authenticated session. It registers a deployment, releases v1 and
//! v2, deploys v1, switches blue-green to v2, rolls back to v1, reaps, and
//! tears down; for every operation it prints the API calls made (by
//! method and path template) and the describe calls per polling round.
//!
//! Against Mimic (Rackspace's mock, as `scripts/peers/mimic.sh` starts it):
//!
//! ```text
//! PHOENIX_MIMIC_URL=http://127.0.0.1:8900 \
//!   cargo run -p examples --features rackspace --example rackspace_cycle
//! ```
//!
//! Against a real account (it creates a balancer and six servers, and
//! deletes them at the end): `PHOENIX_RACKSPACE_REAL=1`, the `OS_*`
//! variables or `OS_CLOUD` (see `CloudConfig::from_env`),
//! `PHOENIX_IMAGES=<v1 image id>,<v2 image id>` and optionally
//! `PHOENIX_FLAVOR` (default `general1-1`). Servers there must answer
//! HTTP on port 80 (`/` for health and smoke).

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_config::ConfigSet;
use phoenix_core::id::{DeploymentId, EnvironmentName, ImageId, ReleaseLabel, RoleName};
use phoenix_core::labels::LabelSelector;
use phoenix_core::memory_store::MemoryStore;
use phoenix_core::model::{Deployment, Environment, ImageState, Role, ServerStatus, TestEvidence};
use phoenix_core::policy::Policy;
use phoenix_core::ports::{Check, Compute, Images, PortError, Probe, ProbeOutcome, ProbeTarget};
use phoenix_core::retry::RetryPolicy;
use phoenix_core::time::{Clock, SystemClock};
use phoenix_core::Phoenix;
use phoenix_lb::rackspace_clb::RackspaceClb;
use phoenix_providers::openstack::testing::Mimic;
use phoenix_providers::openstack::{
    CloudConfig, Credentials, ImageApi, NovaCompute, OpenStackImages, Session,
};
use serde_json::json;

const BASE_TOML: &str = r#"
[values]
port = 80

[env]
PORT = "{{ values.port }}"
RELEASE = "{{ release }}"

[labels]
team = "shop"

[files.motd]
path = "/etc/motd"
template = "{{ server_name }}: {{ role }} {{ release }} in {{ environment }}\n"

[commands.start]
argv = ["systemctl", "start", "shop-{{ role }}"]

[openstack]
config_drive = true
"#;

/// Where the cycle runs.
enum Cloud {
    Mimic(String),
    Real { images: Vec<String>, flavor: String },
}

/// Mimic's servers run nothing: there, healthy means ACTIVE in Nova.
struct NovaActive(Arc<NovaCompute>);

#[async_trait]
impl Probe for NovaActive {
    async fn check(&self, target: &ProbeTarget, _check: Check) -> Result<ProbeOutcome, PortError> {
        let status = self.0.get(&target.server).await?.map(|s| s.status);
        Ok(ProbeOutcome {
            passed: status == Some(ServerStatus::Active),
            detail: format!("{status:?}"),
        })
    }
}

fn cloud() -> Option<Cloud> {
    if let Ok(url) = std::env::var("PHOENIX_MIMIC_URL") {
        if !url.is_empty() {
            return Some(Cloud::Mimic(url));
        }
    }
    if std::env::var("PHOENIX_RACKSPACE_REAL").is_ok_and(|v| v == "1") {
        let images = std::env::var("PHOENIX_IMAGES")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let flavor = std::env::var("PHOENIX_FLAVOR").unwrap_or_else(|_| "general1-1".into());
        return Some(Cloud::Real { images, flavor });
    }
    None
}

fn instructions() {
    eprintln!(
        "rackspace_cycle needs a cloud. Start Mimic (Rackspace's mock):\n\n\
         \x20 python3 -m venv /tmp/mimic && /tmp/mimic/bin/pip install mimic 'attrs<24' 'twisted<23'\n\
         \x20 /tmp/mimic/bin/twistd -n mimic --listen tcp:8900:interface=127.0.0.1 &\n\
         \x20 PHOENIX_MIMIC_URL=http://127.0.0.1:8900 cargo run -p examples --features rackspace --example rackspace_cycle\n\n\
         or use a real account: PHOENIX_RACKSPACE_REAL=1 with OS_CLOUD or OS_AUTH_URL/OS_USERNAME/OS_API_KEY/OS_REGION_NAME,\n\
         and PHOENIX_IMAGES=<v1 image>,<v2 image> (it creates and then deletes a balancer and six servers)."
    );
}

/// What one operation cost.
struct Meter<'a> {
    session: &'a Session,
    nova: &'a NovaCompute,
}

impl Meter<'_> {
    async fn run<T, F>(&self, name: &str, op: F) -> Result<T, Box<dyn Error>>
    where
        F: Future<Output = Result<T, Box<dyn Error>>>,
    {
        println!("\n== {name}");
        self.session.stats().reset();
        self.nova.reset_describe_stats();
        let started = Instant::now();
        let out = op.await;
        let took = started.elapsed();
        let calls = self.session.stats().snapshot();
        let total: u64 = calls.values().sum();
        let verdict = if out.is_ok() { "done" } else { "FAILED" };
        println!("   {verdict} in {took:.2?}; {total} API calls:");
        for (call, n) in &calls {
            println!("   {n:>4}  {call}");
        }
        let d = self.nova.describe_stats();
        if d.calls > 0 {
            println!(
                "   describe: {} polling round(s), {} GET /servers/detail, at most {} per round \
                 (for up to {} servers a round)",
                d.calls, d.requests, d.max_requests_per_call, d.max_ids_per_call
            );
        }
        out
    }
}

fn ok<T, E: Error + 'static>(r: Result<T, E>) -> Result<T, Box<dyn Error>> {
    r.map_err(|e| Box::new(e) as Box<dyn Error>)
}

async fn run(cloud: Cloud) -> Result<(), Box<dyn Error>> {
    let mimic = matches!(cloud, Cloud::Mimic(_));
    let config = match &cloud {
        Cloud::Mimic(url) => CloudConfig::builder()
            .auth_url(format!("{}/identity/v2.0", url.trim_end_matches('/')))
            .credentials(Credentials::rackspace_api_key(
                format!("rackspace-cycle-{}", std::process::id()),
                "any-api-key",
            ))
            .region("ORD")
            .build()?,
        Cloud::Real { .. } => CloudConfig::from_env()?,
    };
    println!(
        "cloud: {} (identity {}, region {})",
        if mimic { "Mimic" } else { "Rackspace" },
        config.auth_url(),
        config.region().unwrap_or("default")
    );
    let retry = RetryPolicy {
        initial_delay: Duration::from_millis(if mimic { 50 } else { 1000 }),
        ..RetryPolicy::default()
    };
    let session = Session::builder(config).retry(retry.clone()).build()?;
    let flavor = match &cloud {
        Cloud::Mimic(_) => "2".to_owned(),
        Cloud::Real { flavor, .. } => flavor.clone(),
    };
    let nova = Arc::new(
        NovaCompute::builder(session.clone())
            .flavor(flavor.clone())
            // Rackspace Cloud Servers neither stops nor starts servers,
            // and allows 40 metadata items.
            .stop_start(false)
            .metadata_items(40)
            .build(),
    );
    // Releases use public base images here, which the account cannot tag.
    let images = Arc::new(
        OpenStackImages::builder(session.clone())
            .api(ImageApi::NovaImages)
            .write_properties(false)
            .build(),
    );
    let m = Meter {
        session: &session,
        nova: &nova,
    };

    let lb_id = m
        .run("create a Cloud Load Balancer (HTTP :80)", async {
            ok(
                RackspaceClb::create_balancer(&session, "phoenix-rackspace-cycle", "HTTP", 80, &[])
                    .await,
            )
        })
        .await?;
    let clb = Arc::new(
        RackspaceClb::builder(session.clone(), lb_id)
            .servers(nova.clone())
            .build(),
    );
    let boot = Arc::new(ConfigSet::from_files(
        "rackspace-cycle",
        [
            ("base.toml", BASE_TOML),
            ("env/prod.toml", ""),
            ("role/web.toml", ""),
        ],
    )?);
    let probe: Arc<dyn Probe> = if mimic {
        Arc::new(NovaActive(nova.clone()))
    } else {
        Arc::new(phoenix_lb::HttpProbe::new())
    };
    let mut policy = Policy {
        retry,
        ..Policy::default()
    };
    if mimic {
        policy.provision.poll_interval = Duration::from_millis(200);
        policy.rollout.bake_time = Duration::ZERO;
        policy.rollout.drain = Duration::from_millis(500);
    }
    let phoenix = Phoenix::builder()
        .compute(nova.clone())
        .images(images.clone())
        .balancer(clb.clone())
        .boot_config(boot)
        .probe(probe)
        .store(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
        .policy(policy)
        .holder("rackspace-cycle")
        .build()?;

    let shop = DeploymentId::new("shop")?;
    let web = RoleName::new("web")?;
    // On Mimic, servers take 2 of its seconds to build (its clock moves
    // only when told to): the executor polls several rounds, as on a
    // real cloud.
    let ticker = match &cloud {
        Cloud::Mimic(url) => {
            let mimic = Mimic::new(url.clone());
            m.run("Mimic: servers build for 2 s of Mimic's clock", async {
                ok(mimic
                    .server_creation_behavior(&session, "build", json!({"duration": 2.0}), ".*")
                    .await)
            })
            .await?;
            Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if mimic.tick(1.0).await.is_err() {
                        return;
                    }
                }
            }))
        }
        Cloud::Real { .. } => None,
    };
    let result = cycle(&m, &phoenix, &images, &cloud, &shop, &web, &flavor).await;
    if let Some(t) = ticker {
        t.abort();
    }

    let teardown = m
        .run("tear down (servers and balancer)", async {
            for s in ok(nova.list(&LabelSelector::deployment(&shop)).await)? {
                ok(nova.terminate(&s.id).await)?;
            }
            ok(RackspaceClb::delete_balancer(&session, lb_id).await)
        })
        .await;
    result.and(teardown)
}

async fn cycle(
    m: &Meter<'_>,
    phoenix: &Phoenix,
    images: &OpenStackImages,
    cloud: &Cloud,
    shop: &DeploymentId,
    web: &RoleName,
    flavor: &str,
) -> Result<(), Box<dyn Error>> {
    m.run(
        "register deployment shop (role web: 3 servers on :80)",
        async {
            let deployment = Deployment::new(
                shop.clone(),
                Environment {
                    name: EnvironmentName::new("prod")?,
                    production: true,
                    production_like: false,
                },
            )
            .with_role(Role {
                name: web.clone(),
                desired: 3,
                flavor: Some(flavor.to_owned()),
                port: 80,
            });
            ok(phoenix.register(&deployment).await)
        },
    )
    .await?;

    let chosen: Vec<ImageId> = m
        .run("images: list, record two as certified", async {
            let listed = ok(images.list().await)?;
            let wanted: Vec<String> = match cloud {
                Cloud::Mimic(_) => {
                    let mut linux: Vec<String> = listed
                        .iter()
                        .filter(|i| i.name.contains("Ubuntu") || i.name.contains("Debian"))
                        .map(|i| i.id.to_string())
                        .collect();
                    linux.extend(listed.iter().map(|i| i.id.to_string()));
                    linux.dedup();
                    linux.into_iter().take(2).collect()
                }
                Cloud::Real { images, .. } => images.clone(),
            };
            if wanted.len() < 2 {
                return Err("two images are needed (PHOENIX_IMAGES=<v1>,<v2>)".into());
            }
            let mut chosen = Vec::new();
            for id in wanted.iter().take(2) {
                let mut image = listed
                    .iter()
                    .find(|i| i.id.as_str() == id)
                    .cloned()
                    .ok_or_else(|| format!("image {id} is not in the image list"))?;
                println!("   image {} ({})", image.id, image.name);
                // The bake pipeline's certification, as evidence on record.
                image.state = ImageState::Certified;
                image.evidence.push(TestEvidence {
                    suite: "image-acceptance".into(),
                    at: SystemClock.now(),
                    passed: true,
                    details: "base image accepted for the example".into(),
                    digest: image.digest.clone(),
                    log: None,
                });
                ok(phoenix.register_image(&image).await)?;
                chosen.push(image.id);
            }
            Ok(chosen)
        })
        .await?;

    for (label, image) in ["v1", "v2"].into_iter().zip(&chosen) {
        m.run(&format!("release {label}"), async {
            let mut by_role = BTreeMap::new();
            by_role.insert(web.clone(), image.clone());
            ok(phoenix
                .create_release(shop, ReleaseLabel::new(label)?, by_role)
                .await)
            .map(|_| ())
        })
        .await?;
    }

    let v1 = ReleaseLabel::new("v1")?;
    let v2 = ReleaseLabel::new("v2")?;
    let apply = |plan| async move {
        let report = ok(phoenix.apply(plan).await)?;
        println!("   {}: {:?}", report.summary, report.outcome);
        Ok::<_, Box<dyn Error>>(())
    };
    m.run("deploy v1 (provision, smoke-test, attach)", async {
        apply(ok(phoenix.plan_deploy(shop, web, &v1).await)?).await
    })
    .await?;
    m.run("blue-green to v2", async {
        apply(ok(phoenix.plan_deploy(shop, web, &v2).await)?).await
    })
    .await?;
    m.run("rollback to v1 (the hot standby)", async {
        apply(ok(phoenix.plan_rollback(shop, web, None).await)?).await
    })
    .await?;
    m.run("reap (retention keep = 0: the v2 standby goes)", async {
        let mut policy = phoenix.policy().clone();
        policy.retention.keep = 0;
        apply(ok(phoenix.plan_reap_with(shop, web, &policy).await)?).await
    })
    .await?;

    let snap = phoenix.snapshot(shop).await?;
    println!("\npools:");
    for pool in snap.pools_of(web) {
        println!(
            "   {} release {} {:?}: {} slot(s), {} discarded",
            pool.id,
            pool.release,
            pool.state,
            pool.slots.len(),
            pool.discarded.len()
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let Some(cloud) = cloud() else {
        instructions();
        return ExitCode::from(2);
    };
    match run(cloud).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rackspace_cycle: {}", phoenix_core::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
