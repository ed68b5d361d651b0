//! Kafka's error codes as Paperboy's own type: [`KafkaCode`], with the names Kafka gives
//! them and the questions callers ask (retriable or not). Paperboy's public API does not
//! expose the wire-protocol crate's types, so its releases do not break users.
//!
//! The table follows Apache Kafka's `Errors` (through 4.1); a code it does not list is
//! [`KafkaCode::Unknown`].

/// A Kafka error code (never 0, which means no error).
///
/// ```
/// use paperboy::KafkaCode;
///
/// let code = KafkaCode::from_code(6);
/// assert_eq!(code, KafkaCode::NotLeaderOrFollower);
/// assert_eq!(code.name(), "NOT_LEADER_OR_FOLLOWER");
/// assert_eq!(code.code(), 6);
/// assert!(code.is_retriable());
/// assert_eq!(KafkaCode::from_code(9999), KafkaCode::Unknown(9999));
/// assert_eq!(KafkaCode::try_from_code(0), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KafkaCode {
    /// -1, `UNKNOWN_SERVER_ERROR`: The server experienced an unexpected error when processing the request.
    UnknownServerError,
    /// 1, `OFFSET_OUT_OF_RANGE`: The requested offset is not within the range of offsets maintained by the server.
    OffsetOutOfRange,
    /// 2, `CORRUPT_MESSAGE`: This message has failed its CRC checksum, exceeds the valid size, has a null key for a compacted topic, or is otherwise corrupt.
    CorruptMessage,
    /// 3, `UNKNOWN_TOPIC_OR_PARTITION`: This server does not host this topic-partition.
    UnknownTopicOrPartition,
    /// 4, `INVALID_FETCH_SIZE`: The requested fetch size is invalid.
    InvalidFetchSize,
    /// 5, `LEADER_NOT_AVAILABLE`: There is no leader for this topic-partition as we are in the middle of a leadership election.
    LeaderNotAvailable,
    /// 6, `NOT_LEADER_OR_FOLLOWER`: For requests intended only for the leader, this error indicates that the broker is not the current leader. For requests intended for any replica, this error indicates that the broker is not a replica of the topic partition.
    NotLeaderOrFollower,
    /// 7, `REQUEST_TIMED_OUT`: The request timed out.
    RequestTimedOut,
    /// 8, `BROKER_NOT_AVAILABLE`: The broker is not available.
    BrokerNotAvailable,
    /// 9, `REPLICA_NOT_AVAILABLE`: The replica is not available for the requested topic-partition. Produce/Fetch requests and other requests intended only for the leader or follower return NOT_LEADER_OR_FOLLOWER if the broker is not a replica of the topic-partition.
    ReplicaNotAvailable,
    /// 10, `MESSAGE_TOO_LARGE`: The request included a message larger than the max message size the server will accept.
    MessageTooLarge,
    /// 11, `STALE_CONTROLLER_EPOCH`: The controller moved to another broker.
    StaleControllerEpoch,
    /// 12, `OFFSET_METADATA_TOO_LARGE`: The metadata field of the offset request was too large.
    OffsetMetadataTooLarge,
    /// 13, `NETWORK_EXCEPTION`: The server disconnected before a response was received.
    NetworkException,
    /// 14, `COORDINATOR_LOAD_IN_PROGRESS`: The coordinator is loading and hence can't process requests.
    CoordinatorLoadInProgress,
    /// 15, `COORDINATOR_NOT_AVAILABLE`: The coordinator is not available.
    CoordinatorNotAvailable,
    /// 16, `NOT_COORDINATOR`: This is not the correct coordinator.
    NotCoordinator,
    /// 17, `INVALID_TOPIC_EXCEPTION`: The request attempted to perform an operation on an invalid topic.
    InvalidTopicException,
    /// 18, `RECORD_LIST_TOO_LARGE`: The request included message batch larger than the configured segment size on the server.
    RecordListTooLarge,
    /// 19, `NOT_ENOUGH_REPLICAS`: Messages are rejected since there are fewer in-sync replicas than required.
    NotEnoughReplicas,
    /// 20, `NOT_ENOUGH_REPLICAS_AFTER_APPEND`: Messages are written to the log, but to fewer in-sync replicas than required.
    NotEnoughReplicasAfterAppend,
    /// 21, `INVALID_REQUIRED_ACKS`: Produce request specified an invalid value for required acks.
    InvalidRequiredAcks,
    /// 22, `ILLEGAL_GENERATION`: Specified group generation id is not valid.
    IllegalGeneration,
    /// 23, `INCONSISTENT_GROUP_PROTOCOL`: The group member's supported protocols are incompatible with those of existing members or first group member tried to join with empty protocol type or empty protocol list.
    InconsistentGroupProtocol,
    /// 24, `INVALID_GROUP_ID`: The configured groupId is invalid.
    InvalidGroupId,
    /// 25, `UNKNOWN_MEMBER_ID`: The coordinator is not aware of this member.
    UnknownMemberId,
    /// 26, `INVALID_SESSION_TIMEOUT`: The session timeout is not within the range allowed by the broker (as configured by group.min.session.timeout.ms and group.max.session.timeout.ms).
    InvalidSessionTimeout,
    /// 27, `REBALANCE_IN_PROGRESS`: The group is rebalancing, so a rejoin is needed.
    RebalanceInProgress,
    /// 28, `INVALID_COMMIT_OFFSET_SIZE`: The committing offset data size is not valid.
    InvalidCommitOffsetSize,
    /// 29, `TOPIC_AUTHORIZATION_FAILED`: Topic authorization failed.
    TopicAuthorizationFailed,
    /// 30, `GROUP_AUTHORIZATION_FAILED`: Group authorization failed.
    GroupAuthorizationFailed,
    /// 31, `CLUSTER_AUTHORIZATION_FAILED`: Cluster authorization failed.
    ClusterAuthorizationFailed,
    /// 32, `INVALID_TIMESTAMP`: The timestamp of the message is out of acceptable range.
    InvalidTimestamp,
    /// 33, `UNSUPPORTED_SASL_MECHANISM`: The broker does not support the requested SASL mechanism.
    UnsupportedSaslMechanism,
    /// 34, `ILLEGAL_SASL_STATE`: Request is not valid given the current SASL state.
    IllegalSaslState,
    /// 35, `UNSUPPORTED_VERSION`: The version of API is not supported.
    UnsupportedVersion,
    /// 36, `TOPIC_ALREADY_EXISTS`: Topic with this name already exists.
    TopicAlreadyExists,
    /// 37, `INVALID_PARTITIONS`: Number of partitions is below 1.
    InvalidPartitions,
    /// 38, `INVALID_REPLICATION_FACTOR`: Replication factor is below 1 or larger than the number of available brokers.
    InvalidReplicationFactor,
    /// 39, `INVALID_REPLICA_ASSIGNMENT`: Replica assignment is invalid.
    InvalidReplicaAssignment,
    /// 40, `INVALID_CONFIG`: Configuration is invalid.
    InvalidConfig,
    /// 41, `NOT_CONTROLLER`: This is not the correct controller for this cluster.
    NotController,
    /// 42, `INVALID_REQUEST`: This most likely occurs because of a request being malformed by the client library or the message was sent to an incompatible broker. See the broker logs for more details.
    InvalidRequest,
    /// 43, `UNSUPPORTED_FOR_MESSAGE_FORMAT`: The message format version on the broker does not support the request.
    UnsupportedForMessageFormat,
    /// 44, `POLICY_VIOLATION`: Request parameters do not satisfy the configured policy.
    PolicyViolation,
    /// 45, `OUT_OF_ORDER_SEQUENCE_NUMBER`: The broker received an out of order sequence number.
    OutOfOrderSequenceNumber,
    /// 46, `DUPLICATE_SEQUENCE_NUMBER`: The broker received a duplicate sequence number.
    DuplicateSequenceNumber,
    /// 47, `INVALID_PRODUCER_EPOCH`: Producer attempted to produce with an old epoch.
    InvalidProducerEpoch,
    /// 48, `INVALID_TXN_STATE`: The producer attempted a transactional operation in an invalid state.
    InvalidTxnState,
    /// 49, `INVALID_PRODUCER_ID_MAPPING`: The producer attempted to use a producer id which is not currently assigned to its transactional id.
    InvalidProducerIdMapping,
    /// 50, `INVALID_TRANSACTION_TIMEOUT`: The transaction timeout is larger than the maximum value allowed by the broker (as configured by transaction.max.timeout.ms).
    InvalidTransactionTimeout,
    /// 51, `CONCURRENT_TRANSACTIONS`: The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing.
    ConcurrentTransactions,
    /// 52, `TRANSACTION_COORDINATOR_FENCED`: Indicates that the transaction coordinator sending a WriteTxnMarker is no longer the current coordinator for a given producer.
    TransactionCoordinatorFenced,
    /// 53, `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`: Transactional Id authorization failed.
    TransactionalIdAuthorizationFailed,
    /// 54, `SECURITY_DISABLED`: Security features are disabled.
    SecurityDisabled,
    /// 55, `OPERATION_NOT_ATTEMPTED`: The broker did not attempt to execute this operation. This may happen for batched RPCs where some operations in the batch failed, causing the broker to respond without trying the rest.
    OperationNotAttempted,
    /// 56, `KAFKA_STORAGE_ERROR`: Disk error when trying to access log file on the disk.
    KafkaStorageError,
    /// 57, `LOG_DIR_NOT_FOUND`: The user-specified log directory is not found in the broker config.
    LogDirNotFound,
    /// 58, `SASL_AUTHENTICATION_FAILED`: SASL Authentication failed.
    SaslAuthenticationFailed,
    /// 59, `UNKNOWN_PRODUCER_ID`: This exception is raised by the broker if it could not locate the producer metadata associated with the producerId in question. This could happen if, for instance, the producer's records were deleted because their retention time had elapsed. Once the last records of the producerId are removed, the producer's metadata is removed from the broker, and future appends by the producer will return this exception.
    UnknownProducerId,
    /// 60, `REASSIGNMENT_IN_PROGRESS`: A partition reassignment is in progress.
    ReassignmentInProgress,
    /// 61, `DELEGATION_TOKEN_AUTH_DISABLED`: Delegation Token feature is not enabled.
    DelegationTokenAuthDisabled,
    /// 62, `DELEGATION_TOKEN_NOT_FOUND`: Delegation Token is not found on server.
    DelegationTokenNotFound,
    /// 63, `DELEGATION_TOKEN_OWNER_MISMATCH`: Specified Principal is not valid Owner/Renewer.
    DelegationTokenOwnerMismatch,
    /// 64, `DELEGATION_TOKEN_REQUEST_NOT_ALLOWED`: Delegation Token requests are not allowed on PLAINTEXT/1-way SSL channels and on delegation token authenticated channels.
    DelegationTokenRequestNotAllowed,
    /// 65, `DELEGATION_TOKEN_AUTHORIZATION_FAILED`: Delegation Token authorization failed.
    DelegationTokenAuthorizationFailed,
    /// 66, `DELEGATION_TOKEN_EXPIRED`: Delegation Token is expired.
    DelegationTokenExpired,
    /// 67, `INVALID_PRINCIPAL_TYPE`: Supplied principalType is not supported.
    InvalidPrincipalType,
    /// 68, `NON_EMPTY_GROUP`: The group is not empty.
    NonEmptyGroup,
    /// 69, `GROUP_ID_NOT_FOUND`: The group id does not exist.
    GroupIdNotFound,
    /// 70, `FETCH_SESSION_ID_NOT_FOUND`: The fetch session ID was not found.
    FetchSessionIdNotFound,
    /// 71, `INVALID_FETCH_SESSION_EPOCH`: The fetch session epoch is invalid.
    InvalidFetchSessionEpoch,
    /// 72, `LISTENER_NOT_FOUND`: There is no listener on the leader broker that matches the listener on which metadata request was processed.
    ListenerNotFound,
    /// 73, `TOPIC_DELETION_DISABLED`: Topic deletion is disabled.
    TopicDeletionDisabled,
    /// 74, `FENCED_LEADER_EPOCH`: The leader epoch in the request is older than the epoch on the broker.
    FencedLeaderEpoch,
    /// 75, `UNKNOWN_LEADER_EPOCH`: The leader epoch in the request is newer than the epoch on the broker.
    UnknownLeaderEpoch,
    /// 76, `UNSUPPORTED_COMPRESSION_TYPE`: The requesting client does not support the compression type of given partition.
    UnsupportedCompressionType,
    /// 77, `STALE_BROKER_EPOCH`: Broker epoch has changed.
    StaleBrokerEpoch,
    /// 78, `OFFSET_NOT_AVAILABLE`: The leader high watermark has not caught up from a recent leader election so the offsets cannot be guaranteed to be monotonically increasing.
    OffsetNotAvailable,
    /// 79, `MEMBER_ID_REQUIRED`: The group member needs to have a valid member id before actually entering a consumer group.
    MemberIdRequired,
    /// 80, `PREFERRED_LEADER_NOT_AVAILABLE`: The preferred leader was not available.
    PreferredLeaderNotAvailable,
    /// 81, `GROUP_MAX_SIZE_REACHED`: The consumer group has reached its max size.
    GroupMaxSizeReached,
    /// 82, `FENCED_INSTANCE_ID`: The broker rejected this static consumer since another consumer with the same group.instance.id has registered with a different member.id.
    FencedInstanceId,
    /// 83, `ELIGIBLE_LEADERS_NOT_AVAILABLE`: Eligible topic partition leaders are not available.
    EligibleLeadersNotAvailable,
    /// 84, `ELECTION_NOT_NEEDED`: Leader election not needed for topic partition.
    ElectionNotNeeded,
    /// 85, `NO_REASSIGNMENT_IN_PROGRESS`: No partition reassignment is in progress.
    NoReassignmentInProgress,
    /// 86, `GROUP_SUBSCRIBED_TO_TOPIC`: Deleting offsets of a topic is forbidden while the consumer group is actively subscribed to it.
    GroupSubscribedToTopic,
    /// 87, `INVALID_RECORD`: This record has failed the validation on broker and hence will be rejected.
    InvalidRecord,
    /// 88, `UNSTABLE_OFFSET_COMMIT`: There are unstable offsets that need to be cleared.
    UnstableOffsetCommit,
    /// 89, `THROTTLING_QUOTA_EXCEEDED`: The throttling quota has been exceeded.
    ThrottlingQuotaExceeded,
    /// 90, `PRODUCER_FENCED`: There is a newer producer with the same transactionalId which fences the current one.
    ProducerFenced,
    /// 91, `RESOURCE_NOT_FOUND`: A request illegally referred to a resource that does not exist.
    ResourceNotFound,
    /// 92, `DUPLICATE_RESOURCE`: A request illegally referred to the same resource twice.
    DuplicateResource,
    /// 93, `UNACCEPTABLE_CREDENTIAL`: Requested credential would not meet criteria for acceptability.
    UnacceptableCredential,
    /// 94, `INCONSISTENT_VOTER_SET`: Indicates that the either the sender or recipient of a voter-only request is not one of the expected voters
    InconsistentVoterSet,
    /// 95, `INVALID_UPDATE_VERSION`: The given update version was invalid.
    InvalidUpdateVersion,
    /// 96, `FEATURE_UPDATE_FAILED`: Unable to update finalized features due to an unexpected server error.
    FeatureUpdateFailed,
    /// 97, `PRINCIPAL_DESERIALIZATION_FAILURE`: Request principal deserialization failed during forwarding. This indicates an internal error on the broker cluster security setup.
    PrincipalDeserializationFailure,
    /// 98, `SNAPSHOT_NOT_FOUND`: Requested snapshot was not found
    SnapshotNotFound,
    /// 99, `POSITION_OUT_OF_RANGE`: Requested position is not greater than or equal to zero, and less than the size of the snapshot.
    PositionOutOfRange,
    /// 100, `UNKNOWN_TOPIC_ID`: This server does not host this topic ID.
    UnknownTopicId,
    /// 101, `DUPLICATE_BROKER_REGISTRATION`: This broker ID is already in use.
    DuplicateBrokerRegistration,
    /// 102, `BROKER_ID_NOT_REGISTERED`: The given broker ID was not registered.
    BrokerIdNotRegistered,
    /// 103, `INCONSISTENT_TOPIC_ID`: The log's topic ID did not match the topic ID in the request
    InconsistentTopicId,
    /// 104, `INCONSISTENT_CLUSTER_ID`: The clusterId in the request does not match that found on the server
    InconsistentClusterId,
    /// 105, `TRANSACTIONAL_ID_NOT_FOUND`: The transactionalId could not be found
    TransactionalIdNotFound,
    /// 106, `FETCH_SESSION_TOPIC_ID_ERROR`: The fetch session encountered inconsistent topic ID usage
    FetchSessionTopicIdError,
    /// 107, `INELIGIBLE_REPLICA`: The new ISR contains at least one ineligible replica.
    IneligibleReplica,
    /// 108, `NEW_LEADER_ELECTED`: The AlterPartition request successfully updated the partition state but the leader has changed.
    NewLeaderElected,
    /// 109, `OFFSET_MOVED_TO_TIERED_STORAGE`: The requested offset is moved to tiered storage.
    OffsetMovedToTieredStorage,
    /// 110, `FENCED_MEMBER_EPOCH`: The member epoch is fenced by the group coordinator. The member must abandon all its partitions and rejoin.
    FencedMemberEpoch,
    /// 111, `UNRELEASED_INSTANCE_ID`: The instance ID is still used by another member in the consumer group. That member must leave first.
    UnreleasedInstanceId,
    /// 112, `UNSUPPORTED_ASSIGNOR`: The assignor or its version range is not supported by the consumer group.
    UnsupportedAssignor,
    /// 113, `STALE_MEMBER_EPOCH`: The member epoch is stale. The member must retry after receiving its updated member epoch via the ConsumerGroupHeartbeat API.
    StaleMemberEpoch,
    /// 114, `MISMATCHED_ENDPOINT_TYPE`: The request was sent to an endpoint of the wrong type.
    MismatchedEndpointType,
    /// 115, `UNSUPPORTED_ENDPOINT_TYPE`: This endpoint type is not supported yet.
    UnsupportedEndpointType,
    /// 116, `UNKNOWN_CONTROLLER_ID`: This controller ID is not known.
    UnknownControllerId,
    /// 117, `UNKNOWN_SUBSCRIPTION_ID`: Client sent a push telemetry request with an invalid or outdated subscription ID.
    UnknownSubscriptionId,
    /// 118, `TELEMETRY_TOO_LARGE`: Client sent a push telemetry request larger than the maximum size the broker will accept.
    TelemetryTooLarge,
    /// 119, `INVALID_REGISTRATION`: The controller has considered the broker registration to be invalid.
    InvalidRegistration,
    /// 120, `TRANSACTION_ABORTABLE`: The server encountered an error with the transaction. The client can abort the transaction to continue using this transactional ID.
    TransactionAbortable,
    /// 121, `INVALID_RECORD_STATE`: The record state is invalid. The acknowledgement of delivery could not be completed.
    InvalidRecordState,
    /// 122, `SHARE_SESSION_NOT_FOUND`: The share session was not found.
    ShareSessionNotFound,
    /// 123, `INVALID_SHARE_SESSION_EPOCH`: The share session epoch is invalid.
    InvalidShareSessionEpoch,
    /// 124, `FENCED_STATE_EPOCH`: The share coordinator rejected the request because the share-group state epoch did not match.
    FencedStateEpoch,
    /// 125, `INVALID_VOTER_KEY`: The voter key doesn't match the receiving replica's key.
    InvalidVoterKey,
    /// 126, `DUPLICATE_VOTER`: The voter is already part of the set of voters.
    DuplicateVoter,
    /// 127, `VOTER_NOT_FOUND`: The voter is not part of the set of voters.
    VoterNotFound,
    /// 128, `INVALID_REGULAR_EXPRESSION`: The regular expression is not valid.
    InvalidRegularExpression,
    /// 129, `REBOOTSTRAP_REQUIRED`: Client metadata is stale, client should rebootstrap to obtain new metadata.
    RebootstrapRequired,
    /// 130, `STREAMS_INVALID_TOPOLOGY`: The supplied topology is invalid.
    StreamsInvalidTopology,
    /// 131, `STREAMS_INVALID_TOPOLOGY_EPOCH`: The supplied topology epoch is invalid.
    StreamsInvalidTopologyEpoch,
    /// 132, `STREAMS_TOPOLOGY_FENCED`: The supplied topology epoch is outdated.
    StreamsTopologyFenced,
    /// 133, `SHARE_SESSION_LIMIT_REACHED`: The limit of share sessions has been reached.
    ShareSessionLimitReached,
    /// A code this version of Paperboy does not know.
    Unknown(i16),
}

