//! The `phoenix` command against the clouds' peers, from a hand-written
//! `phoenix.toml` and each ecosystem's own settings: AWS on moto (`AWS_*`,
//! an ELBv2 listener switching two target groups), Rackspace on Mimic
//! (`OS_*`, Nova and a Cloud Load Balancer), and vSphere on vcsim
//! (`GOVC_*`). `scripts/test` starts the peers (`scripts/peers/*.sh`,
//! which export `PHOENIX_MOTO_URL`, `PHOENIX_MIMIC_URL` and
//! `PHOENIX_VCSIM_URL`); plain `cargo test` skips these.
//!
//! Both peers' servers run nothing, so the roles check servers by the
//! provider's word (`check = "provider"`).

#![cfg(any(feature = "aws", feature = "vsphere", feature = "openstack"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use tokio::process::Command;

const PHOENIX: &str = env!("CARGO_BIN_EXE_phoenix");

/// Runs `phoenix` in `dir` with `env`.
async fn run(dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut c = Command::new(PHOENIX);
    c.args(args).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().await.unwrap()
}

/// Runs and expects success; returns stdout.
async fn ok(dir: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let out = run(dir, env, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "phoenix {args:?} failed with {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The pools of `status --json`: (release, state) per pool.
fn pools(status: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(status).unwrap();
    let mut out = Vec::new();
    for role in v["roles"].as_array().into_iter().flatten() {
        for release in role["releases"].as_array().into_iter().flatten() {
            for pool in release["pools"].as_array().into_iter().flatten() {
                out.push((
                    release["release"].as_str().unwrap_or_default().to_owned(),
                    pool["state"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use phoenix::core::labels::LabelSelector;
    use phoenix::core::ports::Compute;
    use phoenix::providers::aws::testing::{moto_client, stock_ami, Site};
    use phoenix::providers::aws::Ec2Compute;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs moto (scripts/test starts it: PHOENIX_MOTO_URL)"]
    async fn a_phoenix_toml_drives_ec2_and_elbv2_on_moto() {
        let url = std::env::var("PHOENIX_MOTO_URL").expect("PHOENIX_MOTO_URL");
        let client = moto_client(&url, 3).unwrap();
        let name = format!("phx-toml-{}", std::process::id());
        let site = Site::create(&client, &name, 8080).await.unwrap();
        let ami = stock_ami(&client).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"
[policy]
preset = "local"

[environments.prod]
production = true

[providers.ec2]
kind = "aws"
region = "{region}"
subnet = "{subnet}"

[balancers.alb]
kind = "elbv2"
listener = "{listener}"
target_group = "{blue}"
standby_group = "{green}"

[deployments.toml-shop]
environment = "prod"
provider = "ec2"

[deployments.toml-shop.roles.web]
desired = 2
flavor = "t3.micro"
balancer = "alb"
check = "provider"
"#,
            region = client.config().region(),
            subnet = site.subnets[0],
            listener = site.listener,
            blue = site.groups[0],
            green = site.groups[1],
        );
        std::fs::write(dir.path().join("phoenix.toml"), toml).unwrap();
        // The ecosystem's own variables, as an operator's shell has them.
        let env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let d = dir.path();

        // Production launches certified images only: certify on evidence.
        let out = ok(d, &env, &["certify", ami.as_str(), "--suite", "acceptance"]).await;
        assert!(out.contains("certified"), "{out}");
        ok(d, &env, &["release", "v1", "--image", ami.as_str()]).await;
        ok(d, &env, &["release", "v2", "--image", ami.as_str()]).await;

        let before = ok(d, &env, &["status", "--json"]).await;
        let plan = ok(d, &env, &["plan", "deploy", "v1"]).await;
        assert!(plan.contains("steps:"), "{plan}");
        assert_eq!(ok(d, &env, &["status", "--json"]).await, before);

        let out = ok(d, &env, &["deploy", "v1"]).await;
        assert!(out.contains("deploy: succeeded"), "{out}");
        let out = ok(d, &env, &["deploy", "v2"]).await;
        assert!(out.contains("deploy: succeeded"), "{out}");
        assert_eq!(
            pools(&ok(d, &env, &["status", "--json"]).await),
            [
                ("v2".into(), "live".into()),
                ("v1".into(), "standby(hot)".into())
            ]
        );
        let out = ok(d, &env, &["rollback"]).await;
        assert!(out.contains("rollback: succeeded"), "{out}");
        let tree = ok(d, &env, &["status"]).await;
        println!("{tree}");
        assert!(tree.starts_with("toml-shop (environment prod"), "{tree}");
        assert!(tree.contains("role web: 2/2 serving"), "{tree}");
        let history = ok(d, &env, &["history"]).await;
        assert_eq!(history.matches(" deploy ").count(), 2, "{history}");
        assert_eq!(history.matches(" rollback ").count(), 1, "{history}");

        // Clean up moto for the tests that follow.
        let ec2 = Ec2Compute::builder(client.clone()).build();
        let shop = "toml-shop".parse().unwrap();
        for s in ec2.list(&LabelSelector::deployment(&shop)).await.unwrap() {
            ec2.terminate(&s.id).await.unwrap();
        }
        site.delete(&client).await.unwrap();
    }
}

#[cfg(feature = "vsphere")]
mod vsphere {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use phoenix::core::id::ServerId;
    use phoenix::core::labels::LabelSelector;
    use phoenix::core::ports::{BakeRequest, BakeSource, Compute, Images};
    use phoenix::providers::vsphere::{
        inventory, Thumbprint, VsphereClient, VsphereCompute, VsphereConfig, VsphereImages,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs vcsim (scripts/test starts it: PHOENIX_VCSIM_URL)"]
    async fn a_phoenix_toml_drives_vsphere_on_vcsim() {
        let url = std::env::var("PHOENIX_VCSIM_URL").expect("PHOENIX_VCSIM_URL");
        let thumbprint = std::env::var("PHOENIX_VCSIM_THUMBPRINT").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // govc's own settings: the thumbprint is pinned in a known-hosts
        // file, as `govc about.cert -k -thumbprint` writes it.
        let parsed = url::Url::parse(&url).unwrap();
        let host = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
        std::fs::write(d.join("known_hosts"), format!("{host} {thumbprint}\n")).unwrap();
        let env: Vec<(String, String)> = [
            ("GOVC_URL", url.clone()),
            (
                "GOVC_TLS_KNOWN_HOSTS",
                d.join("known_hosts").display().to_string(),
            ),
            ("GOVC_DATACENTER", "DC0".into()),
            ("GOVC_RESOURCE_POOL", "DC0_C0/Resources".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        // The image pipeline's part: a template baked from a builder VM.
        let client = VsphereClient::new(
            VsphereConfig::builder(&url)
                .unwrap()
                .thumbprint(Thumbprint::parse(&thumbprint).unwrap())
                .datacenter("DC0")
                .resource_pool("DC0_C0/Resources")
                .task_poll(Duration::from_millis(20))
                .build()
                .unwrap(),
        )
        .unwrap();
        let images = VsphereImages::builder(client.clone()).build();
        let builder = inventory::find_by_path(&client, "/DC0/vm/DC0_H0_VM0")
            .await
            .unwrap()
            .expect("vcsim's default inventory has DC0_H0_VM0");
        let template = images
            .bake(&BakeRequest {
                source: BakeSource::Server(ServerId::new(builder.value).unwrap()),
                name: "toml-vm-web".into(),
                version: "1".into(),
                base: Some("debian-12".into()),
                properties: BTreeMap::new(),
            })
            .await
            .unwrap();

        std::fs::write(
            d.join("phoenix.toml"),
            r#"
[policy]
preset = "local"

[environments.staging]

[providers.vcenter]
kind = "vsphere"
simulator = true

[balancers.front]
kind = "embedded"

[deployments.toml-vm]
environment = "staging"
provider = "vcenter"

[deployments.toml-vm.roles.web]
desired = 2
balancer = "front"
check = "provider"
"#,
        )
        .unwrap();

        let out = ok(
            d,
            &env,
            &["certify", template.id.as_str(), "--suite", "acceptance"],
        )
        .await;
        assert!(out.contains("certified"), "{out}");
        ok(d, &env, &["release", "v1", "--image", template.id.as_str()]).await;
        let plan = ok(d, &env, &["plan", "provision", "v1"]).await;
        assert!(plan.contains("steps:"), "{plan}");
        let out = ok(d, &env, &["provision", "v1"]).await;
        assert!(out.contains("provision: succeeded"), "{out}");
        let tree = ok(d, &env, &["status"]).await;
        println!("{tree}");
        assert!(tree.starts_with("toml-vm (environment staging"), "{tree}");
        assert!(tree.contains("(2 of 2 servers)"), "{tree}");

        // Clean up vcsim for the tests and the example that follow.
        let compute = VsphereCompute::builder(client.clone()).build();
        let dep = "toml-vm".parse().unwrap();
        let servers = compute
            .list(&LabelSelector::deployment(&dep))
            .await
            .unwrap();
        assert_eq!(servers.len(), 2, "{servers:?}");
        for s in servers {
            compute.terminate(&s.id).await.unwrap();
        }
        images.delete(&template.id).await.unwrap();
    }
}

#[cfg(feature = "openstack")]
mod rackspace {
    use std::time::Duration;

    use super::*;
    use phoenix::core::labels::LabelSelector;
    use phoenix::core::ports::{Compute, Images};
    use phoenix::core::retry::RetryPolicy;
    use phoenix::lb::rackspace_clb::RackspaceClb;
    use phoenix::providers::openstack::testing::Mimic;
    use phoenix::providers::openstack::{ImageApi, NovaCompute, OpenStackImages};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Mimic (scripts/test starts it: PHOENIX_MIMIC_URL)"]
    async fn a_phoenix_toml_drives_nova_and_a_cloud_load_balancer_on_mimic() {
        let mimic = Mimic::from_env().expect("PHOENIX_MIMIC_URL");
        let user = format!("phx-toml-{}", std::process::id());
        let session = mimic.session(&user, RetryPolicy::default()).unwrap();
        let lb = RackspaceClb::create_balancer(&session, "phx-toml", "HTTP", 80, &[])
            .await
            .unwrap();
        let image = OpenStackImages::builder(session.clone())
            .api(ImageApi::NovaImages)
            .build()
            .list()
            .await
            .unwrap()
            .into_iter()
            .next()
            .expect("Mimic lists base images");
        // Mimic's clock moves only when told: builds and balancer updates
        // wait for it, as they wait on a real cloud.
        let ticker = {
            let m = mimic.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if m.tick(1.0).await.is_err() {
                        return;
                    }
                }
            })
        };

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("phoenix.toml"),
            format!(
                r#"
[policy]
preset = "local"

[environments.ci]

[providers.rackspace]
kind = "openstack"
images = "nova"
tag_images = false

[balancers.clb]
kind = "rackspace"
id = {lb}

[deployments.toml-shop]
environment = "ci"
provider = "rackspace"

[deployments.toml-shop.roles.web]
desired = 2
port = 80
flavor = "2"
balancer = "clb"
check = "provider"
"#
            ),
        )
        .unwrap();
        // The OpenStack variables, as `openrc` sets them (Rackspace's API
        // key instead of a password).
        let env: Vec<(String, String)> = [
            ("OS_AUTH_URL", mimic.auth_url()),
            ("OS_USERNAME", user.clone()),
            ("OS_API_KEY", "mimic-api-key".to_owned()),
            ("OS_REGION_NAME", "ORD".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        // The evidence lives in Phoenix's records: the account cannot tag
        // a public base image (tag_images = false).
        let out = ok(
            d,
            &env,
            &["certify", image.id.as_str(), "--suite", "acceptance"],
        )
        .await;
        assert!(out.contains("certified"), "{out}");
        ok(d, &env, &["release", "v1", "--image", image.id.as_str()]).await;
        ok(d, &env, &["release", "v2", "--image", image.id.as_str()]).await;
        let plan = ok(d, &env, &["plan", "deploy", "v1"]).await;
        assert!(plan.contains("steps:"), "{plan}");
        let out = ok(d, &env, &["deploy", "v1"]).await;
        assert!(out.contains("deploy: succeeded"), "{out}");
        let out = ok(d, &env, &["deploy", "v2"]).await;
        assert!(out.contains("deploy: succeeded"), "{out}");
        let out = ok(d, &env, &["rollback"]).await;
        assert!(out.contains("rollback: succeeded"), "{out}");
        let tree = ok(d, &env, &["status"]).await;
        println!("{tree}");
        assert!(tree.starts_with("toml-shop (environment ci"), "{tree}");
        assert!(tree.contains("role web: 2/2 serving"), "{tree}");
        assert_eq!(
            pools(&ok(d, &env, &["status", "--json"]).await)
                .iter()
                .filter(|(_, state)| state == "live")
                .count(),
            1
        );

        ticker.abort();
        let nova = NovaCompute::builder(session.clone()).build();
        let dep = "toml-shop".parse().unwrap();
        for s in nova.list(&LabelSelector::deployment(&dep)).await.unwrap() {
            nova.terminate(&s.id).await.unwrap();
        }
        RackspaceClb::delete_balancer(&session, lb).await.unwrap();
    }
}
