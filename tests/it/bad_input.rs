//! Hostile or broken input: each gets a clean error or a closed connection,
//! and the server keeps serving everyone else.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::frontend::{
    Backend, RawSession, error_code, message, parse, query, read_to_close, startup_packet, tags,
};
use crate::support::{connect, server, sqlstate, start};

/// How long a test waits for the server to close a connection it must close.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// The backend messages of a reply that holds only whole messages.
fn whole_messages(reply: &[u8]) -> Vec<Backend> {
    let (msgs, used) = parse(reply);
    assert_eq!(used, reply.len(), "a cut-off message in {reply:?}");
    msgs
}

/// A reply that is one FATAL ErrorResponse with `code`, nothing else.
fn assert_one_fatal(reply: &[u8], code: &str) {
    let msgs = whole_messages(reply);
    assert_eq!(tags(&msgs), "E", "{msgs:?}");
    assert_eq!(msgs[0].field(b'S').as_deref(), Some("FATAL"), "{msgs:?}");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some(code), "{msgs:?}");
}

async fn still_serving() {
    let client = connect(server().addr).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM clinical.patients", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
}

/// Bytes that are not PostgreSQL (an HTTP request): read as a startup packet
/// they announce a length of 1.1 GB, so the server answers FATAL 08P01
/// before reading on, and closes the connection.
#[tokio::test]
async fn garbage_instead_of_startup() {
    let mut s = TcpStream::connect(server().addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = read_to_close(&mut s, CLOSE_WITHIN)
        .await
        .expect("the server closes the connection");
    assert_one_fatal(&reply, "08P01");
    still_serving().await;
}

/// A startup packet cut off by the client's end of stream: nothing to answer
/// (as PostgreSQL: "incomplete startup packet" is logged, nothing sent); the
/// server closes its side at once, not at the startup timeout.
#[tokio::test]
async fn truncated_startup_then_hang_up() {
    let mut s = TcpStream::connect(server().addr).await.unwrap();
    s.write_all(&[0, 0, 0, 100, 0, 3, 0, 0, b'u'])
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let reply = read_to_close(&mut s, CLOSE_WITHIN)
        .await
        .expect("the server closes the connection");
    assert_eq!(reply, b"", "no reply to a cut-off startup packet");
    still_serving().await;
}

/// A Query message that announces 50 bytes and delivers 6 before the
/// client's end of stream, during authentication and in a ready session: the
/// half message is never run or answered, and the server closes the
/// connection at once.
#[tokio::test]
async fn truncated_message_after_startup() {
    let truncated = b"Q\0\0\0\x32SELE";

    // After the startup packet, while the server waits for the password.
    let mut s = TcpStream::connect(server().addr).await.unwrap();
    s.write_all(&startup_packet("raw", &[])).await.unwrap();
    s.write_all(truncated).await.unwrap();
    s.shutdown().await.unwrap();
    let reply = read_to_close(&mut s, CLOSE_WITHIN)
        .await
        .expect("the server closes the connection");
    let msgs = whole_messages(&reply);
    assert_eq!(tags(&msgs), "R", "only the password request: {msgs:?}");
    assert_eq!(msgs[0].body, 3i32.to_be_bytes(), "cleartext password");

    // In a session ready for a query.
    let mut session = RawSession::start(server().addr, "analyst", "operations").await;
    session.send(truncated).await;
    session.stream.shutdown().await.unwrap();
    let reply = session
        .read_to_close(CLOSE_WITHIN)
        .await
        .expect("the server closes the connection");
    assert_eq!(reply, b"", "nothing runs, nothing is answered");
    still_serving().await;
}

/// Parse, Bind, Describe, Close and Execute messages whose counts or
/// lengths run past their body are refused with 08P01 before they are
/// decoded (the decoder underneath reads them without bounds checks and
/// would panic, ending the connection without a word).
#[tokio::test]
async fn extended_protocol_messages_shorter_than_their_fields_are_refused() {
    let msg = message;
    let bad: Vec<Vec<u8>> = vec![
        // Parse announcing 65535 parameter types, carrying ten bytes.
        msg(b'P', b"\0SELECT $1\0\xff\xff\0\0\0\0\0\0\0\0\0\0"),
        // Bind with a parameter of 1 GiB in a 20-byte body.
        msg(b'B', b"\0\0\0\0\0\x01\x40\0\0\0abcd\0\0"),
        // Bind with a parameter length below -1.
        msg(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),
        // Bind cut off in its parameter count.
        msg(b'B', b"p\0s\0\0"),
        // Describe and Close without a name, Execute without its row count.
        msg(b'D', b"S"),
        msg(b'C', b""),
        msg(b'E', b"portal\0\0\0"),
    ];
    for m in bad {
        let mut s = TcpStream::connect(server().addr).await.unwrap();
        s.write_all(&startup_packet("raw", &[])).await.unwrap();
        s.write_all(&m).await.unwrap();
        let reply = read_to_close(&mut s, CLOSE_WITHIN)
            .await
            .expect("the server closes the connection");
        assert_eq!(
            error_code(&reply).as_deref(),
            Some("08P01"),
            "message {:?}",
            &m[..1]
        );
    }
    still_serving().await;
}

#[tokio::test]
async fn oversized_message_is_refused_before_it_is_read() {
    let mut s = TcpStream::connect(server().addr).await.unwrap();
    s.write_all(&startup_packet("raw", &[])).await.unwrap();
    // Announce a 1 GiB query; send only the header.
    s.write_all(&[b'Q', 0x3f, 0xff, 0xff, 0xf0]).await.unwrap();
    let reply = read_to_close(&mut s, CLOSE_WITHIN)
        .await
        .expect("the server closes the connection");
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    still_serving().await;
}

#[tokio::test]
async fn deeply_nested_expression() {
    let client = connect(server().addr).await;
    let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let e = client.simple_query(&deep).await.expect_err("too deep");
    assert_eq!(sqlstate(&e).as_deref(), Some("54001"));
    let chain = format!("SELECT 1{}", " + 1".repeat(10_000));
    let e = client.simple_query(&chain).await.expect_err("too deep");
    assert_eq!(sqlstate(&e).as_deref(), Some("54001"));
    client.simple_query("SELECT 1").await.unwrap();
    still_serving().await;
}

/// Left-deep chains are built by loops in the parser, not by recursion, so
/// the parser's nesting limit does not stop them; dropping such a tree is
/// recursive. Hundreds of thousands of links, refused or broken off by a
/// syntax error, once overflowed the server's stack and killed the process.
#[tokio::test]
async fn very_long_operator_chains_are_refused_without_a_crash() {
    let client = connect(server().addr).await;
    let long = [
        (format!("SELECT 1{}", "+1".repeat(300_000)), "54001"),
        (format!("SELECT 1{} +", "+1".repeat(300_000)), "42601"),
        (format!("SELECT 1{}", "::int".repeat(150_000)), "54001"),
        (
            format!("SELECT true{}", " OR true".repeat(100_000)),
            "54001",
        ),
        (
            format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(50_000)),
            "54001",
        ),
        (
            format!("SELECT 1{} FROM", " UNION SELECT 1".repeat(50_000)),
            "42601",
        ),
    ];
    for (sql, code) in &long {
        let e = client
            .simple_query(sql)
            .await
            .expect_err("a chain this long is refused");
        assert_eq!(sqlstate(&e).as_deref(), Some(*code), "{}", &sql[..40]);
    }
    // Extended protocol too.
    let e = client.prepare(&long[0].0).await.expect_err("refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("54001"));
    // Select lists wider than PostgreSQL's 1664 entries: refused at once
    // (a 100,000-entry list once kept a worker busy planning for minutes).
    let list = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let wide = format!("SELECT {}", list(100_000));
    let started = std::time::Instant::now();
    let e = client.prepare(&wide).await.expect_err("too wide");
    assert_eq!(sqlstate(&e).as_deref(), Some("54011"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let at_limit = format!("SELECT {}", list(1664));
    let rows = client
        .query(&at_limit, &[])
        .await
        .expect("1664 entries are accepted");
    assert_eq!(rows[0].len(), 1664);
    client.simple_query("SELECT 1").await.unwrap();
    still_serving().await;
}

#[tokio::test]
async fn syntax_error_and_unknown_table_keep_session() {
    let client = connect(server().addr).await;
    let e = client
        .simple_query("SELECT (1 FROM")
        .await
        .expect_err("syntax");
    assert_eq!(sqlstate(&e).as_deref(), Some("42601"));
    let e = client
        .query("SELECT * FROM clinical.no_such_table", &[])
        .await
        .expect_err("unknown");
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn connection_limit_gives_53300() {
    let small = start(|c| c.server.max_connections = 2);
    let a = connect(small.addr).await;
    let b = connect(small.addr).await;
    let e = crate::support::try_connect(small.addr, "third", "require")
        .await
        .expect_err("limit");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    drop((a, b));
    small.shutdown();
}

#[tokio::test]
async fn idle_sessions_are_closed() {
    let short = start(|c| c.server.idle_timeout_secs = 1);
    let client = connect(short.addr).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "idle session must be closed"
    );
    short.shutdown();
}

/// Graceful shutdown ends an idle session with FATAL 57P01 (admin_shutdown)
/// and closes it; a client library sees its session gone; the listener is
/// closed.
#[tokio::test]
async fn shutdown_ends_sessions_with_57p01() {
    let srv = start(|_| {});
    let client = connect(srv.addr).await;
    client.simple_query("SELECT 1").await.unwrap();
    let mut session = RawSession::start(srv.addr, "analyst", "operations").await;
    session.send(&query("SELECT 1")).await;
    let msgs = session.until_ready().await;
    assert_eq!(tags(&msgs), "TDCZ", "{msgs:?}");
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || srv.shutdown())
        .await
        .unwrap();
    let reply = session
        .read_to_close(CLOSE_WITHIN)
        .await
        .expect("the server closes the session");
    assert_one_fatal(&reply, "57P01");
    assert!(client.simple_query("SELECT 1").await.is_err());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}
