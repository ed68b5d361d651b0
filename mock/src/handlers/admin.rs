//! CreateTopics and DeleteTopics.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::{sb, Ctx};

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
