//! The consumer group protocol of KIP-848 (`group.protocol=consumer`), request by
//! request: ConsumerGroupHeartbeat joins, heartbeats (acknowledging the partitions this
//! member owns) and leaves. The broker computes assignments (`group.remote.assignor`)
//! and names partitions by topic id.
//!
//! Like [`GroupClient`]'s classic requests, nothing here knows of partitions being
//! consumed: the membership state machine (`membership.rs`) drives it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::messages::consumer_group_heartbeat_request::{
    ConsumerGroupHeartbeatRequest, TopicPartitions,
};
use kafka_protocol::messages::{GroupId, TopicName};
use uuid::Uuid;

use super::group::{coordinator_moved, GroupClient};
use crate::client::s;
use crate::error::{ConfigError, Error, Result};

/// The member epoch a member joins (or rejoins after being fenced) with.
pub(crate) const JOIN_EPOCH: i32 = 0;
/// The member epoch of a dynamic member leaving the group.
pub(crate) const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member (`group.instance.id`) leaving the group for now:
/// the coordinator keeps its assignment for the session timeout.
pub(crate) const LEAVE_STATIC_EPOCH: i32 = -2;

/// Partitions by topic id, as the coordinator names them.
pub(crate) type TopicIdPartitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// What a subscription is: topic names, or a regular expression the broker evaluates
/// (RE2/J syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subscription {
    Topics(Vec<String>),
    Pattern(String),
}

/// One ConsumerGroupHeartbeat to send. Fields left `None` are unchanged since the last
/// heartbeat the coordinator answered.
#[derive(Debug, Clone)]
pub(crate) struct Beat {
    pub member_id: String,
    pub member_epoch: i32,
    pub rebalance_timeout: Duration,
    pub subscription: Option<Subscription>,
    pub server_assignor: Option<String>,
    pub owned: Option<TopicIdPartitions>,
}

/// The coordinator's answer.
#[derive(Debug, Clone)]
pub(crate) struct BeatAnswer {
    pub member_epoch: i32,
    pub heartbeat_interval: Duration,
    /// The member's whole target assignment, when it changed.
    pub assignment: Option<TopicIdPartitions>,
}

/// A fresh member id (KIP-1082: the client makes it, once, and keeps it across rejoins).
pub(crate) fn new_member_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: time and process id still make it unique enough for a group.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = (t ^ ((std::process::id() as u128) << 96)).to_le_bytes();
    }
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// Whether an error ends the membership for good (reported to the application), as
/// opposed to fencing (rejoin) or a passing fault (retry): as in the Java client, every
/// error code that is not fencing, not retriable and not about the coordinator moving
/// (FENCED_INSTANCE_ID, UNRELEASED_INSTANCE_ID, UNSUPPORTED_ASSIGNOR,
/// GROUP_MAX_SIZE_REACHED, INVALID_REGULAR_EXPRESSION, GROUP_AUTHORIZATION_FAILED, ...),
/// and a broker without the API.
pub(crate) fn is_fatal(e: &Error) -> bool {
    match e {
        Error::Config(_) | Error::UnsupportedVersion { .. } => true,
        Error::Kafka { code, .. } => !is_fenced(e) && !code.is_retriable() && !coordinator_moved(e),
        _ => false,
    }
}

/// Whether the coordinator fenced this member: its partitions are lost, and it rejoins
/// with epoch 0 and the same member id.
pub(crate) fn is_fenced(e: &Error) -> bool {
    use crate::error::KafkaCode as K;
    matches!(
        e.kafka_code(),
        Some(K::UnknownMemberId | K::FencedMemberEpoch)
    )
}

