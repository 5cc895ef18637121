//! Serving a balancer on a Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::ports::LoadBalancer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::wire::{Request, Response, WireError, MAX_LINE};

/// Why the admin socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be created.
    #[error("cannot listen on {path}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running admin server; it stops when cancelled or dropped, and removes
/// its socket file.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    stop: CancellationToken,
}

impl AdminServer {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `balancer` on a Unix socket at `path` (mode 0600; a stale socket
/// file is replaced) until `stop` is cancelled or the returned server is
/// dropped.
pub fn serve(
    balancer: Arc<dyn LoadBalancer>,
    path: impl AsRef<Path>,
    stop: CancellationToken,
) -> Result<AdminServer, ServeError> {
    let path = path.as_ref().to_path_buf();
    let listen_err = |source| ServeError::Listen {
        path: path.clone(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(&path).map_err(listen_err)?;
    }
    let listener = UnixListener::bind(&path).map_err(listen_err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    let token = stop.child_token();
    let accept_token = token.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = accept_token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let lb = balancer.clone();
                        let token = accept_token.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = token.cancelled() => {}
                                _ = answer(stream, lb) => {}
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    });
    Ok(AdminServer { path, stop: token })
}

async fn answer(stream: UnixStream, lb: Arc<dyn LoadBalancer>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64);
    let mut line = String::new();
    let response = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(request) => execute(lb.as_ref(), request).await,
            Err(e) => Response::Error(WireError::from(&phoenix_core::ports::PortError::new(
                "decode request",
                phoenix_core::ports::ErrorKind::Invalid(e.to_string()),
            ))),
        },
        Err(e) => {
            tracing::debug!(error = %e, "admin request unreadable");
            return;
        }
    };
    let Ok(mut bytes) = serde_json::to_vec(&response) else {
        return;
    };
    bytes.push(b'\n');
    if let Err(e) = write.write_all(&bytes).await {
        tracing::debug!(error = %e, "admin answer not delivered");
    }
}

async fn execute(lb: &dyn LoadBalancer, request: Request) -> Response {
    let result = match request {
        Request::Capabilities => return Response::Capabilities(lb.capabilities().into()),
        Request::Members => {
            return match lb.members().await {
                Ok(m) => Response::Members(m),
                Err(e) => Response::Error(WireError::from(&e)),
            }
        }
        Request::TrafficStats { servers } => {
            return match lb.traffic_stats(&servers).await {
                Ok(t) => Response::TrafficStats(t),
                Err(e) => Response::Error(WireError::from(&e)),
            }
        }
        Request::SetWeight { servers, percent } => lb.set_weight(&servers, percent).await,
        Request::Attach { targets } => lb.attach(&targets).await,
        Request::Detach { servers, drain_ms } => {
            lb.detach(&servers, Duration::from_millis(drain_ms)).await
        }
        Request::Stage { targets } => lb.stage(&targets).await,
        Request::Swap {
            attach,
            detach,
            drain_ms,
        } => {
            lb.swap(&attach, &detach, Duration::from_millis(drain_ms))
                .await
        }
        Request::Standby { servers, drain_ms } => {
            lb.standby(&servers, Duration::from_millis(drain_ms)).await
        }
        Request::SwapStandby {
            attach,
            standby,
            drain_ms,
        } => {
            lb.swap_standby(&attach, &standby, Duration::from_millis(drain_ms))
                .await
        }
    };
    match result {
        Ok(()) => Response::Done,
        Err(e) => Response::Error(WireError::from(&e)),
    }
}
