//! A VM as Phoenix sees it: the properties read per polling round, how
//! they become a [`Server`], the VM name of a slot, and the `guestinfo.*`
//! keys that mirror Phoenix's labels.
//!
//! Labels live in two places. `guestinfo.phoenix.label.<key>` is written
//! in the clone's own spec, so a VM never exists without them (and they
//! survive where custom attributes are not allowed: a bare ESXi, a role
//! without `Global.SetCustomField`); custom attributes carry the same
//! values for the vSphere Client and win when both are present.

use std::collections::BTreeMap;
use std::net::IpAddr;

use phoenix_core::id::{ImageId, ServerId};
use phoenix_core::labels::{keys, Labels};
use phoenix_core::model::{Server, ServerStatus};
use phoenix_core::ports::LaunchRequest;
use phoenix_core::time::Timestamp;

use super::property_collector::ObjectContent;
use super::xml::escape;

/// The prefix of the guestinfo keys mirroring labels.
pub const LABEL_PREFIX: &str = "guestinfo.phoenix.label.";
/// When Phoenix cloned the VM (RFC 3339): its launch time for max-age,
/// which a power cycle does not reset (`runtime.bootTime` does).
pub const LAUNCHED_AT: &str = "guestinfo.phoenix.launched-at";
/// The template (image id) the VM was cloned from.
pub const IMAGE: &str = "guestinfo.phoenix.image";
/// Keys under this prefix are Phoenix's own; a boot payload may not set them.
pub const RESERVED_PREFIX: &str = "guestinfo.phoenix.";

/// The properties one polling round reads for every VM in the folder,
/// besides Phoenix's `extraConfig` keys ([`ExtraConfigReads`]).
pub const PATHS: &[&str] = &[
    "name",
    "config.template",
    "runtime.powerState",
    // vCenter keeps the boot time in `runtime.bootTime` and its copy in
    // `summary.runtime`; vcsim (0.24) updates only the copy.
    "summary.runtime.bootTime",
    "guest.ipAddress",
    "guest.toolsRunningStatus",
    "customValue",
];

/// How a polling round reads Phoenix's `guestinfo.phoenix.*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtraConfigReads {
    /// Each key by an indexed path (`config.extraConfig["guestinfo.…"]`):
    /// only those values cross the wire, never the boot payload's user
    /// data (which holds secrets and may weigh kilobytes per VM, every
    /// round). vCenter resolves such paths; vcsim (0.24) does not.
    #[default]
    Indexed,
    /// The whole `config.extraConfig` of every VM, Phoenix's keys kept
    /// and the rest dropped on reading (for vcsim; labels other than
    /// Phoenix's own are then read from the mirror too).
    Whole,
}

/// Every property path a polling round reads.
pub fn paths(reads: ExtraConfigReads) -> Vec<String> {
    let mut out: Vec<String> = PATHS.iter().map(|p| (*p).to_owned()).collect();
    match reads {
        ExtraConfigReads::Whole => out.push("config.extraConfig".to_owned()),
        ExtraConfigReads::Indexed => {
            let labels = [
                keys::DEPLOYMENT,
                keys::ENVIRONMENT,
                keys::ROLE,
                keys::RELEASE,
                keys::POOL,
                keys::SLOT,
                keys::TOKEN,
            ];
            let guestinfo = labels
                .iter()
                .map(|l| label_key(l))
                .chain([LAUNCHED_AT.to_owned(), IMAGE.to_owned()]);
            out.extend(guestinfo.map(|k| format!("config.extraConfig[\"{k}\"]")));
        }
    }
    out
}

/// Most characters of a VM name vSphere accepts.
const NAME_MAX: usize = 80;

/// What one polling round knows of a VM, beyond the [`Server`] it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSummary {
    /// The server.
    pub server: Server,
    /// `runtime.powerState` (`poweredOn`, `poweredOff`, `suspended`).
    pub power_state: String,
    /// `guest.toolsRunningStatus` (`guestToolsRunning`, …), if reported.
    pub tools: Option<String>,
    /// The last boot, if powered on.
    pub boot_time: Option<Timestamp>,
    /// Whether it is a template.
    pub template: bool,
}

/// The VM name of a launch: the deployment, the request's name (the pool
/// and slot index, and the replacement attempt) and the first eight
/// characters of its token, so a retried launch names the same VM (and is
/// found, not cloned twice) while another operation's launch of the same
/// slot does not collide. Characters vSphere treats specially become `-`;
/// a name over 80 characters keeps its end, where the slot and token are.
pub fn vm_name(r: &LaunchRequest) -> String {
    let deployment = r.labels.get(keys::DEPLOYMENT).unwrap_or("phoenix");
    let token = r.token.as_str();
    let short = token.get(..8).unwrap_or(token);
    let raw = format!("{deployment}-{}-{short}", r.name);
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let skip = clean.chars().count().saturating_sub(NAME_MAX);
    clean.chars().skip(skip).collect()
}

