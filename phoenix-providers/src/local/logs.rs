//! Server logs: `servers/<id>/stdout.log` and `stderr.log`, appended to
//! by the process; the last line of stderr explains a crash.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const TAIL_BYTES: u64 = 4096;
const MAX_LINE: usize = 300;

/// The last non-empty line of a log, shortened to 300 characters; `None`
/// when the log is missing, unreadable or empty.
pub(crate) fn last_line(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut short: String = line.chars().take(MAX_LINE).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    Some(short)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn finds_the_last_non_empty_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stderr.log");
        assert_eq!(last_line(&p), None);
        std::fs::write(&p, "first\nboom: bad config\n\n").unwrap();
        assert_eq!(last_line(&p).as_deref(), Some("boom: bad config"));
        std::fs::write(&p, "x".repeat(10_000)).unwrap();
        assert_eq!(last_line(&p).map(|l| l.chars().count()), Some(301));
    }
}
