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
pub(crate) enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    pub(crate) fn is_tls(&self) -> bool {
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
pub(crate) enum Negotiated {
    Stream(ClientStream),
    /// The client went away or sent something that is not PostgreSQL.
    Closed,
}

/// Handle SSLRequest / GSSENCRequest / direct TLS on a fresh connection.
/// With no acceptor, SSLRequest is answered `N` (the startup handler then
/// decides whether plaintext is allowed).
pub(crate) async fn negotiate(
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
pub(crate) struct MessageTooLarge;

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
        /// The body so far, for the message types whose structure is
        /// checked ([`well_formed`]).
        keep: Option<(u8, Vec<u8>)>,
    },
}

/// The error kind [`Guarded`] raises for an extended-protocol message whose
/// body does not hold what its counts and lengths announce.
#[derive(Debug)]
pub(crate) struct MalformedMessage;

impl std::fmt::Display for MalformedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed frontend message")
    }
}
impl std::error::Error for MalformedMessage {}

/// Reads a message body front to back, refusing to read past its end.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstring(&mut self) -> Option<()> {
        let end = self.0.iter().position(|b| *b == 0)?;
        self.take(end + 1).map(|_| ())
    }
}

/// Whether the body of a Parse (`P`), Bind (`B`), Describe (`D`), Close
/// (`C`) or Execute (`E`) message holds every field its counts and lengths
/// announce. The codec underneath reads these fields without bounds checks:
/// a short body would panic there and end the connection without an error.
fn well_formed(kind: u8, body: &[u8]) -> bool {
    let mut b = Body(body);
    let ok = match kind {
        b'P' => (|| {
            b.cstring()?;
            b.cstring()?;
            let types = b.u16()?;
            b.take(types.checked_mul(4)?)?;
            Some(())
        })(),
        b'B' => (|| {
            b.cstring()?;
            b.cstring()?;
            let formats = b.u16()?;
            b.take(formats * 2)?;
            for _ in 0..b.u16()? {
                let len = b.i32()?;
                if len >= 0 {
                    b.take(usize::try_from(len).ok()?)?;
                } else if len != -1 {
                    return None;
                }
            }
            let results = b.u16()?;
            b.take(results * 2)?;
            Some(())
        })(),
        b'D' | b'C' => (|| {
            b.take(1)?;
            b.cstring()
        })(),
        b'E' => (|| {
            b.cstring()?;
            b.i32().map(|_| ())
        })(),
        _ => Some(()),
    };
    ok.is_some()
}

/// A stream that checks each frontend message's length header and fails the
/// read (with [`MessageTooLarge`]) when it exceeds the limit.
pub(crate) struct Guarded {
    inner: ClientStream,
    max: usize,
    frame: Frame,
}

impl Guarded {
    pub(crate) fn new(inner: ClientStream, max_message_bytes: usize) -> Guarded {
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
                Frame::Body { remaining, keep } => {
                    let take = (*remaining).min(data.len());
                    if let Some((_, body)) = keep {
                        body.extend_from_slice(&data[..take]);
                    }
                    *remaining -= take;
                    data = &data[take..];
                    if *remaining == 0 {
                        if let Some((kind, body)) = keep
                            && !well_formed(*kind, body)
                        {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                MalformedMessage,
                            ));
                        }
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
                        let kind = if *typed { Some(buf[0]) } else { None };
                        let checked =
                            kind.filter(|k| matches!(k, b'P' | b'B' | b'D' | b'C' | b'E'));
                        if len == 4 {
                            if let Some(k) = checked
                                && !well_formed(k, &[])
                            {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    MalformedMessage,
                                ));
                            }
                            self.frame = Frame::Header {
                                typed: true,
                                buf: [0; 5],
                                have: 0,
                            };
                        } else {
                            self.frame = Frame::Body {
                                remaining: len - 4,
                                keep: checked
                                    .map(|k| (k, Vec::with_capacity((len - 4).min(64 * 1024)))),
                            };
                        }
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
    fn extended_protocol_bodies_are_checked_against_their_counts() {
        assert!(well_formed(b'P', b"s\0SELECT $1\0\0\x01\0\0\0\x17"));
        assert!(!well_formed(b'P', b"s\0SELECT $1\0\0\x02\0\0\0\x17"));
        assert!(!well_formed(b'P', b"s\0SELECT"));
        assert!(well_formed(
            b'B',
            b"\0\0\0\x01\0\x01\0\x02\0\0\0\x0212\xff\xff\xff\xff\0\0"
        ));
        assert!(!well_formed(b'B', b"\0\0\0\0\0\x01\0\0\0\x09abc\0\0"));
        assert!(!well_formed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xf0\0\0"));
        assert!(well_formed(b'D', b"Sname\0"));
        assert!(!well_formed(b'D', b""));
        assert!(well_formed(b'E', b"\0\0\0\0\0"));
        assert!(!well_formed(b'E', b"\0\0\0"));
        assert!(well_formed(b'Q', b""), "other kinds are left to the codec");
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