impl GroupClient {
    /// One ConsumerGroupHeartbeat to the coordinator. A coordinator that moved is
    /// forgotten (the next call looks it up); errors come back as they are.
    ///
    /// # Errors
    /// [`Error::Config`] naming `group.protocol` when the coordinator does not speak
    /// ConsumerGroupHeartbeat (Kafka before 4.0, or the feature off); the coordinator's
    /// error codes as [`Error::Kafka`].
    pub(crate) async fn consumer_heartbeat(&self, beat: &Beat) -> Result<BeatAnswer> {
        let conn = match self.coordinator().await {
            Ok(c) => c,
            Err(e) => {
                self.coordinator_lost();
                return Err(e);
            }
        };
        let version = match conn.version_for::<ConsumerGroupHeartbeatRequest>() {
            Ok(v) => v,
            Err(Error::UnsupportedVersion { broker, .. }) => {
                return Err(ConfigError::Invalid(format!(
                    "group.protocol=consumer needs a broker that speaks ConsumerGroupHeartbeat \
                     (KIP-848, Kafka 4.0+); the coordinator {broker} does not: use \
                     group.protocol=classic"
                ))
                .into())
            }
            Err(e) => return Err(e),
        };
        let (names, regex) = match &beat.subscription {
            Some(Subscription::Topics(t)) => (
                Some(t.iter().map(|t| TopicName(s(t))).collect::<Vec<_>>()),
                None,
            ),
            Some(Subscription::Pattern(p)) => (None, Some(s(p))),
            None => (None, None),
        };
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(self.group_id())))
            .with_member_id(s(&beat.member_id))
            .with_member_epoch(beat.member_epoch)
            .with_instance_id(self.instance())
            .with_rebalance_timeout_ms(if beat.member_epoch == JOIN_EPOCH {
                beat.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32
            } else {
                -1
            })
            .with_subscribed_topic_names(names)
            .with_subscribed_topic_regex(regex)
            .with_server_assignor(beat.server_assignor.as_deref().map(s))
            .with_topic_partitions(beat.owned.as_ref().map(|owned| {
                owned
                    .iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(*id)
                            .with_partitions(ps.iter().copied().collect())
                    })
                    .collect()
            }));
        let result = async {
            let resp = conn
                .request_at(&req, version, self.client().config().request_timeout)
                .await?;
            if let Some(e) =
                Error::from_code(resp.error_code, resp.error_message.as_deref(), || {
                    format!(
                        "consumer group heartbeat of {} to group {} (epoch {})",
                        beat.member_id,
                        self.group_id(),
                        beat.member_epoch
                    )
                })
            {
                return Err(e);
            }
            Ok(BeatAnswer {
                member_epoch: resp.member_epoch,
                heartbeat_interval: Duration::from_millis(resp.heartbeat_interval_ms.max(0) as u64),
                assignment: resp.assignment.map(|a| {
                    let mut out = TopicIdPartitions::new();
                    for t in a.topic_partitions {
                        out.entry(t.topic_id)
                            .or_default()
                            .extend(t.partitions.iter().copied());
                    }
                    out
                }),
            })
        }
        .await;
        if let Err(e) = &result {
            if coordinator_moved(e) {
                self.coordinator_lost();
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_uuids_and_differ() {
        let a = new_member_id();
        let b = new_member_id();
        assert_ne!(a, b);
        assert!(Uuid::parse_str(&a).is_ok(), "{a}");
    }

    #[test]
    fn errors_are_sorted_into_fenced_fatal_and_passing() {
        let e = |code| Error::from_code(code, None, String::new).unwrap();
        assert!(is_fenced(&e(25))); // UNKNOWN_MEMBER_ID
        assert!(is_fenced(&e(110))); // FENCED_MEMBER_EPOCH
        assert!(!is_fatal(&e(110)));
        assert!(is_fatal(&e(82))); // FENCED_INSTANCE_ID
        assert!(is_fatal(&e(112))); // UNSUPPORTED_ASSIGNOR
        assert!(is_fatal(&e(128))); // INVALID_REGULAR_EXPRESSION
        assert!(is_fatal(&e(30))); // GROUP_AUTHORIZATION_FAILED
        assert!(!is_fatal(&e(15)) && !is_fenced(&e(15))); // COORDINATOR_NOT_AVAILABLE
        assert!(!is_fatal(&e(16))); // NOT_COORDINATOR
        assert!(!is_fatal(&e(14))); // COORDINATOR_LOAD_IN_PROGRESS
        assert!(!is_fatal(&e(7))); // REQUEST_TIMED_OUT
        let gone = Error::Disconnected {
            broker: "b:1".into(),
            reason: "closed".into(),
        };
        assert!(!is_fatal(&gone) && !is_fenced(&gone));
    }
}
