//! Faults on demand: requests that answer an error, responses that come late,
//! connections that close, and the record of the requests that arrived.
//!
//! The shape follows franz-go's kfake (a control per request key, optionally kept) and
//! librdkafka's mock cluster (error stacks per request type, broker RTT): a [`Fault`] is
//! built for one API key, narrowed to a node, a topic or a partition, limited to a number
//! of requests (once by default), and handed to [`Cluster::inject`](crate::Cluster::inject).
//! Node-wide faults (a node down, its connections dropped, a leader or coordinator moved)
//! are methods of the [`Cluster`](crate::Cluster).

use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this error code. Partition-level APIs (Produce, Fetch, ListOffsets,
    /// OffsetCommit, OffsetForLeaderEpoch, AddPartitionsToTxn, TxnOffsetCommit) put it on
    /// each matching partition, which is then not processed (a Produce is not appended,
    /// a partition not added); topic-level ones (Metadata's topics, CreateTopics,
    /// DeleteTopics, CreatePartitions) on each matching topic; the others (groups,
    /// OffsetFetch, InitProducerId, AddOffsetsToTxn, EndTxn, ApiVersions, ...) in their
    /// top-level, per-group or per-key error code, and only when the fault has no topic
    /// filter (a fault without a filter also fails every partition of the
    /// partition-level APIs).
    Error(i16),
    /// Process the request, then hold its response this long before sending it (and, as
    /// on a slow link, the responses after it on that connection).
    Delay(Duration),
    /// Close the connection instead of processing the request.
    Disconnect,
}

/// One fault, for one API key; see the module documentation.
#[derive(Debug, Clone)]
pub struct Fault {
    pub(crate) api: ApiKey,
    pub(crate) kind: FaultKind,
    pub(crate) node: Option<i32>,
    pub(crate) topic: Option<String>,
    pub(crate) partition: Option<i32>,
    /// Requests left to affect; `None`: until cleared.
    pub(crate) remaining: Option<u32>,
}

impl Fault {
    fn new(api: ApiKey, kind: FaultKind) -> Fault {
        Fault {
            api,
            kind,
            node: None,
            topic: None,
            partition: None,
            remaining: Some(1),
        }
    }

    /// Requests of type `api` answer `error` (once, unless [`times`](Self::times) or
    /// [`always`](Self::always) say otherwise).
    pub fn error(api: ApiKey, error: ResponseError) -> Fault {
        Fault::new(api, FaultKind::Error(error.code()))
    }

    /// As [`error`](Self::error), with a raw error code.
    pub fn error_code(api: ApiKey, code: i16) -> Fault {
        Fault::new(api, FaultKind::Error(code))
    }

    /// Responses to `api` are held for `delay` after processing.
    pub fn delay(api: ApiKey, delay: Duration) -> Fault {
        Fault::new(api, FaultKind::Delay(delay))
    }

    /// A request of type `api` closes its connection, unprocessed.
    pub fn disconnect(api: ApiKey) -> Fault {
        Fault::new(api, FaultKind::Disconnect)
    }

    /// Affects the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.remaining = Some(n);
        self
    }

    /// Affects every matching request until [`Cluster::clear_faults`](crate::Cluster::clear_faults).
    pub fn always(mut self) -> Fault {
        self.remaining = None;
        self
    }

    /// Only requests arriving at node `node`.
    pub fn on_node(mut self, node: i32) -> Fault {
        self.node = Some(node);
        self
    }

    /// Only partitions of `topic` (partition-level APIs; others ignore the filter and
    /// never match).
    pub fn on_topic(mut self, topic: impl Into<String>) -> Fault {
        self.topic = Some(topic.into());
        self
    }

    /// Only partition `partition` of `topic`.
    pub fn on_partition(mut self, topic: impl Into<String>, partition: i32) -> Fault {
        self.topic = Some(topic.into());
        self.partition = Some(partition);
        self
    }

    fn matches_request(&self, api: ApiKey, node: i32) -> bool {
        self.api == api && self.node.is_none_or(|n| n == node) && self.remaining != Some(0)
    }

    fn matches_partition(&self, topic: &str, partition: Option<i32>) -> bool {
        self.topic.as_deref().is_none_or(|t| t == topic)
            && self
                .partition
                .is_none_or(|p| partition.is_none_or(|q| p == q))
    }
}

/// An injected fault's handle, for [`Cluster::clear_fault`](crate::Cluster::clear_fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(pub(crate) u64);

/// A request the cluster received: at which node, which API, which version, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// The node it arrived at.
    pub node: i32,
    /// Its API key.
    pub api: ApiKey,
    /// Its version.
    pub version: i16,
    /// When it arrived (for assertions on timing: backoffs, heartbeat intervals).
    pub at: std::time::Instant,
}

/// The injected faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    next_id: u64,
    list: Vec<(FaultId, Fault)>,
}

impl Faults {
    pub fn inject(&mut self, fault: Fault) -> FaultId {
        self.next_id += 1;
        let id = FaultId(self.next_id);
        self.list.push((id, fault));
        id
    }

