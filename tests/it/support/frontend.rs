//! The PostgreSQL frontend protocol spoken by hand, for tests that send what
//! no client library would (garbage, truncated messages, CancelRequests with
//! chosen keys) and read back exactly what the server answers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::token;

/// A StartupMessage (protocol 3.0) for `user` and database `lakeward`,
/// with more `params`.
pub fn startup_packet(user: &str, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in [("user", user), ("database", "lakeward")]
        .into_iter()
        .chain(params.iter().copied())
    {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// A typed frontend message: `kind`, length, `body`.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A CancelRequest (16 bytes: length, code 80877102, backend pid, secret).
pub fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&16u32.to_be_bytes());
    msg.extend_from_slice(&80877102u32.to_be_bytes());
    msg.extend_from_slice(&pid.to_be_bytes());
    msg.extend_from_slice(&secret.to_be_bytes());
    msg
}

/// One backend message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Backend {
    /// The fields of an ErrorResponse or NoticeResponse, by field code
    /// (`S` severity, `C` SQLSTATE, `M` message …).
    pub fn fields(&self) -> Vec<(u8, String)> {
        self.body
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
            .collect()
    }

    pub fn field(&self, code: u8) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v)
    }
}

/// The whole backend messages at the start of `bytes`, and how many bytes
/// they take (a message cut off at the end is left out).
pub fn parse(bytes: &[u8]) -> (Vec<Backend>, usize) {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i + 1..i + 5].try_into().unwrap()) as usize;
        let Some(body) = bytes.get(i + 5..i + 1 + len) else {
            break;
        };
        out.push(Backend {
            tag: bytes[i],
            body: body.to_vec(),
        });
        i += 1 + len;
    }
    (out, i)
}

/// The tags of `msgs`, as text (`"RSKZ"`).
pub fn tags(msgs: &[Backend]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// The SQLSTATE of the first ErrorResponse in raw backend bytes.
pub fn error_code(bytes: &[u8]) -> Option<String> {
    parse(bytes)
        .0
        .iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.field(b'C'))
}

/// Everything the server sends until it closes the connection; `None` if it
/// has not closed it within `wait`.
pub async fn read_to_close(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(wait, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(out),
        // A reset after the server's last word is a close too.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(out),
        Ok(Err(e)) => panic!("read: {e}"),
        Err(_) => None,
    }
}

/// A session opened by hand over plaintext (the test servers allow it on
/// loopback), authenticated with a token.
pub struct RawSession {
    pub stream: TcpStream,
    /// From BackendKeyData.
    pub pid: i32,
    pub secret: i32,
    buf: Vec<u8>,
}

impl RawSession {
    /// Start a session as `role` declaring `purpose`; returns once the server
    /// is ready for a query.
    pub async fn start(addr: SocketAddr, role: &str, purpose: &str) -> RawSession {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let options = format!("-c lakeward.purpose={purpose}");
        stream
            .write_all(&startup_packet(role, &[("options", &options)]))
            .await
            .unwrap();
        let mut s = RawSession {
            stream,
            pid: 0,
            secret: 0,
            buf: Vec::new(),
        };
        let first = s.next().await;
        assert_eq!(
            (first.tag, first.body.as_slice()),
            (b'R', &3i32.to_be_bytes()[..]),
            "AuthenticationCleartextPassword expected"
        );
        let site = (role == "clinician").then_some("S01");
        let mut password = token(role, role, site).into_bytes();
        password.push(0);
        s.send(&message(b'p', &password)).await;
        let msgs = s.until_ready().await;
        let key = msgs
            .iter()
            .find(|m| m.tag == b'K')
            .unwrap_or_else(|| panic!("no BackendKeyData: {msgs:?}"));
        s.pid = i32::from_be_bytes(key.body[0..4].try_into().unwrap());
        s.secret = i32::from_be_bytes(key.body[4..8].try_into().unwrap());
        s
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next backend message (panics if the server closes first or says
    /// nothing for a minute).
    pub async fn next(&mut self) -> Backend {
        loop {
            let (msgs, used) = parse(&self.buf);
            if let Some(m) = msgs.into_iter().next() {
                let len = 5 + m.body.len();
                debug_assert!(used >= len);
                self.buf.drain(..len);
                return m;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(60), self.stream.read(&mut chunk))
                .await
                .expect("the server said nothing for a minute")
                .unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Messages up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Backend> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// The whole backend messages that have arrived and not been read,
    /// without waiting for more.
    pub fn received(&mut self) -> Vec<Backend> {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = self.stream.try_read(&mut chunk) {
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let (msgs, used) = parse(&self.buf);
        self.buf.drain(..used);
        msgs
    }

    /// Everything the server sends until it closes the connection (what was
    /// already received but not read comes first); `None` if it is still open
    /// after `wait`.
    pub async fn read_to_close(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let rest = read_to_close(&mut self.stream, wait).await?;
        let mut out = std::mem::take(&mut self.buf);
        out.extend(rest);
        Some(out)
    }
}
