//! The canary: a secret planted in the configuration, deployed through the
//! real pipeline (Phoenix over the simulated cloud, with this crate's
//! `BootConfig`), then searched for in everything that must not hold it:
//! payload Debug, every error's Display and Debug, plans (JSON, Display,
//! Debug), reports, every event, the whole state store and the captured
//! tracing output. A positive control proves it does reach the rendered
//! Local environment of the environment in scope.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use phoenix_config::ConfigSet;
use phoenix_core::events::Outcome;
use phoenix_core::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName};
use phoenix_core::model::{Deployment, Environment, Role};
use phoenix_core::ports::{BootConfig, BootContext, BootFormat, BootPayload, PortError};
use phoenix_core::sim::{SimCloud, SimConfig};
use phoenix_core::Phoenix;
use secrecy::{ExposeSecret, SecretString};

const CANARY: &str = "canary-7b1d44e0-must-never-leak";

/// What one server received, as rendered in the Local format.
struct Received {
    context: BootContext,
    debug: String,
    env: BTreeMap<String, SecretString>,
    contents: Vec<Vec<u8>>,
}

/// Delegates to the real configuration and keeps what servers received,
/// for the positive control.
struct Recording {
    inner: ConfigSet,
    payloads: Mutex<Vec<Received>>,
}

#[async_trait]
impl BootConfig for Recording {
    async fn render(
        &self,
        context: &BootContext,
        format: BootFormat,
    ) -> Result<BootPayload, PortError> {
        let payload = BootConfig::render(&self.inner, context, format).await?;
        if let BootPayload::Local { files, env } = &payload {
            let contents = files
                .iter()
                .map(|f| f.content.expose_secret().to_vec())
                .collect();
            self.payloads.lock().unwrap().push(Received {
                context: context.clone(),
                debug: format!("{payload:?}"),
                env: env.clone(),
                contents,
            });
        }
        Ok(payload)
    }

