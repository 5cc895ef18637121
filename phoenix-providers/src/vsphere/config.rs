//! Which vCenter, as whom, how to trust it, and where VMs go: a
//! [`VsphereConfig`] built in code or read from the variables govc users
//! already have (`GOVC_URL`, `GOVC_USERNAME`, `GOVC_PASSWORD`,
//! `GOVC_INSECURE`, `GOVC_TLS_CA_CERTS`, `GOVC_TLS_KNOWN_HOSTS`,
//! `GOVC_DATACENTER`, `GOVC_DATASTORE`, `GOVC_RESOURCE_POOL`,
//! `GOVC_FOLDER`, `GOVC_NETWORK`).
//!
//! TLS verification is on by default. A vCenter signed by its own CA (the
//! norm) is trusted either by adding that CA (`GOVC_TLS_CA_CERTS`,
//! [`VsphereConfigBuilder::ca_pem`]) or by pinning the certificate's
//! thumbprint (`GOVC_TLS_KNOWN_HOSTS`, [`VsphereConfigBuilder::thumbprint`]);
//! `GOVC_INSECURE=1` turns verification off and says so in `Debug`.

use std::fmt;
use std::time::Duration;

use phoenix_core::retry::RetryPolicy;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use super::trust::{Thumbprint, TlsTrust};

/// Where and as whom to call vSphere, and where VMs go.
#[derive(Clone)]
pub struct VsphereConfig {
    pub(crate) url: Url,
    pub(crate) username: String,
    pub(crate) password: SecretString,
    pub(crate) tls: TlsTrust,
    pub(crate) datacenter: Option<String>,
    pub(crate) datastore: Option<String>,
    pub(crate) resource_pool: Option<String>,
    pub(crate) folder: Option<String>,
    pub(crate) network: Option<String>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
    pub(crate) task_deadline: Duration,
    pub(crate) task_poll: Duration,
}

impl fmt::Debug for VsphereConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VsphereConfig")
            .field("url", &self.url.as_str())
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("tls", &self.tls)
            .field("datacenter", &self.datacenter)
            .field("datastore", &self.datastore)
            .field("resource_pool", &self.resource_pool)
            .field("folder", &self.folder)
            .field("network", &self.network)
            .field("timeout", &self.timeout)
            .field("task_deadline", &self.task_deadline)
            .finish()
    }
}

