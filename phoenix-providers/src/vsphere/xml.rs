//! Writing vim25 requests and reading their answers.
//!
//! vim25 answers are polymorphic: a property value's shape is named by its
//! `xsi:type` attribute (`ArrayOfOptionValue`, `TaskInfo`,
//! `ManagedObjectReference`, a plain string), and the same element name
//! (`val`, `result`) carries any of them. Derived serde structs cannot
//! follow an attribute to pick a shape, so answers are read with
//! quick-xml's streaming reader into a small element tree keyed by local
//! names (namespace prefixes differ between vCenter, ESXi and vcsim), and
//! each caller picks what it needs from it. Requests are written as text
//! with every value escaped.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::Reader;

/// A reference to a managed object: its type and its id
/// (`VirtualMachine`, `vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// The managed object type.
    pub kind: String,
    /// Its id (`vm-42`, `group-v3`).
    pub value: String,
}

impl MoRef {
    /// A reference to `value` of type `kind`.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Reads a reference from an element (`<x type="T">id</x>`).
    pub fn from_element(e: &Element) -> Option<Self> {
        let kind = e.attr("type")?;
        let value = e.text.trim();
        (!value.is_empty()).then(|| Self::new(kind, value))
    }

    /// The element `<tag type="T">id</tag>`.
    pub fn to_xml(&self, tag: &str) -> String {
        format!(
            "<{tag} type=\"{}\">{}</{tag}>",
            escape(&self.kind),
            escape(&self.value)
        )
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// An element of an answer: local name, attributes by local name, text
/// and children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name (no namespace prefix).
    pub name: String,
    /// Attributes, local names (`xsi:type` is `type`; a managed object
    /// reference's own `type` wins over it when both are present).
    pub attrs: Vec<(String, String)>,
    /// The text directly inside, unescaped.
    pub text: String,
    /// Child elements, in order.
    pub children: Vec<Element>,
}

impl Element {
    /// An attribute by local name. Where an element has both `type` and
    /// `xsi:type` (a reference inside a property value), `type` is the
    /// first and is returned.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `xsi:type` attribute, which names the value's shape.
    pub fn xsi_type(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == "xsi:type")
            .map(|(_, v)| v.as_str())
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The first element named `name` at any depth (this one included).
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("malformed XML at byte {position}: {source}")]
    Malformed {
        /// Where.
        position: u64,
        /// Why.
        #[source]
        source: quick_xml::Error,
    },
    /// An entity or character reference that does not resolve.
    #[error("malformed text: {0}")]
    Text(String),
    /// Well-formed, but not a SOAP envelope with a body.
    #[error("not a SOAP envelope with a body")]
    NoBody,
}

/// Answers are at most this deep; deeper input is refused rather than
/// followed (vim25 values nest a dozen levels at most).
const MAX_DEPTH: usize = 64;

/// Reads a document into its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        let event = reader.read_event().map_err(|source| XmlError::Malformed {
            position: reader.buffer_position(),
            source,
        })?;
        match event {
            Event::Start(start) => {
                if stack.len() > MAX_DEPTH {
                    return Err(XmlError::Text("nested too deep".into()));
                }
                stack.push(open(&start)?);
            }
            Event::Empty(start) => {
                let e = open(&start)?;
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(e);
                }
            }
            // The bottom of the stack is the document itself: an end tag
            // without its start (quick-xml reports that as an error
            // first) never pops it.
            Event::End(_) if stack.len() > 1 => {
                if let Some(done) = stack.pop() {
                    if let Some(parent) = stack.last_mut() {
                        parent.children.push(done);
                    }
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| XmlError::Text(e.to_string()))?;
                let s =
                    quick_xml::escape::unescape(&s).map_err(|e| XmlError::Text(e.to_string()))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| XmlError::Text(e.to_string()))?;
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&name)
                        .map(str::to_owned)
                        .ok_or_else(|| XmlError::Text(format!("unknown entity &{name};")))?,
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c).into_owned();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut root = stack.into_iter().next().unwrap_or_default();
    root.children
        .pop()
        .ok_or_else(|| XmlError::Text("empty document".into()))
}

