//! The transaction coordinator's requests (see `txn.rs` for the protocol): finding the
//! coordinator of a transactional id, InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, and TxnOffsetCommit to a group's coordinator. Each call
//! retries coordinator moves, loads and CONCURRENT_TRANSACTIONS until its deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, TopicName, TransactionalId};
use tracing::debug;

use super::accumulator::Tp;
use crate::backoff::Backoff;
use crate::client::{check, s, Client};
use crate::conn::Connection;
use crate::error::{Error, KafkaCode, Result};
use crate::offsets::{ConsumerGroupMetadata, TopicPartition};

/// Highest versions of the first transaction protocol (see the module's comment).
pub(crate) const MAX_PRODUCE_VERSION: i16 = 11;
const MAX_END_TXN_VERSION: i16 = 4;
const MAX_TXN_OFFSET_COMMIT_VERSION: i16 = 4;
const MAX_ADD_PARTITIONS_VERSION: i16 = 3;

/// Errors of a coordinator call worth trying again (after finding the coordinator again
/// where it moved).
fn coordinator_retriable(err: &Error) -> bool {
    matches!(
        err.kafka_code(),
        Some(
            KafkaCode::NotCoordinator
                | KafkaCode::CoordinatorNotAvailable
                | KafkaCode::CoordinatorLoadInProgress
                | KafkaCode::ConcurrentTransactions
                | KafkaCode::UnknownTopicOrPartition
                | KafkaCode::RequestTimedOut
                | KafkaCode::NetworkException
        )
    ) || matches!(
        err,
        Error::Disconnected { .. }
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::NoBrokerAvailable(_)
    )
}

fn moved(err: &Error) -> bool {
    matches!(
        err.kafka_code(),
        Some(KafkaCode::NotCoordinator | KafkaCode::CoordinatorNotAvailable)
    ) || matches!(
        err,
        Error::Disconnected { .. } | Error::Io { .. } | Error::Timeout { .. }
    )
}

/// The transaction coordinator of one transactional id, and its requests. Requests go
/// over the client's pooled connection to the coordinator.
pub(crate) struct Coordinator {
    client: Client,
    pub(crate) id: String,
    timeout: Duration,
    /// The coordinator's address, once found.
    addr: Mutex<Option<String>>,
}

impl Coordinator {
    pub(crate) fn new(client: Client, id: String, timeout: Duration) -> Self {
        Coordinator {
            client,
            id,
            timeout,
            addr: Mutex::new(None),
        }
    }

    fn known(&self) -> Option<String> {
        self.addr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn conn(&self, key_type: i8, key: &str) -> Result<Arc<Connection>> {
        let addr = match (key_type, self.known()) {
            (1, Some(addr)) => addr,
            _ => {
                let addr = self.client.find_coordinator(key_type, key).await?;
                if key_type == 1 {
                    *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
                }
                addr
            }
        };
        self.client.conn_to(&addr).await
    }

    /// Runs `op` against the coordinator of `key` (`key_type` 1: the transactional id; 0:
    /// a group), finding it again where it moved and retrying, with backoff, the errors
    /// worth retrying until `deadline`.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        key_type: i8,
        key: &str,
        deadline: Instant,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut delays = Backoff::of(self.client.config()).delays();
        loop {
            let result = match self.conn(key_type, key).await {
                Ok(conn) => op(conn).await,
                Err(e) => Err(e),
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if moved(&err) && key_type == 1 {
                *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            if !coordinator_retriable(&err) {
                return Err(err);
            }
            let wait = delays.next_delay();
            if Instant::now() + wait >= deadline {
                return Err(Error::Timeout {
                    what: format!("{what} (last error: {err})"),
                    after: started.elapsed(),
                });
            }
            debug!(%what, error = %err, "transaction request retried");
            tokio::time::sleep(wait).await;
        }
    }

    /// InitProducerId with the transactional id: a producer id and epoch, fencing older
    /// producers of the id. With the current id and epoch (KIP-360/588), bumps the epoch
    /// instead, aborting a transaction left open.
    pub(crate) async fn init_producer_id(
        &self,
        current: Option<(i64, i16)>,
        deadline: Instant,
    ) -> Result<(i64, i16)> {
        let id = self.id.clone();
        let timeout_ms = self.timeout.as_millis().min(i32::MAX as u128) as i32;
        let request_timeout = self.client.config().request_timeout;
        self.call("InitProducerId", 1, &id, deadline, |conn| {
            let id = id.clone();
            async move {
                let version = conn.version_for::<InitProducerIdRequest>()?;
                let mut req = InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(s(&id))))
                    .with_transaction_timeout_ms(timeout_ms);
                if let Some((pid, epoch)) = current.filter(|_| version >= 3) {
                    req = req.with_producer_id(pid.into()).with_producer_epoch(epoch);
                }
                let resp = conn.request_at(&req, version, request_timeout).await?;
                check(resp.error_code, None, || {
                    format!("InitProducerId for transactional.id {id}")
                })?;
                Ok((resp.producer_id.0, resp.producer_epoch))
            }
        })
        .await
    }