/// Problems with the vSphere configuration. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum VsphereConfigError {
    /// A required setting is missing.
    #[error("{what} is not set: {hint}")]
    Missing {
        /// The setting.
        what: &'static str,
        /// Where to set it.
        hint: &'static str,
    },
    /// A setting is malformed.
    #[error("{variable}={value:?} is not usable: {reason}")]
    BadSetting {
        /// The variable or setting.
        variable: String,
        /// Its value (never a secret).
        value: String,
        /// Why.
        reason: String,
    },
    /// A file a setting names could not be read.
    #[error("cannot read {variable} file {path}: {source}")]
    File {
        /// The variable.
        variable: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

impl VsphereConfig {
    /// Starts a configuration for the SDK at `url` (`https://vc/sdk`; a
    /// bare host name gets `https://` and `/sdk`; `user:pass@` in it is
    /// taken as the credentials).
    pub fn builder(url: &str) -> Result<VsphereConfigBuilder, VsphereConfigError> {
        let (url, user, pass) = parse_url("url", url)?;
        Ok(VsphereConfigBuilder {
            inner: Self {
                url,
                username: user.unwrap_or_default(),
                password: SecretString::from(pass.unwrap_or_default()),
                tls: TlsTrust::Verify { ca_pem: Vec::new() },
                datacenter: None,
                datastore: None,
                resource_pool: None,
                folder: None,
                network: None,
                retry: RetryPolicy::default(),
                timeout: Duration::from_secs(60),
                task_deadline: Duration::from_secs(30 * 60),
                task_poll: Duration::from_millis(500),
            },
        })
    }

    /// Reads the configuration the way govc does, from the process
    /// environment.
    pub fn from_env() -> Result<Self, VsphereConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any source of variables (for tests and
    /// for programs that keep settings elsewhere).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, VsphereConfigError> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let url = get("GOVC_URL").ok_or(VsphereConfigError::Missing {
            what: "GOVC_URL",
            hint: "the vCenter or ESXi SDK URL, such as https://vc.example.com/sdk",
        })?;
        let mut b = Self::builder(&url).map_err(|e| match e {
            VsphereConfigError::BadSetting { value, reason, .. } => {
                VsphereConfigError::BadSetting {
                    variable: "GOVC_URL".into(),
                    value,
                    reason,
                }
            }
            other => other,
        })?;
        if let Some(u) = get("GOVC_USERNAME") {
            b.inner.username = u;
        }
        if let Some(p) = var("GOVC_PASSWORD").filter(|p| !p.is_empty()) {
            b.inner.password = SecretString::from(p);
        }
        if let Some(v) = get("GOVC_INSECURE") {
            match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => b.inner.tls = TlsTrust::Insecure,
                "0" | "false" | "no" => {}
                _ => {
                    return Err(VsphereConfigError::BadSetting {
                        variable: "GOVC_INSECURE".into(),
                        value: v,
                        reason: "expected 1/true or 0/false".into(),
                    })
                }
            }
        }
        if b.inner.tls != TlsTrust::Insecure {
            if let Some(path) = get("GOVC_TLS_KNOWN_HOSTS") {
                let text = read_file("GOVC_TLS_KNOWN_HOSTS", &path)?;
                if let Some(t) = known_host(&text, &b.inner.url)? {
                    b.inner.tls = TlsTrust::Pinned(t);
                }
            }
            if let Some(paths) = get("GOVC_TLS_CA_CERTS") {
                if let TlsTrust::Verify { ca_pem } = &mut b.inner.tls {
                    for p in paths.split(':').filter(|p| !p.is_empty()) {
                        ca_pem.push(read_file("GOVC_TLS_CA_CERTS", p)?.into_bytes());
                    }
                }
            }
        }
        b.inner.datacenter = get("GOVC_DATACENTER");
        b.inner.datastore = get("GOVC_DATASTORE");
        b.inner.resource_pool = get("GOVC_RESOURCE_POOL");
        b.inner.folder = get("GOVC_FOLDER");
        b.inner.network = get("GOVC_NETWORK");
        b.build()
    }

    /// The SDK URL (without credentials).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// How the server's certificate is trusted.
    pub fn tls(&self) -> &TlsTrust {
        &self.tls
    }

    /// The datacenter (`GOVC_DATACENTER`), if set.
    pub fn datacenter(&self) -> Option<&str> {
        self.datacenter.as_deref()
    }

    /// The datastore for clones (`GOVC_DATASTORE`), if set.
    pub fn datastore(&self) -> Option<&str> {
        self.datastore.as_deref()
    }

    /// The resource pool for clones (`GOVC_RESOURCE_POOL`), if set.
    pub fn resource_pool(&self) -> Option<&str> {
        self.resource_pool.as_deref()
    }

    /// The VM folder (`GOVC_FOLDER`), if set.
    pub fn folder(&self) -> Option<&str> {
        self.folder.as_deref()
    }

    /// The network for the first NIC of clones (`GOVC_NETWORK`), if set.
    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    pub(crate) fn password(&self) -> &str {
        self.password.expose_secret()
    }
}

/// Builds a [`VsphereConfig`].
#[derive(Debug, Clone)]
pub struct VsphereConfigBuilder {
    inner: VsphereConfig,
}

