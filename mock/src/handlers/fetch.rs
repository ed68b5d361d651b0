//! Fetch: `max.wait.ms` and `min.bytes` (a waiting fetch wakes on every append),
//! per-partition and total byte limits, at least one batch for the first partition with
//! data (KIP-74).
//!
//! Fetch sessions (KIP-227) are refused, as a broker may: every response carries session
//! id 0, so clients send full fetch requests; a request naming a session gets
//! FETCH_SESSION_ID_NOT_FOUND.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::{sb, Ctx};

pub(crate) async fn fetch(ctx: &mut Ctx, req: FetchRequest) -> FetchResponse {
    if req.session_id != 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let deadline = Instant::now() + wait;
    let mut appended = ctx.shared.appended.subscribe();
    loop {
        appended.borrow_and_update();
        let (resp, bytes, errors) = build(ctx, &req);
        if bytes >= req.min_bytes.max(0) as usize || errors || Instant::now() >= deadline {
            return resp;
        }
        if tokio::time::timeout_at(deadline, appended.changed())
            .await
            .is_err()
        {
            // Time is up: answer with what there is now.
            return build(ctx, &req).0;
        }
    }
}

/// The response as the log stands; with the record bytes it holds and whether any
/// partition has an error.
fn build(ctx: &mut Ctx, req: &FetchRequest) -> (FetchResponse, usize, bool) {
    let v = ctx.version;
    let st = ctx.shared.lock();
    let max_total = if v >= 3 && req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::new();
    for ft in &req.topics {
        let name = if v >= 13 {
            st.topic_name_by_id(ft.topic_id)
        } else {
            Some(ft.topic.as_str().to_owned())
        };
        let mut parts = Vec::new();
        for fp in &ft.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let p = name.as_deref().and_then(|n| st.partition(n, fp.partition));
            let error = match (&name, p) {
                (None, _) => Some(ResponseError::UnknownTopicId.code()),
                (Some(n), p) => match ctx.faults.partition_error(n, Some(fp.partition)) {
                    Some(code) => Some(code),
                    None => match p {
                        None => Some(ResponseError::UnknownTopicOrPartition.code()),
                        Some(p) if p.leader != ctx.node => {
                            Some(ResponseError::NotLeaderOrFollower.code())
                        }
                        Some(p) if fp.current_leader_epoch > p.leader_epoch => {
                            Some(ResponseError::UnknownLeaderEpoch.code())
                        }
                        Some(p)
                            if fp.current_leader_epoch >= 0
                                && fp.current_leader_epoch < p.leader_epoch =>
                        {
                            Some(ResponseError::FencedLeaderEpoch.code())
                        }
                        Some(p)
                            if fp.fetch_offset < p.log.log_start()
                                || fp.fetch_offset > p.log.log_end() =>
                        {
                            Some(ResponseError::OffsetOutOfRange.code())
                        }
                        Some(_) => None,
                    },
                },
            };
            if let Some(code) = error {
                errors = true;
                pd = pd.with_error_code(code);
                if let Some(p) = p {
                    pd = pd
                        .with_high_watermark(p.log.log_end())
                        .with_last_stable_offset(p.log.log_end());
                    if v >= 5 {
                        pd = pd.with_log_start_offset(p.log.log_start());
                    }
                }
                parts.push(pd);
                continue;
            }
            let p = p.expect("checked above");
            let room = max_total.saturating_sub(total);
            let limit = (fp.partition_max_bytes.max(0) as usize).min(room);
            let batches = p.log.read(fp.fetch_offset, limit, total == 0);
            let mut records = BytesMut::new();
            for b in &batches {
                records.extend_from_slice(b);
            }
            total += records.len();
            pd = pd
                .with_high_watermark(p.log.log_end())
                .with_last_stable_offset(p.log.log_end())
                .with_records(Some(Bytes::from(records)));
            if v >= 5 {
                pd = pd.with_log_start_offset(p.log.log_start());
            }
            parts.push(pd);
        }
        let mut tr = FetchableTopicResponse::default().with_partitions(parts);
        if v >= 13 {
            tr = tr.with_topic_id(ft.topic_id);
        } else {
            tr = tr.with_topic(sb(ft.topic.as_str()).into());
        }
        topics.push(tr);
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        errors,
    )
}
