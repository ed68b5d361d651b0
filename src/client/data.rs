//! The client's partition-level data calls, on [`Client`]: produce one batch, fetch from
//! an offset, look up an offset; with their options and answers. The producer and the
//! consumer build on the connection pool instead; these serve tests, tools and the
//! users of the client core.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use paperboy_protocol::compression::Compression;
use paperboy_protocol::records::{self, BatchOptions, NewRecord};
use tracing::Instrument;

use super::Client;
use crate::error::{Error, Result};

/// How many replicas must have a record before the leader acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=0`: the broker sends no answer at all; nothing is known of the outcome.
    None,
    /// `acks=1`: the leader wrote it.
    Leader,
    /// `acks=all` (`-1`): every in-sync replica has it.
    #[default]
    All,
}

impl Acks {
    pub(crate) fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = crate::ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(crate::config::invalid("acks", s, "0, 1, all or -1")),
        }
    }
}

/// What the broker said of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the batch's first record; -1 with [`Acks::None`].
    pub base_offset: i64,
    /// The broker's append time, for topics with `message.timestamp.type=LogAppendTime`.
    pub log_append_time_ms: Option<i64>,
}

/// Where to look up an offset with [`Client::list_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still in the log.
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

/// Read isolation for fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Everything up to the high watermark, aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset; aborted transactional records are to be skipped.
    ReadCommitted,
}

/// Options of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// How long the broker may wait for `min_bytes` (`fetch.max.wait.ms`). Default 500 ms.
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering (`fetch.min.bytes`). Default 1.
    pub min_bytes: i32,
    /// Cap on the response (`fetch.max.bytes`). Default 50 MiB.
    pub max_bytes: i32,
    /// Cap per partition (`max.partition.fetch.bytes`). Default 1 MiB.
    pub partition_max_bytes: i32,
    /// Read isolation. Default read_uncommitted.
    pub isolation: IsolationLevel,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            isolation: IsolationLevel::ReadUncommitted,
        }
    }
}

/// One partition's part of a fetch response.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// The offset after the last committed record (the high watermark).
    pub high_watermark: i64,
    /// The last stable offset (for read_committed).
    pub last_stable_offset: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// Aborted transactions in range: `(producer id, first offset)`.
    pub aborted_transactions: Vec<(i64, i64)>,
    /// The raw record set: whole record batches, possibly followed by a truncated one.
    /// Decode it with [`paperboy_protocol::records::batches`].
    pub records: Bytes,
}