impl VsphereConfigBuilder {
    /// The user name (overrides one in the URL).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.inner.username = user.into();
        self
    }

    /// The password (overrides one in the URL).
    pub fn password(mut self, password: SecretString) -> Self {
        self.inner.password = password;
        self
    }

    /// Trusts exactly the certificate with this thumbprint.
    pub fn thumbprint(mut self, thumbprint: Thumbprint) -> Self {
        self.inner.tls = TlsTrust::Pinned(thumbprint);
        self
    }

    /// Adds a CA certificate (PEM) to the trusted roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        match &mut self.inner.tls {
            TlsTrust::Verify { ca_pem } => ca_pem.push(pem.into()),
            other => {
                *other = TlsTrust::Verify {
                    ca_pem: vec![pem.into()],
                }
            }
        }
        self
    }

    /// Turns certificate verification off (labs only).
    pub fn insecure(mut self) -> Self {
        self.inner.tls = TlsTrust::Insecure;
        self
    }

    /// The datacenter; without it, the inventory's only one.
    pub fn datacenter(mut self, name: impl Into<String>) -> Self {
        self.inner.datacenter = Some(name.into());
        self
    }

    /// The datastore for clones; without it, the template's.
    pub fn datastore(mut self, name: impl Into<String>) -> Self {
        self.inner.datastore = Some(name.into());
        self
    }

    /// The resource pool for clones (an inventory path such as
    /// `/DC0/host/C0/Resources`, or relative to the datacenter's host
    /// folder: `C0/Resources`).
    pub fn resource_pool(mut self, path: impl Into<String>) -> Self {
        self.inner.resource_pool = Some(path.into());
        self
    }

    /// The VM folder (an inventory path, or relative to the datacenter's
    /// VM folder); without it, the datacenter's VM folder.
    pub fn folder(mut self, path: impl Into<String>) -> Self {
        self.inner.folder = Some(path.into());
        self
    }

    /// The network (port group) for the first NIC of clones; without it,
    /// the template's.
    pub fn network(mut self, name: impl Into<String>) -> Self {
        self.inner.network = Some(name.into());
        self
    }

    /// The retry policy for transient faults (default: the shared one).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.inner.retry = policy;
        self
    }

    /// The deadline of one HTTP call (default 60 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.inner.timeout = d;
        self
    }

    /// How long a task (clone, power, destroy) may run (default 30 min).
    pub fn task_deadline(mut self, d: Duration) -> Self {
        self.inner.task_deadline = d;
        self
    }

    /// How often a running task is looked at (default 500 ms).
    pub fn task_poll(mut self, d: Duration) -> Self {
        self.inner.task_poll = d;
        self
    }

    /// The configuration; refuses one without credentials.
    pub fn build(self) -> Result<VsphereConfig, VsphereConfigError> {
        if self.inner.username.is_empty() {
            return Err(VsphereConfigError::Missing {
                what: "the user name",
                hint: "GOVC_USERNAME, `user@` in GOVC_URL, or VsphereConfigBuilder::username",
            });
        }
        if self.inner.password.expose_secret().is_empty() {
            return Err(VsphereConfigError::Missing {
                what: "the password",
                hint: "GOVC_PASSWORD, `user:pass@` in GOVC_URL, or VsphereConfigBuilder::password",
            });
        }
        Ok(self.inner)
    }
}

type UrlParts = (Url, Option<String>, Option<String>);

fn parse_url(variable: &str, text: &str) -> Result<UrlParts, VsphereConfigError> {
    let bad = |reason: String| VsphereConfigError::BadSetting {
        variable: variable.to_owned(),
        // The URL may carry a password: show it without.
        value: text
            .rsplit_once('@')
            .map_or_else(|| text.to_owned(), |(_, host)| format!("…@{host}")),
        reason,
    };
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("the scheme must be https (or http)".into()));
    }
    if url.host_str().is_none() {
        return Err(bad("no host".into()));
    }
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| bad("malformed percent-encoding in credentials".into()))
    };
    let user = (!url.username().is_empty())
        .then(|| decode(url.username()))
        .transpose()?;
    let pass = url.password().map(decode).transpose()?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/sdk");
    }
    Ok((url, user, pass))
}