/// The guestinfo key mirroring a label.
pub fn label_key(label: &str) -> String {
    format!("{LABEL_PREFIX}{label}")
}

/// `<extraConfig>` entries for key-value pairs, escaped.
pub fn extra_config<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        s.push_str("<extraConfig xsi:type=\"OptionValue\"><key>");
        s.push_str(&escape(k));
        s.push_str("</key><value xsi:type=\"xsd:string\">");
        s.push_str(&escape(v));
        s.push_str("</value></extraConfig>");
    }
    s
}

/// The `guestinfo.*` values of an `ArrayOfOptionValue`, keeping only
/// Phoenix's own keys. The last value of a key wins: vcsim (0.24) appends
/// on every reconfigure instead of replacing, as vCenter does. Other keys
/// (the boot payload's user data, which holds secrets) are dropped here.
pub fn phoenix_extra_config(o: &ObjectContent) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut keep = |v: &super::xml::Element| {
        if let Some(k) = v
            .child_text("key")
            .filter(|k| k.starts_with(RESERVED_PREFIX))
        {
            out.insert(
                k.to_owned(),
                v.child_text("value").unwrap_or_default().to_owned(),
            );
        }
    };
    for (path, val) in &o.props {
        if path == "config.extraConfig" {
            val.children.iter().for_each(&mut keep);
        } else if path.starts_with("config.extraConfig[") {
            // An indexed read answers the one OptionValue itself.
            keep(val);
        }
    }
    out
}

