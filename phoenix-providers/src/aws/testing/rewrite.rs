//! Edits of EC2 answers that make moto look like EC2 in its first
//! minutes: instances that are not visible yet are left out, and
//! instances that are still booting read `pending`.

use quick_xml::events::{BytesText, Event};
use quick_xml::{Reader, Writer};

/// What to do with one instance of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edit {
    Keep,
    Hide,
    Pending,
    /// Failed at boot: EC2 reports it terminated.
    Terminated,
}

/// Rewrites every `instancesSet/item` of `xml` by `edit(instance id)`.
/// An answer that is not well-formed XML is returned unchanged.
pub(crate) fn instances(xml: &str, edit: impl Fn(&str) -> Edit) -> String {
    rewrite(xml, &edit).unwrap_or_else(|| xml.to_owned())
}

fn rewrite(xml: &str, edit: &dyn Fn(&str) -> Edit) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut writer = Writer::new(Vec::new());
    let mut path: Vec<String> = Vec::new();
    // The events of the instance being read, and its id once seen.
    let mut item: Option<(Vec<Event<'static>>, Option<String>, usize)> = None;
    loop {
        let ev = reader.read_event().ok()?;
        if matches!(ev, Event::Eof) {
            break;
        }
        let ev = ev.into_owned();
        match &ev {
            Event::Start(s) => {
                let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                let starts_item = item.is_none()
                    && name == "item"
                    && path.last().is_some_and(|p| p == "instancesSet");
                path.push(name);
                if starts_item {
                    item = Some((Vec::new(), None, path.len()));
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                if let Some((_, id @ None, depth)) = item.as_mut() {
                    if path.len() == *depth + 1 && path.last().is_some_and(|p| p == "instanceId") {
                        *id = Some(t.decode().ok()?.into_owned());
                    }
                }
            }
            _ => {}
        }
        match item.as_mut() {
            Some((events, _, _)) => events.push(ev.clone()),
            None => writer.write_event(ev.clone()).ok()?,
        }
        let closes_item = matches!(ev, Event::End(_))
            && item.as_ref().is_some_and(|(_, _, d)| path.len() + 1 == *d);
        if closes_item {
            let (events, id, depth) = item.take()?;
            let what = id.as_deref().map_or(Edit::Keep, edit);
            if what == Edit::Hide {
                continue;
            }
            let mut at: Vec<String> = Vec::new();
            for e in events {
                let e = match (&e, what) {
                    (Event::Start(s), _) => {
                        at.push(String::from_utf8_lossy(s.name().as_ref()).into_owned());
                        e
                    }
                    (Event::End(_), _) => {
                        at.pop();
                        e
                    }
                    (Event::Text(_), Edit::Pending | Edit::Terminated)
                        if at.len() == 3 && at[1] == "instanceState" =>
                    {
                        let value = match (what, at[2].as_str()) {
                            (Edit::Pending, "code") => "0",
                            (Edit::Pending, _) => "pending",
                            (_, "code") => "48",
                            _ => "terminated",
                        };
                        Event::Text(BytesText::new(value).into_owned())
                    }
                    _ => e,
                };
                writer.write_event(e).ok()?;
            }
            let _ = depth;
        }
    }
    String::from_utf8(writer.into_inner()).ok()
}

/// Every `instanceId` in an answer, in order.
pub(crate) fn instance_ids(xml: &str) -> Vec<String> {
    element_texts(xml, b"instanceId")
}

/// Every `InstanceId` in an Auto Scaling answer, in order.
pub(crate) fn group_instance_ids(xml: &str) -> Vec<String> {
    element_texts(xml, b"InstanceId")
}

fn element_texts(xml: &str, name: &[u8]) -> Vec<String> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut in_id = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(s)) => in_id = s.name().as_ref() == name,
            Ok(Event::Text(t)) if in_id => {
                if let Ok(t) = t.decode() {
                    out.push(t.into_owned());
                }
            }
            Ok(Event::End(_)) => in_id = false,
            Ok(Event::Eof) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "<DescribeInstancesResponse><reservationSet><item><instancesSet>\
<item><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState><tagSet><item><key>k</key><value>v</value></item></tagSet></item>\
<item><instanceId>i-2</instanceId><instanceState><code>16</code><name>running</name></instanceState></item>\
<item><instanceId>i-3</instanceId><instanceState><code>16</code><name>running</name></instanceState></item>\
</instancesSet></item></reservationSet></DescribeInstancesResponse>";

    #[test]
    fn hides_and_delays_instances() {
        let out = instances(ANSWER, |id| match id {
            "i-1" => Edit::Pending,
            "i-2" => Edit::Hide,
            _ => Edit::Keep,
        });
        assert_eq!(instance_ids(&out), ["i-1", "i-3"]);
        assert!(
            out.contains(
                "<instanceId>i-1</instanceId><instanceState><code>0</code><name>pending</name>"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "<instanceId>i-3</instanceId><instanceState><code>16</code><name>running</name>"
            ),
            "{out}"
        );
        assert!(
            out.contains("<key>k</key><value>v</value>"),
            "tags survive: {out}"
        );
        assert_eq!(instances("not xml <", |_| Edit::Hide), "not xml <");
    }
}

