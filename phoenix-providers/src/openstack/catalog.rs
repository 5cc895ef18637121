//! The service catalog a token comes with, from identity v2.0
//! (`serviceCatalog`) or Keystone v3 (`catalog`), and the choice of one
//! endpoint by service type, name, region and interface.
//!
//! ```
//! use phoenix_providers::openstack::catalog::{Catalog, CatalogEndpoint, CatalogService};
//! use phoenix_providers::openstack::Interface;
//!
//! let catalog = Catalog::new(vec![CatalogService {
//!     service_type: "compute".into(),
//!     name: "nova".into(),
//!     endpoints: vec![CatalogEndpoint {
//!         interface: Interface::Public,
//!         region: "RegionOne".into(),
//!         url: "https://nova.example.com/v2.1".into(),
//!     }],
//! }]);
//! let url = catalog.endpoint("compute", None, None, Interface::Public)?;
//! assert_eq!(url, "https://nova.example.com/v2.1");
//! # Ok::<(), phoenix_providers::openstack::CatalogError>(())
//! ```

use std::collections::BTreeSet;

use serde::Deserialize;

use super::config::Interface;
use super::error::CatalogError;

/// Service names that break a tie between services of one type: Rackspace
/// lists its control and behaviour services (and Mimic its control
/// endpoints) under the same types as the real ones.
pub const PREFERRED_NAMES: &[&str] = &[
    "cloudServersOpenStack",
    "cloudLoadBalancers",
    "cloudImages",
    "cloudNetworks",
];

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEndpoint {
    /// Public, internal or admin.
    pub interface: Interface,
    /// Region (empty for global services).
    pub region: String,
    /// Base URL.
    pub url: String,
}

/// One service of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogService {
    /// Type, such as `compute` or `rax:load-balancer`.
    pub service_type: String,
    /// Name, such as `nova` or `cloudServersOpenStack`.
    pub name: String,
    /// Its endpoints.
    pub endpoints: Vec<CatalogEndpoint>,
}

/// A token's service catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    services: Vec<CatalogService>,
    default_region: Option<String>,
}

impl Catalog {
    /// A catalog of these services.
    pub fn new(services: Vec<CatalogService>) -> Self {
        Self {
            services,
            default_region: None,
        }
    }

    /// Uses this region when none is configured and a service has several
    /// (Rackspace's `RAX-AUTH:defaultRegion`).
    pub fn with_default_region(mut self, region: Option<String>) -> Self {
        self.default_region = region.filter(|r| !r.is_empty());
        self
    }

    /// The services.
    pub fn services(&self) -> &[CatalogService] {
        &self.services
    }

    /// The region used when none is configured, if the identity service
    /// named one.
    pub fn default_region(&self) -> Option<&str> {
        self.default_region.as_deref()
    }

    /// The URL of the endpoint of `service_type` (of the service `name`
    /// when given) in `region` (any when `None`) with `interface`.
    ///
    /// Several services of one type are told apart by `name`, or else by
    /// [`PREFERRED_NAMES`]; endpoints in several regions by `region`, or
    /// else by the identity service's default region. Anything still
    /// ambiguous is an error that lists the choices.
    pub fn endpoint(
        &self,
        service_type: &str,
        name: Option<&str>,
        region: Option<&str>,
        interface: Interface,
    ) -> Result<String, CatalogError> {
        let of_type: Vec<&CatalogService> = self
            .services
            .iter()
            .filter(|s| s.service_type == service_type)
            .collect();
        if of_type.is_empty() {
            let available: BTreeSet<&str> = self
                .services
                .iter()
                .map(|s| s.service_type.as_str())
                .collect();
            return Err(CatalogError::NoService {
                service_type: service_type.into(),
                available: join(available),
            });
        }
        let names = || join(of_type.iter().map(|s| s.name.as_str()));
        let service = match name {
            Some(n) => *of_type.iter().find(|s| s.name == n).ok_or_else(|| {
                CatalogError::NoServiceNamed {
                    service_type: service_type.into(),
                    name: n.into(),
                    names: names(),
                }
            })?,
            None if of_type.len() == 1 => of_type[0],
            None => *of_type
                .iter()
                .find(|s| PREFERRED_NAMES.contains(&s.name.as_str()))
                .ok_or_else(|| CatalogError::AmbiguousService {
                    service_type: service_type.into(),
                    names: names(),
                })?,
        };
        let label = if service.name.is_empty() {
            service.service_type.clone()
        } else {
            service.name.clone()
        };
        let with_interface: Vec<&CatalogEndpoint> = service
            .endpoints
            .iter()
            .filter(|e| e.interface == interface)
            .collect();
        let in_region = |r: &str| -> Vec<&CatalogEndpoint> {
            with_interface
                .iter()
                .copied()
                .filter(|e| e.region == r || e.region.is_empty())
                .collect()
        };
        let chosen = match region {
            Some(r) => in_region(r),
            None => {
                let regions: BTreeSet<&str> =
                    with_interface.iter().map(|e| e.region.as_str()).collect();
                if regions.len() <= 1 {
                    with_interface.clone()
                } else if let Some(default) = self.default_region.as_deref() {
                    in_region(default)
                } else {
                    return Err(CatalogError::AmbiguousRegion {
                        service: label,
                        regions: join(regions),
                    });
                }
            }
        };
        match chosen.first() {
            Some(e) => Ok(e.url.clone()),
            None => Err(CatalogError::NoEndpoint {
                service: label,
                region: region
                    .or(self.default_region.as_deref())
                    .unwrap_or("any")
                    .into(),
                interface: interface.to_string(),
                available: join(
                    service
                        .endpoints
                        .iter()
                        .map(|e| format!("{}/{}", region_label(&e.region), e.interface)),
                ),
            }),
        }
    }
}

