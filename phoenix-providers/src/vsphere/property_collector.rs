//! Reading properties of many objects in one call: `RetrievePropertiesEx`
//! over one object or a container view, following
//! `ContinueRetrievePropertiesEx` tokens until the result is complete.
//!
//! vcsim (0.24) ignores `maxObjects` and answers everything at once
//! without a token; vCenter pages (at most `maxObjects`, and fewer when
//! the answer is large), so the token loop is what makes a describe of a
//! thousand VMs complete there.

use std::collections::BTreeMap;

use phoenix_core::ports::{ErrorKind, PortError};

use super::client::{bad_answer, SoapCall, VsphereClient};
use super::xml::{el, escape, Element, MoRef};

/// How many objects to ask for per page.
pub const PAGE: usize = 1000;

/// One object's properties: each property's `val` element by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// Property path → its value element (`xsi:type` names the shape).
    pub props: BTreeMap<String, Element>,
}

impl Default for MoRef {
    fn default() -> Self {
        Self::new("", "")
    }
}

impl ObjectContent {
    /// A property's text (`runtime.powerState` → `poweredOn`).
    pub fn text(&self, path: &str) -> Option<&str> {
        self.props
            .get(path)
            .map(|v| v.text.trim())
            .filter(|t| !t.is_empty())
    }

    /// A property that is a managed object reference.
    pub fn moref(&self, path: &str) -> Option<MoRef> {
        self.props.get(path).and_then(MoRef::from_element)
    }

    /// A boolean property.
    pub fn flag(&self, path: &str) -> Option<bool> {
        self.text(path).map(|t| t == "true")
    }
}

/// What to read: properties of one type, from one object or a view.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The object type whose properties are read (`VirtualMachine`).
    pub kind: &'a str,
    /// The property paths.
    pub paths: &'a [&'a str],
    /// Where from.
    pub from: From<'a>,
}

