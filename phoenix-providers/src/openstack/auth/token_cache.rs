//! One token shared by every caller of a session: reused until shortly
//! before it expires, renewed by one caller while the others wait, and
//! dropped when the cloud rejects it (401) so that the next call
//! authenticates again.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use phoenix_core::ports::PortError;

use super::Token;

/// Caches the session's token.
#[derive(Debug)]
pub struct TokenCache {
    current: Mutex<Option<Arc<Token>>>,
    renewing: tokio::sync::Mutex<()>,
    margin: Duration,
}

impl TokenCache {
    /// A cache that renews tokens `margin` before they expire.
    pub fn new(margin: Duration) -> Self {
        Self {
            current: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
            margin,
        }
    }

    fn cached(&self) -> Option<Arc<Token>> {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|t| !t.expires_within(self.margin, Utc::now()))
            .cloned()
    }

    /// The cached token, or a new one from `authenticate` when there is
    /// none or it expires within the margin. Concurrent callers share one
    /// authentication.
    pub async fn get<F, Fut>(&self, authenticate: F) -> Result<Arc<Token>, PortError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, PortError>>,
    {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _renewing = self.renewing.lock().await;
        // Another caller may have renewed it while this one waited.
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let fresh = Arc::new(authenticate().await?);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets `token` if it is still the cached one (the cloud rejected
    /// it); a newer token another caller got meanwhile is kept.
    pub fn invalidate(&self, token: &Arc<Token>) {
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|t| Arc::ptr_eq(t, token)) {
            *guard = None;
        }
    }

    /// Forgets any cached token.
    pub fn clear(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use secrecy::SecretString;

    use super::*;
    use crate::openstack::catalog::Catalog;

    fn token(id: &str, lifetime: chrono::Duration) -> Token {
        Token {
            value: SecretString::from(id.to_owned()),
            expires_at: Some(Utc::now() + lifetime),
            catalog: Catalog::default(),
            project_id: None,
        }
    }

    #[tokio::test]
    async fn reuses_renews_before_expiry_and_after_invalidation() {
        let cache = TokenCache::new(Duration::from_secs(300));
        let calls = AtomicUsize::new(0);
        let auth = |life: i64| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(token(&format!("t{n}"), chrono::Duration::seconds(life))) }
        };
        let a = cache.get(|| auth(3600)).await.unwrap();
        let b = cache.get(|| auth(3600)).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        cache.invalidate(&a);
        let c = cache.get(|| auth(60)).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // Expires within the margin: renewed on the next call.
        let d = cache.get(|| auth(3600)).await.unwrap();
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Invalidating a stale token keeps the newer one.
        cache.invalidate(&c);
        let e = cache.get(|| auth(3600)).await.unwrap();
        assert!(Arc::ptr_eq(&d, &e));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_authentication() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(token("t", chrono::Duration::hours(1)))
                    })
                    .await
                    .map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
