//! With a slow handler, the consumer's buffered memory stays under the prefetch budget,
//! measured two ways: the consumer's own account of buffered bytes, and the process's
//! live heap, counted by a global allocator. The topic holds 20 times the budget.
//!
//! Its own test binary, so the allocator counts nothing but this test.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_buffered_memory_under_the_budget() {
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
