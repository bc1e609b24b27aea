//! CancelRequest from a second connection stops a long query with 57014.

use std::time::{Duration, Instant};

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

#[tokio::test]
async fn cancel_with_wrong_secret_does_nothing() {
    // A cancel request for an unknown pid/secret must not disturb anyone.
    let client = connect(server().addr).await;
    let mut raw = tokio::net::TcpStream::connect(server().addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let mut msg = Vec::new();
    msg.extend_from_slice(&16u32.to_be_bytes());
    msg.extend_from_slice(&80877102u32.to_be_bytes());
    msg.extend_from_slice(&1000i32.to_be_bytes());
    msg.extend_from_slice(&12345i32.to_be_bytes());
    raw.write_all(&msg).await.unwrap();
    drop(raw);
    let n: i64 = client
        .query_one("SELECT count(*) FROM clinical.patients", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
}
