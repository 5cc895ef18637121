//! ELBv2's timing, which moto leaves out: a registered target reads
//! `initial` until its health checks pass, and a deregistered one reads
//! `draining` for its group's deregistration delay before it goes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A deregistration held back until its group's delay has passed.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) group: String,
    pub(crate) id: String,
    pub(crate) until: Instant,
    /// The request to send to moto then.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: bytes::Bytes,
}

/// What the proxy knows of target groups.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    registered: HashMap<(String, String), Instant>,
    held: Vec<Held>,
    delays: HashMap<String, Duration>,
}

/// ELBv2's default deregistration delay.
const DEFAULT_DELAY: Duration = Duration::from_secs(300);

fn listed(params: &[(String, String)]) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k.starts_with("Targets.member.") && k.ends_with(".Id"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Targets {
    /// Deregistrations whose delay has passed, to send to moto now.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Held> {
        let (due, keep): (Vec<Held>, Vec<Held>) = self.held.drain(..).partition(|h| h.until <= now);
        self.held = keep;
        due
    }

    /// Notes a group's deregistration delay.
    pub(crate) fn attributes(&mut self, params: &[(String, String)]) {
        let Some(group) = param(params, "TargetGroupArn") else {
            return;
        };
        for i in 1..=20 {
            let key = param(params, &format!("Attributes.member.{i}.Key"));
            let value = param(params, &format!("Attributes.member.{i}.Value"));
            if key == Some("deregistration_delay.timeout_seconds") {
                if let Some(secs) = value.and_then(|v| v.parse().ok()) {
                    self.delays
                        .insert(group.to_owned(), Duration::from_secs(secs));
                }
            }
        }
    }

    /// Notes targets registered now. Registering a target that is
    /// already registered changes nothing (its health is kept), as in
    /// ELBv2.
    pub(crate) fn registered(&mut self, params: &[(String, String)], now: Instant) {
        let Some(group) = param(params, "TargetGroupArn") else {
            return;
        };
        for id in listed(params) {
            if !self.draining(group, &id) {
                self.registered.entry((group.to_owned(), id)).or_insert(now);
            }
        }
    }

    /// Holds a deregistration back for the group's delay; `false` when
    /// the delay is zero (send it now).
    pub(crate) fn deregister(
        &mut self,
        params: &[(String, String)],
        headers: Vec<(String, String)>,
        body: bytes::Bytes,
        now: Instant,
    ) -> bool {
        let Some(group) = param(params, "TargetGroupArn") else {
            return false;
        };
        let delay = self.delays.get(group).copied().unwrap_or(DEFAULT_DELAY);
        if delay.is_zero() {
            return false;
        }
        for id in listed(params) {
            self.registered.remove(&(group.to_owned(), id.clone()));
            self.held.push(Held {
                group: group.to_owned(),
                id,
                until: now + delay,
                headers: headers.clone(),
                body: body.clone(),
            });
        }
        true
    }

    fn draining(&self, group: &str, id: &str) -> bool {
        self.held.iter().any(|h| h.group == group && h.id == id)
    }

    /// The state a target of `group` reads now, if not moto's.
    pub(crate) fn state(
        &self,
        group: &str,
        id: &str,
        health_delay: Duration,
        now: Instant,
    ) -> Option<&'static str> {
        if self.draining(group, id) {
            return Some("draining");
        }
        match self.registered.get(&(group.to_owned(), id.to_owned())) {
            Some(at) if now.duration_since(*at) < health_delay => Some("initial"),
            _ => None,
        }
    }
}
