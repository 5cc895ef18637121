//! Errors of configuration and of the service catalog. Errors of API calls
//! are [`PortError`]s, classified for retries (see [`super::http`]).

use std::path::PathBuf;

use phoenix_core::ports::{ErrorKind, PortError};

/// Why a cloud configuration could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is not valid YAML of the expected shape.
    #[error("parsing {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_norway::Error,
    },
    /// No `clouds.yaml` exists on the search path.
    #[error("no clouds.yaml found (searched {searched})")]
    NoCloudsFile {
        /// The paths searched, in order.
        searched: String,
    },
    /// The named cloud is not in `clouds.yaml`.
    #[error("cloud {name:?} is not defined in {path} (defined: {defined})")]
    UnknownCloud {
        /// The cloud asked for.
        name: String,
        /// The file read.
        path: PathBuf,
        /// The clouds it defines.
        defined: String,
    },
    /// Several clouds are defined and none was named (`OS_CLOUD`).
    #[error("{path} defines several clouds ({defined}); name one (OS_CLOUD)")]
    NoCloudNamed {
        /// The file read.
        path: PathBuf,
        /// The clouds it defines.
        defined: String,
    },
    /// A required setting is missing.
    #[error("{setting} is not set ({hint})")]
    Missing {
        /// The setting, such as `auth.auth_url` or `OS_AUTH_URL`.
        setting: String,
        /// Where it would come from.
        hint: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: String,
        /// Why the value cannot be used (never the value of a secret).
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Why no endpoint could be chosen from the service catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// No service of this type is in the catalog.
    #[error("the service catalog has no service of type {service_type:?} (types: {available})")]
    NoService {
        /// The type asked for.
        service_type: String,
        /// The types in the catalog.
        available: String,
    },
    /// Several services have this type and no name picks one.
    #[error(
        "the service catalog has several services of type {service_type:?} ({names}); \
         choose one by name"
    )]
    AmbiguousService {
        /// The type asked for.
        service_type: String,
        /// Their names.
        names: String,
    },
    /// No service of this type has this name.
    #[error("no service of type {service_type:?} is named {name:?} (names: {names})")]
    NoServiceNamed {
        /// The type asked for.
        service_type: String,
        /// The name asked for.
        name: String,
        /// The names of services of that type.
        names: String,
    },
    /// The service has no endpoint for this region and interface.
    #[error(
        "service {service:?} has no {interface} endpoint in region {region} \
         (endpoints: {available})"
    )]
    NoEndpoint {
        /// The service's name or type.
        service: String,
        /// The region asked for (or `any`).
        region: String,
        /// The interface asked for.
        interface: String,
        /// The region/interface pairs it has.
        available: String,
    },
    /// The service has endpoints in several regions and none was chosen.
    #[error("service {service:?} has endpoints in several regions ({regions}); choose a region")]
    AmbiguousRegion {
        /// The service's name or type.
        service: String,
        /// Its regions.
        regions: String,
    },
}

impl CatalogError {
    /// As a port error: a catalog that lacks a service does not heal by
    /// retrying.
    pub fn into_port_error(self, operation: impl Into<String>) -> PortError {
        let message = self.to_string();
        PortError::new(operation, ErrorKind::Unsupported(message)).with_source(self)
    }
}
