//! Packer's machine-readable output (`packer build -machine-readable`):
//! one record per line, `timestamp,target,type,data...`, with commas inside
//! fields written as `%!(PACKER_COMMA)` and newlines as the two characters
//! `\n`. See <https://www.packer.io/docs/commands#machine-readable-output>.

use serde::{Deserialize, Serialize};

/// Packer's escape for a comma inside a field.
const COMMA: &str = "%!(PACKER_COMMA)";

/// One machine-readable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Seconds since the epoch.
    pub timestamp: i64,
    /// The build (target) it belongs to; `None` for global records.
    pub target: Option<String>,
    /// The record type: `ui`, `artifact`, `artifact-count`, `error`,
    /// `error-count`, `version`, …
    pub kind: String,
    /// The remaining fields, unescaped.
    pub data: Vec<String>,
}

/// Undoes packer's escaping of one field.
pub fn unescape(field: &str) -> String {
    let s = field.replace(COMMA, ",");
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('n') => {
                    out.push('\n');
                    chars.next();
                }
                Some('r') => {
                    out.push('\r');
                    chars.next();
                }
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses one line; `None` when it is not a machine-readable record (a
/// plugin's stray output, a blank line).
pub fn parse_line(line: &str) -> Option<Record> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut fields = line.split(',');
    let timestamp = fields.next()?.trim().parse::<i64>().ok()?;
    let target = fields.next()?;
    let kind = fields.next()?;
    if kind.is_empty() {
        return None;
    }
    Some(Record {
        timestamp,
        target: (!target.is_empty()).then(|| unescape(target)),
        kind: unescape(kind),
        data: fields.map(unescape).collect(),
    })
}

/// One artifact a build produced, as its `artifact` records describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The build (target) that produced it.
    pub target: String,
    /// Its index among the build's artifacts.
    pub index: u32,
    /// The builder or post-processor that made it, such as
    /// `mitchellh.amazonebs` or `packer.post-processor.artifice`.
    pub builder_id: Option<String>,
    /// The artifact id: an AMI (`us-east-1:ami-…`), a template name, an
    /// image id; empty for file artifacts.
    pub id: Option<String>,
    /// Packer's description of it.
    pub description: Option<String>,
    /// Files it consists of, in order.
    pub files: Vec<String>,
    /// Whether its `end` record was seen.
    pub complete: bool,
}

/// What a build's machine-readable output said, gathered line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Artifacts in the order packer reported them.
    pub artifacts: Vec<Artifact>,
    /// The builds' error messages (`error` records), in order.
    pub errors: Vec<String>,
    /// Messages packer showed as errors (`ui,error`), in order.
    pub ui_errors: Vec<String>,
    /// The packer version, when the output names it.
    pub version: Option<String>,
}

/// What a record means for someone following the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A message packer shows to people (`ui` say/message/error).
    Ui {
        /// The build it belongs to.
        target: Option<String>,
        /// `say`, `message` or `error`.
        level: String,
        /// The text.
        text: String,
    },
    /// An artifact's `end` record: it is complete.
    Artifact(Artifact),
    /// A build failed.
    Error {
        /// The build.
        target: Option<String>,
        /// Why.
        message: String,
    },
    /// Anything else (counts, versions, unknown types).
    Other,
}

impl Output {
    /// Takes one record into account.
    pub fn feed(&mut self, record: &Record) -> Seen {
        let target = record.target.clone();
        let field = |i: usize| record.data.get(i).cloned().unwrap_or_default();
        match record.kind.as_str() {
            "ui" => {
                let level = field(0);
                let text = field(1);
                if level == "error" {
                    self.ui_errors.push(text.trim().to_owned());
                }
                Seen::Ui {
                    target,
                    level,
                    text,
                }
            }
            "error" => {
                let message = record.data.join(",");
                self.errors.push(message.clone());
                Seen::Error { target, message }
            }
            "version" => {
                self.version = Some(field(0));
                Seen::Other
            }
            "artifact" => {
                let Ok(index) = field(0).parse::<u32>() else {
                    return Seen::Other;
                };
                let target = target.unwrap_or_default();
                let pos = match self
                    .artifacts
                    .iter()
                    .position(|a| a.target == target && a.index == index)
                {
                    Some(p) => p,
                    None => {
                        self.artifacts.push(Artifact {
                            target,
                            index,
                            ..Artifact::default()
                        });
                        self.artifacts.len() - 1
                    }
                };
                let Some(a) = self.artifacts.get_mut(pos) else {
                    return Seen::Other;
                };
                match field(1).as_str() {
                    "builder-id" => a.builder_id = Some(field(2)),
                    "id" => a.id = Some(field(2)).filter(|s| !s.is_empty()),
                    "string" => a.description = Some(field(2)),
                    "file" => {
                        // `file,N,path`: a path may hold escaped commas,
                        // which are unescaped already.
                        let path = record
                            .data
                            .get(3..)
                            .map(|p| p.join(","))
                            .unwrap_or_default();
                        if !path.is_empty() {
                            a.files.push(path);
                        }
                    }
                    "end" => {
                        a.complete = true;
                        return Seen::Artifact(a.clone());
                    }
                    _ => {}
                }
                Seen::Other
            }
            _ => Seen::Other,
        }
    }

