//! Hostile or broken input: each gets a clean error or a closed connection,
//! and the server keeps serving everyone else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{connect, server, sqlstate, start};

async fn still_serving() {
    let client = connect(server().addr).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM clinical.patients", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
}

/// Read until EOF (or timeout); returns everything the server sent.
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in [("user", user), ("database", "lakeward")] {
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

/// The SQLSTATE of the first ErrorResponse in raw backend bytes.
fn error_code(bytes: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let tag = bytes[i];
        let len = u32::from_be_bytes(bytes[i + 1..i + 5].try_into().ok()?) as usize;
        let body = bytes.get(i + 5..i + 1 + len)?;
        if tag == b'E' {
            for field in body.split(|b| *b == 0) {
                if field.first() == Some(&b'C') {
                    return Some(String::from_utf8_lossy(&field[1..]).into_owned());
                }
            }
        }
        i += 1 + len;
    }
    None
}

#[tokio::test]
async fn garbage_instead_of_startup() {
    let mut s = TcpStream::connect(server().addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = read_all(&mut s).await;
    still_serving().await;
}

#[tokio::test]
async fn truncated_startup_then_hang_up() {
    let mut s = TcpStream::connect(server().addr).await.unwrap();
    s.write_all(&[0, 0, 0, 100, 0, 3, 0, 0, b'u'])
        .await
        .unwrap();
    drop(s);
    still_serving().await;
}

#[tokio::test]
async fn truncated_message_after_startup() {
    let mut s = TcpStream::connect(server().addr).await.unwrap();
    s.write_all(&startup_packet("raw")).await.unwrap();
    // A Query message that announces 50 bytes and delivers 6.
    s.write_all(b"Q\0\0\0\x32SELE").await.unwrap();
    drop(s);
    still_serving().await;
}

/// Parse, Bind, Describe, Close and Execute messages whose counts or
/// lengths run past their body are refused with 08P01 before they are
/// decoded (the decoder underneath reads them without bounds checks and
/// would panic, ending the connection without a word).
#[tokio::test]
async fn extended_protocol_messages_shorter_than_their_fields_are_refused() {
    let msg = |kind: u8, body: &[u8]| {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
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
        s.write_all(&startup_packet("raw")).await.unwrap();
        s.write_all(&m).await.unwrap();
        let reply = read_all(&mut s).await;
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
    s.write_all(&startup_packet("raw")).await.unwrap();
    // Announce a 1 GiB query; send only the header.
    s.write_all(&[b'Q', 0x3f, 0xff, 0xff, 0xf0]).await.unwrap();
    let reply = read_all(&mut s).await;
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

#[tokio::test]
async fn shutdown_ends_sessions_with_57p01() {
    let srv = start(|_| {});
    let client = connect(srv.addr).await;
    client.simple_query("SELECT 1").await.unwrap();
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || srv.shutdown())
        .await
        .unwrap();
    assert!(client.simple_query("SELECT 1").await.is_err());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}
