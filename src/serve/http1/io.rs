//! The client's socket with its two buffers: bytes read but not yet parsed, and bytes of
//! responses not yet written (gathered so that a small response goes out in one write).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// How much room a read gets: a request head and a small body fit in one.
const READ_SIZE: usize = 8 * 1024;

#[derive(Debug)]
pub(crate) struct Io {
    pub(crate) stream: TcpStream,
    pub(crate) read: BytesMut,
    pub(crate) write: Vec<u8>,
    /// How much of `write` is already on the socket.
    written: usize,
}

impl Io {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::with_capacity(READ_SIZE),
            write: Vec::with_capacity(READ_SIZE),
            written: 0,
        }
    }

    /// Reads what the socket has into `read`; `Ok(0)`: the client closed its side.
    pub(crate) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Header values share the buffer they were read into, so a buffer is not reused once
        // requests hold parts of it: reading goes on into its free tail, then into a new one.
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }

    /// Writes all of `write` to the socket, then empties it.
    pub(crate) fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.write.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.write[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.write.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}
