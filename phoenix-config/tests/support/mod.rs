//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use phoenix_config::ConfigSet;
use phoenix_core::ports::BootContext;

/// Writes `files` under `dir`, creating directories.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
}

/// A configuration in a fresh temporary directory.
pub fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, ConfigSet) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), files);
    let config = ConfigSet::load(dir.path()).unwrap();
    (dir, config)
}

/// A boot context.
pub fn context(env: &str, role: &str, release: &str, index: u32) -> BootContext {
    BootContext {
        deployment: "shop".parse().unwrap(),
        environment: env.parse().unwrap(),
        role: role.parse().unwrap(),
        release: release.parse().unwrap(),
        image: "img-0001".parse().unwrap(),
        pool: format!("{env}-{role}-{release}").parse().unwrap(),
        server_name: format!("{env}-{role}-{index}"),
        index,
    }
}

/// The sample configuration of the examples.
pub fn sample_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config")
}
