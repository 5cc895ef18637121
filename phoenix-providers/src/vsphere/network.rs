//! Connecting clones to the configured network (`GOVC_NETWORK`): the
//! first network card of the template is re-backed in the clone's
//! relocate spec, to a standard port group (by name and reference) or a
//! distributed one (by switch UUID and port group key), so that the same
//! certified template serves every network.

use phoenix_core::ports::{ErrorKind, PortError};

use super::client::VsphereClient;
use super::folder::Folder;
use super::inventory;
use super::xml::{el, escape, Element, MoRef};

/// Where a network card is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A standard port group (or an opaque network).
    Standard {
        /// Its name.
        name: String,
        /// Its reference.
        network: MoRef,
    },
    /// A distributed port group.
    Distributed {
        /// The switch's UUID.
        switch_uuid: String,
        /// The port group's key.
        portgroup_key: String,
    },
}

impl Backing {
    /// The `backing` element of a network card.
    pub fn to_xml(&self) -> String {
        match self {
            Self::Standard { name, network } => format!(
                "<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\">{}{}</backing>",
                el("deviceName", name),
                network.to_xml("network")
            ),
            Self::Distributed {
                switch_uuid,
                portgroup_key,
            } => format!(
                "<backing xsi:type=\"VirtualEthernetCardDistributedVirtualPortBackingInfo\"><port>{}{}</port></backing>",
                el("switchUuid", switch_uuid),
                el("portgroupKey", portgroup_key)
            ),
        }
    }
}

fn invalid(what: String) -> PortError {
    PortError::new("vsphere network", ErrorKind::Invalid(what))
}

/// Resolves a network name (or inventory path) in the datacenter.
pub async fn resolve(
    client: &VsphereClient,
    folder: &Folder,
    datacenter_path: &str,
    name: &str,
) -> Result<Backing, PortError> {
    let path = if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("{datacenter_path}/network/{name}")
    };
    let net = inventory::find_by_path(client, &path)
        .await?
        .ok_or_else(|| invalid(format!("network {path:?} does not exist")))?;
    if net.kind != "DistributedVirtualPortgroup" {
        let short = name.rsplit('/').next().unwrap_or(name).to_owned();
        return Ok(Backing::Standard {
            name: short,
            network: net,
        });
    }
    let pg = folder
        .read_one(&net, &["key", "config.distributedVirtualSwitch"])
        .await?
        .ok_or_else(|| invalid(format!("port group {path:?} vanished")))?;
    let key = pg
        .text("key")
        .ok_or_else(|| invalid(format!("port group {path:?} has no key")))?
        .to_owned();
    let switch = pg
        .moref("config.distributedVirtualSwitch")
        .ok_or_else(|| invalid(format!("port group {path:?} has no switch")))?;
    let uuid = folder
        .read_one(&switch, &["uuid"])
        .await?
        .and_then(|s| s.text("uuid").map(str::to_owned))
        .ok_or_else(|| invalid(format!("the switch of {path:?} has no UUID")))?;
    Ok(Backing::Distributed {
        switch_uuid: uuid,
        portgroup_key: key,
    })
}

/// The `deviceChange` that connects the first network card among
/// `devices` (a `config.hardware.device` value) to `backing`; `None` when
/// there is no network card. The card is sent whole, with only its
/// backing replaced (its MAC address, slot and controller kept), as
/// vCenter expects of an edit.
pub fn nic_edit(devices: &Element, backing: &Backing) -> Option<String> {
    let nic = devices
        .children
        .iter()
        .find(|d| d.child("macAddress").is_some() || d.child("addressType").is_some())?;
    let mut out = String::from("<deviceChange><operation>edit</operation>");
    write_element(&mut out, nic, "device", Some(&backing.to_xml()));
    out.push_str("</deviceChange>");
    Some(out)
}

/// Writes `e` back as XML under the name `tag`, replacing its `backing`
/// child with `backing` when given.
fn write_element(out: &mut String, e: &Element, tag: &str, backing: Option<&str>) {
    out.push('<');
    out.push_str(tag);
    for (k, v) in &e.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(&escape(v));
        out.push('"');
    }
    out.push('>');
    out.push_str(&escape(e.text.trim()));
    for c in &e.children {
        match backing {
            Some(b) if c.name == "backing" => out.push_str(b),
            _ => write_element(out, c, &c.name, None),
        }
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml;

    #[test]
    fn the_first_card_is_rebacked_whole() {
        let devices = xml::parse(r#"<val xmlns:X="http://www.w3.org/2001/XMLSchema-instance" X:type="ArrayOfVirtualDevice"><VirtualDevice X:type="VirtualIDEController"><key>200</key></VirtualDevice><VirtualDevice X:type="VirtualVmxnet3"><key>4000</key><backing X:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>old &amp; net</deviceName></backing><controllerKey>100</controllerKey><addressType>assigned</addressType><macAddress>00:50:56:aa:bb:cc</macAddress></VirtualDevice></val>"#).unwrap();
        let b = Backing::Distributed {
            switch_uuid: "50 1a".into(),
            portgroup_key: "dvportgroup-13".into(),
        };
        let edit = nic_edit(&devices, &b).unwrap();
        assert!(edit.starts_with("<deviceChange><operation>edit</operation><device xsi:type=\"VirtualVmxnet3\"><key>4000</key>"), "{edit}");
        assert!(edit.contains("<portgroupKey>dvportgroup-13</portgroupKey>"));
        assert!(edit.contains("<macAddress>00:50:56:aa:bb:cc</macAddress>"));
        assert!(!edit.contains("old &amp; net"), "the old backing is gone");
        assert!(xml::parse(&format!("<x xmlns:xsi=\"i\">{edit}</x>")).is_ok());
        let none = xml::parse("<val><VirtualDevice><key>1</key></VirtualDevice></val>").unwrap();
        assert_eq!(nic_edit(&none, &b), None);
    }
}
