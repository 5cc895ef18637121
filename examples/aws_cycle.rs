//! A full Phoenix cycle on AWS: AMIs baked from a builder instance and
//! certified on evidence, EC2 instances launched from them with their
//! configuration as user data (phoenix-config's EC2 renderer), behind an
//! ELBv2 listener over two target groups (`Elbv2BlueGreen`), or, with
//! `--groups`, in one Auto Scaling group per pool. The blue-green switch
//! and the rollback are atomic (`cutover: switch`): the new pool is
//! registered in the idle target group, found healthy there by ELBv2 and
//! baked, then one weighted `ModifyListener` moves all traffic; with
//! `--batched`, members are attached and detached in the live group batch
//! by batch instead. It
//! bakes v1 and v2, deploys v1, switches blue-green to v2, rolls back to
//! v1, refreshes every server (a rolling replacement of old servers), and
//! reaps; for every operation it prints the API calls made (by action) and
//! the describe calls per polling round.
//!
//! Against moto (as `scripts/peers/moto.sh` starts it), through the fault
//! layer that gives moto EC2's pending states, throttling and lag:
//!
//! ```text
//! PHOENIX_MOTO_URL=http://127.0.0.1:5000 \
//!   cargo run -p examples --features aws --example aws_cycle -- --servers 10 --throttle 0.2
//! ```
//!
//! Against a real account (`--real`; it launches and terminates instances
//! and bakes and deregisters two AMIs): the standard AWS configuration
//! (`AWS_PROFILE`, `AWS_REGION`, …), and `PHOENIX_AWS_LISTENER`,
//! `PHOENIX_AWS_TARGET_GROUPS=<blue arn>,<green arn>`, `PHOENIX_AWS_SUBNETS`
//! (comma-separated), `PHOENIX_AWS_BASE_AMI` and optionally
//! `PHOENIX_AWS_INSTANCE_TYPE` (default `t3.micro`). Instances there must
//! pass the target groups' health checks.

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phoenix_config::ConfigSet;
use phoenix_core::id::{
    DeploymentId, EnvironmentName, IdempotencyToken, ImageId, OperationId, PoolId, ReleaseLabel,
    RoleName, ServerId,
};
use phoenix_core::labels::{LabelSelector, Labels};
use phoenix_core::memory_store::MemoryStore;
use phoenix_core::model::{Deployment, Environment, ImageState, Role, ServerStatus, TestEvidence};
use phoenix_core::policy::{Cutover, Policy};
use phoenix_core::ports::{BakeRequest, BakeSource, BootPayload, Compute, Images, LaunchRequest};
use phoenix_core::retry::RetryPolicy;
use phoenix_core::time::{Clock, SystemClock};
use phoenix_core::Phoenix;
use phoenix_lb::elbv2::Elbv2BlueGreen;
use phoenix_providers::aws::credentials::static_credentials;
use phoenix_providers::aws::testing::{stock_ami, FaultProxy, Faults, RunningProbe, Site};
use phoenix_providers::aws::{AsgCompute, AwsClient, AwsConfig, Ec2Compute, Ec2Images};
use secrecy::SecretString;

const BASE_TOML: &str = r#"
[values]
port = 8080

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
"#;

const USAGE: &str = "usage: aws_cycle [--servers N] [--throttle P] [--groups] [--batched] [--real]

  --servers N    servers in the role (default 3)
  --groups       one Auto Scaling group per pool (default: Phoenix launches
                 each instance)
  --throttle P   on moto: share of calls the fault layer throttles (default 0)
  --batched      blue-green and rollback attach and detach in batches
                 (default: one atomic ModifyListener switch)
  --real         a real account instead of moto (see the example's docs)

On moto: PHOENIX_MOTO_URL=http://127.0.0.1:5000 (scripts/peers/moto.sh starts one;
or: python3 -m venv /tmp/moto && /tmp/moto/bin/pip install 'moto[server]' &&
    /tmp/moto/bin/moto_server -H 127.0.0.1 -p 5000 &)";

struct Args {
    servers: u32,
    throttle: f64,
    groups: bool,
    batched: bool,
    real: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        servers: 3,
        throttle: 0.0,
        groups: false,
        batched: false,
        real: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--servers" => {
                out.servers = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or("--servers takes a number of at least 1")?;
            }
            "--throttle" => {
                out.throttle = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|p: &f64| (0.0..1.0).contains(p))
                    .ok_or("--throttle takes a share from 0 to below 1")?;
            }
            "--real" => out.real = true,
            "--groups" => out.groups = true,
            "--batched" => out.batched = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

