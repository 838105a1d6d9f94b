//! A scripted stream for client tests: serves the server's bytes chunk by chunk (each chunk is
//! one read, so split replies are easy to write) and records every byte the client writes.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Clone, Default)]
pub struct MockStream {
    reads: Arc<Mutex<VecDeque<Vec<u8>>>>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl MockStream {
    /// A stream that serves these chunks, then end of file.
    pub fn new<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let reads = chunks.into_iter().map(<[u8]>::to_vec).collect();
        Self {
            reads: Arc::new(Mutex::new(reads)),
            written: Arc::default(),
        }
    }

    /// Everything written so far, as text.
    pub fn written(&self) -> String {
        String::from_utf8_lossy(&self.written.lock().expect("mock lock")).into_owned()
    }
}

impl AsyncRead for MockStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut reads = self.reads.lock().expect("mock lock");
        if let Some(mut chunk) = reads.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                reads.push_front(chunk.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MockStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written
            .lock()
            .expect("mock lock")
            .extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
