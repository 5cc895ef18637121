//! Cloud configuration from `clouds.yaml` with `secure.yaml`, from the
//! standard search path, and from the `OS_*` variables.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use phoenix_providers::openstack::{
    ApplicationCredentialRef, CloudConfig, ConfigError, Credentials, DomainRef, Interface,
    ProjectRef, Scope, TenantRef, UserRef,
};

const CLOUDS: &str = r#"
clouds:
  devstack:
    auth:
      auth_url: https://keystone.example.com:5000/v3
      username: demo
      project_name: web
      user_domain_name: Default
      project_domain_id: default
    region_name: RegionOne
    interface: internal
    identity_api_version: 3
    compute_service_name: nova
    image_endpoint_override: https://glance.example.com:9292
  rackspace:
    auth_type: rackspace_apikey
    auth:
      auth_url: https://identity.api.rackspacecloud.com/v2.0
      username: alice
    region_name: ORD
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example.com:5000
      application_credential_name: deployer
      username: ci
      user_domain_id: default
  legacy:
    auth:
      auth_url: https://keystone.example.com:5000/v2.0
      username: old
      password: in-clouds-yaml
      tenant_name: admin
"#;

const SECURE: &str = r#"
clouds:
  devstack:
    auth:
      password: canary-secure-password
  rackspace:
    auth:
      api_key: canary-secure-api-key
  appcred:
    auth:
      application_credential_secret: canary-appcred-secret
"#;

fn files() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let clouds = dir.path().join("clouds.yaml");
    let secure = dir.path().join("secure.yaml");
    std::fs::write(&clouds, CLOUDS).unwrap();
    std::fs::write(&secure, SECURE).unwrap();
    (dir, clouds, secure)
}

#[test]
fn clouds_yaml_merges_secure_yaml() {
    let (_dir, clouds, secure) = files();
    let c = CloudConfig::from_files(&clouds, Some(&secure), Some("devstack")).unwrap();
    assert_eq!(c.name(), Some("devstack"));
    assert_eq!(c.region(), Some("RegionOne"));
    assert_eq!(c.interface(), Interface::Internal);
    assert_eq!(c.service_name("compute"), Some("nova"));
    assert_eq!(
        c.endpoint_override("image"),
        Some("https://glance.example.com:9292")
    );
    assert_eq!(
        c.v3_tokens_url(),
        "https://keystone.example.com:5000/v3/auth/tokens"
    );
    match c.credentials() {
        Credentials::V3Password {
            user,
            password,
            scope,
        } => {
            use secrecy::ExposeSecret;
            assert_eq!(password.expose_secret(), "canary-secure-password");
            assert_eq!(
                *user,
                UserRef::Name {
                    name: "demo".into(),
                    domain: DomainRef::Name("Default".into())
                }
            );
            assert_eq!(
                *scope,
                Scope::Project(ProjectRef::Name {
                    name: "web".into(),
                    domain: DomainRef::Id("default".into())
                })
            );
        }
        other => panic!("{other:?}"),
    }
    let shown = format!("{c:?}");
    assert!(!shown.contains("canary-secure-password"), "{shown}");

    let r = CloudConfig::from_files(&clouds, Some(&secure), Some("rackspace")).unwrap();
    assert!(
        matches!(r.credentials(), Credentials::RackspaceApiKey { username, .. } if username == "alice")
    );
    assert_eq!(
        r.v2_tokens_url(),
        "https://identity.api.rackspacecloud.com/v2.0/tokens"
    );
    assert!(!format!("{r:?}").contains("canary-secure-api-key"));

    let a = CloudConfig::from_files(&clouds, Some(&secure), Some("appcred")).unwrap();
    match a.credentials() {
        Credentials::V3ApplicationCredential { credential, .. } => assert_eq!(
            *credential,
            ApplicationCredentialRef::Name {
                name: "deployer".into(),
                user: UserRef::Name {
                    name: "ci".into(),
                    domain: DomainRef::Id("default".into())
                }
            }
        ),
        other => panic!("{other:?}"),
    }

    let l = CloudConfig::from_files(&clouds, None, Some("legacy")).unwrap();
    assert!(matches!(
        l.credentials(),
        Credentials::V2Password { tenant: Some(TenantRef::Name(t)), .. } if t == "admin"
    ));
}

#[test]
fn missing_and_unknown_settings_say_what_and_where() {
    let (_dir, clouds, secure) = files();
    let e = CloudConfig::from_files(&clouds, None, Some("devstack")).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Missing { setting, .. } if setting == "auth.password"),
        "{e}"
    );
    let e = CloudConfig::from_files(&clouds, Some(&secure), Some("nope")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("\"nope\"") && text.contains("devstack, rackspace"),
        "{text}"
    );
    let e = CloudConfig::from_files(&clouds, Some(&secure), None).unwrap_err();
    assert!(matches!(e, ConfigError::NoCloudNamed { .. }), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("clouds.yaml");
    std::fs::write(
        &bad,
        "clouds:\n  x:\n    auth:\n      auth_url: http://h/v3\n      username: u\n      password: [canary-in-a-list]\n",
    )
    .unwrap();
    let e = CloudConfig::from_files(&bad, None, Some("x")).unwrap_err();
    assert!(
        !phoenix_core::error_chain(&e).contains("canary-in-a-list"),
        "{e}"
    );
}

