//! Caches credentials and refreshes them before they expire, one refresh
//! at a time however many calls wait for it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::{error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use tokio::sync::Mutex;

/// Refresh this long before expiry, so that a signed request never
/// arrives with credentials that expired on the way (the SDK uses 5 min).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// A provider's credentials, cached until shortly before they expire.
#[derive(Debug, Clone)]
pub struct CredentialsCache {
    provider: SharedCredentialsProvider,
    cached: Arc<Mutex<Option<Credentials>>>,
}

impl CredentialsCache {
    /// Caches `provider`'s credentials.
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// Credentials valid for at least [`REFRESH_BEFORE_EXPIRY`] (or
    /// without expiry), asking the provider only when the cached ones are
    /// missing or about to expire.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if fresh(c, SystemTime::now()) {
                return Ok(c.clone());
            }
        }
        let c = self.provider.provide_credentials().await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Forgets the cached credentials (AWS said `ExpiredToken`).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

fn fresh(c: &Credentials, now: SystemTime) -> bool {
    match c.expiry() {
        None => true,
        Some(at) => at
            .duration_since(now)
            .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::provider::future;

    use super::*;

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                Some(SystemTime::now() + self.lifetime),
                "counting",
            )))
        }
    }

    #[tokio::test]
    async fn refreshes_only_near_expiry() {
        let calls = Arc::new(AtomicUsize::new(0));
        let long = CredentialsCache::new(SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            lifetime: Duration::from_secs(3600),
        }));
        long.get().await.unwrap();
        long.get().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "cached");
        long.invalidate().await;
        assert_eq!(long.get().await.unwrap().access_key_id(), "AKID1");

        let calls = Arc::new(AtomicUsize::new(0));
        let short = CredentialsCache::new(SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            lifetime: Duration::from_secs(120),
        }));
        short.get().await.unwrap();
        short.get().await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "expiring within 5 min: refreshed"
        );
    }
}
