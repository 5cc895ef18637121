//! The HTTP client for a [`TlsTrust`]: reqwest's rustls with the web PKI
//! roots (plus a vCenter's own CA), or a verifier that accepts exactly one
//! certificate by thumbprint, the way govc's `known_hosts` does.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::config::{VsphereConfig, VsphereConfigError};
use super::trust::{Thumbprint, TlsTrust};

/// Accepts the one certificate whose thumbprint is pinned (names, dates
/// and issuer are not checked: the pin is the trust), and still checks
/// that the server holds its key (the handshake signatures).
#[derive(Debug)]
struct Pinned {
    thumbprint: Thumbprint,
    provider: Arc<CryptoProvider>,
    check_pin: bool,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_pin || self.thumbprint.matches(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate does not have the pinned thumbprint ({:?})",
                self.thumbprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The reqwest client for `config`.
pub(crate) fn http_client(config: &VsphereConfig) -> Result<reqwest::Client, VsphereConfigError> {
    let builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(std::time::Duration::from_secs(10)));
    let builder = match &config.tls {
        TlsTrust::Verify { ca_pem } => {
            let mut b = builder;
            for pem in ca_pem {
                let certs =
                    reqwest::Certificate::from_pem_bundle(pem).map_err(VsphereConfigError::Http)?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            b
        }
        TlsTrust::Pinned(thumbprint) => {
            builder.use_preconfigured_tls(pinned_config(thumbprint.clone(), true)?)
        }
        TlsTrust::Insecure => {
            // Nothing is checked; the handshake signatures still are,
            // which costs nothing and keeps one code path.
            builder.use_preconfigured_tls(pinned_config(Thumbprint::Sha256([0; 32]), false)?)
        }
    };
    builder.build().map_err(VsphereConfigError::Http)
}

fn pinned_config(
    thumbprint: Thumbprint,
    check_pin: bool,
) -> Result<rustls::ClientConfig, VsphereConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        thumbprint,
        provider: provider.clone(),
        check_pin,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(VsphereConfigError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}