impl KafkaCode {
    /// The code for `code`; `None` for 0 (no error).
    pub fn try_from_code(code: i16) -> Option<KafkaCode> {
        (code != 0).then(|| KafkaCode::from_code(code))
    }

    /// The code for a non-zero `code` ([`KafkaCode::Unknown`] when not in the table).
    pub fn from_code(code: i16) -> KafkaCode {
        match code {
            -1 => KafkaCode::UnknownServerError,
            1 => KafkaCode::OffsetOutOfRange,
            2 => KafkaCode::CorruptMessage,
            3 => KafkaCode::UnknownTopicOrPartition,
            4 => KafkaCode::InvalidFetchSize,
            5 => KafkaCode::LeaderNotAvailable,
            6 => KafkaCode::NotLeaderOrFollower,
            7 => KafkaCode::RequestTimedOut,
            8 => KafkaCode::BrokerNotAvailable,
            9 => KafkaCode::ReplicaNotAvailable,
            10 => KafkaCode::MessageTooLarge,
            11 => KafkaCode::StaleControllerEpoch,
            12 => KafkaCode::OffsetMetadataTooLarge,
            13 => KafkaCode::NetworkException,
            14 => KafkaCode::CoordinatorLoadInProgress,
            15 => KafkaCode::CoordinatorNotAvailable,
            16 => KafkaCode::NotCoordinator,
            17 => KafkaCode::InvalidTopicException,
            18 => KafkaCode::RecordListTooLarge,
            19 => KafkaCode::NotEnoughReplicas,
            20 => KafkaCode::NotEnoughReplicasAfterAppend,
            21 => KafkaCode::InvalidRequiredAcks,
            22 => KafkaCode::IllegalGeneration,
            23 => KafkaCode::InconsistentGroupProtocol,
            24 => KafkaCode::InvalidGroupId,
            25 => KafkaCode::UnknownMemberId,
            26 => KafkaCode::InvalidSessionTimeout,
            27 => KafkaCode::RebalanceInProgress,
            28 => KafkaCode::InvalidCommitOffsetSize,
            29 => KafkaCode::TopicAuthorizationFailed,
            30 => KafkaCode::GroupAuthorizationFailed,
            31 => KafkaCode::ClusterAuthorizationFailed,
            32 => KafkaCode::InvalidTimestamp,
            33 => KafkaCode::UnsupportedSaslMechanism,
            34 => KafkaCode::IllegalSaslState,
            35 => KafkaCode::UnsupportedVersion,
            36 => KafkaCode::TopicAlreadyExists,
            37 => KafkaCode::InvalidPartitions,
            38 => KafkaCode::InvalidReplicationFactor,
            39 => KafkaCode::InvalidReplicaAssignment,
            40 => KafkaCode::InvalidConfig,
            41 => KafkaCode::NotController,
            42 => KafkaCode::InvalidRequest,
            43 => KafkaCode::UnsupportedForMessageFormat,
            44 => KafkaCode::PolicyViolation,
            45 => KafkaCode::OutOfOrderSequenceNumber,
            46 => KafkaCode::DuplicateSequenceNumber,
            47 => KafkaCode::InvalidProducerEpoch,
            48 => KafkaCode::InvalidTxnState,
            49 => KafkaCode::InvalidProducerIdMapping,
            50 => KafkaCode::InvalidTransactionTimeout,
            51 => KafkaCode::ConcurrentTransactions,
            52 => KafkaCode::TransactionCoordinatorFenced,
            53 => KafkaCode::TransactionalIdAuthorizationFailed,
            54 => KafkaCode::SecurityDisabled,
            55 => KafkaCode::OperationNotAttempted,
            56 => KafkaCode::KafkaStorageError,
            57 => KafkaCode::LogDirNotFound,
            58 => KafkaCode::SaslAuthenticationFailed,
            59 => KafkaCode::UnknownProducerId,
            60 => KafkaCode::ReassignmentInProgress,
            61 => KafkaCode::DelegationTokenAuthDisabled,
            62 => KafkaCode::DelegationTokenNotFound,
            63 => KafkaCode::DelegationTokenOwnerMismatch,
            64 => KafkaCode::DelegationTokenRequestNotAllowed,
            65 => KafkaCode::DelegationTokenAuthorizationFailed,
            66 => KafkaCode::DelegationTokenExpired,
            67 => KafkaCode::InvalidPrincipalType,
            68 => KafkaCode::NonEmptyGroup,
            69 => KafkaCode::GroupIdNotFound,
            70 => KafkaCode::FetchSessionIdNotFound,
            71 => KafkaCode::InvalidFetchSessionEpoch,
            72 => KafkaCode::ListenerNotFound,
            73 => KafkaCode::TopicDeletionDisabled,
            74 => KafkaCode::FencedLeaderEpoch,
            75 => KafkaCode::UnknownLeaderEpoch,
            76 => KafkaCode::UnsupportedCompressionType,
            77 => KafkaCode::StaleBrokerEpoch,
            78 => KafkaCode::OffsetNotAvailable,
            79 => KafkaCode::MemberIdRequired,
            80 => KafkaCode::PreferredLeaderNotAvailable,
            81 => KafkaCode::GroupMaxSizeReached,
            82 => KafkaCode::FencedInstanceId,
            83 => KafkaCode::EligibleLeadersNotAvailable,
            84 => KafkaCode::ElectionNotNeeded,
            85 => KafkaCode::NoReassignmentInProgress,
            86 => KafkaCode::GroupSubscribedToTopic,
            87 => KafkaCode::InvalidRecord,
            88 => KafkaCode::UnstableOffsetCommit,
            89 => KafkaCode::ThrottlingQuotaExceeded,
            90 => KafkaCode::ProducerFenced,
            91 => KafkaCode::ResourceNotFound,
            92 => KafkaCode::DuplicateResource,
            93 => KafkaCode::UnacceptableCredential,
            94 => KafkaCode::InconsistentVoterSet,
            95 => KafkaCode::InvalidUpdateVersion,
            96 => KafkaCode::FeatureUpdateFailed,
            97 => KafkaCode::PrincipalDeserializationFailure,
            98 => KafkaCode::SnapshotNotFound,
            99 => KafkaCode::PositionOutOfRange,
            100 => KafkaCode::UnknownTopicId,
            101 => KafkaCode::DuplicateBrokerRegistration,
            102 => KafkaCode::BrokerIdNotRegistered,
            103 => KafkaCode::InconsistentTopicId,
            104 => KafkaCode::InconsistentClusterId,
            105 => KafkaCode::TransactionalIdNotFound,
            106 => KafkaCode::FetchSessionTopicIdError,
            107 => KafkaCode::IneligibleReplica,
            108 => KafkaCode::NewLeaderElected,
            109 => KafkaCode::OffsetMovedToTieredStorage,
            110 => KafkaCode::FencedMemberEpoch,
            111 => KafkaCode::UnreleasedInstanceId,
            112 => KafkaCode::UnsupportedAssignor,
            113 => KafkaCode::StaleMemberEpoch,
            114 => KafkaCode::MismatchedEndpointType,
            115 => KafkaCode::UnsupportedEndpointType,
            116 => KafkaCode::UnknownControllerId,
            117 => KafkaCode::UnknownSubscriptionId,
            118 => KafkaCode::TelemetryTooLarge,
            119 => KafkaCode::InvalidRegistration,
            120 => KafkaCode::TransactionAbortable,
            121 => KafkaCode::InvalidRecordState,
            122 => KafkaCode::ShareSessionNotFound,
            123 => KafkaCode::InvalidShareSessionEpoch,
            124 => KafkaCode::FencedStateEpoch,
            125 => KafkaCode::InvalidVoterKey,
            126 => KafkaCode::DuplicateVoter,
            127 => KafkaCode::VoterNotFound,
            128 => KafkaCode::InvalidRegularExpression,
            129 => KafkaCode::RebootstrapRequired,
            130 => KafkaCode::StreamsInvalidTopology,
            131 => KafkaCode::StreamsInvalidTopologyEpoch,
            132 => KafkaCode::StreamsTopologyFenced,
            133 => KafkaCode::ShareSessionLimitReached,
            other => KafkaCode::Unknown(other),
        }
    }

