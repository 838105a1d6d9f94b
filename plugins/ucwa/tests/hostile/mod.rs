//! A hostile "UCWA server" for the trust and limits tests: a raw HTTP/1.1 listener (plain or
//! TLS) that answers each request with whatever the test scripts and records everything it
//! was sent (connections, raw request bytes) and how many body bytes it wrote.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::{
    ServerConfig,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// Head and body as sent.
    pub raw: Vec<u8>,
}

impl Request {
    /// Whether the request carried an `Authorization` header.
    pub fn authorized(&self) -> bool {
        let head_end = self
            .raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(self.raw.len());
        String::from_utf8_lossy(&self.raw[..head_end])
            .to_ascii_lowercase()
            .contains("\r\nauthorization:")
    }

    /// The body, parsed as JSON (`Null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        let head_end = self
            .raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.raw.len(), |i| i + 4);
        serde_json::from_slice(&self.raw[head_end..]).unwrap_or_default()
    }
}

/// What the server sends back.
pub enum Answer {
    /// A complete response.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `200` with `application/json` and a body of `total` bytes, streamed without a length
    /// (or announcing `announce` as its `Content-Length`).
    Stream { total: u64, announce: Option<u64> },
    /// `answer`, after a pause (a parked long poll).
    Later {
        after: std::time::Duration,
        answer: Box<Answer>,
    },
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::Full {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn redirect(status: u16, location: &str) -> Self {
        Self::Full {
            status,
            headers: vec![("Location".into(), location.to_owned())],
            body: Vec::new(),
        }
    }

    /// A `401` with an `MsRtcOAuth` challenge naming `token_href`.
    pub fn challenge(token_href: &str) -> Self {
        Self::Full {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!("MsRtcOAuth href=\"{token_href}\",grant_type=\"password\""),
            )],
            body: b"401".to_vec(),
        }
    }
}

/// A minimal UCWA server that signs a client in (root, `user` behind a challenge, the token
/// endpoint answering `token`, an application without extras, an idle event channel); `None`
/// for any other request.
pub fn sign_in(r: &Request, token: &serde_json::Value) -> Option<Answer> {
    let ok = |body| Some(Answer::json(200, body));
    match (r.method.as_str(), r.path.split('?').next().unwrap_or("")) {
        ("GET", "/") => ok(serde_json::json!({"_links": {"user": {"href": "/user"}}})),
        ("GET", "/user") if !r.authorized() => Some(Answer::challenge("/token")),
        ("GET", "/user") => ok(serde_json::json!({"_links": {"applications": {"href": "/apps"}}})),
        ("POST", "/token") => ok(token.clone()),
        ("POST", "/apps") | ("GET", "/app") => ok(serde_json::json!({
            "_links": {"self": {"href": "/app"}, "events": {"href": "/events?ack=1"}},
            "_embedded": {
                "me": {"_links": {}},
                "people": {"_links": {"self": {"href": "/people"}}},
                "communication": {"_links": {"startMessaging": {"href": "/start"}}},
            },
        })),
        ("GET", "/events") => Some(Answer::Later {
            after: std::time::Duration::from_millis(100),
            answer: Box::new(Answer::json(
                200,
                serde_json::json!({"_links": {"next": {"href": "/events?ack=1"}}, "sender": []}),
            )),
        }),
        ("DELETE", "/app") => Some(Answer::Full {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }),
        _ => None,
    }
}

/// Everything the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: usize,
    pub requests: Vec<Request>,
    /// Body bytes written by `Answer::Stream` answers.
    pub streamed: u64,
}

type Script = dyn Fn(&Request) -> Answer + Send + Sync;

/// A running hostile server.
pub struct Hostile {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Hostile {
    /// A plain-http server answering with `script`.
    pub async fn start(script: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Self {
        Self::serve(None, Arc::new(script)).await
    }

    /// An https server with `pki`'s certificate answering with `script`.
    pub async fn start_tls(
        pki: &Pki,
        script: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> Self {
        Self::serve(Some(pki.acceptor()), Arc::new(script)).await
    }

    async fn serve(tls: Option<TlsAcceptor>, script: Arc<Script>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                lock(&record).connections += 1;
                let (tls, script, record) = (tls.clone(), script.clone(), record.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                connection(stream, &*script, &record).await;
                            }
                        }
                        None => connection(tcp, &*script, &record).await,
                    }
                });
            }
        });
        Self { addr, seen }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        lock(&self.seen).connections
    }

    pub fn requests(&self) -> Vec<Request> {
        lock(&self.seen).requests.clone()
    }

    pub fn streamed(&self) -> u64 {
        lock(&self.seen).streamed
    }

    /// Whether any request carried `needle` (in its head or body, raw or form-encoded).
    pub fn saw(&self, needle: &str) -> bool {
        lock(&self.seen)
            .requests
            .iter()
            .any(|r| contains(&r.raw, needle.as_bytes()))
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Serves requests on one connection until the client closes it.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    script: &Script,
    seen: &Mutex<Seen>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let mut answer = script(&request);
        lock(seen).requests.push(request);
        if let Answer::Later {
            after,
            answer: later,
        } = answer
        {
            tokio::time::sleep(after).await;
            answer = *later;
        }
        if write_answer(&mut stream, answer, seen).await.is_err() {
            return;
        }
    }
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let raw: Vec<u8> = buf.drain(..head_end + length).collect();
    Some(Request {
        method,
        path,
        host: header("host").unwrap_or_default(),
        raw,
    })
}

async fn write_answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    answer: Answer,
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    match answer {
        Answer::Full {
            status,
            headers,
            body,
        } => {
            let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.flush().await
        }
        Answer::Stream { total, announce } => {
            let length = announce
                .map(|n| format!("Content-Length: {n}\r\n"))
                .unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                let n = chunk
                    .len()
                    .min(usize::try_from(total - sent).unwrap_or(usize::MAX));
                stream.write_all(&chunk[..n]).await?;
                sent += n as u64;
                lock(seen).streamed += n as u64;
            }
            stream.flush().await?;
            // Close-delimited: the body ends with the connection.
            stream.shutdown().await?;
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        Answer::Later { answer, .. } => Box::pin(write_answer(stream, *answer, seen)).await,
    }
}

/// A CA and a server certificate for the given names.
pub struct Pki {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Pki {
    pub fn new(names: &[&str]) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
        Self {
            ca_pem: ca.pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes the CA certificate for `ca_file`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write the CA");
        path
    }

    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone().into()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .expect("server config");
        TlsAcceptor::from(Arc::new(config))
    }
}
