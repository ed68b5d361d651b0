//! ApiVersions and Metadata (with topic auto-creation).

use std::collections::BTreeMap;

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{encode, sb, Ctx};
use crate::state::{valid_topic_name, State};

fn api_keys(served: &[(ApiKey, i16, i16)]) -> Vec<ApiVersion> {
    served
        .iter()
        .map(|&(k, min, max)| {
            ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub(crate) async fn api_versions(ctx: &mut Ctx, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    let error_code = ctx.faults.request_error().unwrap_or(0);
    let served = ctx.shared.lock().served_all();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys(&served))
}

/// The v0 answer to an ApiVersions request of a version above ours (KIP-511).
pub(crate) fn api_versions_unsupported(served: &[(ApiKey, i16, i16)]) -> BytesMut {
    let resp = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys(served));
    encode(&resp, 0).expect("a v0 ApiVersions response encodes")
}

pub(crate) async fn metadata(ctx: &mut Ctx, req: MetadataRequest) -> MetadataResponse {
    let v = ctx.version;
    let mut st = ctx.shared.lock();
    // Before v4 every request may create topics; from v4 the request says.
    let may_create = st.auto_create_topics && (v < 4 || req.allow_auto_topic_creation);
    let brokers = st
        .nodes
        .iter()
        .filter(|n| n.up)
        .map(|n| {
            MetadataResponseBroker::default()
                .with_node_id(n.id.into())
                .with_host(sb(&n.host))
                .with_port(i32::from(n.port))
                .with_rack(if v >= 1 {
                    n.rack.as_deref().map(sb)
                } else {
                    None
                })
        })
        .collect();
    let controller = st.nodes.iter().find(|n| n.up).map_or(-1, |n| n.id);

    // Which topics: all of them (null, or empty before v1), or the ones named.
    let all = req.topics.is_none() || (v == 0 && req.topics.as_ref().is_some_and(|t| t.is_empty()));
    let wanted: Vec<(Option<String>, Uuid)> = if all {
        st.topics
            .keys()
            .map(|n| (Some(n.clone()), Uuid::nil()))
            .collect()
    } else {
        req.topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.name.map(|n| n.as_str().to_owned()), t.topic_id))
            .collect()
    };
    let mut topics = Vec::new();
    for (name, id) in wanted {
        let name = match name {
            Some(n) => Some(n),
            None => st.topic_name_by_id(id),
        };
        let Some(name) = name else {
            topics.push(
                MetadataResponseTopic::default()
                    .with_topic_id(id)
                    .with_error_code(ResponseError::UnknownTopicId.code()),
            );
            continue;
        };
        if let Some(code) = ctx.faults.partition_error(&name, None) {
            topics.push(
                MetadataResponseTopic::default()
                    .with_name(Some(sb(&name).into()))
                    .with_error_code(code),
            );
            continue;
        }
        if !st.topics.contains_key(&name) && may_create && valid_topic_name(&name) {
            let partitions = st.default_partitions;
            let _ = st.create_topic(&name, partitions, -1, BTreeMap::new());
        }
        topics.push(describe_topic(&st, &name, v));
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(sb(&st.cluster_id)))
        .with_controller_id(controller.into())
        .with_topics(topics)
}

fn describe_topic(st: &State, name: &str, v: i16) -> MetadataResponseTopic {
    let Some(t) = st.topics.get(name) else {
        let code = if valid_topic_name(name) {
            ResponseError::UnknownTopicOrPartition
        } else {
            ResponseError::InvalidTopicException
        };
        return MetadataResponseTopic::default()
            .with_name(Some(sb(name).into()))
            .with_error_code(code.code());
    };
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let leader_up = st.is_up(p.leader);
            let isr: Vec<_> = p
                .replicas
                .iter()
                .filter(|r| st.is_up(**r))
                .map(|r| (*r).into())
                .collect();
            let offline: Vec<_> = p
                .replicas
                .iter()
                .filter(|r| !st.is_up(**r))
                .map(|r| (*r).into())
                .collect();
            let mut mp = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_id(if leader_up { p.leader } else { -1 }.into())
                .with_replica_nodes(p.replicas.iter().map(|r| (*r).into()).collect())
                .with_isr_nodes(isr)
                .with_error_code(if leader_up {
                    0
                } else {
                    ResponseError::LeaderNotAvailable.code()
                });
            if v >= 7 {
                mp = mp.with_leader_epoch(p.leader_epoch);
            }
            if v >= 5 {
                mp = mp.with_offline_replicas(offline);
            }
            mp
        })
        .collect();
    let mut topic = MetadataResponseTopic::default()
        .with_name(Some(sb(name).into()))
        .with_partitions(partitions);
    if v >= 10 {
        topic = topic.with_topic_id(t.id);
    }
    topic
}