fn region_label(region: &str) -> &str {
    if region.is_empty() {
        "global"
    } else {
        region
    }
}

fn join<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Identity v2.0's `serviceCatalog` entry.
#[derive(Debug, Deserialize)]
pub(crate) struct V2Service {
    #[serde(rename = "type")]
    service_type: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    endpoints: Vec<V2Endpoint>,
}

#[derive(Debug, Deserialize)]
struct V2Endpoint {
    #[serde(default)]
    region: Option<String>,
    #[serde(rename = "publicURL")]
    public_url: Option<String>,
    #[serde(rename = "internalURL")]
    internal_url: Option<String>,
    #[serde(rename = "adminURL")]
    admin_url: Option<String>,
}

/// Keystone v3's `catalog` entry.
#[derive(Debug, Deserialize)]
pub(crate) struct V3Service {
    #[serde(rename = "type")]
    service_type: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    endpoints: Vec<V3Endpoint>,
}

#[derive(Debug, Deserialize)]
struct V3Endpoint {
    interface: String,
    #[serde(default)]
    region_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    url: String,
}

impl Catalog {
    pub(crate) fn from_v2(services: Vec<V2Service>) -> Self {
        let services = services
            .into_iter()
            .map(|s| {
                let mut endpoints = Vec::new();
                for e in s.endpoints {
                    let region = e.region.unwrap_or_default();
                    for (interface, url) in [
                        (Interface::Public, e.public_url),
                        (Interface::Internal, e.internal_url),
                        (Interface::Admin, e.admin_url),
                    ] {
                        if let Some(url) = url {
                            endpoints.push(CatalogEndpoint {
                                interface,
                                region: region.clone(),
                                url,
                            });
                        }
                    }
                }
                CatalogService {
                    service_type: s.service_type,
                    name: s.name,
                    endpoints,
                }
            })
            .collect();
        Self::new(services)
    }

    pub(crate) fn from_v3(services: Vec<V3Service>) -> Self {
        let services = services
            .into_iter()
            .map(|s| CatalogService {
                service_type: s.service_type,
                name: s.name,
                endpoints: s
                    .endpoints
                    .into_iter()
                    .filter_map(|e| {
                        Some(CatalogEndpoint {
                            interface: Interface::parse(&e.interface).ok()?,
                            region: e.region_id.or(e.region).unwrap_or_default(),
                            url: e.url,
                        })
                    })
                    .collect(),
            })
            .collect();
        Self::new(services)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(t: &str, name: &str, regions: &[&str]) -> CatalogService {
        CatalogService {
            service_type: t.into(),
            name: name.into(),
            endpoints: regions
                .iter()
                .map(|r| CatalogEndpoint {
                    interface: Interface::Public,
                    region: (*r).into(),
                    url: format!("http://{name}/{r}"),
                })
                .collect(),
        }
    }

    #[test]
    fn chooses_by_type_name_region_and_interface() {
        let c = Catalog::new(vec![
            svc("compute", "cloudServersOpenStack", &["ORD", "DFW"]),
            svc("compute", "cloudServersBehavior", &["ORD", "DFW"]),
            svc("rax:dns", "cloudDNS", &[""]),
        ]);
        let e = c
            .endpoint("compute", None, Some("DFW"), Interface::Public)
            .unwrap();
        assert_eq!(e, "http://cloudServersOpenStack/DFW");
        let e = c
            .endpoint(
                "compute",
                Some("cloudServersBehavior"),
                Some("ORD"),
                Interface::Public,
            )
            .unwrap();
        assert_eq!(e, "http://cloudServersBehavior/ORD");
        let err = c
            .endpoint("compute", None, None, Interface::Public)
            .unwrap_err();
        assert!(matches!(err, CatalogError::AmbiguousRegion { .. }), "{err}");
        let c2 = c.clone().with_default_region(Some("DFW".into()));
        assert_eq!(
            c2.endpoint("compute", None, None, Interface::Public)
                .unwrap(),
            "http://cloudServersOpenStack/DFW"
        );
        assert_eq!(
            c.endpoint("rax:dns", None, Some("ORD"), Interface::Public)
                .unwrap(),
            "http://cloudDNS/"
        );
        let err = c
            .endpoint("compute", None, Some("ORD"), Interface::Internal)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ORD/public"), "{err}");
        let err = c
            .endpoint("image", None, None, Interface::Public)
            .unwrap_err()
            .to_string();
        assert!(err.contains("compute, rax:dns"), "{err}");
        let ambiguous = Catalog::new(vec![svc("x", "a", &["R"]), svc("x", "b", &["R"])]);
        assert!(matches!(
            ambiguous.endpoint("x", None, None, Interface::Public),
            Err(CatalogError::AmbiguousService { .. })
        ));
    }
}
