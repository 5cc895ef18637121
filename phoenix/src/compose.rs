//! Ports from a `phoenix.toml`'s cloud providers and balancers: OpenStack
//! (feature `openstack`), AWS (feature `aws`), HAProxy on its own stats
//! socket (feature `haproxy`), and vSphere (feature `vsphere`).

use std::path::Path;
use std::sync::Arc;

use phoenix_core::ports::{Compute, Images, LoadBalancer};

use crate::file::{BalancerSection, ProviderSection, RoleSection};
use crate::stack::StackFileError;

/// A provider's ports, and the sessions its balancers may share.
pub(crate) struct ProviderPorts {
    pub(crate) compute: Arc<dyn Compute>,
    pub(crate) images: Arc<dyn Images>,
    #[cfg(feature = "openstack")]
    pub(crate) openstack: Option<phoenix_providers::openstack::Session>,
    #[cfg(feature = "aws")]
    pub(crate) aws: Option<phoenix_providers::aws::query::AwsClient>,
}

#[cfg_attr(
    not(any(
        feature = "openstack",
        feature = "aws",
        feature = "vsphere",
        feature = "haproxy"
    )),
    allow(dead_code)
)]
fn setup(
    file: &Path,
    what: &'static str,
    name: &str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> StackFileError {
    let file = file.to_path_buf();
    let name = name.to_owned();
    move |source| StackFileError::Setup {
        file,
        what,
        name,
        source,
    }
}

fn missing(file: &Path, what: &'static str, name: &str, kind: &'static str) -> StackFileError {
    StackFileError::MissingFeature {
        file: file.to_path_buf(),
        what,
        name: name.to_owned(),
        kind,
        feature: match kind {
            "rackspace" | "octavia" | "floating_ip" => "openstack",
            "elbv2" | "elastic_ip" => "aws",
            other => other,
        },
    }
}

/// The compute and image ports of a cloud provider.
#[allow(unused_variables)]
pub(crate) async fn provider(
    file: &Path,
    name: &str,
    section: &ProviderSection,
    role: &RoleSection,
) -> Result<ProviderPorts, StackFileError> {
    match section {
        #[cfg(feature = "openstack")]
        ProviderSection::Openstack {
            cloud,
            network,
            images,
            tag_images,
        } => {
            use phoenix_providers::openstack::{
                CloudConfig, ImageApi, NovaCompute, OpenStackImages, Session,
            };
            let err = setup(file, "provider", name);
            let config = match cloud {
                Some(c) => CloudConfig::from_clouds_yaml(Some(c)),
                None => CloudConfig::from_env(),
            }
            .map_err(|e| err(Box::new(e)))?;
            let session =
                Session::new(config).map_err(|e| setup(file, "provider", name)(Box::new(e)))?;
            let mut nova = NovaCompute::builder(session.clone());
            if let Some(f) = &role.flavor {
                nova = nova.flavor(f.clone());
            }
            if let Some(n) = network {
                nova = nova.network(n.clone());
            }
            Ok(ProviderPorts {
                compute: Arc::new(nova.build()),
                images: Arc::new(
                    OpenStackImages::builder(session.clone())
                        .api(match images {
                            crate::file::ImagesApi::Nova => ImageApi::NovaImages,
                            _ => ImageApi::Glance,
                        })
                        .write_properties(*tag_images)
                        .build(),
                ),
                openstack: Some(session),
                #[cfg(feature = "aws")]
                aws: None,
            })
        }
        #[cfg(feature = "aws")]
        ProviderSection::Aws {
            profile,
            region,
            subnet,
            security_groups,
        } => {
            use phoenix_providers::aws::config::AwsConfig;
            use phoenix_providers::aws::ec2::{Ec2Compute, Ec2Images};
            use phoenix_providers::aws::query::AwsClient;
            let profile_name = profile
                .clone()
                .or_else(|| {
                    std::env::var("AWS_PROFILE")
                        .ok()
                        .filter(|p| !p.trim().is_empty())
                })
                .unwrap_or_else(|| "default".into());
            let chosen = profile_name.clone();
            let mut b = AwsConfig::from_vars(move |var| match var {
                "AWS_PROFILE" => Some(chosen.clone()),
                other => std::env::var(other).ok(),
            });
            let region = match region {
                Some(r) => Some(r.clone()),
                None => std::env::var("AWS_REGION")
                    .ok()
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                    .filter(|r| !r.trim().is_empty()),
            };
            let region = match region {
                Some(r) => Some(r),
                None => phoenix_providers::aws::credentials::default_region(&profile_name).await,
            };
            if let Some(r) = region {
                b = b.region(r);
            }
            let config = b
                .build()
                .map_err(|e| setup(file, "provider", name)(Box::new(e)))?;
            let client =
                AwsClient::new(config).map_err(|e| setup(file, "provider", name)(Box::new(e)))?;
            let mut ec2 = Ec2Compute::builder(client.clone());
            if let Some(t) = &role.flavor {
                ec2 = ec2.instance_type(t.clone());
            }
            if let Some(s) = subnet {
                ec2 = ec2.subnets([s.clone()]);
            }
            if !security_groups.is_empty() {
                ec2 = ec2.security_groups(security_groups.clone());
            }
            Ok(ProviderPorts {
                compute: Arc::new(ec2.build()),
                images: Arc::new(Ec2Images::builder(client.clone()).build()),
                #[cfg(feature = "openstack")]
                openstack: None,
                aws: Some(client),
            })
        }
        #[cfg(feature = "vsphere")]
        ProviderSection::Vsphere {
            folder,
            clone,
            simulator,
        } => {
            use phoenix_providers::vsphere::{CloneMode, ExtraConfigReads};
            use phoenix_providers::vsphere::{
                VsphereClient, VsphereCompute, VsphereConfig, VsphereImages,
            };
            let folder = folder.clone();
            let config = VsphereConfig::from_vars(|var| match (var, &folder) {
                ("GOVC_FOLDER", Some(f)) => Some(f.clone()),
                _ => std::env::var(var).ok(),
            })
            .map_err(|e| setup(file, "provider", name)(Box::new(e)))?;
            let client = VsphereClient::new(config)
                .map_err(|e| setup(file, "provider", name)(Box::new(e)))?;
            let compute = VsphereCompute::builder(client.clone())
                .clone_mode(match clone {
                    crate::file::CloneKind::Linked => CloneMode::Linked,
                    _ => CloneMode::Full,
                })
                .vcsim_guest_ips(*simulator)
                .extra_config_reads(if *simulator {
                    ExtraConfigReads::Whole
                } else {
                    ExtraConfigReads::Indexed
                })
                .build();
            let images = VsphereImages::builder(client)
                .snapshot_for_linked_clones(*clone == crate::file::CloneKind::Linked)
                .build();
            Ok(ProviderPorts {
                compute: Arc::new(compute),
                images: Arc::new(images),
                #[cfg(feature = "openstack")]
                openstack: None,
                #[cfg(feature = "aws")]
                aws: None,
            })
        }
        other => Err(missing(file, "provider", name, other.kind())),
    }
}

/// A balancer for a provider's servers (not `embedded`: the caller
/// handles it). `port` is the role's.
#[allow(unused_variables)]
pub(crate) fn balancer(
    file: &Path,
    name: &str,
    section: &BalancerSection,
    ports: Option<&ProviderPorts>,
    port: u16,
) -> Result<Arc<dyn LoadBalancer>, StackFileError> {
    let wrong_provider = |needs: &str| StackFileError::Unsupported {
        file: file.to_path_buf(),
        reason: format!(
            "balancer {name:?} ({}) needs a provider of kind {needs} (it shares its session)",
            section.kind()
        ),
    };
    match section {
        #[cfg(feature = "haproxy")]
        BalancerSection::Haproxy {
            socket: Some(socket),
            backend,
        } => {
            use phoenix_lb::haproxy::{HaproxyBalancer, RuntimeAddr, ServerCheck};
            let addr: RuntimeAddr = match socket.parse::<std::net::SocketAddr>() {
                Ok(a) => a.into(),
                Err(_) => std::path::PathBuf::from(socket).into(),
            };
            let backend = backend.clone().ok_or_else(|| StackFileError::Unsupported {
                file: file.to_path_buf(),
                reason: format!("balancer {name:?}: a haproxy with `socket` needs `backend`"),
            })?;
            let lb = HaproxyBalancer::builder()
                .runtime_api(addr)
                .backend(backend)
                .check(Some(ServerCheck::new(
                    std::time::Duration::from_secs(2),
                    2,
                    3,
                )))
                .build()
                .map_err(|e| setup(file, "balancer", name)(Box::new(e)))?;
            Ok(Arc::new(lb))
        }
        #[cfg(feature = "openstack")]
        BalancerSection::Rackspace { id } => {
            let p = ports.ok_or_else(|| wrong_provider("openstack"))?;
            let session = p
                .openstack
                .clone()
                .ok_or_else(|| wrong_provider("openstack"))?;
            Ok(Arc::new(
                phoenix_lb::rackspace_clb::RackspaceClb::builder(session, *id)
                    .servers(p.compute.clone())
                    .build(),
            ))
        }
        #[cfg(feature = "openstack")]
        BalancerSection::Octavia { pool, subnet } => {
            let p = ports.ok_or_else(|| wrong_provider("openstack"))?;
            let session = p
                .openstack
                .clone()
                .ok_or_else(|| wrong_provider("openstack"))?;
            let mut b = phoenix_lb::octavia::OctaviaBalancer::builder(session, pool.clone());
            if let Some(s) = subnet {
                b = b.subnet(s.clone());
            }
            Ok(Arc::new(b.build()))
        }
        #[cfg(feature = "openstack")]
        BalancerSection::FloatingIp { id } => {
            let p = ports.ok_or_else(|| wrong_provider("openstack"))?;
            let session = p
                .openstack
                .clone()
                .ok_or_else(|| wrong_provider("openstack"))?;
            Ok(Arc::new(phoenix_lb::floating_ip::FloatingIpBalancer::new(
                phoenix_providers::openstack::Neutron::new(session),
                id.clone(),
                port,
            )))
        }
        #[cfg(feature = "aws")]
        BalancerSection::Elbv2 {
            target_group,
            listener,
            standby_group,
        } => {
            let p = ports.ok_or_else(|| wrong_provider("aws"))?;
            let client = p.aws.clone().ok_or_else(|| wrong_provider("aws"))?;
            match (listener, standby_group) {
                (Some(l), Some(g)) => Ok(Arc::new(phoenix_lb::elbv2::Elbv2BlueGreen::new(
                    client,
                    l.clone(),
                    target_group.clone(),
                    g.clone(),
                ))),
                (None, None) => Ok(Arc::new(phoenix_lb::elbv2::Elbv2TargetGroup::new(
                    client,
                    target_group.clone(),
                ))),
                _ => Err(StackFileError::Unsupported {
                    file: file.to_path_buf(),
                    reason: format!(
                        "balancer {name:?}: `listener` and `standby_group` go together (a listener switching two target groups)"
                    ),
                }),
            }
        }
        #[cfg(feature = "aws")]
        BalancerSection::ElasticIp { allocation } => {
            let p = ports.ok_or_else(|| wrong_provider("aws"))?;
            let client = p.aws.clone().ok_or_else(|| wrong_provider("aws"))?;
            Ok(Arc::new(phoenix_lb::elastic_ip::ElasticIpBalancer::new(
                client,
                allocation.clone(),
                port,
            )))
        }
        other => Err(missing(file, "balancer", name, other.kind())),
    }
}
