//! Request handlers, one file per API family, and the dispatch from API key to handler.

pub(crate) mod admin;
pub(crate) mod fetch;
pub(crate) mod group;
pub(crate) mod metadata;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod txn;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::faults::RequestFaults;
use crate::state::Shared;

/// What a handler knows about the request it serves.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    /// The node the request arrived at.
    pub node: i32,
    pub version: i16,
    pub client_id: String,
    pub client_host: String,
    pub faults: RequestFaults,
}

/// Why a request could not be served (the connection is then closed).
#[derive(Debug)]
pub(crate) struct HandlerError(pub String);

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn decode<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, HandlerError> {
    T::decode(&mut body, version).map_err(|e| HandlerError(format!("cannot decode: {e}")))
}

pub(crate) fn encode<T: Encodable>(body: &T, version: i16) -> Result<BytesMut, HandlerError> {
    let mut out = BytesMut::new();
    body.encode(&mut out, version)
        .map_err(|e| HandlerError(format!("cannot encode the response: {e}")))?;
    Ok(out)
}

/// A `StrBytes` of a string.
pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// Decodes the request body for `api`, serves it, and encodes the response body.
/// `Ok(None)`: no response (Produce with acks=0).
pub(crate) async fn dispatch(
    ctx: &mut Ctx,
    api: ApiKey,
    body: Bytes,
) -> Result<Option<BytesMut>, HandlerError> {
    let v = ctx.version;
    macro_rules! serve {
        ($req:ty, $handler:path) => {{
            let req: $req = decode(body, v)?;
            let resp = $handler(ctx, req).await;
            encode(&resp, v).map(Some)
        }};
    }
    match api {
        ApiKey::ApiVersions => serve!(ApiVersionsRequest, metadata::api_versions),
        ApiKey::Metadata => serve!(MetadataRequest, metadata::metadata),
        ApiKey::CreateTopics => serve!(CreateTopicsRequest, admin::create_topics),
        ApiKey::DeleteTopics => serve!(DeleteTopicsRequest, admin::delete_topics),
        ApiKey::CreatePartitions => serve!(CreatePartitionsRequest, admin::create_partitions),
        ApiKey::DescribeConfigs => serve!(DescribeConfigsRequest, admin::describe_configs),
        ApiKey::InitProducerId => serve!(InitProducerIdRequest, produce::init_producer_id),
        ApiKey::Produce => {
            let req: ProduceRequest = decode(body, v)?;
            match produce::produce(ctx, req).await {
                Some(resp) => encode(&resp, v).map(Some),
                None => Ok(None),
            }
        }
        ApiKey::Fetch => serve!(FetchRequest, fetch::fetch),
        ApiKey::ListOffsets => serve!(ListOffsetsRequest, offsets::list_offsets),
        ApiKey::OffsetForLeaderEpoch => {
            serve!(
                OffsetForLeaderEpochRequest,
                offsets::offset_for_leader_epoch
            )
        }
        ApiKey::FindCoordinator => serve!(FindCoordinatorRequest, group::find_coordinator),
        ApiKey::JoinGroup => serve!(JoinGroupRequest, group::join_group),
        ApiKey::SyncGroup => serve!(SyncGroupRequest, group::sync_group),
        ApiKey::Heartbeat => serve!(HeartbeatRequest, group::heartbeat),
        ApiKey::LeaveGroup => serve!(LeaveGroupRequest, group::leave_group),
        ApiKey::OffsetCommit => serve!(OffsetCommitRequest, offsets::offset_commit),
        ApiKey::OffsetFetch => serve!(OffsetFetchRequest, offsets::offset_fetch),
        ApiKey::ListGroups => serve!(ListGroupsRequest, group::list_groups),
        ApiKey::DescribeGroups => serve!(DescribeGroupsRequest, group::describe_groups),
        ApiKey::AddPartitionsToTxn => {
            serve!(AddPartitionsToTxnRequest, txn::add_partitions_to_txn)
        }
        ApiKey::AddOffsetsToTxn => serve!(AddOffsetsToTxnRequest, txn::add_offsets_to_txn),
        ApiKey::EndTxn => serve!(EndTxnRequest, txn::end_txn),
        ApiKey::TxnOffsetCommit => serve!(TxnOffsetCommitRequest, txn::txn_offset_commit),
        other => Err(HandlerError(format!("{other:?} is not served"))),
    }
}
