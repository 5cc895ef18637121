//! The local provider's payload: files relative to the server's runtime
//! directory (an absolute path `/etc/app.toml` becomes `etc/app.toml`) and
//! the environment. A local process has no cloud-init to run commands, so
//! they are delivered as scripts for the provider or the application to
//! run: `.phoenix/bootcmd.sh`, `.phoenix/runcmd.sh` and
//! `.phoenix/scripts/<order>-<id>.sh` (mode 0700).

use phoenix_core::ports::{BootFile, BootPayload};
use secrecy::{ExposeSecret, SecretSlice};

use super::{Rendered, RenderedCommand};

fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

fn script(commands: &[RenderedCommand]) -> String {
    let mut out = String::from("#!/bin/sh\nset -e\n");
    for c in commands {
        match c {
            RenderedCommand::Argv(args) => {
                let line: Vec<String> = args.iter().map(|a| quote(a.expose_secret())).collect();
                out.push_str(&line.join(" "));
            }
            RenderedCommand::Shell(line) => out.push_str(line.expose_secret()),
        }
        out.push('\n');
    }
    out
}

fn file(path: String, mode: u32, text: &str) -> BootFile {
    BootFile {
        path,
        mode,
        owner: None,
        content: SecretSlice::from(text.as_bytes().to_vec()),
    }
}

/// The local payload.
pub(crate) fn payload(r: &Rendered) -> BootPayload {
    let mut files: Vec<BootFile> = r
        .files
        .iter()
        .map(|f| {
            file(
                f.path.trim_start_matches('/').to_owned(),
                f.mode,
                f.content.expose_secret(),
            )
        })
        .collect();
    if !r.boot.is_empty() {
        files.push(file(".phoenix/bootcmd.sh".into(), 0o700, &script(&r.boot)));
    }
    if !r.run.is_empty() {
        files.push(file(".phoenix/runcmd.sh".into(), 0o700, &script(&r.run)));
    }
    for s in &r.scripts {
        files.push(file(
            format!(".phoenix/scripts/{}", s.file_name),
            0o700,
            s.content.expose_secret(),
        ));
    }
    BootPayload::Local {
        files,
        env: r.env.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_sh() {
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }
}
