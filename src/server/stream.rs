//! The client byte stream: TLS negotiation and a frontend-message size guard.
//!
//! lakeward negotiates TLS itself (instead of pgwire's `process_socket`) so
//! that it can refuse plaintext before the startup packet, answer GSSAPI
//! requests, accept PostgreSQL 17 direct TLS, and put [`Guarded`] under the
//! codec: pgwire accepts frontend messages of up to 1 GiB, and buffers a
//! message whole before decoding it, so the guard rejects an oversized length
//! header as soon as it arrives, before the body is read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const SSL_REQUEST_CODE: u32 = 80877103;
const GSSENC_REQUEST_CODE: u32 = 80877104;

/// Plain TCP or TLS over TCP.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

macro_rules! delegate {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).$method($($arg),*),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).$method($($arg),*),
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_shutdown(cx))
    }
}

/// Outcome of the pre-startup negotiation.
pub enum Negotiated {
    Stream(ClientStream),
    /// The client went away or sent something that is not PostgreSQL.
    Closed,
}

/// Handle SSLRequest / GSSENCRequest / direct TLS on a fresh connection.
/// With no acceptor, SSLRequest is answered `N` (the startup handler then
/// decides whether plaintext is allowed).
pub async fn negotiate(
    mut tcp: TcpStream,
    acceptor: Option<&TlsAcceptor>,
) -> io::Result<Negotiated> {
    tcp.set_nodelay(true)?;
    loop {
        let mut head = [0u8; 8];
        let n = peek_exact(&tcp, &mut head).await?;
        if n == 0 {
            return Ok(Negotiated::Closed);
        }
        // PostgreSQL 17 `sslnegotiation=direct`: a TLS ClientHello straight away.
        if head[0] == 0x16 {
            let Some(acceptor) = acceptor else {
                return Ok(Negotiated::Closed);
            };
            let tls = acceptor.accept(tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"postgresql") {
                return Ok(Negotiated::Closed);
            }
            return Ok(Negotiated::Stream(ClientStream::Tls(Box::new(tls))));
        }
        if n < 8 {
            // Shorter than any negotiation packet: let the codec report it.
            return Ok(Negotiated::Stream(ClientStream::Plain(tcp)));
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len == 8 && code == SSL_REQUEST_CODE {
            tcp.read_exact(&mut head).await?;
            match acceptor {
                Some(acceptor) => {
                    tcp.write_all(b"S").await?;
                    let tls = acceptor.accept(tcp).await?;
                    return Ok(Negotiated::Stream(ClientStream::Tls(Box::new(tls))));
                }
                None => {
                    tcp.write_all(b"N").await?;
                    continue;
                }
            }
        }
        if len == 8 && code == GSSENC_REQUEST_CODE {
            tcp.read_exact(&mut head).await?;
            tcp.write_all(b"N").await?;
            continue;
        }
        return Ok(Negotiated::Stream(ClientStream::Plain(tcp)));
    }
}

/// Peek until `buf` is full or the peer stops sending (EOF). Returns the number
/// of bytes available.
async fn peek_exact(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut last = usize::MAX;
    loop {
        let n = tcp.peek(buf).await?;
        if n == buf.len() || n == 0 {
            return Ok(n);
        }
        if n == last {
            // Partial packet and nothing new: wait a little for the rest.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        last = n;
        // A peer that sends 1..7 bytes and stalls is ended by the startup timeout.
        tokio::task::yield_now().await;
    }
}

/// The error kind [`Guarded`] raises for an oversized message.
#[derive(Debug)]
pub struct MessageTooLarge;

impl std::fmt::Display for MessageTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("frontend message too large")
    }
}
impl std::error::Error for MessageTooLarge {}

enum Frame {
    /// Reading a header: the startup packet has no type byte, later ones do.
    Header {
        typed: bool,
        buf: [u8; 5],
        have: usize,
    },
    Body {
        remaining: usize,
    },
}

/// A stream that checks each frontend message's length header and fails the
/// read (with [`MessageTooLarge`]) when it exceeds the limit.
pub struct Guarded {
    inner: ClientStream,
    max: usize,
    frame: Frame,
}

impl Guarded {
    pub fn new(inner: ClientStream, max_message_bytes: usize) -> Guarded {
        Guarded {
            inner,
            max: max_message_bytes,
            frame: Frame::Header {
                typed: false,
                buf: [0; 5],
                have: 0,
            },
        }
    }

    fn track(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.frame {
                Frame::Body { remaining } => {
                    let take = (*remaining).min(data.len());
                    *remaining -= take;
                    data = &data[take..];
                    if *remaining == 0 {
                        self.frame = Frame::Header {
                            typed: true,
                            buf: [0; 5],
                            have: 0,
                        };
                    }
                }
                Frame::Header { typed, buf, have } => {
                    let need = if *typed { 5 } else { 4 };
                    let take = (need - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == need {
                        let l = &buf[need - 4..need];
                        let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                        if len < 4 || len > self.max {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                MessageTooLarge,
                            ));
                        }
                        self.frame = if len == 4 {
                            Frame::Header {
                                typed: true,
                                buf: [0; 5],
                                have: 0,
                            }
                        } else {
                            Frame::Body { remaining: len - 4 }
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                // Copy out to satisfy the borrow checker; reads are at most a few KiB.
                let new = new.to_vec();
                Poll::Ready(this.track(&new))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Frame {
        Frame::Header {
            typed: false,
            buf: [0; 5],
            have: 0,
        }
    }

    fn tracker(max: usize) -> impl FnMut(&[u8]) -> io::Result<()> {
        let mut frame = guard();
        move |data: &[u8]| {
            let mut g = Guarded {
                inner: unreachable_stream(),
                max,
                frame: std::mem::replace(&mut frame, guard()),
            };
            let r = g.track(data);
            frame = g.frame;
            std::mem::forget(g.inner);
            r
        }
    }

    fn unreachable_stream() -> ClientStream {
        // Never read: only `track` is exercised. Build a real (unconnected)
        // socket lazily is not possible without a runtime, so use a std socket.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _g = rt.enter();
        let s = TcpStream::from_std(c).unwrap();
        std::mem::forget(rt);
        ClientStream::Plain(s)
    }

    #[test]
    fn accepts_messages_split_anywhere_and_rejects_oversized_headers() {
        let mut t = tracker(100);
        // startup packet: len 8
        t(&[0, 0, 0]).unwrap();
        t(&[8, 1, 2]).unwrap();
        t(&[3, 4]).unwrap();
        // 'Q' len 9 "abcd\0"
        t(b"Q\0\0\0\x09abc").unwrap();
        t(b"d\0").unwrap();
        // 'Q' with a huge length
        assert!(t(b"Q\x7f\0\0\0").is_err());
    }
}
