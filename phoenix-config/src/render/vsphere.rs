//! vSphere guestinfo, as cloud-init's VMware datasource reads it:
//! `guestinfo.userdata` with `guestinfo.userdata.encoding` (`base64`, or
//! `gzip+base64` when that is shorter) and `guestinfo.metadata` (JSON with
//! the instance id and host name) with `guestinfo.metadata.encoding`.

use std::collections::BTreeMap;

use base64::Engine;
use secrecy::SecretString;

use super::{gzip, Rendered};
use crate::error::ConfigError;

/// The user data key.
pub const USERDATA: &str = "guestinfo.userdata";
/// The user data encoding key.
pub const USERDATA_ENCODING: &str = "guestinfo.userdata.encoding";
/// The metadata key.
pub const METADATA: &str = "guestinfo.metadata";
/// The metadata encoding key.
pub const METADATA_ENCODING: &str = "guestinfo.metadata.encoding";

/// The guestinfo properties for rendered configuration and its user data.
pub(crate) fn properties(
    r: &Rendered,
    raw: &[u8],
) -> Result<BTreeMap<String, SecretString>, ConfigError> {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let zipped = gzip(raw)?;
    let (userdata, encoding) = if zipped.len() < raw.len() {
        (b64(&zipped), "gzip+base64")
    } else {
        (b64(raw), "base64")
    };
    let metadata = serde_json::json!({
        "instance-id": r.server_name,
        "local-hostname": r.server_name,
    });
    let mut out = BTreeMap::new();
    out.insert(USERDATA.to_owned(), SecretString::from(userdata));
    out.insert(USERDATA_ENCODING.to_owned(), SecretString::from(encoding));
    out.insert(
        METADATA.to_owned(),
        SecretString::from(b64(metadata.to_string().as_bytes())),
    );
    out.insert(METADATA_ENCODING.to_owned(), SecretString::from("base64"));
    Ok(out)
}