    /// The number on the wire.
    pub fn code(&self) -> i16 {
        match self {
            KafkaCode::UnknownServerError => -1,
            KafkaCode::OffsetOutOfRange => 1,
            KafkaCode::CorruptMessage => 2,
            KafkaCode::UnknownTopicOrPartition => 3,
            KafkaCode::InvalidFetchSize => 4,
            KafkaCode::LeaderNotAvailable => 5,
            KafkaCode::NotLeaderOrFollower => 6,
            KafkaCode::RequestTimedOut => 7,
            KafkaCode::BrokerNotAvailable => 8,
            KafkaCode::ReplicaNotAvailable => 9,
            KafkaCode::MessageTooLarge => 10,
            KafkaCode::StaleControllerEpoch => 11,
            KafkaCode::OffsetMetadataTooLarge => 12,
            KafkaCode::NetworkException => 13,
            KafkaCode::CoordinatorLoadInProgress => 14,
            KafkaCode::CoordinatorNotAvailable => 15,
            KafkaCode::NotCoordinator => 16,
            KafkaCode::InvalidTopicException => 17,
            KafkaCode::RecordListTooLarge => 18,
            KafkaCode::NotEnoughReplicas => 19,
            KafkaCode::NotEnoughReplicasAfterAppend => 20,
            KafkaCode::InvalidRequiredAcks => 21,
            KafkaCode::IllegalGeneration => 22,
            KafkaCode::InconsistentGroupProtocol => 23,
            KafkaCode::InvalidGroupId => 24,
            KafkaCode::UnknownMemberId => 25,
            KafkaCode::InvalidSessionTimeout => 26,
            KafkaCode::RebalanceInProgress => 27,
            KafkaCode::InvalidCommitOffsetSize => 28,
            KafkaCode::TopicAuthorizationFailed => 29,
            KafkaCode::GroupAuthorizationFailed => 30,
            KafkaCode::ClusterAuthorizationFailed => 31,
            KafkaCode::InvalidTimestamp => 32,
            KafkaCode::UnsupportedSaslMechanism => 33,
            KafkaCode::IllegalSaslState => 34,
            KafkaCode::UnsupportedVersion => 35,
            KafkaCode::TopicAlreadyExists => 36,
            KafkaCode::InvalidPartitions => 37,
            KafkaCode::InvalidReplicationFactor => 38,
            KafkaCode::InvalidReplicaAssignment => 39,
            KafkaCode::InvalidConfig => 40,
            KafkaCode::NotController => 41,
            KafkaCode::InvalidRequest => 42,
            KafkaCode::UnsupportedForMessageFormat => 43,
            KafkaCode::PolicyViolation => 44,
            KafkaCode::OutOfOrderSequenceNumber => 45,
            KafkaCode::DuplicateSequenceNumber => 46,
            KafkaCode::InvalidProducerEpoch => 47,
            KafkaCode::InvalidTxnState => 48,
            KafkaCode::InvalidProducerIdMapping => 49,
            KafkaCode::InvalidTransactionTimeout => 50,
            KafkaCode::ConcurrentTransactions => 51,
            KafkaCode::TransactionCoordinatorFenced => 52,
            KafkaCode::TransactionalIdAuthorizationFailed => 53,
            KafkaCode::SecurityDisabled => 54,
            KafkaCode::OperationNotAttempted => 55,
            KafkaCode::KafkaStorageError => 56,
            KafkaCode::LogDirNotFound => 57,
            KafkaCode::SaslAuthenticationFailed => 58,
            KafkaCode::UnknownProducerId => 59,
            KafkaCode::ReassignmentInProgress => 60,
            KafkaCode::DelegationTokenAuthDisabled => 61,
            KafkaCode::DelegationTokenNotFound => 62,
            KafkaCode::DelegationTokenOwnerMismatch => 63,
            KafkaCode::DelegationTokenRequestNotAllowed => 64,
            KafkaCode::DelegationTokenAuthorizationFailed => 65,
            KafkaCode::DelegationTokenExpired => 66,
            KafkaCode::InvalidPrincipalType => 67,
            KafkaCode::NonEmptyGroup => 68,
            KafkaCode::GroupIdNotFound => 69,
            KafkaCode::FetchSessionIdNotFound => 70,
            KafkaCode::InvalidFetchSessionEpoch => 71,
            KafkaCode::ListenerNotFound => 72,
            KafkaCode::TopicDeletionDisabled => 73,
            KafkaCode::FencedLeaderEpoch => 74,
            KafkaCode::UnknownLeaderEpoch => 75,
            KafkaCode::UnsupportedCompressionType => 76,
            KafkaCode::StaleBrokerEpoch => 77,
            KafkaCode::OffsetNotAvailable => 78,
            KafkaCode::MemberIdRequired => 79,
            KafkaCode::PreferredLeaderNotAvailable => 80,
            KafkaCode::GroupMaxSizeReached => 81,
            KafkaCode::FencedInstanceId => 82,
            KafkaCode::EligibleLeadersNotAvailable => 83,
            KafkaCode::ElectionNotNeeded => 84,
            KafkaCode::NoReassignmentInProgress => 85,
            KafkaCode::GroupSubscribedToTopic => 86,
            KafkaCode::InvalidRecord => 87,
            KafkaCode::UnstableOffsetCommit => 88,
            KafkaCode::ThrottlingQuotaExceeded => 89,
            KafkaCode::ProducerFenced => 90,
            KafkaCode::ResourceNotFound => 91,
            KafkaCode::DuplicateResource => 92,
            KafkaCode::UnacceptableCredential => 93,
            KafkaCode::InconsistentVoterSet => 94,
            KafkaCode::InvalidUpdateVersion => 95,
            KafkaCode::FeatureUpdateFailed => 96,
            KafkaCode::PrincipalDeserializationFailure => 97,
            KafkaCode::SnapshotNotFound => 98,
            KafkaCode::PositionOutOfRange => 99,
            KafkaCode::UnknownTopicId => 100,
            KafkaCode::DuplicateBrokerRegistration => 101,
            KafkaCode::BrokerIdNotRegistered => 102,
            KafkaCode::InconsistentTopicId => 103,
            KafkaCode::InconsistentClusterId => 104,
            KafkaCode::TransactionalIdNotFound => 105,
            KafkaCode::FetchSessionTopicIdError => 106,
            KafkaCode::IneligibleReplica => 107,
            KafkaCode::NewLeaderElected => 108,
            KafkaCode::OffsetMovedToTieredStorage => 109,
            KafkaCode::FencedMemberEpoch => 110,
            KafkaCode::UnreleasedInstanceId => 111,
            KafkaCode::UnsupportedAssignor => 112,
            KafkaCode::StaleMemberEpoch => 113,
            KafkaCode::MismatchedEndpointType => 114,
            KafkaCode::UnsupportedEndpointType => 115,
            KafkaCode::UnknownControllerId => 116,
            KafkaCode::UnknownSubscriptionId => 117,
            KafkaCode::TelemetryTooLarge => 118,
            KafkaCode::InvalidRegistration => 119,
            KafkaCode::TransactionAbortable => 120,
            KafkaCode::InvalidRecordState => 121,
            KafkaCode::ShareSessionNotFound => 122,
            KafkaCode::InvalidShareSessionEpoch => 123,
            KafkaCode::FencedStateEpoch => 124,
            KafkaCode::InvalidVoterKey => 125,
            KafkaCode::DuplicateVoter => 126,
            KafkaCode::VoterNotFound => 127,
            KafkaCode::InvalidRegularExpression => 128,
            KafkaCode::RebootstrapRequired => 129,
            KafkaCode::StreamsInvalidTopology => 130,
            KafkaCode::StreamsInvalidTopologyEpoch => 131,
            KafkaCode::StreamsTopologyFenced => 132,
            KafkaCode::ShareSessionLimitReached => 133,
            KafkaCode::Unknown(c) => *c,
        }
    }