/// Rewrites the `TargetHealth/State` of each `TargetHealthDescriptions`
/// member of a `DescribeTargetHealth` answer by `edit(target id)` (`None`
/// keeps it). An answer that is not well-formed XML is returned unchanged.
pub(crate) fn target_health(xml: &str, edit: impl Fn(&str) -> Option<&'static str>) -> String {
    health(xml, &edit).unwrap_or_else(|| xml.to_owned())
}

fn health(xml: &str, edit: &dyn Fn(&str) -> Option<&'static str>) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut writer = Writer::new(Vec::new());
    let mut path: Vec<String> = Vec::new();
    let mut member: Option<(Vec<Event<'static>>, Option<String>, usize)> = None;
    loop {
        let ev = reader.read_event().ok()?;
        if matches!(ev, Event::Eof) {
            break;
        }
        let ev = ev.into_owned();
        match &ev {
            Event::Start(s) => {
                let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                let starts = member.is_none()
                    && name == "member"
                    && path.last().is_some_and(|p| p == "TargetHealthDescriptions");
                path.push(name);
                if starts {
                    member = Some((Vec::new(), None, path.len()));
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                if let Some((_, id @ None, depth)) = member.as_mut() {
                    let n = path.len();
                    if n == *depth + 2 && path[n - 2] == "Target" && path[n - 1] == "Id" {
                        *id = Some(t.decode().ok()?.into_owned());
                    }
                }
            }
            _ => {}
        }
        match member.as_mut() {
            Some((events, _, _)) => events.push(ev.clone()),
            None => writer.write_event(ev.clone()).ok()?,
        }
        let closes = matches!(ev, Event::End(_))
            && member
                .as_ref()
                .is_some_and(|(_, _, d)| path.len() + 1 == *d);
        if closes {
            let (events, id, _) = member.take()?;
            let state = id.as_deref().and_then(edit);
            let mut at: Vec<String> = Vec::new();
            for e in events {
                let e = match (&e, state) {
                    (Event::Start(s), _) => {
                        at.push(String::from_utf8_lossy(s.name().as_ref()).into_owned());
                        e
                    }
                    (Event::End(_), _) => {
                        at.pop();
                        e
                    }
                    (Event::Text(_), Some(state))
                        if at.len() == 3 && at[1] == "TargetHealth" && at[2] == "State" =>
                    {
                        Event::Text(BytesText::new(state).into_owned())
                    }
                    _ => e,
                };
                writer.write_event(e).ok()?;
            }
        }
    }
    String::from_utf8(writer.into_inner()).ok()
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn rewrites_the_state_of_the_targets_named() {
        let xml = "<R><DescribeTargetHealthResult><TargetHealthDescriptions>\
<member><Target><Id>i-1</Id><Port>80</Port></Target><TargetHealth><State>healthy</State></TargetHealth></member>\
<member><Target><Id>i-2</Id><Port>80</Port></Target><TargetHealth><State>healthy</State></TargetHealth></member>\
</TargetHealthDescriptions></DescribeTargetHealthResult></R>";
        let out = target_health(xml, |id| (id == "i-2").then_some("draining"));
        assert!(
            out.contains(
                "<Id>i-1</Id><Port>80</Port></Target><TargetHealth><State>healthy</State>"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "<Id>i-2</Id><Port>80</Port></Target><TargetHealth><State>draining</State>"
            ),
            "{out}"
        );
    }
}
