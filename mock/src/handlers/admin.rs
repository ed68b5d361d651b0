//! CreateTopics, DeleteTopics, CreatePartitions and DescribeConfigs.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::{sb, Ctx};
use crate::state::{State, DEFAULT_MAX_MESSAGE_BYTES};

pub(crate) async fn create_topics(ctx: &mut Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let v = ctx.version;
    let mut st = ctx.shared.lock();
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.as_str().to_owned();
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                Some((
                    c.name.as_str().to_owned(),
                    c.value.as_ref()?.as_str().to_owned(),
                ))
            })
            .collect();
        let result = match ctx.faults.partition_error(&name, None) {
            Some(code) => Err(code),
            None if !t.assignments.is_empty() => Err(ResponseError::InvalidRequest.code()),
            None if req.validate_only => {
                if st.topics.contains_key(&name) {
                    Err(ResponseError::TopicAlreadyExists.code())
                } else {
                    Ok(())
                }
            }
            None => st.create_topic(&name, t.num_partitions, t.replication_factor, configs),
        };
        let mut r = CreatableTopicResult::default().with_name(t.name);
        match result {
            Ok(()) => {
                if v >= 5 {
                    if let Some(topic) = st.topics.get(&name) {
                        r = r
                            .with_num_partitions(topic.partitions.len() as i32)
                            .with_replication_factor(topic.replication);
                    } else {
                        r = r.with_num_partitions(-1).with_replication_factor(-1);
                    }
                    r = r.with_configs(Some(Vec::new()));
                }
                if v >= 7 {
                    if let Some(topic) = st.topics.get(&name) {
                        r = r.with_topic_id(topic.id);
                    }
                }
            }
            Err(code) => {
                r = r.with_error_code(code);
                if v >= 5 {
                    r = r.with_num_partitions(-1).with_replication_factor(-1);
                }
            }
        }
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(crate) async fn delete_topics(ctx: &mut Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let v = ctx.version;
    let mut st = ctx.shared.lock();
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if v >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.as_str().to_owned()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.as_str().to_owned()), uuid::Uuid::nil()))
            .collect()
    };
    let mut results = Vec::new();
    for (name, id) in wanted {
        let resolved = name.clone().or_else(|| st.topic_name_by_id(id));
        let mut r =
            DeletableTopicResult::default().with_name(name.as_deref().map(|n| sb(n).into()));
        if v >= 6 {
            r = r.with_topic_id(id);
        }
        let code = match &resolved {
            None => Some(ResponseError::UnknownTopicId.code()),
            Some(n) => ctx.faults.partition_error(n, None).or_else(|| {
                st.topics
                    .remove(n)
                    .is_none()
                    .then_some(ResponseError::UnknownTopicOrPartition.code())
            }),
        };
        if let Some(code) = code {
            r = r.with_error_code(code);
        }
        results.push(r);
    }
    DeleteTopicsResponse::default().with_responses(results)
}

pub(crate) async fn create_partitions(
    ctx: &mut Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut st = ctx.shared.lock();
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.as_str().to_owned();
            let result = match ctx.faults.partition_error(&name, None) {
                Some(code) => Err(code),
                None if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) => {
                    Err(ResponseError::InvalidRequest.code())
                }
                None => st.add_partitions(&name, t.count, req.validate_only),
            };
            CreatePartitionsTopicResult::default()
                .with_name(t.name)
                .with_error_code(result.err().unwrap_or(0))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// Config resource types (KIP-133).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Config types.
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;

/// The topic configs described, with their defaults and types.
fn topic_defaults(st: &State) -> Vec<(&'static str, String, i8)> {
    vec![
        ("cleanup.policy", "delete".to_owned(), TYPE_STRING),
        ("compression.type", "producer".to_owned(), TYPE_STRING),
        (
            "max.message.bytes",
            DEFAULT_MAX_MESSAGE_BYTES.to_string(),
            TYPE_INT,
        ),
        (
            "message.timestamp.type",
            "CreateTime".to_owned(),
            TYPE_STRING,
        ),
        ("min.insync.replicas", "1".to_owned(), TYPE_INT),
        (
            "retention.bytes",
            st.retention_bytes
                .map_or("-1".to_owned(), |b| b.to_string()),
            TYPE_LONG,
        ),
        (
            "retention.ms",
            st.retention_ms.map_or("-1".to_owned(), |ms| ms.to_string()),
            TYPE_LONG,
        ),
    ]
}

fn config_entry(
    v: i16,
    name: &str,
    value: &str,
    source: i8,
    config_type: i8,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default()
        .with_name(sb(name))
        .with_value(Some(sb(value)))
        .with_config_source(source);
    if v >= 3 {
        c = c.with_config_type(config_type);
    }
    c
}

pub(crate) async fn describe_configs(
    ctx: &mut Ctx,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let v = ctx.version;
    let st = ctx.shared.lock();
    let fault = ctx.faults.request_error();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let wanted = |k: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
            };
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if let Some(code) = fault {
                return out.with_error_code(code);
            }
            let configs: Vec<DescribeConfigsResourceResult> = match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(t) = st.topics.get(name) else {
                        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let mut entries: Vec<_> = topic_defaults(&st)
                        .into_iter()
                        .map(|(k, default, ty)| match t.configs.get(k) {
                            Some(set) => config_entry(v, k, set, SOURCE_TOPIC, ty),
                            None => config_entry(v, k, &default, SOURCE_DEFAULT, ty),
                        })
                        .collect();
                    for (k, val) in &t.configs {
                        if !entries.iter().any(|e| e.name.as_str() == k) {
                            entries.push(config_entry(v, k, val, SOURCE_TOPIC, TYPE_STRING));
                        }
                    }
                    entries.retain(|e| wanted(e.name.as_str()));
                    entries
                }
                RESOURCE_BROKER => {
                    if name
                        .parse::<i32>()
                        .ok()
                        .and_then(|id| st.node(id))
                        .is_none()
                    {
                        return out.with_error_code(ResponseError::InvalidRequest.code());
                    }
                    [
                        (
                            "auto.create.topics.enable",
                            st.auto_create_topics.to_string(),
                            TYPE_BOOLEAN,
                        ),
                        (
                            "num.partitions",
                            st.default_partitions.to_string(),
                            TYPE_INT,
                        ),
                        (
                            "default.replication.factor",
                            st.nodes.len().min(3).to_string(),
                            TYPE_INT,
                        ),
                        (
                            "message.max.bytes",
                            DEFAULT_MAX_MESSAGE_BYTES.to_string(),
                            TYPE_INT,
                        ),
                    ]
                    .into_iter()
                    .filter(|(k, _, _)| wanted(k))
                    .map(|(k, val, ty)| config_entry(v, k, &val, SOURCE_STATIC_BROKER, ty))
                    .collect()
                }
                _ => return out.with_error_code(ResponseError::InvalidRequest.code()),
            };
            out.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
