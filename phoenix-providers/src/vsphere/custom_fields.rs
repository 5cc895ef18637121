//! Custom attributes (`CustomFieldsManager`): Phoenix's labels on VMs and
//! its lifecycle state, version and provenance on templates, where the
//! vSphere Client shows them and operators search by them.
//!
//! Field definitions are global (no managed object type), so that the
//! same `phoenix-pool` attribute applies to VMs and templates alike; they
//! are read once per adapter and created when missing. Values are keyed
//! by the definition's number, which the cache maps back to names.
//!
//! vcsim (0.24) appends a new value on every `SetField`, even for a key
//! the object already has: values are read last-wins. vCenter replaces.

use std::collections::BTreeMap;

use phoenix_core::ports::{ErrorKind, PortError};
use tokio::sync::Mutex;

use super::client::{SoapCall, VsphereClient};
use super::fault;
use super::property_collector::{self, From, ObjectContent, Query};
use super::xml::{el, Element, MoRef};

/// Names ↔ keys of the custom field definitions.
#[derive(Debug, Default)]
pub struct CustomFields {
    defs: Mutex<Option<BTreeMap<String, i32>>>,
}

impl CustomFields {
    fn manager(client_content: Option<&MoRef>) -> Result<MoRef, PortError> {
        client_content.cloned().ok_or_else(|| {
            PortError::new(
                "vsphere custom attributes",
                ErrorKind::Unsupported(
                    "this endpoint has no CustomFieldsManager (a bare ESXi host)".into(),
                ),
            )
        })
    }

    async fn load(client: &VsphereClient) -> Result<BTreeMap<String, i32>, PortError> {
        let cfm = Self::manager(client.content().await?.custom_fields_manager.as_ref())?;
        let got = property_collector::retrieve(
            client,
            &Query {
                kind: "CustomFieldsManager",
                paths: &["field"],
                from: From::Object(&cfm),
            },
        )
        .await?;
        let mut out = BTreeMap::new();
        if let Some(field) = got.first().and_then(|o| o.props.get("field")) {
            for def in &field.children {
                if let (Some(name), Some(key)) = (
                    def.child_text("name"),
                    def.child_text("key").and_then(|k| k.parse().ok()),
                ) {
                    out.insert(name.to_owned(), key);
                }
            }
        }
        Ok(out)
    }

    /// Key → name of every definition (loaded at the first use).
    pub async fn names(&self, client: &VsphereClient) -> Result<BTreeMap<i32, String>, PortError> {
        let mut defs = self.defs.lock().await;
        if defs.is_none() {
            *defs = Some(Self::load(client).await?);
        }
        Ok(defs
            .iter()
            .flatten()
            .map(|(n, k)| (*k, n.clone()))
            .collect())
    }

    /// The key of the definition `name`, created when missing.
    pub async fn key(&self, client: &VsphereClient, name: &str) -> Result<i32, PortError> {
        let mut defs = self.defs.lock().await;
        if defs.is_none() {
            *defs = Some(Self::load(client).await?);
        }
        if let Some(k) = defs.as_ref().and_then(|d| d.get(name)) {
            return Ok(*k);
        }
        let cfm = Self::manager(client.content().await?.custom_fields_manager.as_ref())?;
        let call = SoapCall::new("AddCustomFieldDef", &cfm, el("name", name));
        let key = match client.call(&call).await {
            Ok(answer) => answer
                .child("returnval")
                .and_then(|d| d.child_text("key"))
                .and_then(|k| k.parse().ok()),
            // Another orchestrator defined it meanwhile.
            Err(e) if fault::fault_type(&e) == Some("DuplicateName") => None,
            Err(e) => return Err(e),
        };
        let key = match key {
            Some(k) => k,
            None => {
                let reloaded = Self::load(client).await?;
                let k = reloaded.get(name).copied().ok_or_else(|| {
                    PortError::new(
                        call.operation(),
                        ErrorKind::BadResponse(format!("custom attribute {name} has no key")),
                    )
                })?;
                *defs = Some(reloaded);
                return Ok(k);
            }
        };
        if let Some(d) = defs.as_mut() {
            d.insert(name.to_owned(), key);
        }
        Ok(key)
    }

    /// Sets `name` = `value` on `entity`: one `SetField`.
    pub async fn set(
        &self,
        client: &VsphereClient,
        entity: &MoRef,
        name: &str,
        value: &str,
    ) -> Result<(), PortError> {
        let key = self.key(client, name).await?;
        let cfm = Self::manager(client.content().await?.custom_fields_manager.as_ref())?;
        let args = format!(
            "{}<key>{key}</key>{}",
            entity.to_xml("entity"),
            el("value", value)
        );
        client
            .call(&SoapCall::new("SetField", &cfm, args))
            .await
            .map(|_| ())
    }
}

/// The custom values of an object (its `customValue` property), by
/// field name; the last value of a key wins (vcsim appends duplicates).
pub fn values(o: &ObjectContent, names: &BTreeMap<i32, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(cv) = o.props.get("customValue") {
        for v in &cv.children {
            if let Some((k, val)) = key_value(v) {
                if let Some(name) = k.parse().ok().and_then(|k: i32| names.get(&k)) {
                    out.insert(name.clone(), val.to_owned());
                }
            }
        }
    }
    out
}

fn key_value(v: &Element) -> Option<(&str, &str)> {
    Some((
        v.child_text("key")?,
        v.child_text("value").unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml;

    #[test]
    fn custom_values_last_wins_and_unknown_keys_are_skipped() {
        let e = xml::parse(r#"<val xsi:type="ArrayOfCustomFieldValue"><CustomFieldValue xsi:type="CustomFieldStringValue"><key>101</key><value>blue</value></CustomFieldValue><CustomFieldValue xsi:type="CustomFieldStringValue"><key>102</key><value>x</value></CustomFieldValue><CustomFieldValue xsi:type="CustomFieldStringValue"><key>101</key><value>green</value></CustomFieldValue></val>"#).unwrap();
        let mut o = ObjectContent::default();
        o.props.insert("customValue".into(), e);
        let names = BTreeMap::from([(101, "phoenix-pool".to_owned())]);
        let v = values(&o, &names);
        assert_eq!(v.len(), 1);
        assert_eq!(v.get("phoenix-pool").map(String::as_str), Some("green"));
    }
}
