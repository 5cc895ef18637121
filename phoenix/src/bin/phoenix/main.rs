//! `phoenix`: plan and apply Phoenix operations from a `phoenix.toml`.
//! `phoenix --help` lists the commands, `phoenix help COMMAND` explains
//! one; the crate's documentation has the file format and exit statuses.

mod cli;
mod progress;

use std::process::ExitCode;

fn main() -> ExitCode {
    // An image baked by the local provider is this program: started with
    // the demo argument, it serves the demo app.
    #[cfg(feature = "local")]
    if let Some(code) = phoenix::local::serve_demo_app_if_asked() {
        return code;
    }
    cli::main()
}