    async fn fingerprint(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<String, PortError> {
        BootConfig::fingerprint(&self.inner, environment, role, release).await
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything the test looked in, with what it came from.
#[derive(Default)]
struct Haystack(Vec<(String, Vec<u8>)>);

impl Haystack {
    fn add(&mut self, what: impl Into<String>, text: impl AsRef<[u8]>) {
        self.0.push((what.into(), text.as_ref().to_vec()));
    }
    fn leaks(&self) -> Vec<&str> {
        let needle = CANARY.as_bytes();
        self.0
            .iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
            .map(|(what, _)| what.as_str())
            .collect()
    }
}

const BASE: &str = r#"
[values]
greeting = "hello"

[env]
GREETING = "{{ values.greeting }}"

[files.motd]
path = "/etc/motd"
template = "{{ values.greeting }} from {{ server_name }}\n"

[secrets.canary]
file = "canary.secret"
scope = ["prod"]
version = "1"
"#;

/// Prod servers get the canary as an environment variable and in a file.
const PROD: &str = r#"
[env]
API_TOKEN = "{{ secrets.canary }}"

[files.token]
path = "/etc/shop/token"
mode = 0o600
template = "token={{ secrets.canary }}\n"
"#;

/// A release whose template fails on the secret itself, for real servers
/// only (previews, and so fingerprints, render a placeholder server name).
const BROKEN: &str = r#"
[env]
BROKEN = "{% if server_name != '«server_name»' %}{{ secrets.canary | int }}{% endif %}"
"#;

/// A release that asks for the prod secret everywhere.
const EVERYWHERE: &str = r#"
[files.leak]
path = "/etc/shop/leak"
template = "{{ secrets.canary }}"
"#;

async fn setup_deployment(
    cloud: &SimCloud,
    phoenix: &Phoenix,
    id: &str,
    env: &str,
    releases: &[&str],
    haystack: &mut Haystack,
) -> (DeploymentId, RoleName) {
    let shop: DeploymentId = id.parse().unwrap();
    let web: RoleName = "web".parse().unwrap();
    let deployment = Deployment::new(
        shop.clone(),
        Environment {
            name: env.parse().unwrap(),
            production: env == "prod",
            production_like: false,
        },
    )
    .with_role(Role {
        name: web.clone(),
        desired: 3,
        flavor: Some("general1-2".into()),
        port: 8080,
    });
    phoenix.register(&deployment).await.unwrap();
    for v in releases {
        let image = cloud.certified_image("web", v);
        phoenix.register_image(&image).await.unwrap();
        let images = BTreeMap::from([(web.clone(), image.id.clone())]);
        match phoenix
            .create_release(&shop, v.parse().unwrap(), images)
            .await
        {
            Ok(release) => haystack.add(format!("release {v}"), format!("{release:?}")),
            Err(e) => {
                haystack.add(format!("release {v} error"), format!("{e} {e:?}"));
            }
        }
    }
    (shop, web)
}

#[tokio::test(start_paused = true)]
async fn the_canary_reaches_prod_servers_and_nothing_else() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (dir, _) = {
        let dir = tempfile::tempdir().unwrap();
        support::write_tree(
            dir.path(),
            &[
                ("base.toml", BASE),
                ("canary.secret", CANARY),
                ("env/prod.toml", PROD),
                ("env/staging.toml", ""),
                ("role/web.toml", ""),
                ("release/v3.toml", BROKEN),
                ("release/v4.toml", EVERYWHERE),
            ],
        );
        (dir, ())
    };
    let config = ConfigSet::load(dir.path()).unwrap();
    let mut haystack = Haystack::default();
    haystack.add("ConfigSet Debug", format!("{config:?}"));
    let boot = Arc::new(Recording {
        inner: config,
        payloads: Mutex::new(Vec::new()),
    });

    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud.phoenix().boot_config(boot.clone()).build().unwrap();
    let mut events = phoenix.subscribe();

    let (shop, web) = setup_deployment(
        &cloud,
        &phoenix,
        "shop",
        "prod",
        &["v1", "v3"],
        &mut haystack,
    )
    .await;
    // The staging deployment: v4 puts the prod secret everywhere, so its
    // release cannot even be fingerprinted for staging.
    let (_staging, _) = setup_deployment(
        &cloud,
        &phoenix,
        "shop-staging",
        "staging",
        &["v1", "v4"],
        &mut haystack,
    )
    .await;
    let staging_v4 = haystack
        .0
        .iter()
        .find(|(w, _)| w == "release v4 error")
        .map(|(_, t)| String::from_utf8_lossy(t).into_owned())
        .expect("creating v4 for staging must fail");
    assert!(
        staging_v4.contains("secret `canary`") && staging_v4.contains("staging"),
        "{staging_v4}"
    );

    // A good deploy of v1 in prod: the canary goes to the servers.
    let plan = phoenix
        .plan_deploy(&shop, &web, &"v1".parse().unwrap())
        .await
        .unwrap();
    haystack.add("plan v1 JSON", serde_json::to_string(&plan).unwrap());
    haystack.add("plan v1 Display", plan.to_string());
    haystack.add("plan v1 Debug", format!("{plan:?}"));
    let report = phoenix.apply(plan).await.unwrap();
    haystack.add("report v1", format!("{report:?}"));
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");

    // A deploy of v3, whose template fails on the secret itself.
    let plan = phoenix
        .plan_deploy(&shop, &web, &"v3".parse().unwrap())
        .await
        .unwrap();
    haystack.add("plan v3 JSON", serde_json::to_string(&plan).unwrap());
    haystack.add("plan v3 Display", plan.to_string());
    match phoenix.apply(plan).await {
        Ok(report) => {
            assert_ne!(report.outcome, Outcome::Succeeded, "{report:?}");
            haystack.add("report v3", format!("{report:?}"));
        }
        Err(e) => haystack.add("apply v3 error", format!("{e} {e:?}")),
    }

    // Direct renders: out of scope, and the broken template.
    let staging_ctx = support::context("staging", "web", "v4", 0);
    let e = BootConfig::render(boot.as_ref(), &staging_ctx, BootFormat::CloudInit)
        .await
        .unwrap_err();
    assert!(e.chain().contains("secret `canary`") && e.chain().contains("staging"));
    haystack.add("out-of-scope PortError", format!("{e} {e:?} {}", e.chain()));
    let e = boot
        .inner
        .render(&staging_ctx, BootFormat::Local)
        .await
        .unwrap_err();
    haystack.add("out-of-scope ConfigError", format!("{e} {e:?}"));
    let e = boot
        .inner
        .render(&support::context("prod", "web", "v3", 0), BootFormat::Local)
        .await
        .unwrap_err();
    assert!(
        matches!(e, phoenix_config::ConfigError::TemplateRender { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("env.BROKEN"), "{e}");
    eprintln!("template error: {e}");
    haystack.add("template ConfigError", format!("{e} {e:?}"));
    for format in [
        BootFormat::CloudInit,
        BootFormat::AwsUserData,
        BootFormat::OpenStack,
        BootFormat::VsphereGuestinfo,
        BootFormat::Local,
    ] {
        let p = boot
            .inner
            .render(&support::context("prod", "web", "v1", 0), format)
            .await
            .unwrap();
        haystack.add(format!("{format:?} payload Debug"), format!("{p:?}"));
    }
    let preview = boot
        .inner
        .preview(&"prod".parse().unwrap(), &web, &"v1".parse().unwrap())
        .unwrap();
    haystack.add("preview JSON", serde_json::to_string(&preview).unwrap());
    haystack.add("preview Debug", format!("{preview:?}"));

    // Every event.
    let mut seen = 0;
    loop {
        match events.try_recv() {
            Ok(event) => {
                seen += 1;
                haystack.add(
                    format!("event {seen} JSON"),
                    serde_json::to_string(&event).unwrap(),
                );
                haystack.add(format!("event {seen} Debug"), format!("{event:?}"));
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                panic!("missed {n} events: raise the bus capacity for this test")
            }
            Err(_) => break,
        }
    }
    assert!(seen > 10, "only {seen} events");

    // The whole state store.
    for (key, value) in cloud.store().inner().dump() {
        haystack.add(format!("store {key}"), value);
    }

    // Positive control: prod servers got the canary.
    let payloads = boot.payloads.lock().unwrap();
    let prod: Vec<_> = payloads
        .iter()
        .filter(|r| r.context.environment.as_str() == "prod")
        .collect();
    assert!(prod.len() >= 3, "{} prod renders", prod.len());
    for Received {
        context: ctx,
        debug,
        env,
        contents,
    } in &prod
    {
        assert_eq!(
            env.get("API_TOKEN").map(|v| v.expose_secret()),
            Some(CANARY),
            "{}",
            ctx.server_name
        );
        assert!(contents
            .iter()
            .any(|c| c == format!("token={CANARY}\n").as_bytes()));
        haystack.add(format!("payload Debug for {}", ctx.server_name), debug);
    }
    assert!(payloads
        .iter()
        .all(|r| r.context.environment.as_str() == "prod"));
    drop(payloads);

    let logs = captured.0.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&logs).contains("rendered boot configuration"),
        "the tracing capture is not wired"
    );
    haystack.add("tracing output", logs);
    assert!(
        haystack.0.len() > 50,
        "searched only {} places",
        haystack.0.len()
    );
    assert_eq!(haystack.leaks(), Vec::<&str>::new(), "the canary leaked");
}

#[test]
fn the_search_finds_a_planted_canary() {
    let mut haystack = Haystack::default();
    haystack.add("clean", "nothing here");
    haystack.add("dirty", format!("xx{CANARY}yy"));
    assert_eq!(haystack.leaks(), vec!["dirty"]);
}
