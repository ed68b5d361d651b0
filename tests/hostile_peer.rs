//! A peer that misbehaves: hangs up, sends a frame length no broker would, or never
//! answers. Each gives a typed error within the configured time, never a hang or a panic.
//! (These peers are plain TCP listeners, not a broker: they test our side of the socket.)
//!
//! The producer's deadlines are tested against a fake broker (`fake_broker`) that answers
//! everything but Produce properly, and Produce not at all, late, or at once: a Produce
//! request times out after `request.timeout.ms` (once), and every record fails by its
//! `delivery.timeout.ms`, in flight or buffered, after which the producer delivers again.

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

/// The error is the delivery timeout's.
fn assert_delivery_timeout(err: &Error, delivery: Duration) {
    match err {
        Error::Timeout { what, after } => {
            assert_eq!(*after, delivery, "{err}");
            assert!(what.starts_with("delivery to "), "{err}");
        }
        other => panic!("expected the delivery timeout, got {other}"),
    }
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

/// A Produce request that times out is retried on a fresh connection (the broker answers
/// a connection's requests in order, so one that did not answer may hold the next too),
/// and the retry is delivered once the broker answers.
#[tokio::test]
async fn a_produce_request_that_times_out_is_retried_on_a_fresh_connection() {
    let fake = FakeBroker::start(1, ProduceMode::Silent).await;
    let producer = Producer::new(producer_config(&fake, 300, 10_000))
        .await
        .unwrap();
    let before = fake.connections();
    let delivery = producer
        .enqueue(ProducerRecord::new("t").with_value("retried"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.seen().is_empty() {
        assert!(Instant::now() < deadline, "the first request never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fake.set_mode(ProduceMode::Answer);
    let d = delivery.await.expect("the retry is delivered");
    assert_eq!(d.offset, 0);
    let after = fake.connections();
    eprintln!("connections: {before} before the timeout, {after} after");
    assert!(
        after > before,
        "the retry went out on the connection that timed out"
    );
    assert_eq!(fake.appended(b"retried"), 1, "written once");
}

/// Awaits a delivery in a task of its own, so that it is timed when it resolves, not
/// when the test gets to it: the result and the instant it came.
fn resolved(
    d: paperboy::producer::DeliveryFuture,
) -> tokio::task::JoinHandle<(paperboy::Result<paperboy::Delivery>, Instant)> {
    tokio::spawn(async move {
        let r = d.await;
        (r, Instant::now())
    })
}

/// A partition with producer state at the fake (one record delivered), then a silent
/// fake: the record in flight fails by its delivery timeout, so do the two buffered
/// behind it (one request in flight at a time), each by its own; then the fake answers
/// again and the next record is delivered, under a bumped epoch from sequence 0.
async fn in_flight_and_buffered_records_fail_by_their_deadline(request_timeout_ms: u64) {
    const DELIVERY_MS: u64 = 1200;
    // The expiry runs on Tokio's millisecond timer: allow for it and a loaded machine.
    const SLACK_MS: u64 = 350;
    let delivery = Duration::from_millis(DELIVERY_MS);
    let fake = FakeBroker::start(1, ProduceMode::Answer).await;
    let cfg = producer_config(&fake, request_timeout_ms, DELIVERY_MS)
        .with("max.in.flight.requests.per.connection", "1")
        .unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let first = producer
        .send(ProducerRecord::new("t").with_value("r0"))
        .await
        .unwrap();
    assert_eq!(first.offset, 0);
    let first_epoch = fake.seen()[0].producer_epoch;

    fake.set_mode(ProduceMode::Silent);
    let t1 = Instant::now();
    let d1 = producer
        .enqueue(ProducerRecord::new("t").with_value("r1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t2 = Instant::now();
    let d2 = producer
        .enqueue(ProducerRecord::new("t").with_value("r2"))
        .await
        .unwrap();
    let d3 = producer
        .enqueue(ProducerRecord::new("t").with_value("r3"))
        .await
        .unwrap();
    assert!(
        fake.seen().iter().any(|b| b.mode == ProduceMode::Silent),
        "r1 is in flight"
    );

    let (d1, d2, d3) = (resolved(d1), resolved(d2), resolved(d3));
    let (e1, at1) = d1.await.unwrap();
    let (e2, at2) = d2.await.unwrap();
    let (e3, at3) = d3.await.unwrap();
    let (e1, e2, e3) = (e1.unwrap_err(), e2.unwrap_err(), e3.unwrap_err());
    let (took1, took2, took3) = (at1 - t1, at2 - t2, at3 - t2);
    eprintln!(
        "request.timeout.ms={request_timeout_ms} delivery.timeout.ms={DELIVERY_MS}: \
         in flight failed after {took1:?} ({e1}); buffered after {took2:?} and {took3:?} ({e2})"
    );
    for e in [&e1, &e2, &e3] {
        assert_delivery_timeout(e, delivery);
    }
    assert_within(
        "the record in flight",
        took1,
        DELIVERY_MS - 50,
        DELIVERY_MS + SLACK_MS,
    );
    assert_within(
        "a buffered record",
        took2,
        DELIVERY_MS - 50,
        DELIVERY_MS + SLACK_MS,
    );
    assert_within(
        "a buffered record",
        took3,
        DELIVERY_MS - 50,
        DELIVERY_MS + SLACK_MS,
    );
    assert_eq!(producer.pending(), 0);
    assert_eq!(producer.buffered_bytes(), 0);

    // Every attempt at r1 went out under the first epoch with r1's sequence (1): a retry
    // is never renumbered under the same epoch.
    let r1_attempts: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|b| b.mode == ProduceMode::Silent && b.producer_epoch == first_epoch)
        .collect();
    eprintln!("r1 was sent {} time(s)", r1_attempts.len());
    assert!(!r1_attempts.is_empty());
    assert!(
        r1_attempts.iter().all(|b| b.base_sequence == 1),
        "{r1_attempts:?}"
    );

    // The fake answers again: the next record is delivered, in time, right after r0
    // (nothing of r1..r3 was written), from sequence 0 of a newer epoch.
    fake.set_mode(ProduceMode::Answer);
    let t4 = Instant::now();
    let d4 = producer
        .send(ProducerRecord::new("t").with_value("r4"))
        .await
        .unwrap();
    eprintln!("after recovery: delivered in {:?}", t4.elapsed());
    assert_eq!(d4.offset, 1);
    let last = fake.seen().last().cloned().unwrap();
    assert_eq!(last.error_code, 0, "{last:?}");
    assert!(last.producer_epoch > first_epoch, "{last:?}");
    assert_eq!(last.base_sequence, 0, "{last:?}");
    let refused: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|b| b.error_code != 0)
        .collect();
    assert!(refused.is_empty(), "no batch was refused: {refused:?}");
    let start = Instant::now();
    producer.close().await;
    assert!(start.elapsed() < delivery, "close: {:?}", start.elapsed());
}

#[tokio::test]
async fn a_record_in_flight_past_its_delivery_timeout_fails_though_the_request_has_not_timed_out() {
    // request.timeout.ms longer than delivery.timeout.ms: the one request is in flight
    // for the record's whole life.
    in_flight_and_buffered_records_fail_by_their_deadline(3000).await;
}

#[tokio::test]
async fn a_record_retried_after_request_timeouts_fails_by_its_delivery_timeout() {
    // Requests time out at 400 ms and are retried: the record is in flight again when
    // its delivery timeout passes.
    in_flight_and_buffered_records_fail_by_their_deadline(400).await;
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

#[tokio::test]
async fn flush_and_close_wait_only_for_records_enqueued_before_and_at_most_their_deadline() {
    const DELIVERY_MS: u64 = 1000;
    let fake = FakeBroker::start(2, ProduceMode::Silent).await;
    let producer = Producer::new(producer_config(&fake, 5000, DELIVERY_MS))
        .await
        .unwrap();
    let t0 = Instant::now();
    let d1 = resolved(
        producer
            .enqueue(ProducerRecord::new("t").with_partition(0).with_value("r1"))
            .await
            .unwrap(),
    );
    let flusher = {
        let p = producer.clone();
        tokio::spawn(async move {
            p.flush().await;
            Instant::now()
        })
    };
    // A record enqueued while the flush waits, with a later deadline: not waited for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d2 = resolved(
        producer
            .enqueue(ProducerRecord::new("t").with_partition(1).with_value("r2"))
            .await
            .unwrap(),
    );
    let flushed = flusher.await.unwrap() - t0;
    let (e1, _) = d1.await.unwrap();
    let e1 = e1.unwrap_err();
    eprintln!("flush returned after {flushed:?}; r1: {e1}");
    assert_delivery_timeout(&e1, Duration::from_millis(DELIVERY_MS));
    assert_within("flush", flushed, DELIVERY_MS - 50, DELIVERY_MS + 350);
    assert_eq!(producer.pending(), 1, "r2 is still pending");

    // close waits for r2, at most until its deadline, and fails it there.
    let start = Instant::now();
    producer.close().await;
    let closed = start.elapsed();
    let (e2, _) = d2.await.unwrap();
    let e2 = e2.unwrap_err();
    eprintln!("close returned after {closed:?}; r2: {e2}");
    assert_delivery_timeout(&e2, Duration::from_millis(DELIVERY_MS));
    assert_within("close", closed, DELIVERY_MS - 550, DELIVERY_MS - 500 + 350);
}

/// A slow broker writes what it gets but answers after the request timeout. A record
/// (B) whose attempts got no answer may be in the log; when another record's failure at
/// its deadline makes the producer bump its epoch, B is failed, not renumbered and sent
/// again under the new epoch, which the broker would write a second time and
/// acknowledge. Every acknowledged record is in the log once, and the producer delivers
/// after the bump.
#[tokio::test]
async fn a_record_in_doubt_is_not_sent_again_under_a_new_epoch() {
    const DELIVERY_MS: u64 = 1500;
    let fake = FakeBroker::start(2, ProduceMode::Answer).await;
    let producer = Producer::new(producer_config(&fake, 300, DELIVERY_MS))
        .await
        .unwrap();
    let record = |p: i32, v: &str| {
        ProducerRecord::new("t")
            .with_partition(p)
            .with_value(v.to_owned())
    };
    let mut acknowledged = Vec::new();
    for (p, v) in [(0, "a0"), (1, "b0")] {
        producer.send(record(p, v)).await.unwrap();
        acknowledged.push(v);
    }

    fake.set_mode(ProduceMode::AnswerAfter(Duration::from_secs(2)));
    let a = resolved(producer.enqueue(record(0, "A")).await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let b = resolved(producer.enqueue(record(1, "B")).await.unwrap());
    // A fails at its deadline; its sequence is in doubt, and the epoch is bumped once
    // nothing is in flight. The broker answers at once from now on.
    let (ra, _) = a.await.unwrap();
    let ea = ra.unwrap_err();
    assert_delivery_timeout(&ea, Duration::from_millis(DELIVERY_MS));
    fake.set_mode(ProduceMode::Answer);
    let (rb, _) = b.await.unwrap();
    eprintln!("A: {ea}; B: {rb:?}");
    match &rb {
        // In doubt when the epoch was bumped: failed with the error that left it so.
        Err(e) => assert!(e.is_timeout(), "{e}"),
        // (Or resolved under the old epoch, if the machine was slow enough.)
        Ok(_) => acknowledged.push("B"),
    }
    assert_eq!(fake.appended(b"A"), 1, "the slow broker wrote A once");
    assert_eq!(
        fake.appended(b"B"),
        1,
        "the slow broker wrote B once, and only once"
    );

    // Both partitions take records again, under the new epoch.
    for (p, v) in [(0, "a1"), (1, "b1")] {
        producer.send(record(p, v)).await.unwrap();
        acknowledged.push(v);
    }
    for v in &acknowledged {
        assert_eq!(
            fake.appended(v.as_bytes()),
            1,
            "acknowledged {v} is in the log once"
        );
    }
    let last = fake.seen().last().cloned().unwrap();
    assert!(
        last.producer_epoch > 0 && last.base_sequence == 0,
        "{last:?}"
    );
    producer.close().await;
}

#[tokio::test]
async fn starting_a_producer_takes_at_most_default_api_timeout() {
    // The cluster answers everything but InitProducerId: each attempt times out after
    // request.timeout.ms, and the whole start after default.api.timeout.ms.
    let fake = FakeBroker::start(1, ProduceMode::Answer).await;
    fake.ignore_init_producer_id();
    let cfg = producer_config(&fake, 800, 10_000)
        .with("default.api.timeout.ms", "1000")
        .unwrap();
    let start = Instant::now();
    let err = Producer::new(cfg).await.unwrap_err();
    let took = start.elapsed();
    eprintln!("Producer::new failed after {took:?}: {err}");
    assert!(err.is_timeout(), "{err}");
    assert_within(
        "Producer::new (default.api.timeout.ms=1000)",
        took,
        750,
        1300,
    );
}

#[tokio::test]
async fn a_record_lingering_past_its_delivery_timeout_fails_then() {
    // linger.ms longer than delivery.timeout.ms: the batch is still open at the deadline.
    let fake = FakeBroker::start(1, ProduceMode::Answer).await;
    let cfg = producer_config(&fake, 500, 500).with_linger(Duration::from_secs(3));
    let producer = Producer::new(cfg).await.unwrap();
    let start = Instant::now();
    let err = producer
        .send(ProducerRecord::new("t").with_value("v"))
        .await
        .unwrap_err();
    let took = start.elapsed();
    eprintln!("a lingering record failed after {took:?}: {err}");
    assert_delivery_timeout(&err, Duration::from_millis(500));
    assert_within(
        "a lingering record (delivery.timeout.ms=500)",
        took,
        450,
        850,
    );
    assert!(fake.seen().is_empty(), "never sent");
}

#[tokio::test]
async fn enqueue_waits_for_metadata_at_most_max_block() {
    // The topic's metadata never comes: enqueue gives up after max.block.ms, not after
    // the metadata request's own request.timeout.ms.
    let fake = FakeBroker::start(1, ProduceMode::Answer).await;
    let producer = Producer::new(
        producer_config(&fake, 3000, 10_000)
            .with("max.block.ms", "500")
            .unwrap(),
    )
    .await
    .unwrap();
    fake.ignore_topic_metadata();
    let start = Instant::now();
    let err = producer
        .enqueue(ProducerRecord::new("t").with_value("v"))
        .await
        .unwrap_err();
    let took = start.elapsed();
    eprintln!("enqueue failed after {took:?}: {err}");
    assert!(
        matches!(&err, Error::Timeout { what, after } if what.contains("metadata")
            && *after == Duration::from_millis(500)),
        "{err}"
    );
    assert_within("enqueue (max.block.ms=500)", took, 450, 850);
}
