//! Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//! `AWS_SESSION_TOKEN` (the first source of AWS's default chain).

use aws_credential_types::provider::{self, error::CredentialsError, future};
use aws_credential_types::Credentials;

/// Reads the standard environment variables each time it is asked.
#[derive(Debug, Clone, Default)]
pub struct EnvironmentCredentials {
    vars: Option<Vec<(String, String)>>,
}

impl EnvironmentCredentials {
    /// Reads the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the given variables instead of the process environment (for
    /// tests and for callers that hold the environment of another
    /// process).
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        let v = match &self.vars {
            Some(vars) => vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            None => std::env::var(name).ok(),
        };
        v.filter(|v| !v.trim().is_empty())
    }

    /// The credentials now, or why there are none.
    pub fn load(&self) -> provider::Result {
        let access = self.var("AWS_ACCESS_KEY_ID");
        let secret = self
            .var("AWS_SECRET_ACCESS_KEY")
            .or_else(|| self.var("AWS_SECRET_KEY"));
        match (access, secret) {
            (Some(access), Some(secret)) => Ok(Credentials::new(
                access,
                secret,
                self.var("AWS_SESSION_TOKEN"),
                None,
                "environment",
            )),
            (None, None) => Err(CredentialsError::not_loaded(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
            )),
            (Some(_), None) => Err(CredentialsError::invalid_configuration(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
            )),
            (None, Some(_)) => Err(CredentialsError::invalid_configuration(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
            )),
        }
    }
}

impl provider::ProvideCredentials for EnvironmentCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_and_token_and_redacts_them() {
        let c = EnvironmentCredentials::from_vars([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
            ("AWS_SESSION_TOKEN", "t0ken-value"),
        ])
        .load()
        .unwrap();
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(c.session_token(), Some("t0ken-value"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t-value") && !shown.contains("t0ken-value"),
            "{shown}"
        );
    }

    #[test]
    fn half_set_is_a_configuration_error() {
        let e = EnvironmentCredentials::from_vars([("AWS_ACCESS_KEY_ID", "AKID")])
            .load()
            .unwrap_err();
        assert!(
            matches!(e, CredentialsError::InvalidConfiguration(_)),
            "{e:?}"
        );
        let e = EnvironmentCredentials::from_vars(Vec::<(String, String)>::new())
            .load()
            .unwrap_err();
        assert!(
            matches!(e, CredentialsError::CredentialsNotLoaded(_)),
            "{e:?}"
        );
    }
}
