//! Deterministic layering.
//!
//! The laws (checked by property tests):
//!
//! * tables merge key by key, recursively; anything else (strings,
//!   numbers, booleans, dates, arrays) is replaced whole by the upper
//!   layer, and so is a table replaced by a non-table or the reverse;
//! * merging the empty layer, on either side, changes nothing;
//! * merging is idempotent (`x ⊕ x = x`), and associative for layers that
//!   agree on which paths are tables (the schema makes every section but
//!   `[values]` agree; a layer that turns a table into a scalar and one
//!   that turns it back do not compose associatively, by design of
//!   "replace");
//! * every leaf the upper layer sets has the upper layer's value;
//! * a layer's `unset` paths are removed from what the layers below built
//!   *before* the layer's own keys are merged, so a layer can replace a
//!   whole table by unsetting it and setting it again;
//! * among alternative keys (a file's `content` and `template`, …),
//!   setting one in an upper layer drops the others from the layers below.

use crate::tree::{Entry, Node};

/// For a table at a path, the groups of keys that exclude each other.
pub(crate) type Alternatives = fn(&[String]) -> &'static [&'static [&'static str]];

/// No alternatives anywhere.
#[cfg(test)]
pub(crate) fn no_alternatives(_: &[String]) -> &'static [&'static [&'static str]] {
    &[]
}

/// One layer: paths to remove, then content to merge.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Layer {
    pub(crate) unset: Vec<Vec<String>>,
    pub(crate) content: Option<Node>,
}

/// Applies `layer` on top of `target`.
pub(crate) fn apply(target: &mut Node, layer: &Layer, alternatives: Alternatives) {
    for path in &layer.unset {
        remove(target, path);
    }
    if let Some(content) = &layer.content {
        merge_into(target, content, &mut Vec::new(), alternatives);
    }
}

/// `lower ⊕ upper`.
#[cfg(test)]
pub(crate) fn merge(lower: &Node, upper: &Node, alternatives: Alternatives) -> Node {
    let mut out = lower.clone();
    merge_into(&mut out, upper, &mut Vec::new(), alternatives);
    out
}

fn merge_into(target: &mut Node, upper: &Node, path: &mut Vec<String>, alternatives: Alternatives) {
    match (target, upper) {
        (Node::Table(lower), Node::Table(upper)) => {
            for group in alternatives(path) {
                if group.iter().any(|k| upper.contains_key(*k)) {
                    for k in group.iter().filter(|k| !upper.contains_key(**k)) {
                        lower.remove(*k);
                    }
                }
            }
            for (key, upper_entry) in upper {
                path.push(key.clone());
                match lower.get_mut(key) {
                    Some(Entry {
                        node: lower_node @ Node::Table(_),
                        origin,
                    }) if matches!(upper_entry.node, Node::Table(_)) => {
                        merge_into(lower_node, &upper_entry.node, path, alternatives);
                        *origin = upper_entry.origin.clone();
                    }
                    _ => {
                        lower.insert(key.clone(), upper_entry.clone());
                    }
                }
                path.pop();
            }
        }
        (target, upper) => *target = upper.clone(),
    }
}

/// Removes the entry at `path`; a path that does not exist is a no-op.
pub(crate) fn remove(target: &mut Node, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Node::Table(table) = target else { return };
    if rest.is_empty() {
        table.remove(first);
    } else if let Some(entry) = table.get_mut(first) {
        remove(&mut entry.node, rest);
    }
}

