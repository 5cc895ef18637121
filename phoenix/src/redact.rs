//! Secrets in URLs, hidden for `Debug` output.

/// A URL with any password hidden: `postgres://user:***@host/db`. A
/// string that is not a URL is shown as `<not a URL>`, since it may hold
/// a secret in a shape this cannot see.
pub(crate) fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) => {
            if u.password().is_some() && u.set_password(Some("***")).is_err() {
                return "<a URL with a password>".into();
            }
            u.to_string()
        }
        // `sqlite:relative.db` and other paths are fine to show.
        Err(_) if !text.contains('@') => text.to_owned(),
        Err(_) => "<not a URL>".into(),
    }
}
