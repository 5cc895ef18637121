//! Property tests: arbitrary configuration input never panics (it loads
//! and renders, or fails with an error), and fingerprints are stable under
//! key reordering and sensitive to any change. The merge laws are checked
//! on the merge itself, in `src/merge.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use phoenix_config::ConfigSet;
use phoenix_core::ports::BootFormat;
use proptest::prelude::*;

const FORMATS: [BootFormat; 5] = [
    BootFormat::CloudInit,
    BootFormat::AwsUserData,
    BootFormat::OpenStack,
    BootFormat::VsphereGuestinfo,
    BootFormat::Local,
];

/// Loads, previews and renders everything it can; only panics count.
/// Returns whether the configuration loaded.
fn exercise(files: Vec<(String, String)>) -> bool {
    let Ok(config) = ConfigSet::from_files("/nonexistent-proptest-root", files) else {
        return false;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for env in config.environments() {
        for role in config.roles() {
            let _ = config.preview(env, role, &"v1".parse().unwrap());
            let _ = config.fingerprint(env, role, &"v2".parse().unwrap());
            for format in FORMATS {
                let ctx = support::context(env.as_str(), role.as_str(), "v1", 3);
                let _ = runtime.block_on(config.render(&ctx, format));
            }
        }
    }
    true
}

fn template() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[ -~]{0,8}",
            Just("{{ environment }}".to_owned()),
            Just("{{ values.a }}".to_owned()),
            Just("{{ values.t.b | upper }}".to_owned()),
            Just("{{ secrets.s }}".to_owned()),
            Just("{{ index * 2 }}".to_owned()),
            Just("{% for x in values.list %}{{ x }}{% endfor %}".to_owned()),
            Just("{{ values.a | int }}".to_owned()),
            Just("{{".to_owned()),
            Just("{% if %}".to_owned()),
            Just("\n".to_owned()),
            Just("#!/bin/sh\n".to_owned()),
        ],
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn valid_template() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[ -z|~]{0,8}",
            Just("{{ environment }}-{{ role }}".to_owned()),
            Just("{{ values.a }}".to_owned()),
            Just("{{ values.t.b | upper }}".to_owned()),
            Just("{{ secrets.s }}".to_owned()),
            Just("{{ index * 2 }}".to_owned()),
            Just("{% for x in values.list %}{{ x }},{% endfor %}".to_owned()),
            Just("\n".to_owned()),
        ],
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

/// Entries a layer may well hold.
fn valid_entry() -> impl Strategy<Value = (String, String)> {
    let id = "[a-c]";
    prop_oneof![
        any::<i64>().prop_map(|i| ("values.a".to_owned(), i.to_string())),
        "\\PC{0,6}".prop_map(|s| ("values.t.b".to_owned(), toml_string(&s))),
        prop::collection::vec(any::<i16>(), 0..3)
            .prop_map(|v| ("values.list".to_owned(), format!("{v:?}"))),
        ("[A-Z_]{1,4}", valid_template()).prop_map(|(k, t)| (format!("env.{k}"), toml_string(&t))),
        ("[a-z.:-]{1,6}", "\\PC{0,8}")
            .prop_map(|(k, v)| (format!("labels.{}", toml_string(&k)), toml_string(&v))),
        (id, valid_template(), any::<bool>()).prop_map(|(i, t, literal)| {
            let body = if literal { "content" } else { "template" };
            (
                format!("files.{i}"),
                format!(
                    "{{ path = \"/etc/{i}\", mode = 0o600, {body} = {} }}",
                    toml_string(&t)
                ),
            )
        }),
        (
            id,
            prop::collection::vec(valid_template(), 1..3),
            any::<bool>()
        )
            .prop_map(|(i, a, boot)| {
                let when = if boot { "boot" } else { "first-boot" };
                (
                    format!("commands.{i}"),
                    format!(
                        "{{ argv = {}, when = \"{when}\" }}",
                        serde_json::to_string(&a).unwrap()
                    ),
                )
            }),
        (id, valid_template()).prop_map(|(i, t)| (
            format!("commands.{i}"),
            format!("{{ shell = {} }}", toml_string(&format!("echo {t}")))
        )),
        (id, valid_template()).prop_map(|(i, t)| {
            (
                format!("scripts.{i}"),
                format!(
                    "{{ template = {} }}",
                    toml_string(&format!("#!/bin/sh\n{t}"))
                ),
            )
        }),
        prop_oneof![
            Just("[\"prod\"]"),
            Just("[\"ci-*\"]"),
            Just("[\"prod\", \"ci-*\"]")
        ]
        .prop_map(|s| ("secrets.s.scope".to_owned(), s.to_owned())),
        "[a-z]{1,3}".prop_map(|u| (format!("users.{u}.system"), "true".to_owned())),
        prop_oneof![
            Just("files.a"),
            Just("env"),
            Just("labels"),
            Just("commands")
        ]
        .prop_map(|p| ("unset".to_owned(), format!("[{}]", toml_string(p)))),
        any::<bool>().prop_map(|b| ("openstack.config_drive".to_owned(), b.to_string())),
    ]
}

