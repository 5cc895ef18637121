//! A full Phoenix cycle on VMware vSphere: templates baked from a builder
//! VM and certified on evidence, VMs cloned from them with their
//! configuration as `guestinfo.*` (phoenix-config's vSphere renderer),
//! behind HAProxy (its runtime API: members added, drained and deleted
//! without reloads). It bakes v1 and v2, provisions v1, switches
//! blue-green to v2, rolls back to v1 (the hot standby), powers v2 off to
//! a cold standby (a reap that keeps it stopped), rolls back to it
//! (booting its VMs), and reaps; for every operation it prints the SOAP
//! calls made (by method) and the property-collector calls per polling
//! round, and at the end the time the rollback to the cold standby took.
//!
//! Against vcsim (as `scripts/peers/vcsim.sh` starts it; HAProxy from
//! Debian's `haproxy`):
//!
//! ```text
//! PHOENIX_VCSIM_URL=https://phoenix:vcsim-pass@127.0.0.1:8989/sdk \
//! PHOENIX_VCSIM_THUMBPRINT=AB:CD:… \
//!   cargo run -p examples --features vsphere --example vsphere_cycle -- --servers 10
//! ```
//!
//! **Stand-ins.** vcsim's VMs run nothing, and the guest addresses it
//! reports are fake (`10.x.y.z`, given through its `SET.guest.ipAddress`
//! alias: [`VsphereComputeBuilder::vcsim_guest_ips`]). So that HAProxy
//! and the HTTP probe have something real to check, the example starts a
//! demo server on loopback for each powered-on VM (answering for the
//! VM's release) and reports that address as the VM's: the members
//! behind HAProxy are these stand-ins, one per VM, started when vcsim
//! shows the VM powered on with a guest address and stopped when it is
//! powered off or destroyed. Against a real vCenter (`--real`, with
//! govc's `GOVC_*` variables and `PHOENIX_VSPHERE_BUILDER`, the inventory
//! path of a builder VM), the guest addresses are the members.
//!
//! [`VsphereComputeBuilder::vcsim_guest_ips`]: phoenix_providers::vsphere::VsphereComputeBuilder::vcsim_guest_ips

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_config::ConfigSet;
use phoenix_core::id::{DeploymentId, EnvironmentName, ImageId, ReleaseLabel, RoleName, ServerId};
use phoenix_core::labels::{keys, LabelSelector};
use phoenix_core::memory_store::MemoryStore;
use phoenix_core::model::{
    Deployment, Environment, ImageState, Role, Server, ServerStatus, TestEvidence,
};
use phoenix_core::policy::Policy;
use phoenix_core::ports::{
    BakeRequest, BakeSource, Compute, ComputeCapabilities, Images, LaunchRequest, LoadBalancer,
    PortError,
};
use phoenix_core::retry::RetryPolicy;
use phoenix_core::time::{Clock, SystemClock};
use phoenix_core::Phoenix;
use phoenix_lb::haproxy::{LocalHaproxy, Mode, ServerCheck};
use phoenix_lb::probe::HttpProbe;
use phoenix_providers::local::demo_app::{self, DemoConfig};
use phoenix_providers::vsphere::{
    inventory, ExtraConfigReads, Thumbprint, VsphereClient, VsphereCompute, VsphereConfig,
    VsphereImages,
};
use tokio::sync::oneshot;

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

const USAGE: &str = "usage: vsphere_cycle [--servers N] [--real]

  --servers N    servers in the role (default 3)
  --real         a real vCenter (GOVC_* variables and PHOENIX_VSPHERE_BUILDER)
                 instead of vcsim

On vcsim: PHOENIX_VCSIM_URL and PHOENIX_VCSIM_THUMBPRINT, as scripts/peers/vcsim.sh
exports them (source scripts/lib.sh first; PHOENIX_PEERS_DIR=/tmp/peers).";

struct Args {
    servers: u32,
    real: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        servers: 3,
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
            "--real" => out.real = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

fn ok<T, E: Error + 'static>(r: Result<T, E>) -> Result<T, Box<dyn Error>> {
    r.map_err(|e| Box::new(e) as Box<dyn Error>)
}

