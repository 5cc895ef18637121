//! Which AWS region and endpoints, as whom, and how hard to push: an
//! [`AwsConfig`] built in code or read the way AWS tools read it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use phoenix_core::retry::RetryPolicy;
use reqwest::Url;

use super::credentials::{self, SharedCredentialsProvider};
use super::error::AwsConfigError;

/// The AWS Query APIs Phoenix speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// EC2 (instances, AMIs, tags, Elastic IPs).
    Ec2,
    /// Elastic Load Balancing v2 (target groups, listeners).
    Elbv2,
    /// EC2 Auto Scaling.
    AutoScaling,
    /// Security Token Service (assume-role, web identity).
    Sts,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 4] = [Self::Ec2, Self::Elbv2, Self::AutoScaling, Self::Sts];

    /// The SigV4 signing name, also the endpoint's host prefix.
    pub fn signing_name(self) -> &'static str {
        match self {
            Self::Ec2 => "ec2",
            Self::Elbv2 => "elasticloadbalancing",
            Self::AutoScaling => "autoscaling",
            Self::Sts => "sts",
        }
    }

    /// The Query API version.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Ec2 => "2016-11-15",
            Self::Elbv2 => "2015-12-01",
            Self::AutoScaling => "2011-01-01",
            Self::Sts => "2011-06-15",
        }
    }

    /// The service's part of `AWS_ENDPOINT_URL_<SERVICE>` (its SDK service
    /// id, upper-cased, spaces as underscores).
    pub fn endpoint_env_suffix(self) -> &'static str {
        match self {
            Self::Ec2 => "EC2",
            Self::Elbv2 => "ELASTIC_LOAD_BALANCING_V2",
            Self::AutoScaling => "AUTO_SCALING",
            Self::Sts => "STS",
        }
    }

    /// Other spellings of that suffix users set (the issue tracker of
    /// every SDK has the v1 name for ELBv2).
    fn endpoint_env_aliases(self) -> &'static [&'static str] {
        match self {
            Self::Elbv2 => &["ELASTIC_LOAD_BALANCING"],
            _ => &[],
        }
    }

    /// The public endpoint in `region`.
    pub fn default_endpoint(self, region: &str) -> String {
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("https://{}.{region}.{suffix}/", self.signing_name())
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.signing_name())
    }
}

/// Where and as whom to call AWS.
#[derive(Clone)]
pub struct AwsConfig {
    pub(crate) region: String,
    pub(crate) endpoints: BTreeMap<Service, Url>,
    pub(crate) credentials: SharedCredentialsProvider,
    pub(crate) retry: RetryPolicy,
    pub(crate) bucket: (u32, f64),
    pub(crate) timeout: Duration,
}

impl fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|(s, u)| (s.signing_name(), u.as_str()))
                    .collect::<Vec<_>>(),
            )
            .field("credentials", &"[provider]")
            .field("retry", &self.retry)
            .field("bucket", &self.bucket)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AwsConfig {
    /// Starts a configuration in code.
    pub fn builder() -> AwsConfigBuilder {
        AwsConfigBuilder::default()
    }

    /// Reads the configuration the way the AWS CLI and SDKs do: the
    /// profile from `AWS_PROFILE` (default `default`); the region from
    /// `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` or IMDS;
    /// endpoints from `AWS_ENDPOINT_URL_<SERVICE>`, then `AWS_ENDPOINT_URL`
    /// (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true), then the
    /// public ones; credentials from AWS's default chain.
    pub async fn from_env() -> Result<Self, AwsConfigError> {
        let var = |name: &str| std::env::var(name).ok();
        let profile = var("AWS_PROFILE")
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| "default".into());
        let mut b = Self::from_vars(var);
        if b.region.is_none() {
            if let Some(region) = credentials::default_region(&profile).await {
                b = b.region(region);
            }
        }
        b.build_for_profile(&profile)
    }

    /// What [`Self::from_env`] reads from variables (region, endpoints,
    /// the profile's credential chain), over any source of them, as a
    /// builder to complete.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> AwsConfigBuilder {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let mut b = Self::builder().credentials(credentials::default_chain(&profile));
        if let Some(region) = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
            b = b.region(region);
        }
        let ignore = var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !ignore {
            if let Some(url) = var("AWS_ENDPOINT_URL") {
                b = b.endpoint_url_named("AWS_ENDPOINT_URL", url);
            }
            for s in Service::ALL {
                let names = std::iter::once(s.endpoint_env_suffix())
                    .chain(s.endpoint_env_aliases().iter().copied());
                for suffix in names {
                    let name = format!("AWS_ENDPOINT_URL_{suffix}");
                    if let Some(url) = var(&name) {
                        b = b.service_endpoint_named(s, name, url);
                        break;
                    }
                }
            }
        }
        b
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The endpoint a service is called at.
    pub fn endpoint(&self, service: Service) -> &Url {
        // `build` fills every service in.
        &self.endpoints[&service]
    }
}

