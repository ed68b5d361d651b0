//! A peer that misbehaves: hangs up, sends a frame length no broker would, or never
//! answers. Each gives a typed error within the configured time, never a hang or a panic.
//! (These peers are plain TCP listeners, not a broker: they test our side of the socket.)

use std::time::{Duration, Instant};

use paperboy::{Client, ClientConfig, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn peer(behaviour: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                match behaviour {
                    "hang-up" => drop(sock),
                    "huge-frame" => {
                        let _ = sock.read(&mut buf).await;
                        let _ = sock.write_all(&i32::MAX.to_be_bytes()).await;
                        let _ = sock.write_all(&[0; 64]).await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    "silent" => {
                        let _ = sock.read(&mut buf).await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    _ => unreachable!(),
                }
            });
        }
    });
    addr
}

fn config(addr: &str) -> ClientConfig {
    ClientConfig::new(addr)
        .with_connect_timeout(Duration::from_millis(800))
        .with_request_timeout(Duration::from_millis(800))
        .with_retry_backoff(Duration::from_millis(10), Duration::from_millis(20))
}

#[tokio::test]
async fn a_peer_that_hangs_up_is_a_typed_error() {
    let addr = peer("hang-up").await;
    let err = Client::connect(config(&addr)).await.unwrap_err();
    assert!(matches!(err, Error::NoBrokerAvailable(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("connection to {addr} closed")),
        "{err}"
    );
}

#[tokio::test]
async fn a_huge_frame_length_is_refused_not_allocated() {
    let addr = peer("huge-frame").await;
    let err = Client::connect(config(&addr)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("exceeds the limit"), "{text}");
}

#[tokio::test]
async fn a_silent_peer_times_out() {
    let addr = peer("silent").await;
    let start = Instant::now();
    let err = Client::connect(config(&addr)).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    // Retries stop at the metadata deadline (request.timeout.ms), not much later.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
