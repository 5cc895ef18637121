//! Multi-part MIME user data, as cloud-init reads it: a `multipart/mixed`
//! message whose parts carry their type (`text/cloud-config`,
//! `text/x-shellscript`, …). Parts are base64-encoded so that no content
//! can collide with the boundary (base64 has no `-`).

use base64::Engine;

/// A part: its content type, file name and bytes.
pub(crate) struct Part<'a> {
    pub(crate) content_type: &'static str,
    pub(crate) file_name: &'a str,
    pub(crate) body: &'a [u8],
}

const BOUNDARY: &str = "==phoenix-config-boundary==";

/// The message, deterministic for equal parts.
pub(crate) fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\r\nMIME-Version: 1.0\r\n\r\n"
    ));
    for part in parts {
        out.push_str(&format!("--{BOUNDARY}\r\n"));
        out.push_str(&format!(
            "Content-Type: {}; charset=\"utf-8\"\r\n",
            part.content_type
        ));
        out.push_str("MIME-Version: 1.0\r\n");
        out.push_str("Content-Transfer-Encoding: base64\r\n");
        out.push_str(&format!(
            "Content-Disposition: attachment; filename=\"{}\"\r\n\r\n",
            part.file_name
        ));
        let encoded = base64::engine::general_purpose::STANDARD.encode(part.body);
        for chunk in encoded.as_bytes().chunks(76) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("--{BOUNDARY}--\r\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parts_are_framed_and_base64() {
        let msg = multipart(&[
            Part {
                content_type: "text/cloud-config",
                file_name: "cloud-config.yaml",
                body: b"#cloud-config\n{}\n",
            },
            Part {
                content_type: "text/x-shellscript",
                file_name: "010-a.sh",
                body: b"#!/bin/sh\necho --==phoenix-config-boundary==\n",
            },
        ]);
        let text = String::from_utf8(msg).unwrap();
        assert!(text.starts_with(
            "Content-Type: multipart/mixed; boundary=\"==phoenix-config-boundary==\""
        ));
        assert_eq!(text.matches("--==phoenix-config-boundary==\r\n").count(), 2);
        assert!(text.ends_with("--==phoenix-config-boundary==--\r\n"));
        assert!(text.contains("Content-Type: text/x-shellscript"));
        // The boundary inside the script is encoded away.
        assert_eq!(text.matches("echo").count(), 0);
    }
}