    /// AddPartitionsToTxn for `tps`.
    pub(crate) async fn add_partitions(
        &self,
        (pid, epoch): (i64, i16),
        tps: &[Tp],
        deadline: Instant,
    ) -> Result<()> {
        let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for tp in tps {
            match topics.iter_mut().find(|t| t.name.0.as_str() == &*tp.0) {
                Some(t) => t.partitions.push(tp.1),
                None => topics.push(
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(s(&tp.0)))
                        .with_partitions(vec![tp.1]),
                ),
            }
        }
        let id = self.id.clone();
        let request_timeout = self.client.config().request_timeout;
        self.call("AddPartitionsToTxn", 1, &id, deadline, |conn| {
            let topics = topics.clone();
            let id = id.clone();
            async move {
                let version = conn
                    .version_for::<AddPartitionsToTxnRequest>()?
                    .min(MAX_ADD_PARTITIONS_VERSION);
                let req = AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(s(&id)))
                    .with_v3_and_below_producer_id(pid.into())
                    .with_v3_and_below_producer_epoch(epoch)
                    .with_v3_and_below_topics(topics);
                let resp = conn.request_at(&req, version, request_timeout).await?;
                check(resp.error_code, None, || "AddPartitionsToTxn".to_owned())?;
                // The first real error (the others say OPERATION_NOT_ATTEMPTED).
                let errors: Vec<Error> = resp
                    .results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| {
                        t.results_by_partition.iter().filter_map(move |p| {
                            Error::from_code(p.partition_error_code, None, || {
                                format!("AddPartitionsToTxn {}[{}]", t.name.0, p.partition_index)
                            })
                        })
                    })
                    .collect();
                let first = errors
                    .iter()
                    .find(|e| e.kafka_code() != Some(KafkaCode::OperationNotAttempted))
                    .or(errors.first())
                    .cloned();
                match first {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
        })
        .await
    }

    /// AddOffsetsToTxn for `group`.
    pub(crate) async fn add_offsets(
        &self,
        (pid, epoch): (i64, i16),
        group: &str,
        deadline: Instant,
    ) -> Result<()> {
        let id = self.id.clone();
        let request_timeout = self.client.config().request_timeout;
        self.call("AddOffsetsToTxn", 1, &id, deadline, |conn| {
            let id = id.clone();
            async move {
                let version = conn.version_for::<AddOffsetsToTxnRequest>()?;
                let req = AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(s(&id)))
                    .with_producer_id(pid.into())
                    .with_producer_epoch(epoch)
                    .with_group_id(GroupId(s(group)));
                let resp = conn.request_at(&req, version, request_timeout).await?;
                check(resp.error_code, None, || {
                    format!("AddOffsetsToTxn for group {group}")
                })
            }
        })
        .await
    }

    /// TxnOffsetCommit of `offsets` to the group's coordinator, for the member `group`
    /// names.
    pub(crate) async fn commit_offsets(
        &self,
        (pid, epoch): (i64, i16),
        group: &ConsumerGroupMetadata,
        offsets: &[(TopicPartition, i64)],
        deadline: Instant,
    ) -> Result<()> {
        let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
        for (tp, offset) in offsets {
            let p = TxnOffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1);
            match topics.iter_mut().find(|t| t.name.0.as_str() == tp.topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(&tp.topic)))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let id = self.id.clone();
        let request_timeout = self.client.config().request_timeout;
        let group_id = group.group_id.clone();
        self.call("TxnOffsetCommit", 0, &group_id, deadline, |conn| {
            let topics = topics.clone();
            let id = id.clone();
            async move {
                let version = conn
                    .version_for::<TxnOffsetCommitRequest>()?
                    .min(MAX_TXN_OFFSET_COMMIT_VERSION);
                let req = TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s(&id)))
                    .with_group_id(GroupId(s(&group.group_id)))
                    .with_producer_id(pid.into())
                    .with_producer_epoch(epoch)
                    .with_generation_id(group.generation_id)
                    .with_member_id(s(&group.member_id))
                    .with_group_instance_id(group.group_instance_id.as_deref().map(s))
                    .with_topics(topics);
                let resp = conn.request_at(&req, version, request_timeout).await?;
                for t in &resp.topics {
                    for p in &t.partitions {
                        check(p.error_code, None, || {
                            format!(
                                "TxnOffsetCommit {}[{}] for group {}",
                                t.name.0, p.partition_index, group.group_id
                            )
                        })?;
                    }
                }
                Ok(())
            }
        })
        .await
    }

    /// EndTxn: commits (`commit`) or aborts the transaction.
    pub(crate) async fn end(
        &self,
        (pid, epoch): (i64, i16),
        commit: bool,
        deadline: Instant,
    ) -> Result<()> {
        let id = self.id.clone();
        let request_timeout = self.client.config().request_timeout;
        let what = if commit {
            "EndTxn (commit)"
        } else {
            "EndTxn (abort)"
        };
        self.call(what, 1, &id, deadline, |conn| {
            let id = id.clone();
            async move {
                let version = conn
                    .version_for::<EndTxnRequest>()?
                    .min(MAX_END_TXN_VERSION);
                let req = EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(s(&id)))
                    .with_producer_id(pid.into())
                    .with_producer_epoch(epoch)
                    .with_committed(commit);
                let resp = conn.request_at(&req, version, request_timeout).await?;
                check(resp.error_code, None, || what.to_owned())
            }
        })
        .await
    }
}