fn percent_decode(s: &str) -> Option<String> {
    // A `%` not followed by two hex digits is malformed here (the crate
    // passes it through as it is).
    let b = s.as_bytes();
    let malformed = b.iter().enumerate().any(|(i, c)| {
        *c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if malformed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn read_file(variable: &'static str, path: &str) -> Result<String, VsphereConfigError> {
    std::fs::read_to_string(path).map_err(|source| VsphereConfigError::File {
        variable,
        path: path.to_owned(),
        source,
    })
}

/// The thumbprint govc's `known_hosts` file (`host thumbprint` lines)
/// records for the URL's host.
fn known_host(text: &str, url: &Url) -> Result<Option<Thumbprint>, VsphereConfigError> {
    let host = url.host_str().unwrap_or_default();
    let with_port = url.port().map(|p| format!("{host}:{p}"));
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(h), Some(t)) = (parts.next(), parts.next()) else {
            continue;
        };
        if h == host || Some(h) == with_port.as_deref() {
            return Thumbprint::parse(t).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn govc_variables() {
        let c = VsphereConfig::from_vars(vars(&[
            ("GOVC_URL", "vc.example.com"),
            ("GOVC_USERNAME", "administrator@vsphere.local"),
            ("GOVC_PASSWORD", "s3cr3t-pa55"),
            ("GOVC_DATACENTER", "DC0"),
            ("GOVC_DATASTORE", "ds1"),
            ("GOVC_RESOURCE_POOL", "/DC0/host/C0/Resources"),
            ("GOVC_FOLDER", "phoenix"),
            ("GOVC_NETWORK", "VM Network"),
        ]))
        .unwrap();
        assert_eq!(c.url().as_str(), "https://vc.example.com/sdk");
        assert_eq!(c.username(), "administrator@vsphere.local");
        assert_eq!(c.password(), "s3cr3t-pa55");
        assert_eq!(c.datacenter(), Some("DC0"));
        assert_eq!(c.datastore(), Some("ds1"));
        assert_eq!(c.resource_pool(), Some("/DC0/host/C0/Resources"));
        assert_eq!(c.folder(), Some("phoenix"));
        assert_eq!(c.network(), Some("VM Network"));
        assert_eq!(c.tls(), &TlsTrust::Verify { ca_pem: vec![] });
    }

    #[test]
    fn credentials_in_the_url_and_insecure() {
        let c = VsphereConfig::from_vars(vars(&[
            ("GOVC_URL", "https://user:p%40ss@127.0.0.1:8989/sdk"),
            ("GOVC_INSECURE", "1"),
        ]))
        .unwrap();
        assert_eq!(c.url().as_str(), "https://127.0.0.1:8989/sdk");
        assert_eq!(c.username(), "user");
        assert_eq!(c.password(), "p@ss");
        assert_eq!(c.tls(), &TlsTrust::Insecure);
        // Explicit variables win over the URL's.
        let c = VsphereConfig::from_vars(vars(&[
            ("GOVC_URL", "https://user:pass@vc/sdk"),
            ("GOVC_USERNAME", "other"),
            ("GOVC_PASSWORD", "better-secret"),
        ]))
        .unwrap();
        assert_eq!((c.username(), c.password()), ("other", "better-secret"));
    }

    #[test]
    fn missing_and_malformed_settings() {
        let e = VsphereConfig::from_vars(vars(&[])).unwrap_err();
        assert!(e.to_string().contains("GOVC_URL"), "{e}");
        let e = VsphereConfig::from_vars(vars(&[("GOVC_URL", "vc")])).unwrap_err();
        assert!(e.to_string().contains("user name"), "{e}");
        let e = VsphereConfig::from_vars(vars(&[("GOVC_URL", "u@vc")])).unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
        let e = VsphereConfig::from_vars(vars(&[("GOVC_URL", "ftp://u:hunter2-secret@vc")]))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("GOVC_URL") && !text.contains("hunter2"),
            "{text}"
        );
        let e =
            VsphereConfig::from_vars(vars(&[("GOVC_URL", "u:p@vc"), ("GOVC_INSECURE", "maybe")]))
                .unwrap_err();
        assert!(e.to_string().contains("GOVC_INSECURE"), "{e}");
    }

    #[test]
    fn known_hosts_pin_the_thumbprint() {
        let dir = std::env::temp_dir().join(format!("phoenix-vsphere-kh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("known_hosts");
        let sha1 = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67";
        std::fs::write(
            &file,
            format!("other.example 00:11\nvc.example:8443 {sha1}\n"),
        )
        .unwrap();
        let c = VsphereConfig::from_vars(vars(&[
            ("GOVC_URL", "u:p@vc.example:8443"),
            ("GOVC_TLS_KNOWN_HOSTS", file.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(c.tls(), &TlsTrust::Pinned(Thumbprint::parse(sha1).unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_password_never_shows() {
        let c = VsphereConfig::builder("https://u:hunter2-secret@vc/sdk")
            .unwrap()
            .build()
            .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("[REDACTED]"));
        let b = VsphereConfig::builder("vc")
            .unwrap()
            .username("u")
            .password(SecretString::from("hunter2-secret"));
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