fn timestamp(text: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Reads one VM of a polling round; `None` for an object without a
/// usable id.
pub fn summary(o: &ObjectContent, custom: &BTreeMap<String, String>) -> Option<VmSummary> {
    let id = ServerId::new(o.obj.value.clone()).ok()?;
    let ec = phoenix_extra_config(o);
    let mut labels = Labels::new();
    for (k, v) in &ec {
        if let Some(label) = k.strip_prefix(LABEL_PREFIX) {
            labels.insert(label, v.as_str());
        }
    }
    for (k, v) in custom {
        if k.starts_with("phoenix-") || labels.get(k).is_some() {
            labels.insert(k.as_str(), v.as_str());
        }
    }
    let power_state = o.text("runtime.powerState").unwrap_or("unknown").to_owned();
    let ip: Option<IpAddr> = o.text("guest.ipAddress").and_then(|t| t.parse().ok());
    let boot_time = o.text("summary.runtime.bootTime").and_then(timestamp);
    let status = match power_state.as_str() {
        // A running VM takes traffic once its guest reports an address
        // (through VMware Tools); until then it is still booting.
        "poweredOn" if ip.is_some() => ServerStatus::Active,
        "poweredOn" => ServerStatus::Building,
        "poweredOff" | "suspended" => ServerStatus::Stopped,
        other => ServerStatus::Error {
            message: format!("power state {other}"),
        },
    };
    let server = Server {
        name: o.text("name").unwrap_or_default().to_owned(),
        addresses: ip.into_iter().collect(),
        service_port: None,
        status,
        // Only the clone's own record: the boot time is reset by every
        // power-on, and a launch time must never be younger than the truth.
        launched_at: ec.get(LAUNCHED_AT).and_then(|t| timestamp(t)),
        image: ec.get(IMAGE).and_then(|i| ImageId::new(i.clone()).ok()),
        labels,
        id,
    };
    Some(VmSummary {
        server,
        power_state,
        tools: o.text("guest.toolsRunningStatus").map(str::to_owned),
        boot_time,
        template: o.flag("config.template").unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::{self, MoRef};
    use phoenix_core::id::{IdempotencyToken, OperationId, PoolId};
    use phoenix_core::ports::BootPayload;

    fn content(props: &[(&str, &str)]) -> ObjectContent {
        let mut o = ObjectContent {
            obj: MoRef::new("VirtualMachine", "vm-7"),
            ..ObjectContent::default()
        };
        for (k, v) in props {
            o.props.insert(
                (*k).to_owned(),
                xml::parse(&format!("<val>{v}</val>")).unwrap(),
            );
        }
        o
    }

    #[test]
    fn status_needs_power_and_an_address() {
        let ec = format!(
            "<OptionValue><key>{}</key><value>web</value></OptionValue>\
             <OptionValue><key>{}</key><value>old</value></OptionValue>\
             <OptionValue><key>{}</key><value>new</value></OptionValue>\
             <OptionValue><key>guestinfo.userdata</key><value>c2VjcmV0</value></OptionValue>\
             <OptionValue><key>{LAUNCHED_AT}</key><value>2026-12-01T10:00:00Z</value></OptionValue>",
            label_key("phoenix-role"),
            label_key("phoenix-pool"),
            label_key("phoenix-pool"),
        );
        let on = content(&[
            ("name", "d-p-0"),
            ("runtime.powerState", "poweredOn"),
            ("guest.ipAddress", "10.0.0.5"),
            ("summary.runtime.bootTime", "2026-12-04T10:00:00Z"),
            ("config.extraConfig", &ec),
        ]);
        let s = summary(&on, &BTreeMap::new()).unwrap();
        assert_eq!(s.server.status, ServerStatus::Active);
        assert_eq!(
            s.server.addresses,
            vec!["10.0.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.server.labels.get("phoenix-role"), Some("web"));
        assert_eq!(
            s.server.labels.get("phoenix-pool"),
            Some("new"),
            "last wins"
        );
        assert_eq!(s.server.labels.get("guestinfo.userdata"), None);
        assert_eq!(
            s.server.launched_at.unwrap().to_rfc3339(),
            "2026-12-01T10:00:00+00:00",
            "the clone time, not the last boot"
        );
        let custom = BTreeMap::from([("phoenix-pool".to_owned(), "attr".to_owned())]);
        let s = summary(&on, &custom).unwrap();
        assert_eq!(s.server.labels.get("phoenix-pool"), Some("attr"));

        let booting = content(&[("runtime.powerState", "poweredOn")]);
        assert_eq!(
            summary(&booting, &BTreeMap::new()).unwrap().server.status,
            ServerStatus::Building
        );
        let off = content(&[
            ("runtime.powerState", "poweredOff"),
            ("guest.ipAddress", "10.0.0.5"),
        ]);
        assert_eq!(
            summary(&off, &BTreeMap::new()).unwrap().server.status,
            ServerStatus::Stopped
        );
    }

    #[test]
    fn indexed_reads_name_each_key_and_read_back() {
        let p = paths(ExtraConfigReads::Indexed);
        assert!(!p.iter().any(|p| p == "config.extraConfig"));
        let pool = format!("config.extraConfig[\"{}\"]", label_key(keys::POOL));
        assert!(p.contains(&pool), "{p:?}");
        let mut o = content(&[("runtime.powerState", "poweredOff")]);
        o.props.insert(
            pool,
            xml::parse(&format!(
                "<val xsi:type=\"OptionValue\"><key>{}</key><value>web-v1</value></val>",
                label_key(keys::POOL)
            ))
            .unwrap(),
        );
        let s = summary(&o, &BTreeMap::new()).unwrap();
        assert_eq!(s.server.labels.get(keys::POOL), Some("web-v1"));
        assert!(paths(ExtraConfigReads::Whole).contains(&"config.extraConfig".to_owned()));
    }

    #[test]
    fn names_are_stable_per_token_and_bounded() {
        let op: OperationId = "op-1".parse().unwrap();
        let pool: PoolId = "web-v2".parse().unwrap();
        let req = |slot, attempt, name: &str| {
            let token = IdempotencyToken::derive(&op, &pool, slot, attempt);
            let mut labels = Labels::new();
            labels.insert(keys::DEPLOYMENT, "shop");
            LaunchRequest {
                name: name.into(),
                image: ImageId::new("vm-1".to_owned()).unwrap(),
                flavor: None,
                boot: BootPayload::Guestinfo {
                    properties: BTreeMap::new(),
                },
                labels,
                token,
            }
        };
        let a = vm_name(&req(0, 0, "web-v2-0"));
        assert!(a.starts_with("shop-web-v2-0-"), "{a}");
        assert_eq!(a, vm_name(&req(0, 0, "web-v2-0")));
        assert_ne!(a, vm_name(&req(0, 1, "web-v2-0-r1")));
        let long = vm_name(&req(3, 0, &"x/y".repeat(60)));
        assert_eq!(long.chars().count(), 80);
        assert!(!long.contains('/'));
    }

    #[test]
    fn extra_config_escapes() {
        let s = extra_config([("guestinfo.a", "<&>")]);
        assert!(s.contains("&lt;&amp;&gt;"));
    }
}
