//! Runs the synchronous file and process work of the local provider on
//! tokio's blocking pool, so that hashing an image or writing records
//! never stalls the caller's runtime.

use phoenix_core::ports::PortError;

use super::error::LocalError;

/// Runs `work` on the blocking pool; errors become [`PortError`]s for
/// `operation`.
pub(crate) async fn run_blocking<T, F>(operation: String, work: F) -> Result<T, PortError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LocalError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.into_port(operation)),
        Err(join) => Err(LocalError::Task(join).into_port(operation)),
    }
}
