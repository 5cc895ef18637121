//! Reading the Query APIs' XML answers with `quick-xml`'s serde support:
//! EC2's `<xSet><item>…</item></xSet>` lists, the other services'
//! `<member>` lists, and the two shapes of error bodies (EC2's
//! `<Response><Errors><Error>` and the others' `<ErrorResponse><Error>`).

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// An EC2 list: `<fooSet><item>…</item>…</fooSet>`. Absent or empty sets
/// read as empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Items<T> {
    /// The entries.
    #[serde(rename = "item", default = "Vec::new")]
    pub items: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

/// An ELBv2, Auto Scaling or STS list: `<Foos><member>…</member></Foos>`.
/// Absent or empty lists read as empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Members<T> {
    /// The entries.
    #[serde(rename = "member", default = "Vec::new")]
    pub members: Vec<T>,
}

impl<T> Default for Members<T> {
    fn default() -> Self {
        Self {
            members: Vec::new(),
        }
    }
}

/// An error answer's code, message and request id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) request_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorDoc {
    #[serde(rename = "Errors")]
    errors: Option<ErrorList>,
    #[serde(rename = "Error")]
    error: Option<ErrorEntry>,
    #[serde(rename = "RequestID", alias = "RequestId")]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorList {
    #[serde(rename = "Error", default)]
    error: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Reads an error body in either shape; `None` when it is not XML of
/// either kind (a proxy's HTML page, an empty body).
pub(crate) fn error_body(body: &str) -> Option<ErrorBody> {
    let doc: ErrorDoc = quick_xml::de::from_str(body).ok()?;
    let entry = doc
        .error
        .or_else(|| doc.errors.and_then(|l| l.error.into_iter().next()))?;
    Some(ErrorBody {
        code: entry.code,
        message: entry.message,
        request_id: doc.request_id,
    })
}

/// Reads a success body into `T`; the error says where it failed.
pub fn parse<T: DeserializeOwned>(body: &str) -> Result<T, quick_xml::DeError> {
    quick_xml::de::from_str(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes() {
        let ec2 = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code><Message>The instance ID 'i-1' does not exist</Message></Error></Errors><RequestID>ea966190</RequestID></Response>"#;
        let e = error_body(ec2).unwrap();
        assert_eq!(e.code.as_deref(), Some("InvalidInstanceID.NotFound"));
        assert_eq!(e.request_id.as_deref(), Some("ea966190"));
        let elb = r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>TargetGroupNotFound</Code><Message>One or more target groups not found</Message></Error><RequestId>b1</RequestId></ErrorResponse>"#;
        let e = error_body(elb).unwrap();
        assert_eq!(e.code.as_deref(), Some("TargetGroupNotFound"));
        assert_eq!(e.request_id.as_deref(), Some("b1"));
        assert_eq!(error_body("<html>bad gateway</html>"), None);
        assert_eq!(error_body(""), None);
    }

    #[test]
    fn item_sets() {
        #[derive(Deserialize)]
        struct R {
            #[serde(rename = "instancesSet", default)]
            set: Items<I>,
        }
        #[derive(Deserialize)]
        struct I {
            #[serde(rename = "instanceId")]
            id: String,
        }
        let r: R = parse("<R xmlns=\"x\"><instancesSet><item><instanceId>i-1</instanceId></item><item><instanceId>i-2</instanceId></item></instancesSet></R>").unwrap();
        assert_eq!(
            r.set
                .items
                .iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>(),
            ["i-1", "i-2"]
        );
        let r: R = parse("<R><instancesSet/></R>").unwrap();
        assert!(r.set.items.is_empty());
        let r: R = parse("<R></R>").unwrap();
        assert!(r.set.items.is_empty());
    }
}