/// Entries that break something.
fn invalid_entry() -> impl Strategy<Value = (String, String)> {
    let id = "[a-c]";
    prop_oneof![
        Just(("values.t".to_owned(), "3".to_owned())),
        ("[A-Z_]{1,4}", template()).prop_map(|(k, t)| (format!("env.{k}"), toml_string(&t))),
        ("[ -~]{0,6}", template())
            .prop_map(|(k, t)| (format!("labels.{}", toml_string(&k)), toml_string(&t))),
        (
            id,
            prop_oneof![
                Just("relative"),
                Just("/x/../y"),
                Just("/dir/"),
                Just("/etc/a")
            ]
        )
            .prop_map(|(i, p)| (format!("files.{i}.path"), toml_string(p))),
        (id, prop_oneof![Just("644"), Just("\"x\""), Just("-1")])
            .prop_map(|(i, m)| (format!("files.{i}.mode"), m.to_owned())),
        (id, prop_oneof![Just("bad owner"), Just("a:b:c")])
            .prop_map(|(i, o)| (format!("files.{i}.owner"), toml_string(o))),
        (id, template()).prop_map(|(i, t)| (format!("scripts.{i}.template"), toml_string(&t))),
        (id, Just("never")).prop_map(|(i, w)| (format!("commands.{i}.when"), toml_string(w))),
        prop_oneof![Just("[]"), Just("[\"qa\"]"), Just("[\"*\"]")]
            .prop_map(|s| ("secrets.s.scope".to_owned(), s.to_owned())),
        Just(("secrets.s.file".to_owned(), "\"also-a-file\"".to_owned())),
        prop_oneof![Just("bogus"), Just("files.\"x"), Just("")]
            .prop_map(|p| ("unset".to_owned(), format!("[{}]", toml_string(p)))),
        "[a-z]{1,3}".prop_map(|k| (format!("surprise.{k}"), "1".to_owned())),
    ]
}

/// An entry of a layer file: (dotted key, TOML value), valid most of the
/// time so that many configurations load and render.
fn entry() -> impl Strategy<Value = (String, String)> {
    prop_oneof![30 => valid_entry(), 1 => invalid_entry()]
}

