//! Scrubbing of known secrets (credentials, tokens) from any text taken
//! from an answer before it reaches an error, a log or an event. Shared by
//! the HTTP back ends.

use std::sync::Mutex;

/// Scrubs known secrets (credentials, tokens) from text.
#[derive(Debug, Default)]
pub(crate) struct Redactor {
    secrets: Mutex<Vec<String>>,
}

impl Redactor {
    /// Never again shows `secret`.
    pub(crate) fn add(&self, secret: &str) {
        // Very short values would redact ordinary words.
        if secret.len() < 4 {
            return;
        }
        let mut s = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if !s.iter().any(|x| x == secret) {
            s.push(secret.to_owned());
            // Old tokens are kept for a while; a long-lived session does
            // not grow without bound.
            if s.len() > 64 {
                s.remove(1);
            }
        }
    }

    /// `text` with every secret replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let s = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_owned();
        for secret in s.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[REDACTED]");
            }
        }
        out
    }
}

/// The first 300 characters of a body, printable and scrubbed.
pub(crate) fn excerpt(body: &[u8], redactor: &Redactor) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    if out.trim().is_empty() {
        return "(empty body)".into();
    }
    redactor.scrub(&out)
}
