//! TLS for POP3S and STLS with rustls (ring): certificates are always verified, against the
//! webpki roots plus an optional CA file.

use std::{fs::File, io::BufReader, path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::error::{Error, Result};

/// The client TLS settings: webpki roots, plus every certificate in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let ca_error = |source| Error::CaFile {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(ca_error)?;
        let certs = rustls_pemfile::certs(&mut BufReader::new(file))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ca_error)?;
        if certs.is_empty() {
            return Err(ca_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no PEM certificate in it",
            )));
        }
        for cert in certs {
            roots.add(cert).map_err(Error::TlsConfig)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::TlsConfig)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::TlsConfig(rustls::Error::General(format!(
            "invalid server name {host:?}: {e}"
        )))
    })
}

/// Runs the client handshake on `stream`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream<S>> {
    let server = name.to_str().into_owned();
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|source| Error::Tls { server, source })
}
