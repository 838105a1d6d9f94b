//! HTTPS: the rustls server config built from the configured PEM files, offering HTTP/2 and
//! HTTP/1.1 by ALPN.

use std::{fs::File, io::BufReader, path::Path};

use alertbridge_plugin_api::{PluginError, kit::config_error};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer},
};

/// Reads the certificate chain and key and builds the server config; errors name the key.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, PluginError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("tls", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| config_error("tls.key_file", format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn open(key: &str, path: &Path) -> Result<BufReader<File>, PluginError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| config_error(key, format!("cannot read {}: {e}", path.display())))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PluginError> {
    let key = "tls.cert_file";
    let certs = rustls_pemfile::certs(&mut open(key, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(config_error(key, format!("{}: no PEM certificate found", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PluginError> {
    let key = "tls.key_file";
    rustls_pemfile::private_key(&mut open(key, path)?)
        .map_err(|e| config_error(key, format!("{}: {e}", path.display())))?
        .ok_or_else(|| config_error(key, format!("{}: no PEM private key found", path.display())))
}