impl Client {
    /// Encodes `records` into one batch with `compression` and appends it to
    /// `topic`/`partition` on its leader.
    ///
    /// This is the building block of the producer, without its batching, idempotence or
    /// ordering guarantees. It retries only when the broker answered that it did not
    /// append the batch (leader moved, not enough replicas, ...): a lost connection is
    /// returned as an error, because the batch may or may not have been written.
    ///
    /// Each attempt waits `request.timeout.ms` for the broker's answer (the broker is
    /// given the same time to gather its acks); attempts are retried within
    /// `default.api.timeout.ms`.
    ///
    /// # Errors
    /// [`Error::Encode`] when the records cannot be encoded; [`Error::Kafka`] with the
    /// broker's code (MESSAGE_TOO_LARGE, ...); [`Error::Timeout`] when the answer did not
    /// come within `request.timeout.ms`; connection errors as they come.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[NewRecord],
        compression: Compression,
        acks: Acks,
    ) -> Result<ProduceAck> {
        let mut buf = BytesMut::new();
        let opts = BatchOptions {
            compression,
            ..BatchOptions::default()
        };
        records::encode_batch(records, &opts, &mut buf)?;
        let batch = buf.freeze();
        let span = tracing::debug_span!("produce", %topic, partition, records = records.len(), bytes = batch.len());
        // Retry only what surely did not append: a broker's error code, or a failure to
        // reach the leader at all. A connection lost with the request in flight, or a
        // timeout, leaves the outcome unknown, and is returned.
        let unwritten = |e: &Error| match e {
            Error::Kafka { .. } => e.is_retriable(),
            Error::Io { .. }
            | Error::NoBrokerAvailable(_)
            | Error::UnknownTopicOrPartition { .. } => true,
            _ => false,
        };
        self.retry_when("produce", self.deadline(), &[topic], unwritten, || {
            self.produce_once(topic, partition, batch.clone(), acks)
        })
        .instrument(span)
        .await
    }

    async fn produce_once(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: Acks,
    ) -> Result<ProduceAck> {
        let cluster = self.topic_metadata(topic).await?;
        let leader = cluster.leader_for(topic, partition)?.node_id;
        let topic_id = cluster.topic(topic).map(|t| t.id).unwrap_or_default();
        let conn = self.conn_to_node(leader).await?;
        let timeout = self.inner.config.request_timeout;
        let req = ProduceRequest::default()
            .with_acks(acks.wire())
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_topic_id(topic_id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let version = conn.version_for::<ProduceRequest>()?;
        if acks == Acks::None {
            conn.send_no_response(&req, version).await?;
            return Ok(ProduceAck {
                base_offset: -1,
                log_append_time_ms: None,
            });
        }
        // request.timeout.ms for the broker (`timeout_ms`) and for the wait, once.
        let resp = conn.request_at(&req, version, timeout).await?;
        let p = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                Error::IncompleteResponse(format!("produce response lacks {topic}[{partition}]"))
            })?;
        if let Some(e) = Error::from_code(p.error_code, p.error_message.as_deref(), || {
            format!("produce to {topic}[{partition}]")
        }) {
            return Err(e);
        }
        Ok(ProduceAck {
            base_offset: p.base_offset,
            log_append_time_ms: (p.log_append_time_ms >= 0).then_some(p.log_append_time_ms),
        })
    }

    /// Fetches records of `topic`/`partition` from `offset` on its leader.
    ///
    /// # Errors
    /// [`Error::Kafka`] with OFFSET_OUT_OF_RANGE and other broker codes (stale-metadata
    /// codes are retried first); connection errors as they come.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        opts: FetchOptions,
    ) -> Result<FetchedPartition> {
        let span = tracing::debug_span!("fetch", %topic, partition, offset);
        self.retry("fetch", self.deadline(), &[topic], || {
            self.fetch_once(topic, partition, offset, opts)
        })
        .instrument(span)
        .await
    }

    async fn fetch_once(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        opts: FetchOptions,
    ) -> Result<FetchedPartition> {
        let cluster = self.topic_metadata(topic).await?;
        let leader = cluster.leader_for(topic, partition)?.node_id;
        let t = cluster.topic(topic).expect("topic_metadata checked it");
        let leader_epoch = t.partition(partition).map_or(-1, |p| p.leader_epoch);
        let topic_id = t.id;
        let conn = self.conn_to_node(leader).await?;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(opts.max_wait.as_millis().min(i32::MAX as u128) as i32)
            .with_min_bytes(opts.min_bytes)
            .with_max_bytes(opts.max_bytes)
            .with_isolation_level(match opts.isolation {
                IsolationLevel::ReadUncommitted => 0,
                IsolationLevel::ReadCommitted => 1,
            })
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_topic_id(topic_id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(leader_epoch)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(opts.partition_max_bytes)])]);
        let timeout = self.inner.config.request_timeout + opts.max_wait;
        let version = conn.version_for::<FetchRequest>()?;
        let resp = conn.request_at(&req, version, timeout).await?;
        if let Some(e) = Error::from_code(resp.error_code, None, || format!("fetch {topic}")) {
            return Err(e);
        }
        let p = resp
            .responses
            .iter()
            .filter(|r| {
                if version >= 13 {
                    r.topic_id == topic_id
                } else {
                    r.topic.0.as_str() == topic
                }
            })
            .flat_map(|r| r.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                Error::IncompleteResponse(format!("fetch response lacks {topic}[{partition}]"))
            })?;
        if let Some(e) = Error::from_code(p.error_code, None, || {
            format!("fetch {topic}[{partition}] at {offset}")
        }) {
            return Err(e);
        }
        Ok(FetchedPartition {
            high_watermark: p.high_watermark,
            last_stable_offset: p.last_stable_offset,
            log_start_offset: p.log_start_offset,
            aborted_transactions: p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect(),
            records: p.records.clone().unwrap_or_default(),
        })
    }

    /// Looks up an offset of `topic`/`partition`: the earliest, the latest (high
    /// watermark), or the first at or after a timestamp (-1 when there is none).
    ///
    /// # Errors
    /// [`Error::Kafka`] with the broker's code; connection errors as they come.
    pub async fn list_offset(&self, topic: &str, partition: i32, spec: OffsetSpec) -> Result<i64> {
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        };
        self.retry("list_offsets", self.deadline(), &[topic], || async move {
            let cluster = self.topic_metadata(topic).await?;
            let leader = cluster.leader_for(topic, partition)?.node_id;
            let epoch = cluster
                .topic(topic)
                .and_then(|t| t.partition(partition))
                .map_or(-1, |p| p.leader_epoch);
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_current_leader_epoch(epoch)
                        .with_timestamp(timestamp)])]);
            let (_, resp) = self.conn_to_node(leader).await?.request(&req).await?;
            let p = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| {
                    Error::IncompleteResponse(format!(
                        "list_offsets response lacks {topic}[{partition}]"
                    ))
                })?;
            if let Some(e) = Error::from_code(p.error_code, None, || {
                format!("list offsets {topic}[{partition}]")
            }) {
                return Err(e);
            }
            Ok(p.offset)
        })
        .await
    }
}
