//! Loading: errors name the file, line and key, and a failed load yields
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use phoenix_config::{ConfigError, ConfigSet};

const BASE: &str = "[values]\nport = 8080\n[env]\nPORT = \"{{ values.port }}\"\n";

fn load_err(files: &[(&str, &str)]) -> ConfigError {
    ConfigSet::from_files("/cfg", files.iter().copied()).unwrap_err()
}

fn minimal<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut files = vec![
        ("base.toml", BASE),
        ("env/prod.toml", ""),
        ("role/web.toml", ""),
    ];
    for (p, t) in extra {
        files.retain(|(q, _)| q != p);
        files.push((p, t));
    }
    files
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let e = load_err(&minimal(&[(
        "env/prod.toml",
        "[values]\nx = 1\n\n[files.app]\npath = \"/a\"\npermissions = \"0644\"\n",
    )]));
    assert!(matches!(e, ConfigError::InvalidKey { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("env/prod.toml:6:"), "{text}");
    assert!(text.contains("`files.app.permissions`"), "{text}");
}

#[test]
fn wrong_types_name_file_line_and_key() {
    let e = load_err(&minimal(&[(
        "role/web.toml",
        "[secrets.db]\nfile = \"x\"\nscope = \"prod\"\n",
    )]));
    let text = e.to_string();
    assert!(text.starts_with("role/web.toml:3:"), "{text}");
    assert!(text.contains("`secrets.db.scope`"), "{text}");
}

#[test]
fn missing_required_keys_name_the_layer_that_set_the_entry() {
    // The role overrides a file the base never defined: no path after merging.
    let e = load_err(&minimal(&[(
        "role/web.toml",
        "\n\n[files.tls]\nmode = 0o600\ncontent = \"x\"\n",
    )]));
    assert!(matches!(e, ConfigError::MissingKey { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("role/web.toml:3"), "{text}");
    assert!(
        text.contains("`files.tls.path`") && text.contains("environment prod, role web"),
        "{text}"
    );

    let e = load_err(&minimal(&[("base.toml", "[secrets.db]\nfile = \"x\"\n")]));
    assert!(e.to_string().contains("`secrets.db.scope`"), "{e}");
}

#[test]
fn undefined_template_variables_name_file_line_and_key() {
    let e = load_err(&minimal(&[(
        "base.toml",
        "[values]\nport = 8080\n\n[env]\nPORT = \"{{ values.prot }}\"\n",
    )]));
    assert!(matches!(e, ConfigError::UndefinedVariable { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("base.toml:5"), "{text}");
    assert!(
        text.contains("`env.PORT`") && text.contains("`values.prot`"),
        "{text}"
    );
}

#[test]
fn a_variable_missing_in_one_environment_only_is_caught_at_load() {
    let e = load_err(&[
        (
            "base.toml",
            "[files.app]\npath = \"/etc/app\"\ntemplate = \"{{ values.db.host }}\"\n",
        ),
        ("env/prod.toml", "[values]\ndb.host = \"db\"\n"),
        ("env/staging.toml", ""),
        ("role/web.toml", ""),
    ]);
    let text = e.to_string();
    assert!(
        text.contains("base.toml:3") && text.contains("values.db.host"),
        "{text}"
    );
}

#[test]
fn secrets_in_labels_are_refused() {
    let e = load_err(&minimal(&[(
        "base.toml",
        "[labels]\nx = \"{{ secrets.db }}\"\n[secrets.db]\nenv = \"DB\"\nscope = [\"prod\"]\n",
    )]));
    assert!(e.to_string().contains("cannot use secrets"), "{e}");
}

#[test]
fn scopes_must_name_declared_environments() {
    let e = load_err(&minimal(&[(
        "base.toml",
        "[secrets.db]\nenv = \"DB\"\nscope = [\"prd\"]\n",
    )]));
    assert!(
        e.to_string()
            .contains("`prd` is not a declared environment"),
        "{e}"
    );
    let e = load_err(&minimal(&[(
        "base.toml",
        "[secrets.db]\nenv = \"DB\"\nscope = [\"*\"]\n",
    )]));
    assert!(e.to_string().contains("list the environments"), "{e}");
}

#[test]
fn the_layout_is_enforced() {
    let e = load_err(&minimal(&[("envs/prod.toml", "")]));
    assert!(
        matches!(e, ConfigError::Layout { .. }) && e.to_string().contains("envs/prod.toml"),
        "{e}"
    );
    let e = load_err(&minimal(&[("env/qa/web.toml", "")]));
    assert!(e.to_string().contains("no env/qa.toml"), "{e}");
    let e = load_err(&[("env/prod.toml", ""), ("role/web.toml", "")]);
    assert!(e.to_string().contains("base.toml"), "{e}");
    let e = load_err(&minimal(&[("role/Bad Name.toml", "")]));
    assert!(matches!(e, ConfigError::Layout { .. }), "{e}");
}

#[test]
fn alternatives_and_unset_follow_the_merge_rules() {
    let config = ConfigSet::from_files(
        "/cfg",
        minimal(&[
            (
                "base.toml",
                "[files.a]\npath = \"/a\"\ncontent = \"literal\"\n[files.b]\npath = \"/b\"\ncontent = \"b\"\n",
            ),
            ("role/web.toml", "unset = [\"files.b\"]\n[files.a]\ntemplate = \"{{ role }}\"\n"),
        ]),
    )
    .unwrap();
    let p = config
        .preview(
            &"prod".parse().unwrap(),
            &"web".parse().unwrap(),
            &"v1".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(p.files.len(), 1);
    assert_eq!(p.files["/a"].content, "web");
}

#[test]
fn a_failed_load_from_disk_yields_nothing_and_a_fixed_one_loads() {
    let dir = tempfile::tempdir().unwrap();
    support::write_tree(
        dir.path(),
        &[
            ("base.toml", BASE),
            ("env/prod.toml", ""),
            ("env/staging.toml", "[values]\nport = \"not closed\n"),
            ("role/web.toml", ""),
            ("README.md", "not toml, ignored"),
        ],
    );
    let e = ConfigSet::load(dir.path()).unwrap_err();
    assert!(e.to_string().starts_with("env/staging.toml:2:"), "{e}");
    support::write_tree(dir.path(), &[("env/staging.toml", "[values]\nport = 9\n")]);
    let config = ConfigSet::load(dir.path()).unwrap();
    assert_eq!(config.environments().len(), 2);

    let e = ConfigSet::load(dir.path().join("nope")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e}");
}

#[test]
fn the_sample_configuration_loads() {
    let config = ConfigSet::load(support::sample_dir()).unwrap();
    assert_eq!(config.environments().len(), 3);
    assert_eq!(config.roles().len(), 3);
}