/// Where a [`Query`] reads.
#[derive(Debug, Clone)]
pub enum From<'a> {
    /// One object.
    Object(&'a MoRef),
    /// Every object in a container view.
    View(&'a MoRef),
}

fn spec(q: &Query<'_>) -> String {
    let mut s = String::from("<specSet><propSet>");
    s.push_str(&el("type", q.kind));
    for p in q.paths {
        s.push_str(&el("pathSet", p));
    }
    s.push_str("</propSet><objectSet>");
    match q.from {
        From::Object(o) => {
            s.push_str(&o.to_xml("obj"));
            s.push_str("<skip>false</skip>");
        }
        From::View(v) => {
            s.push_str(&v.to_xml("obj"));
            s.push_str(
                "<skip>true</skip><selectSet xsi:type=\"TraversalSpec\">\
                 <type>ContainerView</type><path>view</path><skip>false</skip></selectSet>",
            );
        }
    }
    s.push_str("</objectSet></specSet>");
    s
}

/// Reads `q` in one `RetrievePropertiesEx` (plus one
/// `ContinueRetrievePropertiesEx` per further page). An object that does
/// not exist is a `NotFound` error when read by itself.
pub async fn retrieve(
    client: &VsphereClient,
    q: &Query<'_>,
) -> Result<Vec<ObjectContent>, PortError> {
    Ok(retrieve_counted(client, q).await?.0)
}

/// [`retrieve`], also returning how many calls it took (one per page).
pub async fn retrieve_counted(
    client: &VsphereClient,
    q: &Query<'_>,
) -> Result<(Vec<ObjectContent>, u64), PortError> {
    let pc = client.content().await?.property_collector.clone();
    let args = format!(
        "{}<options><maxObjects>{PAGE}</maxObjects></options>",
        spec(q)
    );
    let call = SoapCall::new("RetrievePropertiesEx", &pc, args);
    let answer = client.call(&call).await?;
    let mut out = Vec::new();
    let mut token = read_page(&call, &answer, &mut out)?;
    // A peer that repeats a token would loop forever: bound the pages.
    let mut pages = 1usize;
    while let Some(t) = token {
        pages += 1;
        if pages > 10_000 {
            return Err(bad_answer(&call, "more than 10,000 pages"));
        }
        let next = SoapCall::new("ContinueRetrievePropertiesEx", &pc, el("token", &t));
        let answer = client.call(&next).await?;
        let following = read_page(&next, &answer, &mut out)?;
        if following.as_deref() == Some(t.as_str()) {
            return Err(bad_answer(&next, "the continuation token repeats"));
        }
        token = following;
    }
    Ok((out, pages as u64))
}

/// Reads one page into `out`; returns its continuation token.
pub(crate) fn read_page(
    call: &SoapCall,
    answer: &Element,
    out: &mut Vec<ObjectContent>,
) -> Result<Option<String>, PortError> {
    // No `returnval` at all: nothing matched.
    let Some(r) = answer.child("returnval") else {
        return Ok(None);
    };
    for o in r.children_named("objects") {
        let obj = o
            .child("obj")
            .and_then(MoRef::from_element)
            .ok_or_else(|| bad_answer(call, "an object without a reference"))?;
        let mut props = BTreeMap::new();
        for p in o.children_named("propSet") {
            if let (Some(name), Some(val)) = (p.child_text("name"), p.child("val")) {
                props.insert(name.to_owned(), val.clone());
            }
        }
        // A property vSphere could not read (no permission) is reported,
        // not silently absent; an object that went away mid-read is
        // skipped, and an indexed path (`config.extraConfig["k"]`) naming
        // a key the object does not have is just absent.
        let mut gone = false;
        for m in o.children_named("missingSet") {
            let path = m.child_text("path").unwrap_or_default();
            let fault = m
                .child("fault")
                .and_then(|f| f.child("fault"))
                .and_then(|f| f.xsi_type())
                .unwrap_or("(none)");
            if fault == "ManagedObjectNotFound" {
                gone = true;
                continue;
            }
            if path.contains('[') && fault == "InvalidProperty" {
                continue;
            }
            return Err(PortError::new(
                call.operation(),
                ErrorKind::BadResponse(format!(
                    "{obj}: property {} unreadable: {fault}",
                    escape(path)
                )),
            ));
        }
        if !gone {
            out.push(ObjectContent { obj, props });
        }
    }
    Ok(r.child_text("token")
        .filter(|t| !t.is_empty())
        .map(str::to_owned))
}

/// Creates a container view of `kind` objects under `container`
/// (recursively). Views belong to the session: one made before a new
/// login is gone after it.
pub async fn container_view(
    client: &VsphereClient,
    container: &MoRef,
    kind: &str,
) -> Result<MoRef, PortError> {
    let vm = client.content().await?.view_manager.clone();
    let args = format!(
        "{}{}<recursive>true</recursive>",
        container.to_xml("container"),
        el("type", kind)
    );
    let call = SoapCall::new("CreateContainerView", &vm, args);
    let answer = client.call(&call).await?;
    answer
        .child("returnval")
        .and_then(MoRef::from_element)
        .ok_or_else(|| bad_answer(&call, "no view in the answer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml;

    fn call() -> SoapCall {
        SoapCall::new(
            "RetrievePropertiesEx",
            &MoRef::new("PropertyCollector", "propertyCollector"),
            "",
        )
    }

    #[test]
    fn pages_carry_tokens_and_objects() {
        let page = r#"<RetrievePropertiesExResponse><returnval><token>tok-2</token><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>name</name><val xsi:type="xsd:string">web-0</val></propSet><propSet><name>runtime.powerState</name><val xsi:type="VirtualMachinePowerState">poweredOn</val></propSet></objects><objects><obj type="VirtualMachine">vm-2</obj><propSet><name>name</name><val>web-1</val></propSet></objects></returnval></RetrievePropertiesExResponse>"#;
        let e = xml::parse(page).unwrap();
        let mut out = Vec::new();
        let token = read_page(&call(), &e, &mut out).unwrap();
        assert_eq!(token.as_deref(), Some("tok-2"));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].text("name"), Some("web-0"));
        assert_eq!(out[0].text("runtime.powerState"), Some("poweredOn"));
        assert_eq!(out[1].text("runtime.powerState"), None);
        // The last page has no token; an empty answer is no objects.
        let last = xml::parse("<R><returnval><objects><obj type=\"VirtualMachine\">vm-3</obj></objects></returnval></R>").unwrap();
        assert_eq!(read_page(&call(), &last, &mut out).unwrap(), None);
        assert_eq!(out.len(), 3);
        let empty = xml::parse("<R/>").unwrap();
        assert_eq!(read_page(&call(), &empty, &mut out).unwrap(), None);
    }

    #[test]
    fn unreadable_properties_are_errors_and_vanished_objects_are_skipped() {
        let denied = r#"<R><returnval><objects><obj type="VirtualMachine">vm-1</obj><missingSet><path>config.extraConfig</path><fault><fault xsi:type="NoPermission"/></fault></missingSet></objects></returnval></R>"#;
        let e = xml::parse(denied).unwrap();
        let err = read_page(&call(), &e, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("NoPermission"), "{err}");
        let gone = r#"<R><returnval><objects><obj type="VirtualMachine">vm-1</obj><missingSet><path>name</path><fault><fault xsi:type="ManagedObjectNotFound"/></fault></missingSet></objects></returnval></R>"#;
        let mut out = Vec::new();
        read_page(&call(), &xml::parse(gone).unwrap(), &mut out).unwrap();
        assert!(out.is_empty());
        let no_such_key = r#"<R><returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>name</name><val>a</val></propSet><missingSet><path>config.extraConfig["guestinfo.x"]</path><fault><fault xsi:type="InvalidProperty"/></fault></missingSet></objects></returnval></R>"#;
        read_page(&call(), &xml::parse(no_such_key).unwrap(), &mut out).unwrap();
        assert_eq!(out.len(), 1, "an absent key is just absent");
        let bad_path = r#"<R><returnval><objects><obj type="VirtualMachine">vm-1</obj><missingSet><path>config.nonsense</path><fault><fault xsi:type="InvalidProperty"/></fault></missingSet></objects></returnval></R>"#;
        assert!(read_page(&call(), &xml::parse(bad_path).unwrap(), &mut out).is_err());
    }

    #[test]
    fn view_specs_traverse_the_view() {
        let v = MoRef::new("ContainerView", "session[1]view-1");
        let s = spec(&Query {
            kind: "VirtualMachine",
            paths: &["name", "runtime.powerState"],
            from: From::View(&v),
        });
        assert!(s.contains("<pathSet>runtime.powerState</pathSet>"));
        assert!(s.contains("<path>view</path>"));
        assert!(s.contains("<skip>true</skip>"));
        assert!(xml::parse(&format!("<x xmlns:xsi=\"i\">{s}</x>")).is_ok());
    }
}
