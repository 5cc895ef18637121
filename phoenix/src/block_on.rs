//! [`block_on_main`]: an orchestrating `main` on a small runtime.

use std::process::ExitCode;

/// Runs an orchestrating `main` on a two-thread runtime: an error is
/// printed with its causes and fails the process, `Ok(false)` fails it
/// quietly (the program said why).
pub fn block_on_main<F, E>(main: F) -> ExitCode
where
    F: std::future::Future<Output = Result<bool, E>>,
    E: std::error::Error,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", phoenix_core::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
