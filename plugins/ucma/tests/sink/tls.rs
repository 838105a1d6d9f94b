//! HTTPS with an internal CA (`ca_file`) and a client certificate (`client_cert_file` /
//! `client_key_file`), through a TLS front that requires a client certificate from that CA,
//! records its SHA-256 thumbprint (as a bridge's allow-list would compare it, §2.2), and passes
//! the bytes on to the plain simulator.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
};

use alertbridge_plugin_api::{DeliveryStatus, ErrorKind, kit::Sink as _};
use alertbridge_testbed::ucma_sim::{Availability, SimConfig, Simulator};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use ring::digest;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::{SECRET, message, new_sink};

const ALICE: &str = "sip:alice@contoso.com";

/// A test CA and the certificates it issues.
struct Pki {
    ca: Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        Self { ca, ca_key }
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (Certificate, KeyPair) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("certificate");
        (cert, key)
    }
}

/// Starts a TLS front for `upstream`; returns its address and the thumbprints of the client
/// certificates it accepted.
async fn tls_front(pki: &Pki, upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = pki.issue(
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).expect("CA root");
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .expect("verifier");
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone(), pki.ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                // A client without an acceptable certificate fails here and is dropped.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    record.lock().expect("lock").push(thumbprint(leaf));
                }
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, seen)
}

/// The SHA-256 thumbprint of §2.2: lower-case hex over the DER certificate.
fn thumbprint(der: &CertificateDer<'_>) -> String {
    digest::digest(&digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_an_internal_ca_and_a_client_certificate() {
    let sim = Simulator::start(SimConfig::new(SECRET).user(ALICE, Availability::Online))
        .await
        .expect("simulator");
    let pki = Pki::new();
    let (front, seen) = tls_front(&pki, sim.addr()).await;
    let (client, client_key) = pki.issue(
        &["alertbridge.contoso.com"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = write(dir.path(), "ca.pem", &pki.ca.pem());
    let cert_file = write(dir.path(), "client.pem", &client.pem());
    let key_file = write(dir.path(), "client.key", &client_key.serialize_pem());
    let base = format!(
        "endpoint = \"https://127.0.0.1:{}\"\nsecret = \"{SECRET}\"\n",
        front.port()
    );

    let full = format!(
        "{base}ca_file = {ca_file:?}\nclient_cert_file = {cert_file:?}\nclient_key_file = {key_file:?}\n"
    );
    let sink = new_sink(&full).expect("config");
    let results = sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("deliver over TLS");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
    assert_eq!(sim.received(ALICE).len(), 1);
    // One handshake per connection (a health query, then the send), each with our certificate.
    let seen_now = seen.lock().expect("lock").clone();
    assert!(
        !seen_now.is_empty() && seen_now.iter().all(|t| *t == thumbprint(client.der())),
        "{seen_now:?}"
    );

    // Without the client certificate the handshake fails: nothing reaches the bridge.
    let no_client_cert = new_sink(&format!("{base}ca_file = {ca_file:?}\n")).expect("config");
    let e = no_client_cert
        .deliver(message(2, &[ALICE]))
        .await
        .expect_err("handshake refused");
    assert_eq!(e.kind, ErrorKind::TRANSIENT, "{}", e.message);
    // Without the CA the bridge's certificate is not trusted.
    let no_ca = new_sink(&format!(
        "{base}client_cert_file = {cert_file:?}\nclient_key_file = {key_file:?}\n"
    ))
    .expect("config");
    let e = no_ca
        .deliver(message(3, &[ALICE]))
        .await
        .expect_err("untrusted server");
    assert!(e.message.contains("no answer"), "{}", e.message);
    assert_eq!(sim.received(ALICE).len(), 1);
    assert_eq!(sim.counters().sends, 1);
}

#[test]
fn unreadable_tls_files_are_config_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = write(dir.path(), "junk.pem", "not a certificate");
    let base = format!("endpoint = \"https://bridge.contoso.com\"\nsecret = \"{SECRET}\"\n");
    let e = new_sink(&format!("{base}ca_file = {junk:?}\n")).expect_err("bad CA file");
    assert!(e.to_string().starts_with("`ca_file`:"), "{e}");
    let e = new_sink(&format!(
        "{base}client_cert_file = {junk:?}\nclient_key_file = {junk:?}\n"
    ))
    .expect_err("bad identity");
    assert!(
        e.to_string().starts_with("`client_cert_file`:"),
        "{}",
        e.message
    );
}