fn open(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, XmlError> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in start.attributes() {
        let a = a.map_err(|e| XmlError::Text(e.to_string()))?;
        let key = a.key;
        // A prefixed `type` is the schema-instance one, whatever the
        // prefix (`xsi:` from vCenter; vcsim writes
        // `XMLSchema-instance:type` with a local declaration): it is kept
        // as `xsi:type` so that it never shadows a reference's own,
        // unprefixed `type`. Other attributes go by local name.
        let local = key.local_name();
        let k = if key.prefix().is_some() && local.as_ref() == b"type" {
            "xsi:type".to_owned()
        } else {
            String::from_utf8_lossy(local.as_ref()).into_owned()
        };
        let v = a
            .unescape_value()
            .map_err(|e| XmlError::Text(e.to_string()))?
            .into_owned();
        attrs.push((k, v));
    }
    Ok(Element {
        name,
        attrs,
        ..Element::default()
    })
}

/// The first element inside the SOAP body: the method's response or a
/// `Fault`.
pub fn body(envelope: &Element) -> Result<&Element, XmlError> {
    envelope
        .child("Body")
        .and_then(|b| b.children.first())
        .ok_or(XmlError::NoBody)
}

/// Escapes text for an element or an attribute.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

/// `<tag>text</tag>`, escaped.
pub fn el(tag: &str, text: &str) -> String {
    format!("<{tag}>{}</{tag}>", escape(text))
}

/// Wraps a method call (`<Login xmlns="urn:vim25">…</Login>`) in an
/// envelope.
pub fn envelope(method: &str, this: &MoRef, args: &str) -> String {
    let mut out = String::with_capacity(256 + args.len());
    out.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>",
    );
    let _ = write!(
        out,
        "<{method} xmlns=\"urn:vim25\">{}{args}</{method}>",
        this.to_xml("_this")
    );
    out.push_str("</soapenv:Body></soapenv:Envelope>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polymorphic_values_and_prefixes() {
        let doc = r#"<?xml version="1.0"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>config.extraConfig</name><val xsi:type="ArrayOfOptionValue"><OptionValue xsi:type="OptionValue"><key>guestinfo.phoenix.pool</key><value xsi:type="xsd:string">p&amp;1</value></OptionValue></val></propSet><propSet><name>resourcePool</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="ManagedObjectReference" type="ResourcePool">resgroup-9</val></propSet></objects><token>t1</token></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;
        let env = parse(doc).unwrap();
        let b = body(&env).unwrap();
        assert_eq!(b.name, "RetrievePropertiesExResponse");
        let r = b.child("returnval").unwrap();
        assert_eq!(r.child_text("token"), Some("t1"));
        let o = r.child("objects").unwrap();
        assert_eq!(
            MoRef::from_element(o.child("obj").unwrap()),
            Some(MoRef::new("VirtualMachine", "vm-1"))
        );
        let sets: Vec<_> = o.children_named("propSet").collect();
        let ov = sets[0].child("val").unwrap();
        assert_eq!(ov.xsi_type(), Some("ArrayOfOptionValue"));
        assert_eq!(
            ov.child("OptionValue").unwrap().child_text("value"),
            Some("p&1")
        );
        let rp = sets[1].child("val").unwrap();
        assert_eq!(rp.xsi_type(), Some("ManagedObjectReference"));
        assert_eq!(
            MoRef::from_element(rp),
            Some(MoRef::new("ResourcePool", "resgroup-9"))
        );
    }

    #[test]
    fn requests_escape_values() {
        let e = envelope(
            "Login",
            &MoRef::new("SessionManager", "SessionManager"),
            &el("userName", "a<b&c"),
        );
        assert!(e.contains("<userName>a&lt;b&amp;c</userName>"));
        assert!(e.contains("<_this type=\"SessionManager\">SessionManager</_this>"));
        assert!(parse(&e).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
        let not_soap = parse("<html><p>502</p></html>").unwrap();
        assert!(body(&not_soap).is_err());
    }
}