    /// The last `n` error messages: the builds' errors, or what packer
    /// showed as errors when no build reported one (a template that does
    /// not parse fails before any build).
    pub fn last_errors(&self, n: usize) -> Vec<String> {
        let source = if self.errors.is_empty() {
            &self.ui_errors
        } else {
            &self.errors
        };
        let skip = source.len().saturating_sub(n);
        source.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn feed_all(text: &str) -> (Output, Vec<Seen>) {
        let mut out = Output::default();
        let seen = text
            .lines()
            .filter_map(parse_line)
            .map(|r| out.feed(&r))
            .collect();
        (out, seen)
    }

    #[test]
    fn records_and_escapes() {
        let r =
            parse_line("1796394738,,ui,message,    null: going%!(PACKER_COMMA) to fail\n").unwrap();
        assert_eq!(r.timestamp, 1796394738);
        assert_eq!(r.target, None);
        assert_eq!(r.kind, "ui");
        assert_eq!(r.data, vec!["message", "    null: going, to fail"]);
        let r = parse_line(r"1,web,ui,say,\n==> Builds finished.\nnext").unwrap();
        assert_eq!(r.target.as_deref(), Some("web"));
        assert_eq!(r.data[1], "\n==> Builds finished.\nnext");
        assert_eq!(unescape(r"C:\path"), r"C:\path");
        assert_eq!(parse_line("Packer v1.6.6"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("12,,"), None);
    }

    #[test]
    fn several_artifacts_with_files_and_ids() {
        let (out, seen) = feed_all(
            "1,null,artifact-count,2\n\
             1,null,artifact,0,builder-id,fnoeding.null\n\
             1,null,artifact,0,id,Null\n\
             1,null,artifact,0,string,Did not export anything. This is the null builder\n\
             1,null,artifact,0,files-count,0\n\
             1,null,artifact,0,end\n\
             1,null,artifact,1,builder-id,packer.post-processor.artifice\n\
             1,null,artifact,1,id,\n\
             1,null,artifact,1,string,Created artifact from files: /tmp/a%!(PACKER_COMMA)b/entrypoint\n\
             1,null,artifact,1,files-count,2\n\
             1,null,artifact,1,file,0,/tmp/a%!(PACKER_COMMA)b/entrypoint\n\
             1,null,artifact,1,file,1,/tmp/a%!(PACKER_COMMA)b/data\n\
             1,null,artifact,1,end\n\
             1,amazon,artifact,0,builder-id,mitchellh.amazonebs\n\
             1,amazon,artifact,0,id,eu-west-1:ami-0abc%!(PACKER_COMMA)us-east-1:ami-0def\n\
             1,amazon,artifact,0,end\n",
        );
        assert_eq!(out.artifacts.len(), 3);
        let files = &out.artifacts[1];
        assert_eq!(files.id, None);
        assert_eq!(files.files, vec!["/tmp/a,b/entrypoint", "/tmp/a,b/data"]);
        assert!(files.complete);
        assert_eq!(out.artifacts[0].id.as_deref(), Some("Null"));
        assert_eq!(
            out.artifacts[2].id.as_deref(),
            Some("eu-west-1:ami-0abc,us-east-1:ami-0def")
        );
        let ends = seen
            .iter()
            .filter(|s| matches!(s, Seen::Artifact(_)))
            .count();
        assert_eq!(ends, 3);
    }

    #[test]
    fn errors_of_builds_and_of_templates() {
        let (out, seen) = feed_all(
            "1,,ui,error,Build 'null' errored after 6 ms: Script exited with non-zero exit status: 3\n\
             1,,error-count,1\n\
             1,null,error,Script exited with non-zero exit status: 3.Allowed exit codes are: [0]\n",
        );
        assert_eq!(
            out.last_errors(5),
            vec!["Script exited with non-zero exit status: 3.Allowed exit codes are: [0]"]
        );
        assert!(seen.iter().any(|s| matches!(
            s,
            Seen::Error { target: Some(t), .. } if t == "null"
        )));
        // A template that does not parse fails before any build: only the
        // ui error says why.
        let (out, _) = feed_all(
            r"1,,ui,error,Failed to parse template: Error parsing JSON: unexpected end of JSON input\nAt line 2%!(PACKER_COMMA) column 1",
        );
        let last = out.last_errors(1);
        assert!(last[0].starts_with("Failed to parse template"), "{last:?}");
        assert!(last[0].contains("line 2, column 1"), "{last:?}");
        assert!(out.artifacts.is_empty());
    }

    #[test]
    fn versions_and_unknown_records() {
        let (out, seen) = feed_all("1,,version,1.6.6\n1,,version-prelease,\n1,,telemetry,x\n");
        assert_eq!(out.version.as_deref(), Some("1.6.6"));
        assert!(seen.iter().all(|s| *s == Seen::Other));
        // An artifact record with a garbled index is ignored.
        let (out, _) = feed_all("1,x,artifact,zero,id,foo\n");
        assert!(out.artifacts.is_empty());
    }
}
