//! With a slow handler, the consumer's buffered memory stays under the prefetch budget,
//! measured two ways: the consumer's own account of buffered bytes, and the process's
//! live heap, counted by a global allocator. The topic holds 20 times the budget. And
//! batches that decompress to far more than the budget, on many partitions, go through
//! one at a time instead of all at once.
//!
//! Its own test binary, so the allocator counts nothing but these tests, which take
//! turns.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::Compression;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const BUDGET: usize = 2 << 20;
const RECORD: usize = 1000;
const RECORDS: usize = 40_000; // 40 MB: 20 times the budget

/// The tests take turns: each measures the whole process's heap.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_buffered_memory_under_the_budget() {
    let _turn = TURN.lock().await;
    let client = common::client().await;
    let topic = common::new_topic(&client, "memory", 4).await;
    {
        let producer = Producer::new(
            ProducerConfig::new(&common::bootstrap())
                .with_compression(Compression::None)
                .with_batch_limits(64 << 10, 10_000),
        )
        .await
        .unwrap();
        let value = vec![b'm'; RECORD];
        let mut pending = Vec::new();
        for i in 0..RECORDS {
            let r = ProducerRecord::new(&topic)
                .with_partition((i % 4) as i32)
                .with_value(value.clone());
            pending.push(producer.enqueue(r).await.unwrap());
        }
        for d in pending {
            d.await.unwrap();
        }
        producer.close().await;
    }

    let config = ConsumerConfig::new(&common::bootstrap())
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false)
        .with_prefetch_budget(BUDGET);
    let consumer = Consumer::new(config).await.unwrap();
    let parts: Vec<_> = (0..4).map(|p| TopicPartition::new(&topic, p)).collect();
    consumer.assign(&parts).unwrap();
    // Let the prefetch fill up, then take the heap's baseline without the queue.
    let first = consumer
        .recv_batch(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = LIVE.load(Ordering::Relaxed) - consumer.buffered_bytes();

    let mut read = 1;
    let mut max_buffered = 0;
    let mut max_heap = 0;
    // A slow handler: 100 records (100 KB), then 25 ms of "work", 80 times: 8 MB read,
    // with the fetcher free to run ahead all the while.
    for _ in 0..80 {
        let batch = consumer
            .recv_batch(100, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(batch.len(), 100, "records keep coming");
        read += batch.len();
        drop(batch);
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            max_buffered = max_buffered.max(consumer.buffered_bytes());
            max_heap = max_heap.max(LIVE.load(Ordering::Relaxed).saturating_sub(baseline));
        }
    }
    println!(
        "budget {BUDGET} B; read {read} records of {RECORD} B; max buffered {max_buffered} B; \
         max live heap above baseline {max_heap} B; topic holds {} B",
        RECORD * RECORDS
    );
    // The consumer's account: never more than the budget plus one record batch (the
    // broker always returns at least one batch, whatever the byte limit).
    let one_batch = 70 << 10;
    assert!(
        max_buffered <= BUDGET + one_batch,
        "buffered {max_buffered} B, budget {BUDGET} B"
    );
    assert!(
        max_buffered >= BUDGET / 2,
        "the prefetch did fill ({max_buffered} B)"
    );
    // The heap: the queue, plus the one response being decoded (itself capped by what
    // the budget had left when it was asked for), plus small change. Far below the
    // 40 MB the topic holds.
    assert!(
        max_heap <= 2 * BUDGET + (1 << 20),
        "live heap grew by {max_heap} B over a {BUDGET} B budget"
    );
    consumer.close().await;
}

/// Sixteen partitions, each holding one gzip batch of a single 4 MiB record of one
/// repeated byte (a few KiB compressed). The budget counts decompressed batches, so the
/// consumer opens them one at a time: each `recv_batch(1000)` hands out one record, and
/// the live heap stays near one record plus the budget, not the 64 MiB the partitions
/// decompress to together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highly_compressed_batches_on_many_partitions_are_opened_within_the_budget() {
    let _turn = TURN.lock().await;
    const PARTS: i32 = 16;
    const BIG: usize = 4 << 20;
    let client = common::client().await;
    let topic = common::new_topic(&client, "memory-gzip", PARTS).await;
    {
        let producer = Producer::new(
            ProducerConfig::new(&common::bootstrap())
                .with_compression(Compression::Gzip)
                .with("max.request.size", &(8 << 20).to_string())
                .unwrap(),
        )
        .await
        .unwrap();
        for p in 0..PARTS {
            let value = vec![b'a' + p as u8; BIG];
            producer
                .send(
                    ProducerRecord::new(&topic)
                        .with_partition(p)
                        .with_value(value),
                )
                .await
                .unwrap();
        }
        producer.close().await;
    }
    let config = ConsumerConfig::new(&common::bootstrap())
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false)
        .with_prefetch_budget(BUDGET);
    let consumer = Consumer::new(config).await.unwrap();
    let parts: Vec<_> = (0..PARTS).map(|p| TopicPartition::new(&topic, p)).collect();
    let baseline = LIVE.load(Ordering::Relaxed);
    consumer.assign(&parts).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut calls = Vec::new();
    let mut max_heap = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < PARTS as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {PARTS} records",
            seen.len()
        );
        let batch = consumer
            .recv_batch(1000, Duration::from_millis(500))
            .await
            .unwrap();
        max_heap = max_heap.max(LIVE.load(Ordering::Relaxed).saturating_sub(baseline));
        if batch.is_empty() {
            continue;
        }
        calls.push(batch.len());
        for r in &batch {
            let v = r.value.as_ref().unwrap();
            assert_eq!(v.len(), BIG);
            assert!(v.iter().all(|&b| b == b'a' + r.partition as u8));
            assert!(seen.insert(r.partition), "partition {} twice", r.partition);
        }
        drop(batch);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            max_heap = max_heap.max(LIVE.load(Ordering::Relaxed).saturating_sub(baseline));
        }
    }
    println!(
        "budget {BUDGET} B; {PARTS} partitions of one {BIG} B record (gzip); records per call \
         {calls:?}; max live heap above baseline {max_heap} B"
    );
    // Each record is larger than the budget: one per call.
    assert!(calls.iter().all(|&n| n == 1), "records per call: {calls:?}");
    // One record's decompressed buffer (the decoder may hold up to twice it while
    // growing), the budget, and small change; all sixteen at once would be 64 MiB.
    assert!(
        max_heap <= 2 * BIG + BUDGET + (2 << 20),
        "live heap grew by {max_heap} B with a {BUDGET} B budget"
    );
    consumer.close().await;
}
