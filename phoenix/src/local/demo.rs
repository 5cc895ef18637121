use std::process::ExitCode;

/// The argument that makes a Phoenix local binary serve the demo app
/// instead of orchestrating: baked images run their own copy of the binary
/// with it, so the image is a real build output and needs nothing else.
pub const DEMO_APP_ARG: &str = "serve-demo-app";

/// Serves the demo app when the process was started with
/// [`DEMO_APP_ARG`]; returns its exit code then, `None` otherwise.
pub fn serve_demo_app_if_asked() -> Option<ExitCode> {
    if std::env::args().nth(1).as_deref() != Some(DEMO_APP_ARG) {
        return None;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo app: cannot start a runtime: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    Some(
        match runtime.block_on(phoenix_providers::local::demo_app::run()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo app: {}", phoenix_core::error_chain(&e));
                ExitCode::from(2)
            }
        },
    )
}
