//! One HTTP/1.1 connection to a backend and the upload of one request over it.
//!
//! There is no connection task: the request's own task (the one serving the client's connection)
//! writes the request and reads the response, so an exchange costs no hand-over between tasks.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::Body;
use tokio::net::TcpStream;

use super::encode::{self, BodyFraming};
use crate::BoxError;

/// How much is asked of the socket per read while reading a head, and while streaming a body.
pub(crate) const HEAD_READ: usize = 8 * 1024;
pub(crate) const BODY_READ: usize = 64 * 1024;
/// Body frames ready at once are gathered into one write up to this size.
const WRITE_GATHER: usize = 64 * 1024;

/// A connection, with its read buffer (bytes received and not yet used) and its write buffer.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    pub(crate) read: BytesMut,
    write: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Reads what the socket has into the read buffer; `Ok(0)` is the end of the stream.
    ///
    /// Through `AsyncRead` rather than `try_read_buf`: after a short read (the socket drained)
    /// tokio forgets the readiness, so the next look at this idle connection ([`Self::is_usable`])
    /// costs no system call unless the backend has sent something (such as its close) since.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < want / 4 {
            self.read.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Writes the write buffer from `*pos` on; clears it once all is written.
    fn poll_flush(&mut self, cx: &mut Context<'_>, pos: &mut usize) -> Poll<io::Result<()>> {
        while *pos < self.write.len() {
            ready!(self.io.poll_write_ready(cx))?;
            match self.io.try_write(&self.write[*pos..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.write.clear();
        *pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Whether an idle connection can take a request: the backend has neither closed it nor sent
    /// bytes nobody asked for. Costs no system call while the socket has shown no activity.
    pub(crate) fn is_usable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// The request going out: its head, then its body as the body yields frames. It goes on while the
/// response comes in (a backend may answer before it has read the whole request).
pub(crate) struct Upload<B> {
    body: Option<Pin<Box<B>>>,
    framing: BodyFraming,
    /// Body bytes still owed under `Content-Length`.
    owed: u64,
    /// How much of the connection's write buffer has been written.
    pos: usize,
    /// Whether any byte reached the socket.
    pub(crate) wrote: bool,
}

/// Why an upload stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("writing to the backend failed: {0}")]
    Io(#[from] io::Error),
    #[error("the request body failed: {0}")]
    Body(BoxError),
    #[error("the request body did not match its announced length")]
    Length,
}

impl<B> Upload<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Starts the upload of a request whose head `write_head` has put in `conn`'s write buffer
    /// (`body` is `None` when there is none to send).
    pub(crate) fn start(
        conn: &mut Conn,
        write_head: impl FnOnce(&mut Vec<u8>),
        framing: BodyFraming,
        body: Option<B>,
    ) -> Self {
        write_head(&mut conn.write);
        let owed = match framing {
            BodyFraming::Length(n) => n,
            _ => 0,
        };
        Self {
            body: body.filter(|_| framing != BodyFraming::Empty).map(Box::pin),
            framing,
            owed,
            pos: 0,
            wrote: false,
        }
    }

    /// Whether everything has been written.
    pub(crate) fn is_done(&self, conn: &Conn) -> bool {
        self.body.is_none() && conn.write.is_empty()
    }

    /// Gives up on the rest of the body (the connection will not be reused).
    pub(crate) fn abandon(&mut self, conn: &mut Conn) {
        self.body = None;
        conn.write.clear();
        self.pos = 0;
    }

    /// Writes what can be written now. `Ready(Ok)` once the whole request is out.
    pub(crate) fn poll_send(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            // Gather the frames the body has ready, so the head and a small body go out in one
            // write.
            while conn.write.len() < WRITE_GATHER {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => {
                        self.body = None;
                        match self.framing {
                            BodyFraming::Chunked => encode::write_last_chunk(None, &mut conn.write),
                            _ if self.owed != 0 => return Poll::Ready(Err(UploadError::Length)),
                            _ => {}
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(UploadError::Body(e.into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.push_data(data, &mut conn.write)?,
                        Err(frame) => {
                            // Trailers end the body; only chunked framing can carry them.
                            if let (BodyFraming::Chunked, Ok(trailers)) =
                                (self.framing, frame.into_trailers())
                            {
                                encode::write_last_chunk(Some(&trailers), &mut conn.write);
                                self.body = None;
                            }
                        }
                    },
                }
            }
            if conn.write.is_empty() {
                return if self.body.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let before = self.pos;
            let flushed = conn.poll_flush(cx, &mut self.pos);
            self.wrote |= self.pos > before || matches!(flushed, Poll::Ready(Ok(())));
            ready!(flushed)?;
        }
    }

    fn push_data(&mut self, data: Bytes, out: &mut Vec<u8>) -> Result<(), UploadError> {
        match self.framing {
            BodyFraming::Chunked => encode::write_chunk(&data, out),
            _ => {
                let len = data.len() as u64;
                if len > self.owed {
                    return Err(UploadError::Length);
                }
                self.owed -= len;
                out.extend_from_slice(&data);
            }
        }
        Ok(())
    }
}

impl<B> std::fmt::Debug for Upload<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("framing", &self.framing)
            .field("body_left", &self.body.is_some())
            .finish()
    }
}
