//! The orchestrator's side of the admin socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{ErrorKind, LbCapabilities, LoadBalancer, Member, PortError, Target};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::wire::{millis, Request, Response, MAX_LINE};

/// A balancer in another process, reached through its admin socket.
#[derive(Debug, Clone)]
pub struct RemoteBalancer {
    path: PathBuf,
    capabilities: LbCapabilities,
    timeout: Duration,
}

impl RemoteBalancer {
    /// Connects (reading the balancer's capabilities once).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, PortError> {
        let mut lb = Self {
            path: path.as_ref().to_path_buf(),
            capabilities: LbCapabilities {
                atomic_swap: false,
                drain: true,
                reports_connections: false,
                max_batch: 1,
                reactivates_draining: true,
                stages: false,
                keeps_standby: false,
                check_interval: None,
            },
            timeout: Duration::from_secs(30),
        };
        match lb.call(Request::Capabilities).await? {
            Response::Capabilities(c) => lb.capabilities = c.into(),
            other => return Err(unexpected("capabilities", &other)),
        }
        Ok(lb)
    }

    /// How long one call may take (default 30 s: a detach may wait).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn call(&self, request: Request) -> Result<Response, PortError> {
        let op = request.name();
        let operation = format!("remote balancer {}: {op}", self.path.display());
        let exchange = async {
            let mut stream = UnixStream::connect(&self.path).await.map_err(|e| {
                PortError::temporary(&operation, "cannot reach the balancer").with_source(e)
            })?;
            let mut line = serde_json::to_vec(&request)
                .map_err(|e| PortError::new(&operation, ErrorKind::Invalid(e.to_string())))?;
            line.push(b'\n');
            stream.write_all(&line).await.map_err(|e| {
                PortError::temporary(&operation, "request not delivered").with_source(e)
            })?;
            let mut reader = BufReader::new(stream).take(MAX_LINE as u64);
            let mut answer = String::new();
            let n = reader
                .read_line(&mut answer)
                .await
                .map_err(|e| PortError::temporary(&operation, "no answer").with_source(e))?;
            if n == 0 {
                return Err(PortError::temporary(
                    &operation,
                    "the balancer closed the connection",
                ));
            }
            serde_json::from_str::<Response>(answer.trim_end()).map_err(|e| {
                PortError::new(
                    &operation,
                    ErrorKind::BadResponse(format!(
                        "{e}: {}",
                        answer.chars().take(200).collect::<String>()
                    )),
                )
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(Response::Error(e))) => Err(e.into_port_error()),
            Ok(result) => result,
            Err(_) => Err(PortError::temporary(
                &operation,
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }
}

fn unexpected(op: &str, r: &Response) -> PortError {
    PortError::new(
        format!("remote balancer: {op}"),
        ErrorKind::BadResponse(format!("unexpected answer {r:?}")),
    )
}

fn done(op: &str, r: Response) -> Result<(), PortError> {
    match r {
        Response::Done => Ok(()),
        other => Err(unexpected(op, &other)),
    }
}

#[async_trait]
impl LoadBalancer for RemoteBalancer {
    fn capabilities(&self) -> LbCapabilities {
        self.capabilities.clone()
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        match self.call(Request::Members).await? {
            Response::Members(m) => Ok(m),
            other => Err(unexpected("members", &other)),
        }
    }

    async fn traffic_stats(
        &self,
        servers: &[ServerId],
    ) -> Result<phoenix_core::ports::TrafficStats, PortError> {
        match self
            .call(Request::TrafficStats {
                servers: servers.to_vec(),
            })
            .await?
        {
            Response::TrafficStats(t) => Ok(t),
            other => Err(unexpected("traffic_stats", &other)),
        }
    }

    async fn set_weight(&self, servers: &[ServerId], percent: u8) -> Result<(), PortError> {
        let r = self
            .call(Request::SetWeight {
                servers: servers.to_vec(),
                percent,
            })
            .await?;
        done("set_weight", r)
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        let r = self
            .call(Request::Attach {
                targets: targets.to_vec(),
            })
            .await?;
        done("attach", r)
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let r = self
            .call(Request::Detach {
                servers: servers.to_vec(),
                drain_ms: millis(drain),
            })
            .await?;
        done("detach", r)
    }

    async fn stage(&self, targets: &[Target]) -> Result<(), PortError> {
        let r = self
            .call(Request::Stage {
                targets: targets.to_vec(),
            })
            .await?;
        done("stage", r)
    }

    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        let r = self
            .call(Request::Swap {
                attach: attach.to_vec(),
                detach: detach.to_vec(),
                drain_ms: millis(drain),
            })
            .await?;
        done("swap", r)
    }

    async fn standby(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let r = self
            .call(Request::Standby {
                servers: servers.to_vec(),
                drain_ms: millis(drain),
            })
            .await?;
        done("standby", r)
    }

    async fn swap_standby(
        &self,
        attach: &[Target],
        standby: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        let r = self
            .call(Request::SwapStandby {
                attach: attach.to_vec(),
                standby: standby.to_vec(),
                drain_ms: millis(drain),
            })
            .await?;
        done("swap_standby", r)
    }
}
