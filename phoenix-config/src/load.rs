//! Reading a configuration directory and parsing its layer files (the
//! layout is in the crate documentation).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfigError, Location};
use crate::merge::{parse_key_path, Layer};
use crate::spec::{LayerSpec, SECTIONS};
use crate::tree::{key_offset, line_col, Node};

/// Every `*.toml` file under `root`, as (relative path with `/`, text),
/// sorted by path.
pub(crate) fn read_dir(root: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<(), ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort();
    for path in entries {
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((relative, text));
        }
    }
    Ok(())
}

fn location(file: &str, text: &str, offset: usize) -> Location {
    let (line, column) = line_col(text, offset);
    Location {
        file: file.to_owned(),
        line,
        column: Some(column),
    }
}

/// Parses and checks one layer file.
pub(crate) fn parse_layer(file: &str, text: &str) -> Result<Layer, ConfigError> {
    let doc = toml::de::DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        location: location(file, text, e.span().map(|s| s.start).unwrap_or(0)),
        message: e.message().to_owned(),
    })?;
    let doc = doc.get_ref();
    let line_of_path = |path: &[String]| key_offset(doc, path).unwrap_or(0);

    let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        location: location(file, text, e.span().map(|s| s.start).unwrap_or(0)),
        message: e.message().to_owned(),
    })?;
    let spec: LayerSpec = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let mut key: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.inner().message().to_owned();
        // serde names an unknown field in its message only: put it in the key.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            if key.last().map(String::as_str) != Some(field) {
                key.push(field.to_owned());
            }
        }
        let offset = e
            .inner()
            .span()
            .map(|s| s.start)
            .unwrap_or_else(|| line_of_path(&key));
        ConfigError::InvalidKey {
            location: location(file, text, offset),
            key: key.join("."),
            message,
        }
    })?;

    let mut unset = Vec::new();
    for (i, path) in spec.unset.iter().enumerate() {
        let at = location(file, text, line_of_path(&["unset".to_owned()]));
        let parsed = parse_key_path(path).map_err(|message| ConfigError::InvalidKey {
            location: at.clone(),
            key: format!("unset[{i}]"),
            message,
        })?;
        if !parsed
            .first()
            .is_some_and(|s| SECTIONS.contains(&s.as_str()))
        {
            return Err(ConfigError::InvalidKey {
                location: at,
                key: format!("unset[{i}]"),
                message: format!(
                    "`{path}` does not start with a section ({})",
                    SECTIONS.join(", ")
                ),
            });
        }
        unset.push(parsed);
    }

    let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        location: location(file, text, e.span().map(|s| s.start).unwrap_or(0)),
        message: e.message().to_owned(),
    })?;
    table.remove("unset");
    let name: Arc<str> = file.into();
    let content = Node::from_table(table, &name, &mut Vec::new(), &|path| {
        line_col(text, line_of_path(path)).0
    });
    Ok(Layer {
        unset,
        content: Some(content),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn err(text: &str) -> String {
        parse_layer("env/prod.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let e = err("[values]\na = 1\n\n[files.app]\npath = \"/x\"\nmdoe = \"0644\"\n");
        assert!(e.starts_with("env/prod.toml:6:"), "{e}");
        assert!(e.contains("`files.app.mdoe`"), "{e}");
        let e = err("[valeus]\n");
        assert!(
            e.contains("env/prod.toml:1") && e.contains("`valeus`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_file_line_and_key() {
        let e = err("[files.app]\npath = \"/x\"\nmode = true\n");
        assert!(e.starts_with("env/prod.toml:3:"), "{e}");
        assert!(e.contains("`files.app.mode`"), "{e}");
        let e = err("[commands.c]\nargv = [\"a\", 2]\n");
        assert!(e.starts_with("env/prod.toml:2:"), "{e}");
        assert!(e.contains("commands.c.argv"), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = err("a = 1\nb = = 2\n");
        assert!(e.starts_with("env/prod.toml:2:"), "{e}");
    }

    #[test]
    fn unset_paths_are_checked() {
        let e = err("unset = [\"nonsense.x\"]\n");
        assert!(e.contains("unset[0]") && e.contains("section"), "{e}");
        let layer =
            parse_layer("f.toml", "unset = [\"values.a\", \"labels.\\\"x.y\\\"\"]\n").unwrap();
        assert_eq!(
            layer.unset,
            vec![
                vec!["values".to_owned(), "a".to_owned()],
                vec!["labels".to_owned(), "x.y".to_owned()]
            ]
        );
    }

    #[test]
    fn keys_remember_their_lines() {
        let layer = parse_layer(
            "f.toml",
            "\n[values]\na = 1\n\n[files.app]\npath = \"/x\"\n",
        )
        .unwrap();
        let content = layer.content.unwrap();
        let line = |p: &[&str]| {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            content.get(&p).unwrap().origin.line
        };
        assert_eq!(line(&["values", "a"]), 3);
        assert_eq!(line(&["files", "app", "path"]), 6);
    }
}
