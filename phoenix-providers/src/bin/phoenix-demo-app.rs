//! `phoenix-demo-app`: the demo HTTP application that local servers run in
//! the examples and tests (see `phoenix_providers::local::demo_app`).
//!
//! Reads `PORT`, `PHOENIX_RELEASE`, `PHOENIX_ENVIRONMENT`, `PHOENIX_ROLE`
//! and `PHOENIX_SERVER_ID`; listens on `127.0.0.1:$PORT`; drains and exits
//! 0 on SIGTERM. Exits 2 when it cannot start (no `PORT`, port taken).

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match phoenix_providers::local::demo_app::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phoenix-demo-app: {}", phoenix_core::error_chain(&e));
            ExitCode::from(2)
        }
    }
}