/// A demo server standing in for a VM's guest.
struct StandIn {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

/// `Compute` over vcsim whose servers answer HTTP: each powered-on VM
/// with a guest address gets a loopback demo server, and its address is
/// reported in place of vcsim's fake one. On a real vCenter it is not
/// used: the VMs' own addresses are the members.
struct StandIns {
    inner: Arc<VsphereCompute>,
    port: u16,
    running: Mutex<HashMap<ServerId, StandIn>>,
}

impl StandIns {
    /// The server as its stand-in: started while the VM is active,
    /// stopped otherwise; the address stays the same across power cycles
    /// (the balancer knows the member by it).
    fn map(&self, mut s: Server) -> Result<Server, PortError> {
        let active = s.status == ServerStatus::Active;
        let release = s.labels.get(keys::RELEASE).unwrap_or("unknown").to_owned();
        let mut known = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let entry = known.entry(s.id.clone());
        let addr = match entry {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let st = o.get_mut();
                if active && st.stop.is_none() {
                    st.stop = Some(serve(st.addr, &s, &release)?);
                } else if !active {
                    if let Some(stop) = st.stop.take() {
                        let _ = stop.send(());
                    }
                }
                st.addr
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                if !active {
                    return Ok(s);
                }
                // One loopback address per VM (127.0.0.0/8 is all loopback
                // on Linux), all on the role's port, as the guests would be.
                let n = self.port_index(&s.id);
                let addr = SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(127, 77, (n >> 8) as u8, (n & 0xff) as u8)),
                    self.port,
                );
                let stop = serve(addr, &s, &release)?;
                v.insert(StandIn {
                    addr,
                    stop: Some(stop),
                })
                .addr
            }
        };
        s.addresses = vec![addr.ip()];
        Ok(s)
    }

    fn port_index(&self, id: &ServerId) -> u16 {
        // vcsim's ids are `vm-N`: N is unique and small.
        let n: u32 = id.as_str().trim_start_matches("vm-").parse().unwrap_or(1);
        (n % 65_000) as u16 + 1
    }

    fn map_all(&self, servers: Vec<Server>) -> Result<Vec<Server>, PortError> {
        let mut out = Vec::with_capacity(servers.len());
        for s in servers {
            out.push(self.map(s)?);
        }
        Ok(out)
    }

    fn forget(&self, id: &ServerId) {
        let mut known = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(st) = known.remove(id) {
            if let Some(stop) = st.stop {
                let _ = stop.send(());
            }
        }
    }
}

fn serve(addr: SocketAddr, s: &Server, release: &str) -> Result<oneshot::Sender<()>, PortError> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
        PortError::temporary(
            format!("stand-in for {}", s.id),
            format!("bind {addr}: {e}"),
        )
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| PortError::temporary("stand-in", e.to_string()))?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| PortError::temporary("stand-in", e.to_string()))?;
    let config = DemoConfig {
        release: release.to_owned(),
        environment: s
            .labels
            .get(keys::ENVIRONMENT)
            .unwrap_or("unknown")
            .to_owned(),
        role: s.labels.get(keys::ROLE).unwrap_or("unknown").to_owned(),
        server: s.id.to_string(),
    };
    let (tx, rx) = oneshot::channel();
    tokio::spawn(demo_app::serve(listener, config, async {
        let _ = rx.await;
    }));
    Ok(tx)
}

#[async_trait]
impl Compute for StandIns {
    fn capabilities(&self) -> ComputeCapabilities {
        self.inner.capabilities()
    }

    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        let mut out = Vec::new();
        for r in self.inner.launch(requests).await {
            out.push(match r {
                Ok(s) => self.map(s),
                Err(e) => Err(e),
            });
        }
        out
    }

    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError> {
        let servers = self.inner.describe(ids).await?;
        self.map_all(servers)
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError> {
        let servers = self.inner.list(selector).await?;
        self.map_all(servers)
    }

    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        self.inner.stop(id).await
    }

    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        self.inner.start(id).await
    }

    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        self.inner.terminate(id).await?;
        self.forget(id);
        Ok(())
    }
}

/// What one operation cost, in SOAP calls.
struct Meter<'a> {
    client: &'a VsphereClient,
    compute: &'a VsphereCompute,
}

impl Meter<'_> {
    async fn run<T, F>(&self, name: &str, op: F) -> Result<(T, Duration), Box<dyn Error>>
    where
        F: Future<Output = Result<T, Box<dyn Error>>>,
    {
        println!("\n== {name}");
        self.client.stats().reset();
        self.compute.reset_describe_stats();
        let started = Instant::now();
        let out = op.await;
        let took = started.elapsed();
        let calls = self.client.stats().snapshot();
        let total: u64 = calls.values().sum();
        let verdict = if out.is_ok() { "done" } else { "FAILED" };
        println!("   {verdict} in {took:.2?}; {total} SOAP calls:");
        for (call, n) in &calls {
            println!("   {n:>5}  {call}");
        }
        let d = self.compute.describe_stats();
        if d.calls > 0 {
            println!(
                "   polling: {} round(s), {} property-collector call(s), at most {} per round \
                 (for up to {} VMs a round)",
                d.calls, d.requests, d.max_requests_per_call, d.max_ids_per_call
            );
        }
        out.map(|v| (v, took))
    }
}