/// Builds an [`AwsConfig`].
#[derive(Default)]
pub struct AwsConfigBuilder {
    region: Option<String>,
    all_endpoint: Option<(String, String)>,
    endpoints: Vec<(Service, String, String)>,
    credentials: Option<SharedCredentialsProvider>,
    retry: Option<RetryPolicy>,
    bucket: Option<(u32, f64)>,
    timeout: Option<Duration>,
}

impl AwsConfigBuilder {
    /// The region (`eu-west-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// One endpoint for every service (moto, LocalStack).
    pub fn endpoint_url(self, url: impl Into<String>) -> Self {
        self.endpoint_url_named("endpoint_url", url)
    }

    fn endpoint_url_named(mut self, name: impl Into<String>, url: impl Into<String>) -> Self {
        self.all_endpoint = Some((name.into(), url.into()));
        self
    }

    /// The endpoint of one service, before [`Self::endpoint_url`].
    pub fn service_endpoint(self, service: Service, url: impl Into<String>) -> Self {
        let name = format!("endpoint of {service}");
        self.service_endpoint_named(service, name, url)
    }

    fn service_endpoint_named(
        mut self,
        service: Service,
        name: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        self.endpoints.push((service, name.into(), url.into()));
        self
    }

    /// Who calls: any `ProvideCredentials` (ours, or `aws-config`'s).
    pub fn credentials(mut self, provider: SharedCredentialsProvider) -> Self {
        self.credentials = Some(provider);
        self
    }

    /// The retry policy (default: the shared [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The client-side request bucket: `burst` requests, refilled at
    /// `per_second` (default 100 and 20, EC2's own bucket for
    /// non-mutating actions; `per_second` 0 turns it off).
    pub fn request_rate(mut self, burst: u32, per_second: f64) -> Self {
        self.bucket = Some((burst, per_second));
        self
    }

    /// Deadline of one HTTP request (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The configuration.
    pub fn build(self) -> Result<AwsConfig, AwsConfigError> {
        self.build_for_profile("default")
    }

    fn build_for_profile(self, profile: &str) -> Result<AwsConfig, AwsConfigError> {
        let region = self.region.ok_or_else(|| AwsConfigError::NoRegion {
            profile: profile.to_owned(),
        })?;
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(AwsConfigError::BadSetting {
                variable: "region".into(),
                value: region,
                reason: "a region is letters, digits and dashes".into(),
            });
        }
        let parse = |name: &str, value: &str| {
            Url::parse(value).map_err(|e| AwsConfigError::BadSetting {
                variable: name.to_owned(),
                value: value.to_owned(),
                reason: e.to_string(),
            })
        };
        let mut endpoints = BTreeMap::new();
        if let Some((name, url)) = &self.all_endpoint {
            let url = parse(name, url)?;
            for s in Service::ALL {
                endpoints.insert(s, url.clone());
            }
        }
        for (s, name, url) in &self.endpoints {
            endpoints.insert(*s, parse(name, url)?);
        }
        for s in Service::ALL {
            if let std::collections::btree_map::Entry::Vacant(slot) = endpoints.entry(s) {
                slot.insert(parse("region", &s.default_endpoint(&region))?);
            }
        }
        let credentials = self
            .credentials
            .unwrap_or_else(|| credentials::default_chain(profile));
        Ok(AwsConfig {
            region,
            endpoints,
            credentials,
            retry: self.retry.unwrap_or_default(),
            bucket: self.bucket.unwrap_or((100, 20.0)),
            timeout: self.timeout.unwrap_or(Duration::from_secs(30)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn endpoints_follow_the_sdk_precedence() {
        let c = AwsConfig::from_vars(vars(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:6000"),
            (
                "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING",
                "http://127.0.0.1:7000",
            ),
        ]))
        .build()
        .unwrap();
        assert_eq!(c.region(), "eu-west-1");
        assert_eq!(c.endpoint(Service::Ec2).as_str(), "http://127.0.0.1:6000/");
        assert_eq!(
            c.endpoint(Service::Elbv2).as_str(),
            "http://127.0.0.1:7000/"
        );
        assert_eq!(
            c.endpoint(Service::AutoScaling).as_str(),
            "http://127.0.0.1:5000/"
        );

        let c = AwsConfig::from_vars(vars(&[
            ("AWS_DEFAULT_REGION", "us-east-2"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]))
        .build()
        .unwrap();
        assert_eq!(
            c.endpoint(Service::Ec2).as_str(),
            "https://ec2.us-east-2.amazonaws.com/"
        );
        assert_eq!(
            c.endpoint(Service::Elbv2).as_str(),
            "https://elasticloadbalancing.us-east-2.amazonaws.com/"
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let e = AwsConfig::from_vars(vars(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_EC2", "not a url"),
        ]))
        .build()
        .unwrap_err();
        assert!(e.to_string().contains("AWS_ENDPOINT_URL_EC2"), "{e}");
        let e = AwsConfig::builder().region("us east").build().unwrap_err();
        assert!(e.to_string().contains("region"), "{e}");
    }
}
