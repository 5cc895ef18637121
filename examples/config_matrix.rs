//! Renders the sample configuration in `examples/config` for every
//! environment × role, prints what differs between them, and shows the
//! error for a production-only secret requested for staging.
//!
//! ```text
//! cargo run --example config_matrix
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::path::Path;

use phoenix_config::{ConfigSet, Preview};
use phoenix_core::id::{ReleaseLabel, RoleName};
use phoenix_core::ports::{BootConfig, BootContext, BootFormat, BootPayload};

type Cell = (String, String);

fn context(
    config_env: &str,
    role: &RoleName,
    release: &ReleaseLabel,
) -> Result<BootContext, Box<dyn Error>> {
    Ok(BootContext {
        deployment: "shop".parse()?,
        environment: config_env.parse()?,
        role: role.clone(),
        release: release.clone(),
        image: "img-0001".parse()?,
        pool: format!("{config_env}-{role}-{release}").parse()?,
        server_name: format!("{config_env}-{role}-0"),
        index: 0,
    })
}

/// "prod/*" when every role of an environment shares a value, else the cells.
fn cells_text(cells: &[Cell], roles: &BTreeSet<String>) -> String {
    let mut by_env: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (env, role) in cells {
        by_env.entry(env).or_default().push(role);
    }
    by_env
        .into_iter()
        .map(|(env, rs)| {
            if rs.len() == roles.len() {
                format!("{env}/*")
            } else {
                rs.iter()
                    .map(|r| format!("{env}/{r}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn shorten(value: &str, width: usize) -> String {
    let one_line = value.replace('\n', "\\n");
    if one_line.chars().count() <= width {
        one_line
    } else {
        let cut: String = one_line.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let config = ConfigSet::load(&dir)?;
    let release: ReleaseLabel = "v1".parse()?;
    let roles: BTreeSet<String> = config.roles().iter().map(|r| r.to_string()).collect();

    println!("configuration: {}", dir.display());
    println!(
        "environments: {}; roles: {}; release overrides: {}\n",
        config
            .environments()
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        roles.iter().cloned().collect::<Vec<_>>().join(", "),
        config
            .release_overrides()
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );

    println!("release {release}: every environment × role, rendered");
    println!(
        "{:<8} {:<9} {:<18} {:>6} {:>14} {:>9} {:>6}  secrets (identity@version from source)",
        "env", "role", "fingerprint", "files", "cloud-init", "EC2 b64", "nova"
    );
    let mut previews: BTreeMap<Cell, Preview> = BTreeMap::new();
    for env in config.environments() {
        for role in config.roles() {
            let preview = config.preview(env, role, &release)?;
            let ctx = context(env.as_str(), role, &release)?;
            let cloud = match config.render(&ctx, BootFormat::CloudInit).await? {
                BootPayload::CloudInit { user_data } => {
                    use phoenix_config::secrecy::ExposeSecret;
                    let data = user_data.expose_secret();
                    let kind = if data.starts_with(b"#cloud-config") {
                        "yaml"
                    } else {
                        "mime"
                    };
                    format!("{kind} {}B", data.len())
                }
                other => format!("{other:?}"),
            };
            let aws = match config.render(&ctx, BootFormat::AwsUserData).await? {
                BootPayload::AwsUserData { base64 } => {
                    use phoenix_config::secrecy::ExposeSecret;
                    format!("{}B", base64.expose_secret().len())
                }
                other => format!("{other:?}"),
            };
            let nova = match config.render(&ctx, BootFormat::OpenStack).await? {
                BootPayload::OpenStack {
                    metadata,
                    config_drive,
                    ..
                } => {
                    format!(
                        "{}md{}",
                        metadata.len(),
                        if config_drive { "+cd" } else { "" }
                    )
                }
                other => format!("{other:?}"),
            };
            let fingerprint = preview.fingerprint();
            println!(
                "{:<8} {:<9} {:<18} {:>6} {:>14} {:>9} {:>6}  {}",
                env.as_str(),
                role.as_str(),
                format!("{}…", &fingerprint[..16]),
                preview.files.len(),
                cloud,
                aws,
                nova,
                preview
                    .secrets
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            previews.insert((env.to_string(), role.to_string()), preview);
        }
    }

    // Every setting that is not the same everywhere, with the cells that
    // share each value.
    let entries: BTreeMap<&Cell, BTreeMap<String, String>> = previews
        .iter()
        .map(|(cell, p)| (cell, p.entries()))
        .collect();
    let keys: BTreeSet<&String> = entries.values().flat_map(|e| e.keys()).collect();
    println!("\nwhat differs between them ('—' = not set there):");
    for key in keys {
        if key.starts_with("env.PHOENIX_") {
            continue;
        }
        let mut by_value: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
        for (cell, e) in &entries {
            let v = e.get(key).cloned().unwrap_or_else(|| "—".into());
            by_value.entry(v).or_default().push((*cell).clone());
        }
        if by_value.len() < 2 {
            continue;
        }
        println!("  {key}");
        for (value, cells) in by_value {
            println!(
                "      {:<56} {}",
                shorten(&value, 56),
                cells_text(&cells, &roles)
            );
        }
    }

    // A production-only secret requested for staging.
    let bad: ReleaseLabel = "v2-tls-everywhere".parse()?;
    let frontend: RoleName = "frontend".parse()?;
    println!("\nrelease {bad} (ships the prod TLS key everywhere):");
    for env in config.environments() {
        let ctx = context(env.as_str(), &frontend, &bad)?;
        match BootConfig::render(&config, &ctx, BootFormat::CloudInit).await {
            Ok(payload) => println!("  {env}/frontend: rendered {payload:?}"),
            Err(e) => println!("  {env}/frontend: error: {}", e.chain()),
        }
    }
    match config.fingerprint(&"staging".parse()?, &frontend, &bad) {
        Ok(f) => println!("  fingerprint for staging: {f}"),
        Err(e) => println!("  fingerprint for staging refused too: {e}"),
    }
    Ok(())
}
