//! Opening a session-ready client: TCP with a timeout, then plain, implicit TLS (POP3S) or
//! STLS, the greeting and the capabilities.

use std::{sync::Arc, time::Duration};

use rustls::ClientConfig;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::{Client, Connection, Timeouts, tls};
use crate::{
    error::{Error, Result},
    protocol::Limits,
};

/// A byte stream a client can run on: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// TLS from the first byte (POP3S, port 995).
    #[default]
    Implicit,
    /// Plain connect, then STLS (RFC 2595); fails if the server does not offer it.
    Starttls,
    /// No TLS at all (only allowed to a loopback address).
    None,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub tls_config: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    pub timeouts: Timeouts,
    pub limits: Limits,
}

impl Endpoint {
    fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Connects, protects the connection as configured, reads the greeting and asks for the
/// capabilities (again after STLS). The client is ready to log in.
pub async fn connect(ep: &Endpoint) -> Result<Client<Box<dyn Io>>> {
    let addr = ep.label();
    let tcp = tokio::time::timeout(
        ep.connect_timeout,
        TcpStream::connect((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| Error::Timeout("connect"))?
    .map_err(|source| Error::Connect { addr, source })?;
    // Commands are small and pipelined in one write: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    let mut client = match ep.tls {
        TlsMode::None => Client::greet(conn(ep, Box::new(tcp) as Box<dyn Io>)).await?,
        TlsMode::Implicit => {
            let stream = handshake(ep, tcp).await?;
            Client::greet(conn(ep, Box::new(stream) as Box<dyn Io>)).await?
        }
        TlsMode::Starttls => {
            let mut plain = Client::greet(conn(ep, tcp)).await?;
            if !plain.capa().await?.stls {
                return Err(Error::Unsupported("STLS"));
            }
            let (tcp, greeting) = plain.stls().await?;
            let stream = handshake(ep, tcp).await?;
            Client::after_stls(conn(ep, Box::new(stream) as Box<dyn Io>), greeting)
        }
    };
    client.capa().await?;
    Ok(client)
}

fn conn<S: AsyncRead + AsyncWrite + Unpin>(ep: &Endpoint, stream: S) -> Connection<S> {
    Connection::new(stream, ep.limits, ep.timeouts)
}

async fn handshake(
    ep: &Endpoint,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = tls::server_name(&ep.host)?;
    tokio::time::timeout(
        ep.connect_timeout,
        tls::handshake(tcp, ep.tls_config.clone(), name),
    )
    .await
    .map_err(|_| Error::Timeout("TLS handshake"))?
}