    /// Kafka's name for it, as the Java client and the broker's logs write it:
    /// `NOT_LEADER_OR_FOLLOWER`; `UNKNOWN` for a code not in the table.
    pub fn name(&self) -> &'static str {
        match self {
            KafkaCode::UnknownServerError => "UNKNOWN_SERVER_ERROR",
            KafkaCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            KafkaCode::CorruptMessage => "CORRUPT_MESSAGE",
            KafkaCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            KafkaCode::InvalidFetchSize => "INVALID_FETCH_SIZE",
            KafkaCode::LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            KafkaCode::NotLeaderOrFollower => "NOT_LEADER_OR_FOLLOWER",
            KafkaCode::RequestTimedOut => "REQUEST_TIMED_OUT",
            KafkaCode::BrokerNotAvailable => "BROKER_NOT_AVAILABLE",
            KafkaCode::ReplicaNotAvailable => "REPLICA_NOT_AVAILABLE",
            KafkaCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            KafkaCode::StaleControllerEpoch => "STALE_CONTROLLER_EPOCH",
            KafkaCode::OffsetMetadataTooLarge => "OFFSET_METADATA_TOO_LARGE",
            KafkaCode::NetworkException => "NETWORK_EXCEPTION",
            KafkaCode::CoordinatorLoadInProgress => "COORDINATOR_LOAD_IN_PROGRESS",
            KafkaCode::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            KafkaCode::NotCoordinator => "NOT_COORDINATOR",
            KafkaCode::InvalidTopicException => "INVALID_TOPIC_EXCEPTION",
            KafkaCode::RecordListTooLarge => "RECORD_LIST_TOO_LARGE",
            KafkaCode::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            KafkaCode::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            KafkaCode::InvalidRequiredAcks => "INVALID_REQUIRED_ACKS",
            KafkaCode::IllegalGeneration => "ILLEGAL_GENERATION",
            KafkaCode::InconsistentGroupProtocol => "INCONSISTENT_GROUP_PROTOCOL",
            KafkaCode::InvalidGroupId => "INVALID_GROUP_ID",
            KafkaCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            KafkaCode::InvalidSessionTimeout => "INVALID_SESSION_TIMEOUT",
            KafkaCode::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            KafkaCode::InvalidCommitOffsetSize => "INVALID_COMMIT_OFFSET_SIZE",
            KafkaCode::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
            KafkaCode::GroupAuthorizationFailed => "GROUP_AUTHORIZATION_FAILED",
            KafkaCode::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
            KafkaCode::InvalidTimestamp => "INVALID_TIMESTAMP",
            KafkaCode::UnsupportedSaslMechanism => "UNSUPPORTED_SASL_MECHANISM",
            KafkaCode::IllegalSaslState => "ILLEGAL_SASL_STATE",
            KafkaCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            KafkaCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            KafkaCode::InvalidPartitions => "INVALID_PARTITIONS",
            KafkaCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            KafkaCode::InvalidReplicaAssignment => "INVALID_REPLICA_ASSIGNMENT",
            KafkaCode::InvalidConfig => "INVALID_CONFIG",
            KafkaCode::NotController => "NOT_CONTROLLER",
            KafkaCode::InvalidRequest => "INVALID_REQUEST",
            KafkaCode::UnsupportedForMessageFormat => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
            KafkaCode::PolicyViolation => "POLICY_VIOLATION",
            KafkaCode::OutOfOrderSequenceNumber => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            KafkaCode::DuplicateSequenceNumber => "DUPLICATE_SEQUENCE_NUMBER",
            KafkaCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            KafkaCode::InvalidTxnState => "INVALID_TXN_STATE",
            KafkaCode::InvalidProducerIdMapping => "INVALID_PRODUCER_ID_MAPPING",
            KafkaCode::InvalidTransactionTimeout => "INVALID_TRANSACTION_TIMEOUT",
            KafkaCode::ConcurrentTransactions => "CONCURRENT_TRANSACTIONS",
            KafkaCode::TransactionCoordinatorFenced => "TRANSACTION_COORDINATOR_FENCED",
            KafkaCode::TransactionalIdAuthorizationFailed => {
                "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
            }
            KafkaCode::SecurityDisabled => "SECURITY_DISABLED",
            KafkaCode::OperationNotAttempted => "OPERATION_NOT_ATTEMPTED",
            KafkaCode::KafkaStorageError => "KAFKA_STORAGE_ERROR",
            KafkaCode::LogDirNotFound => "LOG_DIR_NOT_FOUND",
            KafkaCode::SaslAuthenticationFailed => "SASL_AUTHENTICATION_FAILED",
            KafkaCode::UnknownProducerId => "UNKNOWN_PRODUCER_ID",
            KafkaCode::ReassignmentInProgress => "REASSIGNMENT_IN_PROGRESS",
            KafkaCode::DelegationTokenAuthDisabled => "DELEGATION_TOKEN_AUTH_DISABLED",
            KafkaCode::DelegationTokenNotFound => "DELEGATION_TOKEN_NOT_FOUND",
            KafkaCode::DelegationTokenOwnerMismatch => "DELEGATION_TOKEN_OWNER_MISMATCH",
            KafkaCode::DelegationTokenRequestNotAllowed => "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
            KafkaCode::DelegationTokenAuthorizationFailed => {
                "DELEGATION_TOKEN_AUTHORIZATION_FAILED"
            }
            KafkaCode::DelegationTokenExpired => "DELEGATION_TOKEN_EXPIRED",
            KafkaCode::InvalidPrincipalType => "INVALID_PRINCIPAL_TYPE",
            KafkaCode::NonEmptyGroup => "NON_EMPTY_GROUP",
            KafkaCode::GroupIdNotFound => "GROUP_ID_NOT_FOUND",
            KafkaCode::FetchSessionIdNotFound => "FETCH_SESSION_ID_NOT_FOUND",
            KafkaCode::InvalidFetchSessionEpoch => "INVALID_FETCH_SESSION_EPOCH",
            KafkaCode::ListenerNotFound => "LISTENER_NOT_FOUND",
            KafkaCode::TopicDeletionDisabled => "TOPIC_DELETION_DISABLED",
            KafkaCode::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            KafkaCode::UnknownLeaderEpoch => "UNKNOWN_LEADER_EPOCH",
            KafkaCode::UnsupportedCompressionType => "UNSUPPORTED_COMPRESSION_TYPE",
            KafkaCode::StaleBrokerEpoch => "STALE_BROKER_EPOCH",
            KafkaCode::OffsetNotAvailable => "OFFSET_NOT_AVAILABLE",
            KafkaCode::MemberIdRequired => "MEMBER_ID_REQUIRED",
            KafkaCode::PreferredLeaderNotAvailable => "PREFERRED_LEADER_NOT_AVAILABLE",
            KafkaCode::GroupMaxSizeReached => "GROUP_MAX_SIZE_REACHED",
            KafkaCode::FencedInstanceId => "FENCED_INSTANCE_ID",
            KafkaCode::EligibleLeadersNotAvailable => "ELIGIBLE_LEADERS_NOT_AVAILABLE",
            KafkaCode::ElectionNotNeeded => "ELECTION_NOT_NEEDED",
            KafkaCode::NoReassignmentInProgress => "NO_REASSIGNMENT_IN_PROGRESS",
            KafkaCode::GroupSubscribedToTopic => "GROUP_SUBSCRIBED_TO_TOPIC",
            KafkaCode::InvalidRecord => "INVALID_RECORD",
            KafkaCode::UnstableOffsetCommit => "UNSTABLE_OFFSET_COMMIT",
            KafkaCode::ThrottlingQuotaExceeded => "THROTTLING_QUOTA_EXCEEDED",
            KafkaCode::ProducerFenced => "PRODUCER_FENCED",
            KafkaCode::ResourceNotFound => "RESOURCE_NOT_FOUND",
            KafkaCode::DuplicateResource => "DUPLICATE_RESOURCE",
            KafkaCode::UnacceptableCredential => "UNACCEPTABLE_CREDENTIAL",
            KafkaCode::InconsistentVoterSet => "INCONSISTENT_VOTER_SET",
            KafkaCode::InvalidUpdateVersion => "INVALID_UPDATE_VERSION",
            KafkaCode::FeatureUpdateFailed => "FEATURE_UPDATE_FAILED",
            KafkaCode::PrincipalDeserializationFailure => "PRINCIPAL_DESERIALIZATION_FAILURE",
            KafkaCode::SnapshotNotFound => "SNAPSHOT_NOT_FOUND",
            KafkaCode::PositionOutOfRange => "POSITION_OUT_OF_RANGE",
            KafkaCode::UnknownTopicId => "UNKNOWN_TOPIC_ID",
            KafkaCode::DuplicateBrokerRegistration => "DUPLICATE_BROKER_REGISTRATION",
            KafkaCode::BrokerIdNotRegistered => "BROKER_ID_NOT_REGISTERED",
            KafkaCode::InconsistentTopicId => "INCONSISTENT_TOPIC_ID",
            KafkaCode::InconsistentClusterId => "INCONSISTENT_CLUSTER_ID",
            KafkaCode::TransactionalIdNotFound => "TRANSACTIONAL_ID_NOT_FOUND",
            KafkaCode::FetchSessionTopicIdError => "FETCH_SESSION_TOPIC_ID_ERROR",
            KafkaCode::IneligibleReplica => "INELIGIBLE_REPLICA",
            KafkaCode::NewLeaderElected => "NEW_LEADER_ELECTED",
            KafkaCode::OffsetMovedToTieredStorage => "OFFSET_MOVED_TO_TIERED_STORAGE",
            KafkaCode::FencedMemberEpoch => "FENCED_MEMBER_EPOCH",
            KafkaCode::UnreleasedInstanceId => "UNRELEASED_INSTANCE_ID",
            KafkaCode::UnsupportedAssignor => "UNSUPPORTED_ASSIGNOR",
            KafkaCode::StaleMemberEpoch => "STALE_MEMBER_EPOCH",
            KafkaCode::MismatchedEndpointType => "MISMATCHED_ENDPOINT_TYPE",
            KafkaCode::UnsupportedEndpointType => "UNSUPPORTED_ENDPOINT_TYPE",
            KafkaCode::UnknownControllerId => "UNKNOWN_CONTROLLER_ID",
            KafkaCode::UnknownSubscriptionId => "UNKNOWN_SUBSCRIPTION_ID",
            KafkaCode::TelemetryTooLarge => "TELEMETRY_TOO_LARGE",
            KafkaCode::InvalidRegistration => "INVALID_REGISTRATION",
            KafkaCode::TransactionAbortable => "TRANSACTION_ABORTABLE",
            KafkaCode::InvalidRecordState => "INVALID_RECORD_STATE",
            KafkaCode::ShareSessionNotFound => "SHARE_SESSION_NOT_FOUND",
            KafkaCode::InvalidShareSessionEpoch => "INVALID_SHARE_SESSION_EPOCH",
            KafkaCode::FencedStateEpoch => "FENCED_STATE_EPOCH",
            KafkaCode::InvalidVoterKey => "INVALID_VOTER_KEY",
            KafkaCode::DuplicateVoter => "DUPLICATE_VOTER",
            KafkaCode::VoterNotFound => "VOTER_NOT_FOUND",
            KafkaCode::InvalidRegularExpression => "INVALID_REGULAR_EXPRESSION",
            KafkaCode::RebootstrapRequired => "REBOOTSTRAP_REQUIRED",
            KafkaCode::StreamsInvalidTopology => "STREAMS_INVALID_TOPOLOGY",
            KafkaCode::StreamsInvalidTopologyEpoch => "STREAMS_INVALID_TOPOLOGY_EPOCH",
            KafkaCode::StreamsTopologyFenced => "STREAMS_TOPOLOGY_FENCED",
            KafkaCode::ShareSessionLimitReached => "SHARE_SESSION_LIMIT_REACHED",
            KafkaCode::Unknown(_) => "UNKNOWN",
        }
    }

    /// Kafka's description of it.
    pub fn description(&self) -> &'static str {
        match self {
            KafkaCode::UnknownServerError => "The server experienced an unexpected error when processing the request.",
            KafkaCode::OffsetOutOfRange => "The requested offset is not within the range of offsets maintained by the server.",
            KafkaCode::CorruptMessage => "This message has failed its CRC checksum, exceeds the valid size, has a null key for a compacted topic, or is otherwise corrupt.",
            KafkaCode::UnknownTopicOrPartition => "This server does not host this topic-partition.",
            KafkaCode::InvalidFetchSize => "The requested fetch size is invalid.",
            KafkaCode::LeaderNotAvailable => "There is no leader for this topic-partition as we are in the middle of a leadership election.",
            KafkaCode::NotLeaderOrFollower => "For requests intended only for the leader, this error indicates that the broker is not the current leader. For requests intended for any replica, this error indicates that the broker is not a replica of the topic partition.",
            KafkaCode::RequestTimedOut => "The request timed out.",
            KafkaCode::BrokerNotAvailable => "The broker is not available.",
            KafkaCode::ReplicaNotAvailable => "The replica is not available for the requested topic-partition. Produce/Fetch requests and other requests intended only for the leader or follower return NOT_LEADER_OR_FOLLOWER if the broker is not a replica of the topic-partition.",
            KafkaCode::MessageTooLarge => "The request included a message larger than the max message size the server will accept.",
            KafkaCode::StaleControllerEpoch => "The controller moved to another broker.",
            KafkaCode::OffsetMetadataTooLarge => "The metadata field of the offset request was too large.",
            KafkaCode::NetworkException => "The server disconnected before a response was received.",
            KafkaCode::CoordinatorLoadInProgress => "The coordinator is loading and hence can't process requests.",
            KafkaCode::CoordinatorNotAvailable => "The coordinator is not available.",
            KafkaCode::NotCoordinator => "This is not the correct coordinator.",
            KafkaCode::InvalidTopicException => "The request attempted to perform an operation on an invalid topic.",
            KafkaCode::RecordListTooLarge => "The request included message batch larger than the configured segment size on the server.",
            KafkaCode::NotEnoughReplicas => "Messages are rejected since there are fewer in-sync replicas than required.",
            KafkaCode::NotEnoughReplicasAfterAppend => "Messages are written to the log, but to fewer in-sync replicas than required.",
            KafkaCode::InvalidRequiredAcks => "Produce request specified an invalid value for required acks.",
            KafkaCode::IllegalGeneration => "Specified group generation id is not valid.",
            KafkaCode::InconsistentGroupProtocol => "The group member's supported protocols are incompatible with those of existing members or first group member tried to join with empty protocol type or empty protocol list.",
            KafkaCode::InvalidGroupId => "The configured groupId is invalid.",
            KafkaCode::UnknownMemberId => "The coordinator is not aware of this member.",
            KafkaCode::InvalidSessionTimeout => "The session timeout is not within the range allowed by the broker (as configured by group.min.session.timeout.ms and group.max.session.timeout.ms).",
            KafkaCode::RebalanceInProgress => "The group is rebalancing, so a rejoin is needed.",
            KafkaCode::InvalidCommitOffsetSize => "The committing offset data size is not valid.",
            KafkaCode::TopicAuthorizationFailed => "Topic authorization failed.",
            KafkaCode::GroupAuthorizationFailed => "Group authorization failed.",
            KafkaCode::ClusterAuthorizationFailed => "Cluster authorization failed.",
            KafkaCode::InvalidTimestamp => "The timestamp of the message is out of acceptable range.",
            KafkaCode::UnsupportedSaslMechanism => "The broker does not support the requested SASL mechanism.",
            KafkaCode::IllegalSaslState => "Request is not valid given the current SASL state.",
            KafkaCode::UnsupportedVersion => "The version of API is not supported.",
            KafkaCode::TopicAlreadyExists => "Topic with this name already exists.",
            KafkaCode::InvalidPartitions => "Number of partitions is below 1.",
            KafkaCode::InvalidReplicationFactor => "Replication factor is below 1 or larger than the number of available brokers.",
            KafkaCode::InvalidReplicaAssignment => "Replica assignment is invalid.",
            KafkaCode::InvalidConfig => "Configuration is invalid.",
            KafkaCode::NotController => "This is not the correct controller for this cluster.",
            KafkaCode::InvalidRequest => "This most likely occurs because of a request being malformed by the client library or the message was sent to an incompatible broker. See the broker logs for more details.",
            KafkaCode::UnsupportedForMessageFormat => "The message format version on the broker does not support the request.",
            KafkaCode::PolicyViolation => "Request parameters do not satisfy the configured policy.",
            KafkaCode::OutOfOrderSequenceNumber => "The broker received an out of order sequence number.",
            KafkaCode::DuplicateSequenceNumber => "The broker received a duplicate sequence number.",
            KafkaCode::InvalidProducerEpoch => "Producer attempted to produce with an old epoch.",
            KafkaCode::InvalidTxnState => "The producer attempted a transactional operation in an invalid state.",
            KafkaCode::InvalidProducerIdMapping => "The producer attempted to use a producer id which is not currently assigned to its transactional id.",
            KafkaCode::InvalidTransactionTimeout => "The transaction timeout is larger than the maximum value allowed by the broker (as configured by transaction.max.timeout.ms).",
            KafkaCode::ConcurrentTransactions => "The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing.",
            KafkaCode::TransactionCoordinatorFenced => "Indicates that the transaction coordinator sending a WriteTxnMarker is no longer the current coordinator for a given producer.",
            KafkaCode::TransactionalIdAuthorizationFailed => "Transactional Id authorization failed.",
            KafkaCode::SecurityDisabled => "Security features are disabled.",
            KafkaCode::OperationNotAttempted => "The broker did not attempt to execute this operation. This may happen for batched RPCs where some operations in the batch failed, causing the broker to respond without trying the rest.",
            KafkaCode::KafkaStorageError => "Disk error when trying to access log file on the disk.",
            KafkaCode::LogDirNotFound => "The user-specified log directory is not found in the broker config.",
            KafkaCode::SaslAuthenticationFailed => "SASL Authentication failed.",
            KafkaCode::UnknownProducerId => "This exception is raised by the broker if it could not locate the producer metadata associated with the producerId in question. This could happen if, for instance, the producer's records were deleted because their retention time had elapsed. Once the last records of the producerId are removed, the producer's metadata is removed from the broker, and future appends by the producer will return this exception.",
            KafkaCode::ReassignmentInProgress => "A partition reassignment is in progress.",
            KafkaCode::DelegationTokenAuthDisabled => "Delegation Token feature is not enabled.",
            KafkaCode::DelegationTokenNotFound => "Delegation Token is not found on server.",
            KafkaCode::DelegationTokenOwnerMismatch => "Specified Principal is not valid Owner/Renewer.",
            KafkaCode::DelegationTokenRequestNotAllowed => "Delegation Token requests are not allowed on PLAINTEXT/1-way SSL channels and on delegation token authenticated channels.",
            KafkaCode::DelegationTokenAuthorizationFailed => "Delegation Token authorization failed.",
            KafkaCode::DelegationTokenExpired => "Delegation Token is expired.",
            KafkaCode::InvalidPrincipalType => "Supplied principalType is not supported.",
            KafkaCode::NonEmptyGroup => "The group is not empty.",
            KafkaCode::GroupIdNotFound => "The group id does not exist.",
            KafkaCode::FetchSessionIdNotFound => "The fetch session ID was not found.",
            KafkaCode::InvalidFetchSessionEpoch => "The fetch session epoch is invalid.",
            KafkaCode::ListenerNotFound => "There is no listener on the leader broker that matches the listener on which metadata request was processed.",
            KafkaCode::TopicDeletionDisabled => "Topic deletion is disabled.",
            KafkaCode::FencedLeaderEpoch => "The leader epoch in the request is older than the epoch on the broker.",
            KafkaCode::UnknownLeaderEpoch => "The leader epoch in the request is newer than the epoch on the broker.",
            KafkaCode::UnsupportedCompressionType => "The requesting client does not support the compression type of given partition.",
            KafkaCode::StaleBrokerEpoch => "Broker epoch has changed.",
            KafkaCode::OffsetNotAvailable => "The leader high watermark has not caught up from a recent leader election so the offsets cannot be guaranteed to be monotonically increasing.",
            KafkaCode::MemberIdRequired => "The group member needs to have a valid member id before actually entering a consumer group.",
            KafkaCode::PreferredLeaderNotAvailable => "The preferred leader was not available.",
            KafkaCode::GroupMaxSizeReached => "The consumer group has reached its max size.",
            KafkaCode::FencedInstanceId => "The broker rejected this static consumer since another consumer with the same group.instance.id has registered with a different member.id.",
            KafkaCode::EligibleLeadersNotAvailable => "Eligible topic partition leaders are not available.",
            KafkaCode::ElectionNotNeeded => "Leader election not needed for topic partition.",
            KafkaCode::NoReassignmentInProgress => "No partition reassignment is in progress.",
            KafkaCode::GroupSubscribedToTopic => "Deleting offsets of a topic is forbidden while the consumer group is actively subscribed to it.",
            KafkaCode::InvalidRecord => "This record has failed the validation on broker and hence will be rejected.",
            KafkaCode::UnstableOffsetCommit => "There are unstable offsets that need to be cleared.",
            KafkaCode::ThrottlingQuotaExceeded => "The throttling quota has been exceeded.",
            KafkaCode::ProducerFenced => "There is a newer producer with the same transactionalId which fences the current one.",
            KafkaCode::ResourceNotFound => "A request illegally referred to a resource that does not exist.",
            KafkaCode::DuplicateResource => "A request illegally referred to the same resource twice.",
            KafkaCode::UnacceptableCredential => "Requested credential would not meet criteria for acceptability.",
            KafkaCode::InconsistentVoterSet => "Indicates that the either the sender or recipient of a voter-only request is not one of the expected voters",
            KafkaCode::InvalidUpdateVersion => "The given update version was invalid.",
            KafkaCode::FeatureUpdateFailed => "Unable to update finalized features due to an unexpected server error.",
            KafkaCode::PrincipalDeserializationFailure => "Request principal deserialization failed during forwarding. This indicates an internal error on the broker cluster security setup.",
            KafkaCode::SnapshotNotFound => "Requested snapshot was not found",
            KafkaCode::PositionOutOfRange => "Requested position is not greater than or equal to zero, and less than the size of the snapshot.",
            KafkaCode::UnknownTopicId => "This server does not host this topic ID.",
            KafkaCode::DuplicateBrokerRegistration => "This broker ID is already in use.",
            KafkaCode::BrokerIdNotRegistered => "The given broker ID was not registered.",
            KafkaCode::InconsistentTopicId => "The log's topic ID did not match the topic ID in the request",
            KafkaCode::InconsistentClusterId => "The clusterId in the request does not match that found on the server",
            KafkaCode::TransactionalIdNotFound => "The transactionalId could not be found",
            KafkaCode::FetchSessionTopicIdError => "The fetch session encountered inconsistent topic ID usage",
            KafkaCode::IneligibleReplica => "The new ISR contains at least one ineligible replica.",
            KafkaCode::NewLeaderElected => "The AlterPartition request successfully updated the partition state but the leader has changed.",
            KafkaCode::OffsetMovedToTieredStorage => "The requested offset is moved to tiered storage.",
            KafkaCode::FencedMemberEpoch => "The member epoch is fenced by the group coordinator. The member must abandon all its partitions and rejoin.",
            KafkaCode::UnreleasedInstanceId => "The instance ID is still used by another member in the consumer group. That member must leave first.",
            KafkaCode::UnsupportedAssignor => "The assignor or its version range is not supported by the consumer group.",
            KafkaCode::StaleMemberEpoch => "The member epoch is stale. The member must retry after receiving its updated member epoch via the ConsumerGroupHeartbeat API.",
            KafkaCode::MismatchedEndpointType => "The request was sent to an endpoint of the wrong type.",
            KafkaCode::UnsupportedEndpointType => "This endpoint type is not supported yet.",
            KafkaCode::UnknownControllerId => "This controller ID is not known.",
            KafkaCode::UnknownSubscriptionId => "Client sent a push telemetry request with an invalid or outdated subscription ID.",
            KafkaCode::TelemetryTooLarge => "Client sent a push telemetry request larger than the maximum size the broker will accept.",
            KafkaCode::InvalidRegistration => "The controller has considered the broker registration to be invalid.",
            KafkaCode::TransactionAbortable => "The server encountered an error with the transaction. The client can abort the transaction to continue using this transactional ID.",
            KafkaCode::InvalidRecordState => "The record state is invalid. The acknowledgement of delivery could not be completed.",
            KafkaCode::ShareSessionNotFound => "The share session was not found.",
            KafkaCode::InvalidShareSessionEpoch => "The share session epoch is invalid.",
            KafkaCode::FencedStateEpoch => "The share coordinator rejected the request because the share-group state epoch did not match.",
            KafkaCode::InvalidVoterKey => "The voter key doesn't match the receiving replica's key.",
            KafkaCode::DuplicateVoter => "The voter is already part of the set of voters.",
            KafkaCode::VoterNotFound => "The voter is not part of the set of voters.",
            KafkaCode::InvalidRegularExpression => "The regular expression is not valid.",
            KafkaCode::RebootstrapRequired => "Client metadata is stale, client should rebootstrap to obtain new metadata.",
            KafkaCode::StreamsInvalidTopology => "The supplied topology is invalid.",
            KafkaCode::StreamsInvalidTopologyEpoch => "The supplied topology epoch is invalid.",
            KafkaCode::StreamsTopologyFenced => "The supplied topology epoch is outdated.",
            KafkaCode::ShareSessionLimitReached => "The limit of share sessions has been reached.",
            KafkaCode::Unknown(_) => "An error code this client does not know.",
        }
    }

    /// Whether Kafka marks it retriable: the same request may succeed later (a leader
    /// moved, a coordinator is loading, a timeout).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            KafkaCode::CorruptMessage
                | KafkaCode::UnknownTopicOrPartition
                | KafkaCode::LeaderNotAvailable
                | KafkaCode::NotLeaderOrFollower
                | KafkaCode::RequestTimedOut
                | KafkaCode::ReplicaNotAvailable
                | KafkaCode::NetworkException
                | KafkaCode::CoordinatorLoadInProgress
                | KafkaCode::CoordinatorNotAvailable
                | KafkaCode::NotCoordinator
                | KafkaCode::NotEnoughReplicas
                | KafkaCode::NotEnoughReplicasAfterAppend
                | KafkaCode::NotController
                | KafkaCode::KafkaStorageError
                | KafkaCode::FetchSessionIdNotFound
                | KafkaCode::InvalidFetchSessionEpoch
                | KafkaCode::ListenerNotFound
                | KafkaCode::FencedLeaderEpoch
                | KafkaCode::UnknownLeaderEpoch
                | KafkaCode::OffsetNotAvailable
                | KafkaCode::PreferredLeaderNotAvailable
                | KafkaCode::EligibleLeadersNotAvailable
                | KafkaCode::ElectionNotNeeded
                | KafkaCode::UnstableOffsetCommit
                | KafkaCode::ThrottlingQuotaExceeded
                | KafkaCode::UnknownTopicId
                | KafkaCode::InconsistentTopicId
                | KafkaCode::FetchSessionTopicIdError
                | KafkaCode::ShareSessionNotFound
                | KafkaCode::InvalidShareSessionEpoch
                | KafkaCode::ShareSessionLimitReached
        )
    }
}

impl std::fmt::Display for KafkaCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::KafkaCode;

    #[test]
    fn every_code_round_trips_and_matches_the_wire_table() {
        for code in -1..=140i16 {
            let Some(k) = KafkaCode::try_from_code(code) else {
                assert_eq!(code, 0);
                continue;
            };
            assert_eq!(k.code(), code);
            // The same table as the protocol crate's, which decodes the wire.
            let theirs = kafka_protocol::error::ResponseError::try_from_code(code);
            match theirs {
                Some(kafka_protocol::error::ResponseError::Unknown(_)) | None => {
                    assert_eq!(k, KafkaCode::Unknown(code))
                }
                Some(t) => {
                    assert_eq!(format!("{t:?}"), format!("{k:?}"));
                    assert_eq!(t.is_retriable(), k.is_retriable(), "{k:?}");
                }
            }
        }
        assert_eq!(KafkaCode::UnknownServerError.name(), "UNKNOWN_SERVER_ERROR");
        assert_eq!(KafkaCode::ProducerFenced.to_string(), "PRODUCER_FENCED");
        assert_eq!(KafkaCode::OffsetOutOfRange.name(), "OFFSET_OUT_OF_RANGE");
    }
}
