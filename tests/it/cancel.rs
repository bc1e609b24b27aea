//! CancelRequest from a second connection stops a long query with 57014,
//! and only with the session's own secret key.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::frontend::{RawSession, cancel_request, query, read_to_close, tags};
use crate::support::{connect, server, sqlstate, tls_client_config};

const LONG_QUERY: &str = "SELECT count(*) FROM clinical.observations a CROSS JOIN clinical.observations b \
                          WHERE a.value_num + b.value_num > 1e12";

#[tokio::test]
async fn long_query_is_cancelled_promptly() {
    let client = connect(server().addr).await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_client_config());
        let sent = Instant::now();
        token.cancel_query(tls).await.expect("cancel request");
        sent
    });
    let err = client
        .simple_query(LONG_QUERY)
        .await
        .expect_err("query must be cancelled");
    let done = Instant::now();
    let sent = canceller.await.unwrap();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        done.duration_since(sent) < Duration::from_secs(10),
        "cancel took {:?}",
        done.duration_since(sent)
    );
    // The session survives the cancellation.
    client.simple_query("SELECT 1").await.unwrap();
}

/// Runs for seconds (about 5 s alone in a debug build here, 3 s on a fast
/// machine) and ends with one row: the observations crossed with a slice of
/// themselves (LONG_QUERY crosses them whole and runs for minutes). The
/// cancel requests below are sent 300 ms after it starts, so the margin is
/// an order of magnitude on any machine CI runs on.
const SLOW_QUERY: &str = "SELECT count(*) FROM clinical.observations a CROSS JOIN \
                          (SELECT value_num FROM clinical.observations LIMIT 120000) b \
                          WHERE a.value_num + b.value_num > 1e12";

/// Send a CancelRequest on a connection of its own; returns once the server
/// has handled it (it closes the connection then, without a word).
async fn send_cancel(pid: i32, secret: i32) {
    let mut s = tokio::net::TcpStream::connect(server().addr).await.unwrap();
    s.write_all(&cancel_request(pid, secret)).await.unwrap();
    s.shutdown().await.unwrap();
    let reply = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("the server closes a cancel connection");
    assert_eq!(reply, b"", "a CancelRequest gets no answer");
}

/// A CancelRequest with the backend pid of a running statement but the
/// wrong secret key is ignored: the statement runs to its end and returns
/// its row. The same request with the right key does cancel it.
#[tokio::test]
async fn cancel_with_wrong_secret_does_nothing() {
    let mut session = RawSession::start(server().addr, "analyst", "operations").await;
    let started = Instant::now();
    session.send(&query(SLOW_QUERY)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_cancel(session.pid, !session.secret).await;
    let handled = started.elapsed();
    let early = session.received();
    assert!(
        !early.iter().any(|m| matches!(m.tag, b'C' | b'E' | b'Z')),
        "the statement ended before the cancel request was handled ({handled:?}): \
         SLOW_QUERY is too fast to show anything: {early:?}"
    );
    let mut msgs = early;
    msgs.extend(session.until_ready().await);
    assert!(
        !msgs.iter().any(|m| m.tag == b'E'),
        "the statement failed: {:?}",
        msgs.iter().find(|m| m.tag == b'E').map(|m| m.fields())
    );
    assert_eq!(tags(&msgs), "TDCZ", "{msgs:?}");
    assert_eq!(msgs[2].body, b"SELECT 1\0", "one row");

    // The right key, the same way: the statement ends with 57014 and the
    // session goes on.
    session.send(&query(SLOW_QUERY)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_cancel(session.pid, session.secret).await;
    let msgs = session.until_ready().await;
    let error = msgs.iter().find(|m| m.tag == b'E');
    assert_eq!(
        error.and_then(|e| e.field(b'C')).as_deref(),
        Some("57014"),
        "{msgs:?}"
    );
    session.send(&query("SELECT 1")).await;
    assert_eq!(tags(&session.until_ready().await), "TDCZ");
}
