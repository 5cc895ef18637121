//! How a vCenter's certificate is trusted: the web PKI plus its own CA,
//! or exactly one certificate by thumbprint (SHA-1 as govc's
//! `known_hosts` and older vCenter show it, or SHA-256), or, for labs,
//! not at all.

use std::fmt;

use super::config::VsphereConfigError;

/// A certificate thumbprint to pin: SHA-1 (govc's `known_hosts` format,
/// what older vCenter shows) or SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub enum Thumbprint {
    /// 20 bytes.
    Sha1([u8; 20]),
    /// 32 bytes.
    Sha256([u8; 32]),
}

impl Thumbprint {
    /// Parses `AA:BB:…` (colons optional, any case): 20 bytes are SHA-1,
    /// 32 bytes SHA-256.
    pub fn parse(text: &str) -> Result<Self, VsphereConfigError> {
        let bad = |reason: &str| VsphereConfigError::BadSetting {
            variable: "thumbprint".into(),
            value: text.to_owned(),
            reason: reason.to_owned(),
        };
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&digits).map_err(|_| bad("not hexadecimal bytes"))?;
        match bytes.len() {
            20 => Ok(Self::Sha1(bytes.try_into().map_err(|_| bad("length"))?)),
            32 => Ok(Self::Sha256(bytes.try_into().map_err(|_| bad("length"))?)),
            n => Err(bad(&format!(
                "{n} bytes: a SHA-1 thumbprint has 20, a SHA-256 one 32"
            ))),
        }
    }

    /// Whether `der` (a certificate) has this thumbprint.
    pub fn matches(&self, der: &[u8]) -> bool {
        use sha1::Digest as _;
        match self {
            Self::Sha1(want) => sha1::Sha1::digest(der).as_slice() == want,
            Self::Sha256(want) => sha2::Sha256::digest(der).as_slice() == want,
        }
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (alg, bytes): (&str, &[u8]) = match self {
            Self::Sha1(b) => ("SHA-1", b),
            Self::Sha256(b) => ("SHA-256", b),
        };
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
        write!(f, "{alg} {}", hex.join(":"))
    }
}

/// How the server's certificate is trusted.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The web PKI roots, plus these PEM certificates (a vCenter's own CA).
    Verify {
        /// Extra roots, PEM.
        ca_pem: Vec<Vec<u8>>,
    },
    /// Exactly this certificate, by thumbprint (names and CA are not
    /// checked: the pin is the trust).
    Pinned(Thumbprint),
    /// No verification at all (`GOVC_INSECURE=1`): for labs only.
    Insecure,
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verify { ca_pem } => write!(f, "verify (+{} CA certificates)", ca_pem.len()),
            Self::Pinned(t) => write!(f, "pinned {t:?}"),
            Self::Insecure => f.write_str("INSECURE (no verification)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints() {
        assert!(matches!(
            Thumbprint::parse(&"ab".repeat(32)).unwrap(),
            Thumbprint::Sha256(_)
        ));
        assert!(Thumbprint::parse("zz").is_err());
        assert!(Thumbprint::parse("ab:cd").is_err());
        use sha1::Digest as _;
        let der = b"certificate bytes";
        let hex: Vec<String> = sha2::Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let t = Thumbprint::parse(&hex.join(":")).unwrap();
        assert!(t.matches(der));
        assert!(!t.matches(b"another certificate"));
    }
}
