//! [`embedded_balancer`]: the in-process balancer as Phoenix runs it.

use std::net::SocketAddr;
use std::time::Duration;

use phoenix_lb::embedded::{EmbeddedBalancer, HealthCheck};

use crate::error::StackError;

/// The embedded balancer as the local stack runs it, and a `phoenix.toml`
/// balancer of kind `embedded`: HTTP checks of `/health` every 100 ms (2
/// to rise, 2 to fall), 2 s drains by default. `phoenix lb serve` runs the
/// same one in a process of its own.
pub async fn embedded_balancer(listen: SocketAddr) -> Result<EmbeddedBalancer, StackError> {
    Ok(EmbeddedBalancer::builder()
        .listen(listen)
        .health_check(HealthCheck::http_get("/health"))
        .check_interval(Duration::from_millis(100))
        .rise(2)
        .fall(2)
        .drain_default(Duration::from_secs(2))
        .start()
        .await?)
}
