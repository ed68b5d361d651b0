//! Failover on a real three-node cluster, which this test starts (ports 9192-9197, under
//! `.kafka/failover`) and stops: the leader is killed in the middle of a produce run with
//! acks=all and idempotence, and no acknowledged record is lost or duplicated.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::cluster::Cluster;
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Client, ClientConfig, NewTopic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_run_loses_and_duplicates_nothing() {
    common::init_tracing();
    let cluster = Cluster::start("failover", 9192);
    let client = Client::connect(ClientConfig::new(&cluster.bootstrap()))
        .await
        .expect("three-node cluster answers");
    let topic = common::unique_topic("failover");
    client
        .create_topics(&[NewTopic::new(&topic, 3, 3)])
        .await
        .unwrap();
    let meta = client.refresh_metadata(&[&topic]).await.unwrap();
    let victim = meta.leader_for(&topic, 0).unwrap().node_id;

    let producer = Producer::new(
        ProducerConfig::new(&cluster.bootstrap())
            .with_linger(Duration::from_millis(5))
            .with_delivery_timeout(Duration::from_secs(120))
            .with("request.timeout.ms", "10000")
            .unwrap(),
    )
    .await
    .unwrap();

    const N: usize = 30_000;
    let mut pending = Vec::with_capacity(N);
    let mut killer = None;
    for i in 0..N {
        let r = ProducerRecord::new(&topic)
            .with_key(format!("key-{}", i % 97))
            .with_value(format!("record-{i}"));
        pending.push(producer.enqueue(r).await.unwrap());
        if i == N / 3 {
            // Kill the leader of partition 0 without warning, with requests in flight.
            let handle = cluster.handle();
            killer = Some(std::thread::spawn(move || handle.kill(victim)));
        }
    }
    let mut acked: HashMap<String, (i32, i64)> = HashMap::new();
    for (i, d) in pending.into_iter().enumerate() {
        let d = d
            .await
            .unwrap_or_else(|e| panic!("record-{i} was not delivered: {e}"));
        acked.insert(format!("record-{i}"), (d.partition, d.offset));
    }
    producer.close().await;
    killer.expect("the leader was killed").join().unwrap();
    assert_eq!(acked.len(), N);

    // Read every partition back from whoever leads it now.
    let mut seen: HashMap<String, (i32, i64)> = HashMap::new();
    let mut total = 0;
    for p in 0..3 {
        let end = client
            .list_offset(&topic, p, paperboy::OffsetSpec::Latest)
            .await
            .unwrap() as usize;
        for (offset, _, value, _) in common::read_partition(&client, &topic, p, 0, end).await {
            let v = String::from_utf8(value.unwrap().to_vec()).unwrap();
            total += 1;
            assert!(
                seen.insert(v.clone(), (p, offset)).is_none(),
                "{v} written twice"
            );
        }
    }
    assert_eq!(total, N, "every record exactly once");
    for (v, at) in &acked {
        if at.1 >= 0 {
            assert_eq!(seen.get(v), Some(at), "{v} acknowledged at {at:?}");
        } else {
            // Acknowledged as a duplicate the broker no longer has the offset of.
            assert!(seen.contains_key(v), "{v} acknowledged but missing");
        }
    }
    cluster.start_node(victim);
}
