//! Member names: a deterministic, HAProxy-valid server name for every
//! [`ServerId`], from which the id can be read back.
//!
//! HAProxy accepts `[A-Za-z0-9._:-]` in server names; a `ServerId` may also
//! hold `@` and `+`. The name is
//!
//! ```text
//! phx-<8 hex digits: FNV-1a of the id>-<the id, escaped>
//! ```
//!
//! where the escape turns `_` into `__`, `@` into `_a` and `+` into `_p`
//! and leaves every other character as it is. The encoding is reversible,
//! so a restarted orchestrator (or another process) recovers the original
//! ids from HAProxy alone, without a mapping stored anywhere. The hash is
//! a checksum: a server whose name looks like ours but whose hash does not
//! match its id was not named by Phoenix and is left alone.

use phoenix_core::id::ServerId;

/// What every Phoenix-managed server name starts with.
pub(crate) const PREFIX: &str = "phx-";

/// 32-bit FNV-1a: stable across versions and platforms, which is all a
/// checksum in a name needs.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The HAProxy server name for `id`.
pub(crate) fn member_name(id: &ServerId) -> String {
    let raw = id.as_str();
    let mut name = String::with_capacity(PREFIX.len() + 9 + raw.len() * 2);
    name.push_str(PREFIX);
    name.push_str(&format!("{:08x}-", fnv1a(raw.as_bytes())));
    for c in raw.chars() {
        match c {
            '_' => name.push_str("__"),
            '@' => name.push_str("_a"),
            '+' => name.push_str("_p"),
            c => name.push(c),
        }
    }
    name
}

/// The server id behind a name made by [`member_name`], or `None` for any
/// other name (servers Phoenix did not add).
pub(crate) fn server_id(name: &str) -> Option<ServerId> {
    let rest = name.strip_prefix(PREFIX)?;
    let hash = rest.get(..8)?;
    let encoded = rest.get(8..)?.strip_prefix('-')?;
    let mut raw = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        if c == '_' {
            raw.push(match chars.next()? {
                '_' => '_',
                'a' => '@',
                'p' => '+',
                _ => return None,
            });
        } else {
            raw.push(c);
        }
    }
    if format!("{:08x}", fnv1a(raw.as_bytes())) != hash {
        return None;
    }
    ServerId::new(raw).ok()
}

/// Whether HAProxy accepts `name` as a proxy (backend) or server name.
pub(crate) fn is_valid_haproxy_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn names_are_valid_deterministic_and_reversible() {
        for raw in [
            "web-1",
            "a",
            "i-0abc.def:42",
            "user@host+1",
            "under_score__twice",
            "_a",
            "__",
            "@+_",
            &"x".repeat(255),
            &"@".repeat(255),
        ] {
            let id = ServerId::new(raw).unwrap();
            let name = member_name(&id);
            assert!(is_valid_haproxy_name(&name), "{name}");
            assert_eq!(name, member_name(&id), "deterministic");
            assert_eq!(server_id(&name).as_ref(), Some(&id), "{name}");
        }
        assert_eq!(
            member_name(&ServerId::new("web-1").unwrap()),
            format!("phx-{:08x}-web-1", fnv1a(b"web-1"))
        );
    }

    #[test]
    fn distinct_ids_get_distinct_names() {
        let ids = ["a_a", "a@", "a_p", "a+", "a__", "a_"];
        let names: std::collections::HashSet<String> = ids
            .iter()
            .map(|s| member_name(&ServerId::new(*s).unwrap()))
            .collect();
        assert_eq!(names.len(), ids.len());
    }

    #[test]
    fn foreign_and_damaged_names_are_not_ours() {
        let good = member_name(&ServerId::new("web-1").unwrap());
        for name in [
            "web-1",
            "phx-",
            "phx-1234567",
            "phx-12345678web-1",
            "phx-zzzzzzzz-web-1",
            &good.replace("web-1", "web-2"),
            &format!("{good}_"),
            &format!("{good}_x"),
            &good.to_uppercase(),
        ] {
            assert_eq!(server_id(name), None, "{name}");
        }
        // Non-ASCII garbage must not panic on a char boundary.
        assert_eq!(server_id("phx-ééééé-x"), None);
    }

    #[test]
    fn haproxy_name_rules() {
        assert!(is_valid_haproxy_name("be_1.a:b-c"));
        for bad in ["", "a b", "a/b", "a;b", "a@b", "a\nb", "a+b"] {
            assert!(!is_valid_haproxy_name(bad), "{bad:?}");
        }
    }
}