    pub fn clear(&mut self, id: FaultId) {
        self.list.retain(|(i, _)| *i != id);
    }

    /// How many more requests fault `id` will affect: `Some(None)` until cleared,
    /// `None` once used up (or cleared).
    pub fn remaining(&self, id: FaultId) -> Option<Option<u32>> {
        self.list
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, f)| f.remaining)
    }

    pub fn clear_all(&mut self) {
        self.list.clear();
    }

    fn consume(&mut self, id: FaultId) {
        if let Some((_, f)) = self.list.iter_mut().find(|(i, _)| *i == id) {
            if let Some(n) = f.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
        }
        self.list.retain(|(_, f)| f.remaining != Some(0));
    }

    /// The request-level action for a request: a disconnect or a delay (consumed now),
    /// and the error faults that may apply to it (consumed by [`RequestFaults::finish`]).
    pub fn for_request(&mut self, api: ApiKey, node: i32) -> RequestFaults {
        let mut out = RequestFaults::default();
        let matching: Vec<(FaultId, Fault)> = self
            .list
            .iter()
            .filter(|(_, f)| f.matches_request(api, node))
            .cloned()
            .collect();
        for (id, f) in matching {
            match f.kind {
                FaultKind::Disconnect if !out.disconnect => {
                    out.disconnect = true;
                    self.consume(id);
                }
                FaultKind::Delay(d) if out.delay.is_none() => {
                    out.delay = Some(d);
                    self.consume(id);
                }
                FaultKind::Error(code) => out.errors.push((id, f, code)),
                _ => {}
            }
        }
        out
    }

    /// Consumes one use of each error fault a request applied.
    pub fn finish(&mut self, applied: &[FaultId]) {
        for id in applied {
            self.consume(*id);
        }
    }
}

/// The faults that apply to one request.
#[derive(Debug, Default)]
pub(crate) struct RequestFaults {
    pub disconnect: bool,
    pub delay: Option<Duration>,
    errors: Vec<(FaultId, Fault, i16)>,
    applied: Vec<FaultId>,
}

impl RequestFaults {
    /// The error for the request as a whole: the first error fault with no topic filter.
    pub fn request_error(&mut self) -> Option<i16> {
        let (id, _, code) = self.errors.iter().find(|(_, f, _)| f.topic.is_none())?;
        let (id, code) = (*id, *code);
        if !self.applied.contains(&id) {
            self.applied.push(id);
        }
        Some(code)
    }

    /// The error for one partition (`None`: any partition of the topic).
    pub fn partition_error(&mut self, topic: &str, partition: Option<i32>) -> Option<i16> {
        let (id, _, code) = self
            .errors
            .iter()
            .find(|(_, f, _)| f.matches_partition(topic, partition))?;
        let (id, code) = (*id, *code);
        if !self.applied.contains(&id) {
            self.applied.push(id);
        }
        Some(code)
    }

    pub fn applied(&self) -> &[FaultId] {
        &self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_fault_is_used_once_per_request_by_default() {
        let mut faults = Faults::default();
        faults.inject(Fault::error(ApiKey::Produce, ResponseError::NotLeaderOrFollower).times(2));
        for _ in 0..2 {
            let mut rf = faults.for_request(ApiKey::Produce, 0);
            // Two partitions in one request: one use.
            assert_eq!(rf.partition_error("t", Some(0)), Some(6));
            assert_eq!(rf.partition_error("t", Some(1)), Some(6));
            faults.finish(rf.applied());
        }
        let mut rf = faults.for_request(ApiKey::Produce, 0);
        assert_eq!(rf.partition_error("t", Some(0)), None);
    }

    #[test]
    fn filters_narrow_a_fault() {
        let mut faults = Faults::default();
        faults.inject(
            Fault::error(ApiKey::Fetch, ResponseError::UnknownServerError)
                .on_partition("t", 1)
                .on_node(2)
                .always(),
        );
        assert!(faults
            .for_request(ApiKey::Fetch, 1)
            .partition_error("t", Some(1))
            .is_none());
        let mut rf = faults.for_request(ApiKey::Fetch, 2);
        assert!(rf.partition_error("t", Some(0)).is_none());
        assert!(rf.partition_error("u", Some(1)).is_none());
        assert!(rf.request_error().is_none());
        assert_eq!(rf.partition_error("t", Some(1)), Some(-1));
        faults.finish(rf.applied());
        assert!(faults
            .for_request(ApiKey::Fetch, 2)
            .partition_error("t", Some(1))
            .is_some());
    }

    #[test]
    fn delay_and_disconnect_are_request_level() {
        let mut faults = Faults::default();
        faults.inject(Fault::delay(ApiKey::Metadata, Duration::from_millis(5)));
        faults.inject(Fault::disconnect(ApiKey::Metadata));
        let rf = faults.for_request(ApiKey::Metadata, 0);
        assert!(rf.disconnect);
        assert_eq!(rf.delay, Some(Duration::from_millis(5)));
        let rf = faults.for_request(ApiKey::Metadata, 0);
        assert!(!rf.disconnect && rf.delay.is_none());
    }
}
