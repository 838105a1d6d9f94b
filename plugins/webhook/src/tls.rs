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
        return Err(config_error(
            key,
            format!("{}: no PEM certificate found", path.display()),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PluginError> {
    let key = "tls.key_file";
    rustls_pemfile::private_key(&mut open(key, path)?)
        .map_err(|e| config_error(key, format!("{}: {e}", path.display())))?
        .ok_or_else(|| config_error(key, format!("{}: no PEM private key found", path.display())))
}

#[cfg(test)]
mod tests {
    use super::server_config;

    fn pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key_pair.serialize_pem()).expect("write");
        (c, k)
    }

    #[test]
    fn offers_h2_and_http1_and_names_the_bad_file() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        let config = server_config(&cert, &key).expect("valid pair");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let err = server_config(&cert, &other_key).expect_err("mismatched key");
        assert!(
            err.to_string()
                .starts_with("`tls.key_file`: does not fit the certificate"),
            "{}",
            err.to_string()
        );
        let err = server_config(&key, &key).expect_err("a key is no certificate");
        assert!(
            err.to_string().starts_with("`tls.cert_file`:")
                && err.to_string().ends_with("no PEM certificate found"),
            "{}",
            err.to_string()
        );
        let err = server_config(&cert, &cert).expect_err("a certificate is no key");
        assert!(
            err.to_string().starts_with("`tls.key_file`:")
                && err.to_string().ends_with("no PEM private key found"),
            "{}",
            err.to_string()
        );
    }
}