/// A layer: entries by key (the last wins, as TOML forbids duplicates),
/// after `preamble`'s.
fn layer(preamble: &'static [(&'static str, &'static str)]) -> impl Strategy<Value = String> {
    prop::collection::vec(entry(), 0..6).prop_map(move |entries| {
        let mut by_key: std::collections::BTreeMap<String, String> = preamble
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in entries {
            by_key.insert(k, v);
        }
        by_key
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// What every generated base starts with, so that templates often resolve.
const PREAMBLE: &[(&str, &str)] = &[
    ("values.a", "1"),
    ("values.t.b", "\"b\""),
    ("values.list", "[1]"),
    ("secrets.s.env", "\"PHOENIX_CONFIG_PROPTEST_UNSET\""),
    ("secrets.s.scope", "[\"prod\", \"ci-*\"]"),
];

#[test]
fn structured_input_never_panics() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let loaded = std::cell::Cell::new(0u32);
    let layers = (
        layer(PREAMBLE),
        layer(&[]),
        layer(&[]),
        layer(&[]),
        layer(&[]),
        layer(&[]),
    );
    runner
        .run(&layers, |(base, prod, ci, web, pair, release)| {
            let ok = exercise(vec![
                ("base.toml".into(), base),
                ("env/prod.toml".into(), prod),
                ("env/ci-1.toml".into(), ci),
                ("role/web.toml".into(), web),
                ("env/prod/web.toml".into(), pair),
                ("release/v2.toml".into(), release),
            ]);
            loaded.set(loaded.get() + u32::from(ok));
            Ok(())
        })
        .unwrap();
    // Most cases must get past loading, or rendering goes untested.
    assert!(
        loaded.get() >= 50,
        "only {} of 200 configurations loaded",
        loaded.get()
    );
}

/// Integration tests have no `lib.rs` next to them for proptest to keep
/// failures beside: a failure prints its minimal input instead.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(base in "\\PC{0,200}", env in "\\PC{0,80}", path in "[a-z/.]{1,12}") {
        exercise(vec![
            ("base.toml".into(), base),
            ("env/prod.toml".into(), env.clone()),
            ("role/web.toml".into(), String::new()),
            (path, env),
        ]);
    }
}

/// A valid configuration as dotted-key lines (any order is valid TOML).
fn valid_lines() -> impl Strategy<Value = (Vec<String>, i64)> {
    (
        prop::collection::btree_map("[a-f]", any::<i32>(), 1..5),
        prop::collection::btree_map("[A-F]", "[a-z]{0,5}", 0..4),
        any::<i64>(),
    )
        .prop_map(|(values, env, port)| {
            let mut lines: Vec<String> = values.iter().map(|(k, v)| format!("values.v.{k} = {v}")).collect();
            lines.push(format!("values.port = {port}"));
            for (k, v) in &env {
                lines.push(format!("env.{k} = \"{v}-{{{{ values.port }}}}-{{{{ environment }}}}\""));
            }
            lines.push("files.app.path = \"/etc/app.conf\"".into());
            lines.push("files.app.mode = 0o600".into());
            lines.push(
                "files.app.template = \"{% for k, v in values.v | dictsort %}{{ k }}={{ v }}\\n{% endfor %}{{ secrets.db }}\"".into(),
            );
            lines.push("secrets.db.env = \"DB_PASSWORD\"".into());
            lines.push("secrets.db.scope = [\"prod\", \"staging\"]".into());
            lines.push("secrets.db.version = \"4\"".into());
            lines.push("labels.team = \"shop\"".into());
            lines.push("commands.start.argv = [\"systemctl\", \"start\", \"{{ role }}\"]".into());
            (lines, port)
        })
}

fn fingerprints(base: &str) -> Vec<String> {
    let config = ConfigSet::from_files(
        "/cfg",
        [
            ("base.toml", base),
            ("env/prod.toml", "values.v.z = 1\n"),
            ("env/staging.toml", ""),
            ("role/web.toml", ""),
            ("role/api.toml", "values.port = 1\n"),
        ],
    )
    .unwrap();
    let mut out = Vec::new();
    for env in config.environments() {
        for role in config.roles() {
            out.push(
                config
                    .fingerprint(env, role, &"v1".parse().unwrap())
                    .unwrap(),
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fingerprints_are_stable_under_key_reordering(
        (lines, port) in valid_lines(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = lines.clone();
        // A seeded Fisher–Yates shuffle.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let reference = fingerprints(&lines.join("\n"));
        prop_assert_eq!(&reference, &fingerprints(&shuffled.join("\n")));

        // Any change gives another fingerprint, in every cell that sees it
        // (the api role sets its own port, so it does not).
        let changed: Vec<String> = lines
            .iter()
            .map(|l| if l.starts_with("values.port = ") { format!("values.port = {}", port.wrapping_add(1)) } else { l.clone() })
            .collect();
        let other = fingerprints(&changed.join("\n"));
        // Order: (prod, api), (prod, web), (staging, api), (staging, web).
        prop_assert_eq!(&reference[0], &other[0]);
        prop_assert_ne!(&reference[1], &other[1]);
        prop_assert_eq!(&reference[2], &other[2]);
        prop_assert_ne!(&reference[3], &other[3]);
    }
}
