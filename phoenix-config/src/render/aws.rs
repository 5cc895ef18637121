//! EC2 user data: the cloud-init user data, base64-encoded. EC2 takes at
//! most 16 KiB *before* encoding; larger user data is gzipped (cloud-init
//! decompresses it), and user data that does not fit even then is an
//! error that says both sizes.

use base64::Engine;

use super::gzip;
use crate::error::ConfigError;

/// EC2's limit on raw user data, in bytes.
pub const EC2_USER_DATA_LIMIT: usize = 16 * 1024;

/// Base64 of `raw`, or of its gzip when `raw` is too large.
pub(crate) fn encode(raw: &[u8]) -> Result<String, ConfigError> {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    if raw.len() <= EC2_USER_DATA_LIMIT {
        return Ok(b64(raw));
    }
    let zipped = gzip(raw)?;
    if zipped.len() <= EC2_USER_DATA_LIMIT {
        return Ok(b64(&zipped));
    }
    Err(ConfigError::Limit {
        mechanism: "EC2 user data",
        reason: format!(
            "{} bytes ({} gzipped) exceed the {EC2_USER_DATA_LIMIT}-byte limit: move large files \
             into the image or fetch them at boot",
            raw.len(),
            zipped.len()
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Read;

    use super::*;

    fn decode(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn small_data_is_plain_base64() {
        let raw = b"#cloud-config\n{}\n";
        assert_eq!(decode(&encode(raw).unwrap()), raw);
    }

    #[test]
    fn data_at_the_limit_is_not_compressed() {
        let raw = vec![b'a'; EC2_USER_DATA_LIMIT];
        assert_eq!(decode(&encode(&raw).unwrap()), raw);
    }

    #[test]
    fn large_compressible_data_is_gzipped_to_fit() {
        let raw = "#cloud-config\n".to_owned() + &"x: 1\n".repeat(10_000);
        let out = decode(&encode(raw.as_bytes()).unwrap());
        assert!(out.len() <= EC2_USER_DATA_LIMIT);
        assert_eq!(&out[..2], &[0x1f, 0x8b]);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn incompressible_data_that_does_not_fit_is_a_clear_error() {
        // A pseudo-random sequence gzip cannot shrink.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let raw: Vec<u8> = (0..40_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let e = encode(&raw).unwrap_err().to_string();
        assert!(e.contains("40000 bytes") && e.contains("16384"), "{e}");
    }
}
