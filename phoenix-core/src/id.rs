//! Typed identifiers: a pool id cannot be passed where a server id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    /// Which kind of identifier was being built.
    pub kind: &'static str,
    /// The refused input.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Builds the identifier, refusing empty strings and characters
            /// outside `[A-Za-z0-9._:@+-]` (they break keys, tags and logs).
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                validate(&value, $kind)?;
                Ok(Self(value))
            }

            /// For ids built from parts already known to be valid.
            #[allow(dead_code)]
            pub(crate) fn from_valid(value: String) -> Self {
                debug_assert!(validate(&value, $kind).is_ok(), "{value}");
                Self(value)
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

fn validate(value: &str, kind: &'static str) -> Result<(), InvalidId> {
    let refuse = |reason| {
        Err(InvalidId {
            kind,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return refuse("must not be empty");
    }
    if value.len() > 255 {
        return refuse("must be at most 255 bytes");
    }
    // Ids become store keys, provider tags and metadata, and file names:
    // keep to characters every one of them accepts.
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '+'))
    {
        return refuse("may only contain ASCII letters, digits and . _ - : @ +");
    }
    Ok(())
}

typed_id!(
    /// A deployment: a named service in an environment.
    DeploymentId,
    "deployment id"
);
typed_id!(
    /// An environment such as `prod`, `staging` or `ci-42`.
    EnvironmentName,
    "environment name"
);
typed_id!(
    /// A role within a deployment, such as `frontend` or `backend`.
    RoleName,
    "role name"
);
typed_id!(
    /// The immutable label of a release, such as a pipeline label.
    ReleaseLabel,
    "release label"
);
typed_id!(
    /// A pool of servers of one release and role.
    PoolId,
    "pool id"
);
typed_id!(
    /// A server as the provider names it (instance id, UUID, path).
    ServerId,
    "server id"
);
typed_id!(
    /// An image as the provider names it.
    ImageId,
    "image id"
);
typed_id!(
    /// One operation (one applied plan).
    OperationId,
    "operation id"
);
typed_id!(
    /// A launch idempotency token derived from (operation, pool, slot, attempt).
    IdempotencyToken,
    "idempotency token"
);

impl IdempotencyToken {
    /// Derives the token deterministically, so that a retried or resumed
    /// launch of the same slot attempt carries the same token. 32 hex
    /// characters: short enough for EC2's `ClientToken` (64) and Nova metadata.
    pub fn derive(operation: &OperationId, pool: &PoolId, slot: u32, attempt: u32) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in [operation.as_str(), pool.as_str()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.update(slot.to_be_bytes());
        hasher.update(attempt.to_be_bytes());
        let digest = hasher.finalize();
        Self(hex::encode(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_bad_input() {
        assert!(PoolId::new("").is_err());
        assert!(PoolId::new("a b").is_err());
        assert!(PoolId::new("a\nb").is_err());
        assert!(PoolId::new("a/b").is_err());
        assert!(ReleaseLabel::new("2026.11.22-build.7+g1a2b").is_ok());
        assert!(PoolId::new("x".repeat(256)).is_err());
        let err = ServerId::new(" ").unwrap_err();
        assert_eq!(err.kind, "server id");
        assert!(ServerId::new("i-0abc").is_ok());
    }

    #[test]
    fn ids_round_trip_through_serde_and_refuse_invalid() {
        let id = PoolId::new("web-v1-1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"web-v1-1\"");
        assert_eq!(serde_json::from_str::<PoolId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<PoolId>("\"\"").is_err());
    }

    #[test]
    fn tokens_are_stable_and_distinct() {
        let op = OperationId::new("op-1").unwrap();
        let pool = PoolId::new("p").unwrap();
        let a = IdempotencyToken::derive(&op, &pool, 0, 0);
        assert_eq!(a, IdempotencyToken::derive(&op, &pool, 0, 0));
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, IdempotencyToken::derive(&op, &pool, 0, 1));
        assert_ne!(a, IdempotencyToken::derive(&op, &pool, 1, 0));
        let other = OperationId::new("op-2").unwrap();
        assert_ne!(a, IdempotencyToken::derive(&other, &pool, 0, 0));
    }
}
