//! A peer that misbehaves: hangs up, sends a frame length no broker would, or never
//! answers. Each gives a typed error within the configured time, never a hang or a panic.
//! (These peers are plain TCP listeners, not a broker: they test our side of the socket.)
//!
//! The producer's deadlines are tested against a fake broker (`fake_broker`) that answers
//! everything but Produce properly, and Produce not at all, late, or at once: a Produce
//! request times out after `request.timeout.ms` (once).

mod fake_broker;

use std::time::{Duration, Instant};

use fake_broker::{FakeBroker, ProduceMode};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Acks, Client, ClientConfig, Compression, Error, NewRecord};
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

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAPERBOY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A producer for `fake` with these timeouts, no linger, fast retries.
fn producer_config(fake: &FakeBroker, request_timeout_ms: u64, delivery_ms: u64) -> ProducerConfig {
    init_tracing();
    ProducerConfig::new(&fake.addr)
        .with_linger(Duration::ZERO)
        .with_delivery_timeout(Duration::from_millis(delivery_ms))
        .with("request.timeout.ms", &request_timeout_ms.to_string())
        .unwrap()
        .with("retry.backoff.ms", "20")
        .unwrap()
        .with("retry.backoff.max.ms", "50")
        .unwrap()
}

/// `took` lies in `[low, high]`.
fn assert_within(what: &str, took: Duration, low_ms: u64, high_ms: u64) {
    assert!(
        took >= Duration::from_millis(low_ms) && took <= Duration::from_millis(high_ms),
        "{what} took {took:?}, expected {low_ms}..={high_ms} ms"
    );
}

#[tokio::test]
async fn a_produce_request_times_out_once_after_request_timeout() {
    let fake = FakeBroker::start(1, ProduceMode::Silent).await;
    // No retries, a long delivery timeout: the first request's own timeout fails it.
    let cfg = producer_config(&fake, 500, 10_000)
        .with("retries", "0")
        .unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let start = Instant::now();
    let err = producer
        .send(ProducerRecord::new("t").with_value("v"))
        .await
        .unwrap_err();
    let took = start.elapsed();
    eprintln!("producer: one Produce request failed after {took:?}: {err}");
    assert!(
        matches!(&err, Error::Timeout { what, after } if what.starts_with("Produce request")
            && *after == Duration::from_millis(500)),
        "{err}"
    );
    assert_within("a Produce request (request.timeout.ms=500)", took, 450, 750);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "sent once: {seen:?}");
    assert_eq!(
        seen[0].timeout_ms, 500,
        "the broker is given request.timeout.ms"
    );

    // The client's own produce: one request, the same bound.
    let client = producer.client().clone();
    let start = Instant::now();
    let err = client
        .produce(
            "t",
            0,
            &[NewRecord::new(None::<&[u8]>, Some(&b"v"[..]))],
            Compression::None,
            Acks::All,
        )
        .await
        .unwrap_err();
    let took = start.elapsed();
    eprintln!("client: one Produce request failed after {took:?}: {err}");
    assert!(err.is_timeout(), "{err}");
    assert_within("Client::produce (request.timeout.ms=500)", took, 450, 750);
    assert_eq!(fake.seen().last().unwrap().timeout_ms, 500);
}

#[tokio::test]
async fn a_late_answer_past_request_timeout_is_not_taken() {
    // The fake answers after 1.7 times request.timeout.ms: the request has timed out by
    // then, and the record fails (once: no retries), rather than waiting for the answer.
    let fake = FakeBroker::start(1, ProduceMode::AnswerAfter(Duration::from_millis(850))).await;
    let cfg = producer_config(&fake, 500, 10_000)
        .with("retries", "0")
        .unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let start = Instant::now();
    let result = producer
        .send(ProducerRecord::new("t").with_value("v"))
        .await;
    let took = start.elapsed();
    eprintln!("late answer: {result:?} after {took:?}");
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_within("a Produce request (request.timeout.ms=500)", took, 450, 750);
}
