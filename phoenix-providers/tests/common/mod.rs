//! Shared fixtures of the local provider's tests: a temporary root that
//! terminates every server it holds when dropped, images of the demo app
//! and of shell scripts, launch requests and a raw HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phoenix_core::id::{IdempotencyToken, ImageId, OperationId, PoolId, ServerId};
use phoenix_core::labels::{keys, LabelSelector, Labels};
use phoenix_core::model::{Server, ServerStatus};
use phoenix_core::ports::{
    BakeRequest, BakeSource, BootFile, BootPayload, Compute, Images, LaunchRequest,
};
use phoenix_providers::local::{LocalCompute, LocalImages};
use secrecy::{SecretSlice, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DEMO_APP: &str = env!("CARGO_BIN_EXE_phoenix-demo-app");

/// A temporary root; dropping it terminates every server under it (with
/// SIGKILL after 200 ms), so no test leaves a process behind.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn images(&self) -> LocalImages {
        LocalImages::builder().root(self.path()).build().unwrap()
    }

    pub fn compute(&self) -> LocalCompute {
        LocalCompute::builder()
            .root(self.path())
            .grace_period(Duration::from_secs(5))
            .build()
            .unwrap()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let root = self.path().to_path_buf();
        // A runtime of its own on another thread: drop may run inside the
        // test's runtime, which cannot block on another.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let compute = LocalCompute::builder()
                    .root(&root)
                    .grace_period(Duration::from_millis(200))
                    .build()
                    .unwrap();
                if let Ok(servers) = compute.list(&LabelSelector::new()).await {
                    for s in servers {
                        let _ = compute.terminate(&s.id).await;
                    }
                }
            });
        })
        .join();
    }
}

pub fn bake_request(source: &Path, name: &str, version: &str) -> BakeRequest {
    BakeRequest {
        source: BakeSource::Artifact(source.display().to_string()),
        name: name.into(),
        version: version.into(),
        base: None,
        properties: BTreeMap::new(),
    }
}

/// Bakes the demo app binary.
pub async fn bake_demo(images: &LocalImages, version: &str) -> ImageId {
    images
        .bake(&bake_request(Path::new(DEMO_APP), "demo", version))
        .await
        .unwrap()
        .id
}

/// Writes an executable shell script into `dir` and bakes it.
pub async fn bake_script(images: &LocalImages, dir: &Path, name: &str, body: &str) -> ImageId {
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    images
        .bake(&bake_request(&path, name, "1"))
        .await
        .unwrap()
        .id
}

/// The boot payload the demo app reads: environment plus a `phoenix.env`.
pub fn demo_boot(release: &str) -> BootPayload {
    let mut env = BTreeMap::new();
    env.insert(
        "PHOENIX_RELEASE".to_owned(),
        SecretString::from(release.to_owned()),
    );
    env.insert("PHOENIX_ENVIRONMENT".to_owned(), SecretString::from("test"));
    env.insert("PHOENIX_ROLE".to_owned(), SecretString::from("web"));
    BootPayload::Local {
        files: vec![BootFile {
            path: "phoenix.env".into(),
            mode: 0o640,
            owner: None,
            content: SecretSlice::from(format!("PHOENIX_RELEASE={release}\n").into_bytes()),
        }],
        env,
    }
}

pub fn empty_boot() -> BootPayload {
    BootPayload::Local {
        files: vec![],
        env: BTreeMap::new(),
    }
}

/// A launch request with Phoenix labels for slot `slot` of `pool`.
pub fn request(image: &ImageId, pool: &str, slot: u32, boot: BootPayload) -> LaunchRequest {
    let op = OperationId::new("op-test").unwrap();
    let pool_id = PoolId::new(pool).unwrap();
    let token = IdempotencyToken::derive(&op, &pool_id, slot, 0);
    let mut labels = Labels::new();
    labels.insert(keys::POOL, pool);
    labels.insert(keys::SLOT, slot.to_string());
    labels.insert(keys::TOKEN, token.as_str());
    LaunchRequest {
        name: format!("{pool}-{slot}"),
        image: image.clone(),
        flavor: None,
        boot,
        labels,
        token,
    }
}

pub async fn launch_one(compute: &LocalCompute, request: LaunchRequest) -> Server {
    compute
        .launch(std::slice::from_ref(&request))
        .await
        .remove(0)
        .unwrap()
}

/// Waits (up to 20 s) until `describe` shows the server in a status that
/// `want` accepts; returns it.
pub async fn wait_for(
    compute: &LocalCompute,
    id: &ServerId,
    what: &str,
    want: impl Fn(&ServerStatus) -> bool,
) -> Server {
    let start = tokio::time::Instant::now();
    loop {
        let seen = compute.describe(std::slice::from_ref(id)).await.unwrap();
        if let Some(s) = seen.into_iter().next() {
            if want(&s.status) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{id} is {} after 20 s, waiting until {what}",
                s.status
            );
        } else {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{id} is absent, waiting until {what}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_active(compute: &LocalCompute, id: &ServerId) -> Server {
    wait_for(compute, id, "it is active", ServerStatus::is_active).await
}

/// A raw HTTP/1.1 GET on 127.0.0.1:port: (status, lower-cased head, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// The server's record on disk, as JSON.
pub fn record(compute: &LocalCompute, id: &ServerId) -> serde_json::Value {
    let path = compute.server_directory(id).unwrap().join("server.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The recorded pid of a server's current process.
pub fn recorded_pid(compute: &LocalCompute, id: &ServerId) -> i32 {
    record(compute, id)["process"]["pid"].as_i64().unwrap() as i32
}

/// True while `pid` exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

pub fn runtime_dir(compute: &LocalCompute, id: &ServerId) -> PathBuf {
    compute.server_directory(id).unwrap().join("run")
}