/// What one operation cost.
struct Meter<'a> {
    client: &'a AwsClient,
    ec2: &'a Ec2Compute,
    proxy: Option<&'a FaultProxy>,
}

impl Meter<'_> {
    async fn run<T, F>(&self, name: &str, op: F) -> Result<T, Box<dyn Error>>
    where
        F: Future<Output = Result<T, Box<dyn Error>>>,
    {
        println!("\n== {name}");
        self.client.stats().reset();
        self.ec2.reset_describe_stats();
        let throttled_before = self.throttled();
        let started = Instant::now();
        let out = op.await;
        let took = started.elapsed();
        let calls = self.client.stats().snapshot();
        let total: u64 = calls.values().sum();
        let verdict = if out.is_ok() { "done" } else { "FAILED" };
        println!("   {verdict} in {took:.2?}; {total} API calls:");
        for (call, n) in &calls {
            println!("   {n:>5}  {call}");
        }
        let d = self.ec2.describe_stats();
        if d.calls > 0 {
            println!(
                "   describe: {} polling round(s), {} DescribeInstances, at most {} per round \
                 (for up to {} instances a round)",
                d.calls, d.requests, d.max_requests_per_call, d.max_ids_per_call
            );
        }
        let throttled = self.throttled() - throttled_before;
        if throttled > 0 {
            println!("   the fault layer throttled {throttled} call(s); all were retried");
        }
        out
    }

    fn throttled(&self) -> u64 {
        self.proxy.map_or(0, |p| {
            p.injected()
                .iter()
                .filter(|(k, _)| k.starts_with("throttle"))
                .map(|(_, n)| n)
                .sum()
        })
    }
}

fn ok<T, E: Error + 'static>(r: Result<T, E>) -> Result<T, Box<dyn Error>> {
    r.map_err(|e| Box::new(e) as Box<dyn Error>)
}

/// Where the cycle runs.
struct Place {
    client: AwsClient,
    proxy: Option<FaultProxy>,
    site: Option<Site>,
    listener: String,
    groups: [String; 2],
    subnets: Vec<String>,
    base: ImageId,
    instance_type: String,
}