/// Where the cycle runs.
struct Place {
    client: VsphereClient,
    builder: String,
}

fn env(name: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is not set (see the example's docs)").into())
}

fn place(a: &Args) -> Result<Place, Box<dyn Error>> {
    if a.real {
        return Ok(Place {
            client: VsphereClient::new(VsphereConfig::from_env()?)?,
            builder: env("PHOENIX_VSPHERE_BUILDER")?,
        });
    }
    let config = VsphereConfig::builder(&env("PHOENIX_VCSIM_URL")?)?
        .thumbprint(Thumbprint::parse(&env("PHOENIX_VCSIM_THUMBPRINT")?)?)
        .datacenter("DC0")
        .resource_pool("DC0_C0/Resources")
        .task_poll(Duration::from_millis(20))
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            ..RetryPolicy::default()
        })
        .build()?;
    Ok(Place {
        client: VsphereClient::new(config)?,
        // A VM of vcsim's default inventory plays the builder.
        builder: "/DC0/vm/DC0_H0_VM0".into(),
    })
}

async fn run(a: Args) -> Result<(), Box<dyn Error>> {
    let p = place(&a)?;
    let about = ok(p.client.content().await)?.clone();
    println!(
        "vSphere: {} ({} {}), {} server(s); balancer: HAProxy (runtime API); {}",
        p.client.config().url(),
        about.api_type,
        about.api_version,
        a.servers,
        if a.real {
            "members are the VMs' guest addresses"
        } else {
            "members are loopback demo servers standing in for vcsim's guests"
        }
    );
    let vsphere = Arc::new(
        VsphereCompute::builder(p.client.clone())
            .vcsim_guest_ips(!a.real)
            // vcsim does not resolve indexed property paths.
            .extra_config_reads(if a.real {
                ExtraConfigReads::Indexed
            } else {
                ExtraConfigReads::Whole
            })
            .concurrency(8)
            .build(),
    );
    let compute: Arc<dyn Compute> = if a.real {
        vsphere.clone()
    } else {
        Arc::new(StandIns {
            inner: vsphere.clone(),
            port: 8080,
            running: Mutex::default(),
        })
    };
    let images = Arc::new(VsphereImages::builder(p.client.clone()).build());
    let haproxy = LocalHaproxy::builder()
        .mode(Mode::Http)
        .check_path("/health")
        .start()
        .await?;
    let lb = Arc::new(
        haproxy
            .balancer()
            .check(Some(ServerCheck::new(Duration::from_millis(100), 2, 2)))
            .build()?,
    );
    let m = Meter {
        client: &p.client,
        compute: &vsphere,
    };
    let boot = Arc::new(ConfigSet::from_files(
        "vsphere-cycle",
        [
            ("base.toml", BASE_TOML),
            ("env/prod.toml", ""),
            ("role/web.toml", ""),
        ],
    )?);
    let mut policy = Policy::default();
    policy.provision.poll_interval = Duration::from_millis(if a.real { 5_000 } else { 200 });
    policy.rollout.bake_time = Duration::ZERO;
    policy.rollout.drain = Duration::from_millis(500);
    policy.rollout.batch_size = (a.servers as usize / 5).max(1);
    policy.rollout.max_surge = policy.rollout.batch_size * 2;
    policy.retry = RetryPolicy {
        initial_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let probe = Arc::new(
        HttpProbe::builder()
            .health_path("/health")
            .smoke_path("/")
            .timeout(Duration::from_secs(2))
            .build()?,
    );
    let phoenix = Phoenix::builder()
        .compute(compute.clone())
        .images(images.clone())
        .balancer(lb.clone())
        .boot_config(boot.clone())
        .probe(probe)
        .store(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
        .policy(policy)
        .holder("vsphere-cycle")
        .build()?;
    let shop = DeploymentId::new(format!("shop{}", std::process::id() % 100_000))?;
    let web = RoleName::new("web")?;

    let result = cycle(&m, &phoenix, &images, &p, &a, &shop, &web).await;
    if result.is_ok() {
        let members = lb.members().await?;
        println!("members behind HAProxy: {}", members.len());
        for m in members {
            println!("   {m}");
        }
    }
    let teardown = m
        .run("tear down (VMs, templates)", async {
            let left: Vec<ServerId> = ok(compute.list(&LabelSelector::deployment(&shop)).await)?
                .into_iter()
                .map(|s| s.id)
                .collect();
            for id in &left {
                ok(compute.terminate(id).await)?;
            }
            for img in ok(images.list().await)?.iter().filter(|i| {
                i.properties.get("phoenix-cycle").map(String::as_str) == Some(shop.as_str())
            }) {
                ok(images.delete(&img.id).await)?;
            }
            Ok(())
        })
        .await;
    let _ = haproxy.stop().await;
    result.and(teardown.map(|_| ()))
}

async fn bake(
    images: &VsphereImages,
    p: &Place,
    shop: &DeploymentId,
    version: &str,
) -> Result<ImageId, Box<dyn Error>> {
    let builder = ok(inventory::find_by_path(&p.client, &p.builder).await)?
        .ok_or_else(|| format!("the builder VM {} does not exist", p.builder))?;
    let mut properties = BTreeMap::new();
    properties.insert("phoenix-cycle".to_owned(), shop.to_string());
    let image = ok(images
        .bake(&BakeRequest {
            source: BakeSource::Server(ServerId::new(builder.value)?),
            name: format!("{shop}-web"),
            version: version.into(),
            base: Some("debian-12".into()),
            properties,
        })
        .await)?;
    Ok(image.id)
}

async fn cycle(
    m: &Meter<'_>,
    phoenix: &Phoenix,
    images: &VsphereImages,
    p: &Place,
    a: &Args,
    shop: &DeploymentId,
    web: &RoleName,
) -> Result<(), Box<dyn Error>> {
    m.run(
        &format!(
            "register deployment {shop} (role web: {} servers on :8080)",
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

    let mut templates = Vec::new();
    for version in ["v1", "v2"] {
        let (id, _) = m
            .run(
                &format!("bake template {version} from the builder VM, certify it"),
                async {
                    let id = bake(images, p, shop, version).await?;
                    let mut image = ok(images.get(&id).await)?;
                    // The acceptance suite's verdict, as evidence for this
                    // template (its instance UUID is the digest).
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
                    // On the template too, for whoever looks in the
                    // vSphere Client: the state and the evidence.
                    let mut props = BTreeMap::new();
                    props.insert("phoenix-image-state".to_owned(), "certified".to_owned());
                    if let Some(e) = image.evidence.last() {
                        props.insert(
                            "phoenix-evidence".to_owned(),
                            format!(
                                "{} {} at {} for {}",
                                e.suite,
                                if e.passed { "passed" } else { "failed" },
                                e.at.to_rfc3339(),
                                e.digest.as_deref().unwrap_or("?")
                            ),
                        );
                    }
                    ok(images.set_properties(&id, &props).await)?;
                    println!("   template {id} ({} {})", image.name, image.version);
                    Ok(id)
                },
            )
            .await?;
        templates.push(id);
    }
    for (label, image) in ["v1", "v2"].into_iter().zip(&templates) {
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
        "provision v1 and go live (clone, guestinfo, power on, smoke-test, attach)",
        async { apply(ok(phoenix.plan_deploy(shop, web, &v1).await)?).await },
    )
    .await?;
    m.run("blue-green to v2", async {
        apply(ok(phoenix.plan_deploy(shop, web, &v2).await)?).await
    })
    .await?;
    m.run("rollback to v1 (the hot standby)", async {
        apply(ok(phoenix.plan_rollback(shop, web, None).await)?).await
    })
    .await?;
    m.run(
        "power v2 off to a cold standby (reap: keep 1, hot 0)",
        async {
            let mut policy = phoenix.policy().clone();
            policy.retention.keep = 1;
            policy.retention.hot = 0;
            apply(ok(phoenix.plan_reap_with(shop, web, &policy).await)?).await
        },
    )
    .await?;
    let (_, cold) = m
        .run(
            "rollback to v2 (the cold standby: power on, smoke-test, attach)",
            async { apply(ok(phoenix.plan_rollback(shop, web, Some(&v2)).await)?).await },
        )
        .await?;
    m.run("reap (keep = 0: the v1 standby goes)", async {
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
    println!(
        "\nrollback to the cold standby ({} VMs powered on, checked and attached): {cold:.2?}",
        a.servers
    );
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
            eprintln!("vsphere_cycle: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !a.real && std::env::var("PHOENIX_VCSIM_URL").is_err() {
        eprintln!("vsphere_cycle needs vcsim or --real.\n\n{USAGE}");
        return ExitCode::from(2);
    }
    match run(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsphere_cycle: {}", phoenix_core::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
