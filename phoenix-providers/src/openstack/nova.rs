//! [`NovaCompute`]: the `Compute` port on Nova (OpenStack and Rackspace
//! Cloud Servers).
//!
//! - **Launch**: `POST /servers` with the image, flavor, user data
//!   (base64), config drive, key name, networks, and the Phoenix labels
//!   merged into the boot payload's metadata as server metadata (keys and
//!   values at most 255 characters, at most the metadata-items quota; a
//!   label the payload also sets is refused). Nova has no client token:
//!   `idempotent_launch` is false and the executor finds an earlier launch
//!   by its `phoenix-token` label before launching again. A 5xx or a
//!   timeout on create is not retried here (the server may exist); a 429
//!   or 413 is (nothing was created).
//! - **Describe** costs a constant number of calls however many servers it
//!   asks about: one `GET /servers/detail` per page of the project's
//!   servers (`limit`/`marker`, 1000 a page by default), the requested ids
//!   picked client-side, because Nova cannot filter by metadata
//!   server-side on every version (nor can Mimic); an optional name
//!   filter narrows the list server-side. A server missing right
//!   after creation is simply absent; the executor treats that as
//!   eventual consistency within [`ComputeCapabilities::consistency_window`].
//! - **Status**: `BUILD` (and other transitions) → building, `ACTIVE` →
//!   active, `ERROR` → error with the fault message, `SHUTOFF` (and
//!   paused, suspended, shelved) → stopped, `DELETED` → deleted.
//! - **Stop/start** with `os-stop`/`os-start` (declared unless disabled:
//!   Rackspace and Mimic have neither); **terminate** with `DELETE`, a
//!   server already gone counting as terminated.
//!
//! ```no_run
//! use phoenix_core::ports::Compute;
//! use phoenix_providers::openstack::{CloudConfig, NovaCompute, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(CloudConfig::from_env()?)?;
//! let nova = NovaCompute::builder(session)
//!     .flavor("general1-2")
//!     .key_name("ops")
//!     .build();
//! let caps = nova.capabilities();
//! assert!(!caps.idempotent_launch);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use phoenix_core::id::ServerId;
use phoenix_core::labels::{LabelSelector, Labels};
use phoenix_core::model::{Server, ServerStatus};
use phoenix_core::ports::{
    BootFormat, BootPayload, Compute, ComputeCapabilities, ErrorKind, LaunchRequest, PortError,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::parse_expiry;
use super::http::{ApiRequest, Retry, Session};
use super::pagination::{self, Page};
use crate::api_stats::DescribeStats;

/// Nova's limit on a metadata key or value, in characters.
pub const METADATA_LENGTH: usize = 255;
/// Nova's default `metadata_items` quota (Rackspace and Mimic allow 40).
pub const DEFAULT_METADATA_ITEMS: usize = 128;

const SERVICE: &str = "compute";
const LIST_SERVERS: &str = "nova: listing servers";

/// Builds a [`NovaCompute`].
#[derive(Debug)]
pub struct NovaComputeBuilder {
    session: Session,
    flavor: Option<String>,
    key_name: Option<String>,
    networks: Vec<String>,
    config_drive: Option<bool>,
    stop_start: bool,
    page_size: usize,
    metadata_items: usize,
    consistency_window: Duration,
    microversion: Option<String>,
    name_filter: Option<String>,
}

impl NovaComputeBuilder {
    /// The flavor of launches whose role names none.
    pub fn flavor(mut self, flavor: impl Into<String>) -> Self {
        self.flavor = Some(flavor.into());
        self
    }

    /// The key pair to inject.
    pub fn key_name(mut self, key: impl Into<String>) -> Self {
        self.key_name = Some(key.into());
        self
    }

    /// A network (UUID) to attach; call once per network.
    pub fn network(mut self, uuid: impl Into<String>) -> Self {
        self.networks.push(uuid.into());
        self
    }

    /// Forces the config drive on or off (default: as the boot payload
    /// says).
    pub fn config_drive(mut self, on: bool) -> Self {
        self.config_drive = Some(on);
        self
    }

    /// Whether the cloud stops and starts servers (`os-stop`, `os-start`);
    /// default true. Rackspace Cloud Servers and Mimic do not.
    pub fn stop_start(mut self, supported: bool) -> Self {
        self.stop_start = supported;
        self
    }

    /// Servers per page when listing (default 1000, Nova's usual maximum).
    pub fn page_size(mut self, size: usize) -> Self {
        self.page_size = size.max(1);
        self
    }

    /// The metadata-items quota (default 128; 40 on Rackspace and Mimic).
    pub fn metadata_items(mut self, items: usize) -> Self {
        self.metadata_items = items;
        self
    }

    /// How long a new server may be missing from lists (default 60 s).
    pub fn consistency_window(mut self, window: Duration) -> Self {
        self.consistency_window = window;
        self
    }

    /// Sends `X-OpenStack-Nova-API-Version` (for example `2.45`, whose
    /// `createImage` answers with the image id in the body).
    pub fn microversion(mut self, version: impl Into<String>) -> Self {
        self.microversion = Some(version.into());
        self
    }

    /// Lists only servers whose name contains `text` (Nova's `name`
    /// filter: a regular expression Nova searches for; Mimic matches it as
    /// a substring). Phoenix names servers `<role>-<release>-<n>-<slot>`:
    /// `web-` keeps a project's other servers out of every describe round.
    pub fn name_filter(mut self, text: impl Into<String>) -> Self {
        self.name_filter = Some(text.into()).filter(|t| !t.is_empty());
        self
    }

    /// Builds the adapter.
    pub fn build(self) -> NovaCompute {
        NovaCompute {
            session: self.session,
            flavor: self.flavor,
            key_name: self.key_name,
            networks: self.networks,
            config_drive: self.config_drive,
            stop_start: self.stop_start,
            page_size: self.page_size,
            metadata_items: self.metadata_items,
            consistency_window: self.consistency_window,
            microversion: self.microversion,
            name_filter: self.name_filter,
            describe: Arc::new(Mutex::new(DescribeStats::default())),
        }
    }
}

/// The `Compute` port on Nova.
#[derive(Debug, Clone)]
pub struct NovaCompute {
    session: Session,
    flavor: Option<String>,
    key_name: Option<String>,
    networks: Vec<String>,
    config_drive: Option<bool>,
    stop_start: bool,
    page_size: usize,
    metadata_items: usize,
    consistency_window: Duration,
    microversion: Option<String>,
    name_filter: Option<String>,
    describe: Arc<Mutex<DescribeStats>>,
}

#[derive(Debug, Deserialize)]
struct Fault {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct NovaAddress {
    addr: String,
    #[serde(default)]
    version: Option<u8>,
    #[serde(rename = "OS-EXT-IPS:type", default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NovaServer {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    addresses: BTreeMap<String, Vec<NovaAddress>>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    image: Value,
    #[serde(default)]
    created: Option<String>,
    #[serde(rename = "OS-SRV-USG:launched_at", default)]
    launched_at: Option<String>,
    #[serde(default)]
    fault: Option<Fault>,
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    rel: String,
}

#[derive(Debug, Deserialize)]
struct ServerPage {
    servers: Vec<NovaServer>,
    #[serde(default)]
    servers_links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
struct Created {
    server: CreatedServer,
}

#[derive(Debug, Deserialize)]
struct CreatedServer {
    id: String,
}

/// Maps a Nova status (and fault) to a server status.
pub fn status_of(status: &str, fault: Option<&str>) -> ServerStatus {
    match status.to_ascii_uppercase().as_str() {
        "ACTIVE" => ServerStatus::Active,
        "BUILD" | "REBUILD" | "REBOOT" | "HARD_REBOOT" | "PASSWORD" | "RESIZE"
        | "VERIFY_RESIZE" | "REVERT_RESIZE" | "MIGRATING" => ServerStatus::Building,
        "SHUTOFF" | "STOPPED" | "PAUSED" | "SUSPENDED" | "SHELVED" | "SHELVED_OFFLOADED" => {
            ServerStatus::Stopped
        }
        "DELETED" | "SOFT_DELETED" => ServerStatus::Deleted,
        "ERROR" => ServerStatus::Error {
            message: fault
                .filter(|m| !m.is_empty())
                .unwrap_or("Nova gives no fault message")
                .to_owned(),
        },
        other => ServerStatus::Error {
            message: format!("Nova status {other}"),
        },
    }
}

impl NovaServer {
    fn into_server(self) -> Result<Server, PortError> {
        let id = ServerId::new(self.id.clone()).map_err(|e| {
            PortError::new(
                "nova: reading a server",
                ErrorKind::BadResponse(format!("server id {:?} is unusable: {e}", self.id)),
            )
        })?;
        let mut addresses: Vec<(bool, bool, bool, usize, IpAddr)> = Vec::new();
        for (network, list) in &self.addresses {
            for a in list {
                let Ok(ip) = a.addr.parse::<IpAddr>() else {
                    continue;
                };
                let floating = a.kind.as_deref() == Some("floating");
                let public = network == "public";
                let v6 = a.version == Some(6) || ip.is_ipv6();
                addresses.push((floating, public, v6, addresses.len(), ip));
            }
        }
        // Private first: fixed before floating, private networks before
        // Rackspace's `public`, IPv4 before IPv6.
        addresses.sort();
        let launched_at = self
            .launched_at
            .as_deref()
            .and_then(parse_expiry)
            .or_else(|| self.created.as_deref().and_then(parse_expiry));
        let image = self
            .image
            .get("id")
            .and_then(Value::as_str)
            .and_then(|i| phoenix_core::id::ImageId::new(i).ok());
        let status = status_of(
            &self.status,
            self.fault.as_ref().map(|f| f.message.as_str()),
        );
        Ok(Server {
            id,
            name: self.name,
            addresses: addresses.into_iter().map(|a| a.4).collect(),
            service_port: None,
            status,
            launched_at,
            image,
            labels: self.metadata.into_iter().collect(),
        })
    }
}

/// The Phoenix labels merged into the payload's metadata, within Nova's
/// limits.
fn merged_metadata(
    labels: &Labels,
    payload: &BTreeMap<String, String>,
    quota: usize,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = payload.clone();
    for (k, v) in labels.iter() {
        match out.get(k) {
            Some(existing) if existing != v => {
                return Err(format!(
                    "the boot configuration's metadata sets {k:?}, a Phoenix label: rename it"
                ))
            }
            _ => {
                out.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    if out.len() > quota {
        return Err(format!(
            "{} metadata items exceed the quota of {quota} ({} are Phoenix labels)",
            out.len(),
            labels.len()
        ));
    }
    for (k, v) in &out {
        if k.is_empty() || k.chars().count() > METADATA_LENGTH {
            return Err(format!(
                "metadata key {k:?} is not 1 to {METADATA_LENGTH} characters"
            ));
        }
        if v.chars().count() > METADATA_LENGTH {
            return Err(format!(
                "the value of metadata key {k:?} is longer than {METADATA_LENGTH} characters"
            ));
        }
    }
    Ok(out)
}

impl NovaCompute {
    /// Starts building an adapter over a session.
    pub fn builder(session: Session) -> NovaComputeBuilder {
        NovaComputeBuilder {
            session,
            flavor: None,
            key_name: None,
            networks: Vec::new(),
            config_drive: None,
            stop_start: true,
            page_size: 1000,
            metadata_items: DEFAULT_METADATA_ITEMS,
            consistency_window: Duration::from_secs(60),
            microversion: None,
            name_filter: None,
        }
    }

    /// The session it uses.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Calls made by `describe` so far.
    pub fn describe_stats(&self) -> DescribeStats {
        *self.describe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts counting `describe` calls from zero.
    pub fn reset_describe_stats(&self) {
        *self.describe.lock().unwrap_or_else(|p| p.into_inner()) = DescribeStats::default();
    }

    fn request(&self, r: ApiRequest) -> ApiRequest {
        match &self.microversion {
            Some(v) => r.header("X-OpenStack-Nova-API-Version", v.clone()),
            None => r,
        }
    }

    fn body(&self, request: &LaunchRequest) -> Result<Value, String> {
        let (user_data, metadata, config_drive) = match &request.boot {
            BootPayload::OpenStack {
                user_data,
                metadata,
                config_drive,
            } => (user_data.expose_secret(), metadata.clone(), *config_drive),
            BootPayload::CloudInit { user_data } => {
                (user_data.expose_secret(), BTreeMap::new(), false)
            }
            other => {
                return Err(format!(
                    "Nova takes OpenStack or cloud-init boot payloads, not {:?}",
                    other.format()
                ))
            }
        };
        let flavor = request
            .flavor
            .clone()
            .or_else(|| self.flavor.clone())
            .ok_or("no flavor: the role sets none and the adapter has no default")?;
        let metadata = merged_metadata(&request.labels, &metadata, self.metadata_items)?;
        let mut server = json!({
            "name": request.name,
            "imageRef": request.image.as_str(),
            "flavorRef": flavor,
            "metadata": metadata,
            "config_drive": self.config_drive.unwrap_or(config_drive),
        });
        if !user_data.is_empty() {
            server["user_data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(user_data));
        }
        if let Some(key) = &self.key_name {
            server["key_name"] = json!(key);
        }
        if !self.networks.is_empty() {
            server["networks"] = json!(self
                .networks
                .iter()
                .map(|n| json!({ "uuid": n }))
                .collect::<Vec<_>>());
        }
        Ok(json!({ "server": server }))
    }

    async fn launch_one(&self, request: &LaunchRequest) -> Result<Server, PortError> {
        let operation = format!("nova: creating server {}", request.name);
        let body = self
            .body(request)
            .map_err(|m| PortError::new(operation.clone(), ErrorKind::Invalid(m)))?;
        let answer = self
            .session
            .send(
                self.request(ApiRequest::post(
                    SERVICE,
                    "/servers",
                    "/servers".into(),
                    body,
                ))
                .retry(Retry::ThrottledOnly)
                .operation(operation.clone()),
            )
            .await?;
        let created: Created = answer.json()?;
        let id = ServerId::new(created.server.id.clone()).map_err(|e| {
            PortError::new(
                operation,
                ErrorKind::BadResponse(format!(
                    "server id {:?} is unusable: {e}",
                    created.server.id
                )),
            )
        })?;
        Ok(Server {
            id,
            name: request.name.clone(),
            addresses: Vec::new(),
            service_port: None,
            status: ServerStatus::Building,
            launched_at: None,
            image: Some(request.image.clone()),
            labels: request.labels.clone(),
        })
    }

    /// Every server of the project, page by page; returns them and the
    /// number of requests made.
    pub async fn list_all(&self) -> Result<(Vec<Server>, u64), PortError> {
        let listing = pagination::by_marker(LIST_SERVERS, |marker| async move {
            let mut req = ApiRequest::get(SERVICE, "/servers/detail", "/servers/detail".into())
                .query("limit", self.page_size.to_string())
                .operation(LIST_SERVERS);
            if let Some(name) = &self.name_filter {
                req = req.query("name", name.clone());
            }
            if let Some(m) = marker {
                req = req.query("marker", m);
            }
            let page: ServerPage = self.session.send(self.request(req)).await?.json()?;
            // A full page implies more: not every cloud (Mimic) sends links.
            let more = page.servers.len() >= self.page_size
                || page.servers_links.iter().any(|l| l.rel == "next");
            let last_id = page.servers.last().map(|s| s.id.clone());
            let items = page
                .servers
                .into_iter()
                .map(NovaServer::into_server)
                .collect::<Result<_, _>>()?;
            Ok(Page {
                items,
                last_id,
                more,
            })
        })
        .await?;
        Ok((listing.items, listing.requests))
    }

    async fn action(&self, id: &ServerId, verb: &str, want: ServerStatus) -> Result<(), PortError> {
        if !self.stop_start {
            return Err(PortError::new(
                format!("nova: {verb} server {id}"),
                ErrorKind::Unsupported("this cloud does not stop and start servers".into()),
            ));
        }
        let body = json!({ format!("os-{verb}"): Value::Null });
        let req = self.request(
            ApiRequest::post(
                SERVICE,
                "/servers/{id}/action",
                format!("/servers/{id}/action"),
                body,
            )
            // A 409 (already stopped, or busy) is looked into below, not
            // retried blindly; the executor retries what stays temporary.
            .retry(Retry::ThrottledOnly)
            .operation(format!("nova: {verb} server {id}")),
        );
        match self.session.send(req).await {
            Ok(_) => Ok(()),
            // 409: already in that state (or busy): look before failing.
            Err(e) if super::http::http_status(&e) == Some(409) => {
                let seen = self.get(id).await?;
                if seen.as_ref().map(|s| &s.status) == Some(&want) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// One server by id, `None` when Nova does not know it.
    pub async fn get(&self, id: &ServerId) -> Result<Option<Server>, PortError> {
        let req = self.request(
            ApiRequest::get(SERVICE, "/servers/{id}", format!("/servers/{id}"))
                .operation(format!("nova: reading server {id}")),
        );
        #[derive(Deserialize)]
        struct One {
            server: NovaServer,
        }
        match self.session.send(req).await {
            Ok(r) => Ok(Some(r.json::<One>()?.server.into_server()?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Compute for NovaCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            // Nova's min_count/max_count makes identical servers: each
            // Phoenix server needs its own labels and token.
            max_launch_batch: 1,
            // Describe lists the project once per round whatever the
            // number of ids.
            max_describe_batch: 100_000,
            max_terminate_batch: 1,
            stop_start: self.stop_start,
            idempotent_launch: false,
            consistency_window: self.consistency_window,
            boot_format: BootFormat::OpenStack,
        }
    }

    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        futures::future::join_all(requests.iter().map(|r| self.launch_one(r))).await
    }

    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (all, requests) = self.list_all().await?;
        {
            let mut s = self.describe.lock().unwrap_or_else(|p| p.into_inner());
            s.record(requests, ids.len());
        }
        let wanted: std::collections::BTreeSet<&ServerId> = ids.iter().collect();
        Ok(all.into_iter().filter(|s| wanted.contains(&s.id)).collect())
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError> {
        let (all, _) = self.list_all().await?;
        Ok(all
            .into_iter()
            .filter(|s| s.labels.matches(selector))
            .collect())
    }

    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        self.action(id, "stop", ServerStatus::Stopped).await
    }

    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        self.action(id, "start", ServerStatus::Active).await
    }

    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        let req = self.request(
            ApiRequest::delete(SERVICE, "/servers/{id}", format!("/servers/{id}"))
                .operation(format!("nova: deleting server {id}")),
        );
        match self.session.send(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_with_fault_messages() {
        assert_eq!(status_of("ACTIVE", None), ServerStatus::Active);
        assert_eq!(status_of("BUILD", None), ServerStatus::Building);
        assert_eq!(status_of("SHUTOFF", None), ServerStatus::Stopped);
        assert_eq!(status_of("DELETED", None), ServerStatus::Deleted);
        assert_eq!(
            status_of("ERROR", Some("No valid host was found.")),
            ServerStatus::Error {
                message: "No valid host was found.".into()
            }
        );
        assert!(matches!(
            status_of("ERROR", None),
            ServerStatus::Error { .. }
        ));
        assert!(matches!(
            status_of("UNKNOWN", None),
            ServerStatus::Error { .. }
        ));
    }

    #[test]
    fn labels_merge_into_metadata_within_limits() {
        let mut labels = Labels::new();
        labels.insert("phoenix-pool", "web-v1-0");
        let mut payload = BTreeMap::new();
        payload.insert("team".to_owned(), "shop".to_owned());
        let m = merged_metadata(&labels, &payload, 40).unwrap();
        assert_eq!(m.len(), 2);
        payload.insert("phoenix-pool".to_owned(), "other".to_owned());
        assert!(merged_metadata(&labels, &payload, 40)
            .unwrap_err()
            .contains("phoenix-pool"));
        payload.remove("phoenix-pool");
        payload.insert("long".to_owned(), "x".repeat(256));
        assert!(merged_metadata(&labels, &payload, 40)
            .unwrap_err()
            .contains("255"));
        payload.remove("long");
        assert!(merged_metadata(&labels, &payload, 1)
            .unwrap_err()
            .contains("quota of 1"));
    }

    #[test]
    fn addresses_put_private_fixed_ipv4_first() {
        let s: NovaServer = serde_json::from_value(json!({
            "id": "s-1", "status": "ACTIVE",
            "addresses": {
                "public": [{"addr": "198.51.100.7", "version": 4},
                           {"addr": "2001:db8::7", "version": 6}],
                "private": [{"addr": "10.0.0.7", "version": 4}],
                "net": [{"addr": "203.0.113.9", "version": 4, "OS-EXT-IPS:type": "floating"},
                        {"addr": "192.168.0.7", "version": 4, "OS-EXT-IPS:type": "fixed"}]
            },
            "created": "2026-01-01T00:00:00Z",
            "image": ""
        }))
        .unwrap();
        let server = s.into_server().unwrap();
        let shown: Vec<String> = server.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "192.168.0.7",
                "10.0.0.7",
                "198.51.100.7",
                "2001:db8::7",
                "203.0.113.9"
            ]
        );
        assert!(server.image.is_none());
        assert!(server.launched_at.is_some());
    }
}