fn env(name: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is not set (see the example's docs)").into())
}

async fn place(a: &Args) -> Result<Place, Box<dyn Error>> {
    if a.real {
        let client = AwsClient::new(AwsConfig::from_env().await?)?;
        let groups: Vec<String> = env("PHOENIX_AWS_TARGET_GROUPS")?
            .split(',')
            .map(str::to_owned)
            .collect();
        let [blue, green] = <[String; 2]>::try_from(groups)
            .map_err(|_| "PHOENIX_AWS_TARGET_GROUPS names two target groups")?;
        return Ok(Place {
            client,
            proxy: None,
            site: None,
            listener: env("PHOENIX_AWS_LISTENER")?,
            groups: [blue, green],
            subnets: env("PHOENIX_AWS_SUBNETS")?
                .split(',')
                .map(str::to_owned)
                .collect(),
            base: ImageId::new(env("PHOENIX_AWS_BASE_AMI")?)?,
            instance_type: std::env::var("PHOENIX_AWS_INSTANCE_TYPE")
                .unwrap_or_else(|_| "t3.micro".into()),
        });
    }
    let moto = env("PHOENIX_MOTO_URL")?;
    // moto is instant and always healthy: the fault layer gives it EC2's
    // pending state and, when asked, throttling.
    let proxy = FaultProxy::start(
        &moto,
        Faults {
            throttle: a.throttle,
            pending_for: Duration::from_millis(600),
            seed: 7,
            ..Faults::default()
        },
    )
    .await?;
    let client = AwsClient::new(
        AwsConfig::builder()
            .region("eu-west-1")
            .endpoint_url(proxy.url())
            .credentials(static_credentials("AKIDMOTO", "moto-secret-key", None))
            .retry(RetryPolicy {
                initial_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(2),
                max_retries: 8,
                jitter_seed: None,
            })
            .build()?,
    )?;
    let name = format!("cycle-{}", std::process::id() % 100_000);
    let site = Site::create(&client, &name, 8080).await?;
    let base = stock_ami(&client).await?;
    Ok(Place {
        listener: site.listener.clone(),
        groups: site.groups.clone(),
        subnets: site.subnets.clone(),
        site: Some(site),
        client,
        proxy: Some(proxy),
        base,
        instance_type: "t3.micro".into(),
    })
}

async fn run(a: Args) -> Result<(), Box<dyn Error>> {
    let p = place(&a).await?;
    println!(
        "cloud: {} (region {}, EC2 at {}), {} server(s), {}",
        if a.real {
            "AWS"
        } else {
            "moto through the fault layer"
        },
        p.client.config().region(),
        p.client
            .config()
            .endpoint(phoenix_providers::aws::Service::Ec2),
        a.servers,
        if a.groups {
            "one Auto Scaling group per pool"
        } else {
            "instances launched one by one"
        }
    );
    let ec2 = Arc::new(
        Ec2Compute::builder(p.client.clone())
            .instance_type(p.instance_type.clone())
            .subnets(p.subnets.clone())
            // moto ignores ClientToken; real EC2 honours it.
            .client_token_honoured(a.real)
            .consistency_window(Duration::from_secs(if a.real { 120 } else { 5 }))
            .build(),
    );
    let compute: Arc<dyn Compute> = if a.groups {
        Arc::new(
            AsgCompute::builder((*ec2).clone())
                .poll(Duration::from_millis(if a.real { 5_000 } else { 300 }))
                .build(),
        )
    } else {
        ec2.clone()
    };
    let images = Arc::new(
        Ec2Images::builder(p.client.clone())
            .poll(Duration::from_millis(if a.real { 15_000 } else { 200 }))
            .build(),
    );
    let lb = Arc::new(
        Elbv2BlueGreen::new(p.client.clone(), &p.listener, &p.groups[0], &p.groups[1])
            .healthy_within(Duration::from_secs(300), Duration::from_millis(500)),
    );
    let m = Meter {
        client: &p.client,
        ec2: &ec2,
        proxy: p.proxy.as_ref(),
    };
    let boot = Arc::new(ConfigSet::from_files(
        "aws-cycle",
        [
            ("base.toml", BASE_TOML),
            ("env/prod.toml", ""),
            ("role/web.toml", ""),
        ],
    )?);
    let mut policy = Policy::default();
    policy.rollout.cutover = if a.batched {
        Cutover::Batched
    } else {
        Cutover::Switch
    };
    if !a.real {
        policy.provision.poll_interval = Duration::from_millis(300);
        policy.rollout.bake_time = Duration::ZERO;
        policy.rollout.drain = Duration::from_secs(1);
        policy.rollout.batch_size = (a.servers as usize / 5).max(1);
        policy.rollout.max_surge = policy.rollout.batch_size * 2;
        // A refresh replaces the live pool and the standby.
        policy.refresh.max_replacements = 2 * a.servers as usize;
        policy.retry = RetryPolicy {
            initial_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        };
    }
    let phoenix = Phoenix::builder()
        .compute(compute.clone())
        .images(images.clone())
        .balancer(lb.clone())
        .boot_config(boot.clone())
        // moto's instances run nothing: there, healthy means running in EC2
        // (the balancer's own checks are the evidence on a real account).
        .probe(Arc::new(RunningProbe(ec2.clone())))
        .store(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
        .policy(policy)
        .holder("aws-cycle")
        .build()?;
    let shop = DeploymentId::new("shop")?;
    let web = RoleName::new("web")?;

    let result = cycle(&m, &phoenix, &ec2, &images, &p, &a, &shop, &web).await;
    if result.is_ok() {
        use phoenix_core::ports::LoadBalancer;
        let members = lb.members().await?;
        println!("members behind the listener: {}", members.len());
        for m in members {
            println!("   {m}");
        }
    }
    let teardown = m
        .run("tear down (instances, AMIs, balancer)", async {
            let left: Vec<ServerId> = ok(compute.list(&LabelSelector::deployment(&shop)).await)?
                .into_iter()
                .filter(|s| s.status != ServerStatus::Deleted)
                .map(|s| s.id)
                .collect();
            // In one call (with groups: their groups and templates too).
            for r in compute.terminate_many(&left).await {
                ok(r)?;
            }
            for img in ok(images.list().await)?
                .iter()
                .filter(|i| i.name == "aws-cycle")
            {
                ok(images.delete(&img.id).await)?;
            }
            if let Some(site) = &p.site {
                ok(site.delete(&p.client).await)?;
            }
            Ok(())
        })
        .await;
    result.and(teardown)
}

/// Bakes an AMI from a builder instance of `base`.
async fn bake(
    ec2: &Ec2Compute,
    images: &Ec2Images,
    base: &ImageId,
    version: &str,
) -> Result<ImageId, Box<dyn Error>> {
    let pool = PoolId::new(format!("builder-{version}"))?;
    let op = OperationId::new(format!("bake-{}-{version}", std::process::id()))?;
    let token = IdempotencyToken::derive(&op, &pool, 0, 0);
    let user_data = "#cloud-config\nruncmd: [\"install-app\"]\n";
    use base64::Engine;
    let builder = ec2
        .launch(&[LaunchRequest {
            name: format!("builder-{version}"),
            image: base.clone(),
            flavor: None,
            boot: BootPayload::AwsUserData {
                base64: SecretString::from(
                    base64::engine::general_purpose::STANDARD.encode(user_data),
                ),
            },
            labels: {
                let mut l = Labels::new();
                l.insert("phoenix-builder", version);
                l.insert(phoenix_core::labels::keys::TOKEN, token.as_str());
                l
            },
            token,
        }])
        .await
        .into_iter()
        .next()
        .ok_or("no launch answer")??;
    let baked = images
        .bake(&BakeRequest {
            source: BakeSource::Server(builder.id.clone()),
            name: "aws-cycle".into(),
            version: version.into(),
            base: Some(base.to_string()),
            properties: BTreeMap::new(),
        })
        .await;
    ok(ec2.terminate(&builder.id).await)?;
    Ok(ok(baked)?.id)
}

#[allow(clippy::too_many_arguments)]
async fn cycle(
    m: &Meter<'_>,
    phoenix: &Phoenix,
    ec2: &Ec2Compute,
    images: &Ec2Images,
    p: &Place,
    a: &Args,
    shop: &DeploymentId,
    web: &RoleName,
) -> Result<(), Box<dyn Error>> {
    m.run(
        &format!(
            "register deployment shop (role web: {} servers on :8080)",
            a.servers
        ),
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
                desired: a.servers as usize,
                flavor: None,
                port: 8080,
            });
            ok(phoenix.register(&deployment).await)
        },
    )
    .await?;

    let mut amis = Vec::new();
    for version in ["v1", "v2"] {
        let id = m
            .run(
                &format!("bake AMI {version} from a builder instance, certify it"),
                async {
                    let id = bake(ec2, images, &p.base, version).await?;
                    let mut image = ok(images.get(&id).await)?;
                    // The acceptance suite's verdict, as evidence for this AMI.
                    image.state = ImageState::Certified;
                    image.evidence.push(TestEvidence {
                        suite: "image-acceptance".into(),
                        at: SystemClock.now(),
                        passed: true,
                        details: format!("{version} accepted"),
                        digest: image.digest.clone(),
                        log: None,
                    });
                    ok(phoenix.register_image(&image).await)?;
                    println!("   AMI {id} ({})", image.name);
                    Ok(id)
                },
            )
            .await?;
        amis.push(id);
    }
    for (label, image) in ["v1", "v2"].into_iter().zip(&amis) {
        let mut by_role = BTreeMap::new();
        by_role.insert(web.clone(), image.clone());
        ok(phoenix
            .create_release(shop, ReleaseLabel::new(label)?, by_role)
            .await)?;
    }
    let v1 = ReleaseLabel::new("v1")?;
    let v2 = ReleaseLabel::new("v2")?;
    let apply = |plan| async move {
        let report = ok(phoenix.apply(plan).await)?;
        println!("   {}: {:?}", report.summary, report.outcome);
        Ok::<_, Box<dyn Error>>(())
    };
    m.run(
        "deploy v1 (launch, smoke-test, attach behind the listener)",
        async { apply(ok(phoenix.plan_deploy(shop, web, &v1).await)?).await },
    )
    .await?;
    m.run("blue-green to v2", async {
        apply(ok(phoenix.plan_deploy(shop, web, &v2).await)?).await
    })
    .await?;
    m.run("rollback to v1", async {
        apply(ok(phoenix.plan_rollback(shop, web, None).await)?).await
    })
    .await?;
    m.run(
        "rolling refresh: replace every server older than 0 s",
        async {
            let mut policy = phoenix.policy().clone();
            policy.refresh.max_age = Duration::ZERO;
            let plan = ok(phoenix.plan_refresh_with(shop, web, &policy).await)?;
            if std::env::var_os("PHOENIX_SHOW_PLANS").is_some() {
                println!("{plan}");
            }
            apply(plan).await
        },
    )
    .await?;
    m.run("reap (keep = 0: the v2 standby goes)", async {
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
    let a = match args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("aws_cycle: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !a.real && std::env::var("PHOENIX_MOTO_URL").is_err() {
        eprintln!("aws_cycle needs moto or --real.\n\n{USAGE}");
        return ExitCode::from(2);
    }
    match run(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aws_cycle: {}", phoenix_core::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