/// Parses a dotted key path as written in `unset`: segments separated by
/// dots, a segment in double quotes may hold dots (`labels."a.b"`).
pub(crate) fn parse_key_path(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut segment = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => segment.push(c),
                    None => return Err(format!("unterminated quote in `{text}`")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(format!(
                        "`{text}`: unquoted key segments may only hold letters, digits, _ and -"
                    ));
                }
                segment.push(c);
                chars.next();
            }
        }
        if segment.is_empty() {
            return Err(format!("`{text}` has an empty segment"));
        }
        out.push(segment);
        match chars.next() {
            None => return Ok(out),
            Some('.') => {}
            Some(c) => return Err(format!("`{text}`: unexpected `{c}` after a quoted segment")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use super::*;

    fn node(text: &str, file: &str) -> Node {
        let table: toml::Table = toml::from_str(text).unwrap();
        let file: Arc<str> = file.into();
        Node::from_table(table, &file, &mut Vec::new(), &|_| 1)
    }

    #[test]
    fn tables_merge_and_scalars_and_lists_replace() {
        let lower = node("a = 1\nlist = [1, 2]\n[t]\nx = 1\ny = 2\n", "lower");
        let upper = node("list = [3]\n[t]\ny = 3\nz = 4\n", "upper");
        let merged = merge(&lower, &upper, no_alternatives).to_value();
        let expected: toml::Value =
            toml::from_str("a = 1\nlist = [3]\n[t]\nx = 1\ny = 3\nz = 4\n").unwrap();
        assert_eq!(merged, expected);
    }

    #[test]
    fn the_last_writer_is_the_origin() {
        let lower = node("[t]\nx = 1\n", "lower");
        let upper = node("[t]\ny = 3\n", "upper");
        let merged = merge(&lower, &upper, no_alternatives);
        let p = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
        let origin = |path: &str| merged.get(&p(path)).unwrap().origin.clone();
        assert_eq!(origin("t.x").file.as_ref(), "lower");
        assert_eq!(origin("t.y").file.as_ref(), "upper");
        assert_eq!(origin("t").file.as_ref(), "upper");
    }

    #[test]
    fn unset_runs_before_the_layers_own_keys() {
        let mut target = node("[db]\nhost = \"a\"\nport = 1\n[other]\nk = 1\n", "base");
        let layer = Layer {
            unset: vec![vec!["db".into()], vec!["other".into(), "k".into()]],
            content: Some(node("[db]\nhost = \"b\"\n", "env")),
        };
        apply(&mut target, &layer, no_alternatives);
        let expected: toml::Value = toml::from_str("[db]\nhost = \"b\"\n[other]\n").unwrap();
        assert_eq!(target.to_value(), expected);
    }

    #[test]
    fn an_alternative_drops_the_others() {
        fn alts(path: &[String]) -> &'static [&'static [&'static str]] {
            if path.len() == 2 && path[0] == "files" {
                &[&["content", "template"]]
            } else {
                &[]
            }
        }
        let lower = node("[files.a]\npath = \"/p\"\ncontent = \"x\"\n", "base");
        let upper = node("[files.a]\ntemplate = \"{{ y }}\"\n", "role");
        let merged = merge(&lower, &upper, alts).to_value();
        let expected: toml::Value =
            toml::from_str("[files.a]\npath = \"/p\"\ntemplate = \"{{ y }}\"\n").unwrap();
        assert_eq!(merged, expected);
    }

    #[test]
    fn key_paths_parse_with_quotes() {
        assert_eq!(parse_key_path("values.db").unwrap(), ["values", "db"]);
        assert_eq!(
            parse_key_path("labels.\"app.io/name\"").unwrap(),
            ["labels", "app.io/name"]
        );
        assert!(parse_key_path("values..db").is_err());
        assert!(parse_key_path("values.\"open").is_err());
        assert!(parse_key_path("a b").is_err());
        assert!(parse_key_path("").is_err());
    }

    mod laws {
        use std::sync::Arc;

        use proptest::prelude::*;

        use super::super::*;
        use super::node;
        use crate::tree::{Entry, Origin};

        /// Trees with few keys, so that layers overlap a lot.
        fn tree(file: &'static str) -> impl Strategy<Value = Node> {
            let leaf = prop_oneof![
                any::<i64>().prop_map(toml::Value::Integer),
                "[a-z]{0,3}".prop_map(toml::Value::String),
                any::<bool>().prop_map(toml::Value::Boolean),
                prop::collection::vec(
                    any::<i8>().prop_map(|i| toml::Value::Integer(i.into())),
                    0..3
                )
                .prop_map(toml::Value::Array),
            ]
            .prop_map(Node::Leaf);
            let node = leaf.prop_recursive(3, 24, 4, move |inner| {
                prop::collection::btree_map("[a-d]", (inner, 1..5usize), 0..4).prop_map(move |m| {
                    Node::Table(
                        m.into_iter()
                            .map(|(k, (node, line))| {
                                let origin = Origin {
                                    file: Arc::from(file),
                                    line,
                                };
                                (k, Entry { node, origin })
                            })
                            .collect(),
                    )
                })
            });
            // Layers are tables at the root.
            prop::collection::btree_map("[a-d]", (node, 1..5usize), 0..4).prop_map(move |m| {
                Node::Table(
                    m.into_iter()
                        .map(|(k, (node, line))| {
                            (
                                k,
                                Entry {
                                    node,
                                    origin: Origin {
                                        file: Arc::from(file),
                                        line,
                                    },
                                },
                            )
                        })
                        .collect(),
                )
            })
        }

        /// Trees where a key's name decides whether it is a table (`a`, `b`)
        /// or a leaf (`c`, `d`), as the schema decides for real layers.
        fn consistent(file: &'static str) -> impl Strategy<Value = Node> {
            let origin = move |line| Origin {
                file: Arc::from(file),
                line,
            };
            let leaf = prop_oneof![
                any::<i64>().prop_map(toml::Value::Integer),
                "[a-z]{0,3}".prop_map(toml::Value::String),
            ];
            let leaves = prop::collection::btree_map("[c-d]", (leaf, 1..5usize), 0..3);
            let base = leaves.clone().prop_map(move |m| {
                Node::Table(
                    m.into_iter()
                        .map(|(k, (v, line))| {
                            (
                                k,
                                Entry {
                                    node: Node::Leaf(v),
                                    origin: origin(line),
                                },
                            )
                        })
                        .collect(),
                )
            });
            base.prop_recursive(3, 24, 3, move |inner| {
                (
                    leaves.clone(),
                    prop::collection::btree_map("[a-b]", (inner, 1..5usize), 0..3),
                )
                    .prop_map(move |(ls, ts)| {
                        let mut out: std::collections::BTreeMap<String, Entry> = ls
                            .into_iter()
                            .map(|(k, (v, line))| {
                                (
                                    k,
                                    Entry {
                                        node: Node::Leaf(v),
                                        origin: origin(line),
                                    },
                                )
                            })
                            .collect();
                        out.extend(ts.into_iter().map(|(k, (node, line))| {
                            (
                                k,
                                Entry {
                                    node,
                                    origin: origin(line),
                                },
                            )
                        }));
                        Node::Table(out)
                    })
            })
        }

        fn leaf_paths(
            node: &Node,
            prefix: &mut Vec<String>,
            out: &mut Vec<(Vec<String>, toml::Value)>,
        ) {
            if let Node::Table(t) = node {
                for (k, e) in t {
                    prefix.push(k.clone());
                    match &e.node {
                        Node::Leaf(v) => out.push((prefix.clone(), v.clone())),
                        table => leaf_paths(table, prefix, out),
                    }
                    prefix.pop();
                }
            }
        }

        proptest! {
            #[test]
            fn the_empty_layer_is_an_identity(x in tree("x")) {
                prop_assert_eq!(&merge(&x, &Node::empty(), no_alternatives), &x);
                prop_assert_eq!(&merge(&Node::empty(), &x, no_alternatives), &x);
            }

            #[test]
            fn merging_is_associative(a in consistent("a"), b in consistent("b"), c in consistent("c")) {
                let left = merge(&merge(&a, &b, no_alternatives), &c, no_alternatives);
                let right = merge(&a, &merge(&b, &c, no_alternatives), no_alternatives);
                prop_assert_eq!(left, right);
            }

            #[test]
            fn merging_is_idempotent(x in tree("x")) {
                prop_assert_eq!(&merge(&x, &x, no_alternatives), &x);
            }

            #[test]
            fn the_upper_layer_wins_every_leaf_it_sets(a in tree("a"), b in tree("b")) {
                let merged = merge(&a, &b, no_alternatives);
                let mut leaves = Vec::new();
                leaf_paths(&b, &mut Vec::new(), &mut leaves);
                for (path, value) in leaves {
                    let entry = merged.get(&path).expect("an upper leaf is kept");
                    prop_assert_eq!(&entry.node, &Node::Leaf(value));
                    prop_assert_eq!(entry.origin.file.as_ref(), "b");
                }
            }

            #[test]
            fn lower_leaves_survive_unless_overridden(a in tree("a"), b in tree("b")) {
                let merged = merge(&a, &b, no_alternatives);
                let mut leaves = Vec::new();
                leaf_paths(&a, &mut Vec::new(), &mut leaves);
                for (path, value) in leaves {
                    // Kept unless b sets the path or one of its prefixes.
                    let overridden = (1..=path.len()).any(|n| b.get(&path[..n]).is_some_and(|e| {
                        n == path.len() || !matches!(e.node, Node::Table(_))
                    }));
                    if !overridden {
                        prop_assert_eq!(&merged.get(&path).map(|e| e.node.clone()), &Some(Node::Leaf(value)));
                    }
                }
            }

            #[test]
            fn unset_removes_what_the_layer_does_not_set_again(
                a in tree("a"), b in tree("b"), path in prop::collection::vec("[a-d]", 1..3)
            ) {
                let mut target = a.clone();
                let layer = Layer { unset: vec![path.clone()], content: Some(b.clone()) };
                apply(&mut target, &layer, no_alternatives);
                match b.get(&path) {
                    None => prop_assert!(target.get(&path).is_none()),
                    Some(e) => prop_assert_eq!(&target.get(&path).map(|t| t.node.clone()), &Some(e.node.clone())),
                }
            }

            #[test]
            fn an_alternative_set_above_drops_the_others(x in "[a-z]{1,5}", y in "[a-z]{1,5}") {
                let lower = node(&format!("[files.f]\npath = \"/p\"\ncontent = \"{x}\"\n"), "base");
                let upper = node(&format!("[files.f]\ntemplate = \"{y}\"\n"), "role");
                let merged = merge(&lower, &upper, crate::spec::alternatives).to_value();
                let f = &merged["files"]["f"];
                prop_assert!(f.get("content").is_none());
                prop_assert_eq!(f["template"].as_str(), Some(y.as_str()));
                prop_assert_eq!(f["path"].as_str(), Some("/p"));
            }
        }
    }
}