#[test]
fn os_variables_configure_every_kind_of_credential() {
    let env = |pairs: &[(&str, &str)]| {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k: &str| m.get(k).cloned()
    };
    let v3 = CloudConfig::from_env_vars(env(&[
        ("OS_AUTH_URL", "https://keystone.example.com/v3"),
        ("OS_USERNAME", "demo"),
        ("OS_PASSWORD", "pw"),
        ("OS_PROJECT_NAME", "web"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_NAME", "Default"),
        ("OS_REGION_NAME", "RegionOne"),
        ("OS_INTERFACE", "internal"),
    ]))
    .unwrap();
    assert!(matches!(v3.credentials(), Credentials::V3Password { .. }));
    assert_eq!(v3.interface(), Interface::Internal);

    let rax = CloudConfig::from_env_vars(env(&[
        (
            "OS_AUTH_URL",
            "https://identity.api.rackspacecloud.com/v2.0/",
        ),
        ("OS_USERNAME", "alice"),
        ("OS_API_KEY", "k"),
        ("OS_REGION_NAME", "DFW"),
        ("OS_ENDPOINT_TYPE", "internalURL"),
    ]))
    .unwrap();
    assert!(matches!(
        rax.credentials(),
        Credentials::RackspaceApiKey { .. }
    ));
    assert_eq!(rax.interface(), Interface::Internal);

    let domain = CloudConfig::from_env_vars(env(&[
        ("OS_AUTH_URL", "https://keystone.example.com"),
        ("OS_USER_ID", "u-1"),
        ("OS_PASSWORD", "pw"),
        ("OS_DOMAIN_ID", "d-1"),
    ]))
    .unwrap();
    assert!(matches!(
        domain.credentials(),
        Credentials::V3Password { scope: Scope::Domain(DomainRef::Id(d)), user: UserRef::Id(_), .. } if d == "d-1"
    ));

    let app = CloudConfig::from_env_vars(env(&[
        ("OS_AUTH_URL", "https://keystone.example.com/v3"),
        ("OS_AUTH_TYPE", "v3applicationcredential"),
        ("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
        ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
    ]))
    .unwrap();
    assert!(matches!(
        app.credentials(),
        Credentials::V3ApplicationCredential { .. }
    ));

    let v2 = CloudConfig::from_env_vars(env(&[
        ("OS_AUTH_URL", "https://keystone.example.com/v2.0"),
        ("OS_USERNAME", "u"),
        ("OS_PASSWORD", "pw"),
        ("OS_TENANT_NAME", "t"),
    ]))
    .unwrap();
    assert!(matches!(v2.credentials(), Credentials::V2Password { .. }));

    let e = CloudConfig::from_env_vars(env(&[("OS_USERNAME", "u")])).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Missing { setting, .. } if setting == "OS_AUTH_URL"),
        "{e}"
    );
    let e = CloudConfig::from_env_vars(env(&[
        ("OS_AUTH_URL", "ftp://x"),
        ("OS_USERNAME", "u"),
        ("OS_PASSWORD", "p"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("scheme"), "{e}");
}

#[test]
fn the_standard_search_path_and_os_cloud() {
    // The only test in this binary that touches the process environment.
    let (dir, clouds, _secure) = files();
    std::env::set_var("OS_CLIENT_CONFIG_FILE", &clouds);
    std::env::set_var("OS_CLIENT_SECURE_FILE", dir.path().join("secure.yaml"));
    std::env::set_var("OS_CLOUD", "rackspace");
    let c = CloudConfig::from_env().unwrap();
    assert_eq!(c.name(), Some("rackspace"));
    assert_eq!(c.region(), Some("ORD"));
    let c = CloudConfig::from_clouds_yaml(Some("devstack")).unwrap();
    assert_eq!(c.name(), Some("devstack"));
    std::env::set_var("OS_CLIENT_CONFIG_FILE", dir.path().join("absent.yaml"));
    std::env::set_var("XDG_CONFIG_HOME", dir.path().join("no-config-home"));
    let e = CloudConfig::from_clouds_yaml(Some("devstack"));
    // ./clouds.yaml or /etc/openstack may exist on a developer's machine.
    if let Err(e) = e {
        let text = e.to_string();
        assert!(
            text.contains("absent.yaml") && text.contains("/etc/openstack/clouds.yaml"),
            "{text}"
        );
    }
    for k in [
        "OS_CLIENT_CONFIG_FILE",
        "OS_CLIENT_SECURE_FILE",
        "OS_CLOUD",
        "XDG_CONFIG_HOME",
    ] {
        std::env::remove_var(k);
    }
}
