//! OpenStack (Nova) user data, server metadata and the config-drive flag.
//!
//! Nova's limits: user data at most 65,535 characters once base64-encoded
//! (so 49,149 raw bytes; larger user data is gzipped, which cloud-init
//! reads); metadata keys match `[a-zA-Z0-9-_:. ]{1,255}` and values are at
//! most 255 characters; the default `metadata_items` quota is 128 per
//! server, of which Phoenix's own labels take [`PHOENIX_LABEL_ITEMS`].

use std::collections::BTreeMap;

use phoenix_core::ports::BootPayload;
use secrecy::SecretSlice;

use super::{gzip, Rendered};
use crate::error::ConfigError;
use crate::model::is_label_key;

/// Nova's limit on base64-encoded user data, in characters.
pub const NOVA_USER_DATA_LIMIT: usize = 65_535;
/// Nova's limit on a metadata key or value, in characters.
pub const NOVA_METADATA_LENGTH: usize = 255;
/// Nova's default `metadata_items` quota per server.
pub const NOVA_METADATA_ITEMS: usize = 128;
/// Metadata items Phoenix's own labels use (`phoenix-deployment`, …).
pub const PHOENIX_LABEL_ITEMS: usize = 7;

fn encoded_len(raw: usize) -> usize {
    raw.div_ceil(3) * 4
}

/// The user data as Nova takes it (raw, maybe gzipped).
pub(crate) fn user_data(raw: Vec<u8>) -> Result<Vec<u8>, ConfigError> {
    if encoded_len(raw.len()) <= NOVA_USER_DATA_LIMIT {
        return Ok(raw);
    }
    let zipped = gzip(&raw)?;
    if encoded_len(zipped.len()) <= NOVA_USER_DATA_LIMIT {
        return Ok(zipped);
    }
    Err(ConfigError::Limit {
        mechanism: "Nova user data",
        reason: format!(
            "{} bytes ({} gzipped) exceed Nova's {NOVA_USER_DATA_LIMIT} base64 characters",
            raw.len(),
            zipped.len()
        ),
    })
}

/// The labels as Nova metadata, checked against Nova's limits.
pub(crate) fn metadata(
    labels: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let room = NOVA_METADATA_ITEMS - PHOENIX_LABEL_ITEMS;
    if labels.len() > room {
        return Err(ConfigError::Limit {
            mechanism: "Nova metadata",
            reason: format!(
                "{} labels exceed the {room} items left of the default quota of \
                 {NOVA_METADATA_ITEMS} after Phoenix's own {PHOENIX_LABEL_ITEMS}",
                labels.len()
            ),
        });
    }
    for (k, v) in labels {
        if !is_label_key(k) {
            return Err(ConfigError::Limit {
                mechanism: "Nova metadata",
                reason: format!("key `{k}` is not 1 to 255 of A-Z a-z 0-9 - _ : . and space"),
            });
        }
        let n = v.chars().count();
        if n > NOVA_METADATA_LENGTH {
            return Err(ConfigError::Limit {
                mechanism: "Nova metadata",
                reason: format!(
                    "the value of `{k}` is {n} characters, above {NOVA_METADATA_LENGTH}"
                ),
            });
        }
    }
    Ok(labels.clone())
}

/// The OpenStack payload for rendered configuration and its user data.
pub(crate) fn payload(r: &Rendered, raw: Vec<u8>) -> Result<BootPayload, ConfigError> {
    Ok(BootPayload::OpenStack {
        user_data: SecretSlice::from(user_data(raw)?),
        metadata: metadata(&r.labels)?,
        config_drive: r.config_drive,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn metadata_limits_are_enforced() {
        let mut labels = BTreeMap::new();
        labels.insert("team".to_owned(), "x".repeat(255));
        assert!(metadata(&labels).is_ok());
        labels.insert("team".to_owned(), "x".repeat(256));
        let e = metadata(&labels).unwrap_err().to_string();
        assert!(e.contains("`team`") && e.contains("256"), "{e}");
        let many: BTreeMap<String, String> = (0..122)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert!(metadata(&many)
            .unwrap_err()
            .to_string()
            .contains("122 labels"));
        let fits: BTreeMap<String, String> = (0..121)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert!(metadata(&fits).is_ok());
    }

    #[test]
    fn user_data_is_gzipped_only_when_needed() {
        let small = b"#cloud-config\n{}\n".to_vec();
        assert_eq!(user_data(small.clone()).unwrap(), small);
        let big = "#cloud-config\n".to_owned() + &"k: v\n".repeat(20_000);
        let out = user_data(big.clone().into_bytes()).unwrap();
        assert_eq!(&out[..2], &[0x1f, 0x8b]);
        assert!(encoded_len(out.len()) <= NOVA_USER_DATA_LIMIT);
        assert_eq!(encoded_len(49_149), 65_532);
    }
}
