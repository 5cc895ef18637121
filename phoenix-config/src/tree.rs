//! A TOML document as a tree whose every key remembers where it was
//! written, so that errors found after merging still name a file and line.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Location;

/// The file and line a key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) file: Arc<str>,
    pub(crate) line: usize,
}

impl Origin {
    pub(crate) fn location(&self) -> Location {
        Location {
            file: self.file.to_string(),
            line: self.line,
            column: None,
        }
    }
}

/// A value in the tree. Arrays are leaves: they replace, they do not merge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Table(BTreeMap<String, Entry>),
    Leaf(toml::Value),
}

/// A value with the place it was last set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) node: Node,
    pub(crate) origin: Origin,
}

impl Node {
    pub(crate) fn empty() -> Self {
        Node::Table(BTreeMap::new())
    }

    /// Builds a tree from a parsed table, every key at `origin`'s file and
    /// the line `line_of` finds for its path.
    pub(crate) fn from_table(
        table: toml::Table,
        file: &Arc<str>,
        path: &mut Vec<String>,
        line_of: &dyn Fn(&[String]) -> usize,
    ) -> Self {
        let mut out = BTreeMap::new();
        for (key, value) in table {
            path.push(key.clone());
            let origin = Origin {
                file: file.clone(),
                line: line_of(path),
            };
            let node = match value {
                toml::Value::Table(t) => Node::from_table(t, file, path, line_of),
                other => Node::Leaf(other),
            };
            path.pop();
            out.insert(key, Entry { node, origin });
        }
        Node::Table(out)
    }

    /// The plain TOML value of this tree.
    pub(crate) fn to_value(&self) -> toml::Value {
        match self {
            Node::Leaf(v) => v.clone(),
            Node::Table(t) => toml::Value::Table(
                t.iter()
                    .map(|(k, e)| (k.clone(), e.node.to_value()))
                    .collect(),
            ),
        }
    }

    /// The entry at a path, if every step exists.
    pub(crate) fn get(&self, path: &[String]) -> Option<&Entry> {
        let (first, rest) = path.split_first()?;
        let Node::Table(t) = self else { return None };
        let entry = t.get(first)?;
        if rest.is_empty() {
            Some(entry)
        } else {
            entry.node.get(rest)
        }
    }

    /// The origin of the deepest existing entry along `path`.
    pub(crate) fn nearest_origin(&self, path: &[String]) -> Option<&Origin> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.get(&path[..n]).map(|e| &e.origin))
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count() + 1)
        .unwrap_or(1);
    (line, column)
}

/// Finds the byte offset of the key at `path` in a spanned document.
pub(crate) fn key_offset(doc: &toml::de::DeTable<'_>, path: &[String]) -> Option<usize> {
    let (first, rest) = path.split_first()?;
    let (key, value) = doc
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == first.as_str())?;
    if rest.is_empty() {
        return Some(key.span().start);
    }
    match value.get_ref() {
        toml::de::DeValue::Table(t) => key_offset(t, rest).or(Some(key.span().start)),
        _ => Some(key.span().start),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn keys_are_found_in_nested_and_dotted_tables() {
        let text = "x = 1\n[files.app]\npath = \"/a\"\n[values]\ndb.host = \"h\"\n";
        let doc = toml::de::DeTable::parse(text).unwrap();
        let at = |p: &[&str]| {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            line_col(text, key_offset(doc.get_ref(), &p).unwrap()).0
        };
        assert_eq!(at(&["x"]), 1);
        assert_eq!(at(&["files", "app", "path"]), 3);
        assert_eq!(at(&["values", "db", "host"]), 5);
        // A missing leaf falls back to its nearest parent.
        assert_eq!(at(&["files", "app", "mode"]), 2);
    }
}
