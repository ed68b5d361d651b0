//! Positions as the Python library's log lines write them: a ref
//! ([`format_kafka_ref`]) and a batch ([`format_batch_ref`]).

use serde_json::Value;

/// A ref as the Python library's log lines write it: `"{topic}:{partition}:{offset}:{key}"`
/// (a missing or null field as `None`).
///
/// ```
/// use paperboy::envelope::format_kafka_ref;
/// use serde_json::json;
///
/// let r = json!({"topic": "events", "partition": 2, "offset": 41, "key": "e-7", "hist": null});
/// assert_eq!(format_kafka_ref(&r), "events:2:41:e-7");
/// ```
pub fn format_kafka_ref(r: &Value) -> String {
    let field = |k: &str| match r.get(k) {
        None | Some(Value::Null) => "None".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".to_owned(),
        Some(Value::Bool(false)) => "False".to_owned(),
        Some(v) => v.to_string(),
    };
    format!(
        "{}:{}:{}:{}",
        field("topic"),
        field("partition"),
        field("offset"),
        field("key")
    )
}

/// A batch as the Python library's log lines write it:
/// `topic[p=first:last+1,p2=first:last+1],topic2[...]`, from the `(topic, partition,
/// offset)` of each record of the batch. Topics and partitions come in the order they
/// first appear.
///
/// ```
/// use paperboy::envelope::format_batch_ref;
///
/// let positions = [("a", 0, 5), ("a", 1, 9), ("a", 0, 7), ("b", 3, 0)];
/// assert_eq!(format_batch_ref(positions), "a[0=5:8,1=9:10],b[3=0:1]");
/// ```
pub fn format_batch_ref<S: AsRef<str>>(
    positions: impl IntoIterator<Item = (S, i32, i64)>,
) -> String {
    // (topic, [(partition, first, last)]); consecutive records mostly share a partition,
    // so the last one touched is tried first.
    type Partitions = Vec<(i32, i64, i64)>;
    let mut topics: Vec<(String, Partitions)> = Vec::new();
    let mut last: Option<(usize, usize)> = None;
    for (topic, partition, offset) in positions {
        let topic = topic.as_ref();
        let hit = last.filter(|&(t, p)| topics[t].0 == topic && topics[t].1[p].0 == partition);
        let (t, p) = match hit {
            Some(tp) => tp,
            None => {
                let t = match topics.iter().position(|(name, _)| name == topic) {
                    Some(t) => t,
                    None => {
                        topics.push((topic.to_owned(), Vec::new()));
                        topics.len() - 1
                    }
                };
                let parts = &mut topics[t].1;
                let p = match parts.iter().position(|&(q, ..)| q == partition) {
                    Some(p) => p,
                    None => {
                        parts.push((partition, offset, offset));
                        parts.len() - 1
                    }
                };
                (t, p)
            }
        };
        let range = &mut topics[t].1[p];
        range.1 = range.1.min(offset);
        range.2 = range.2.max(offset);
        last = Some((t, p));
    }
    let mut out = String::new();
    for (i, (topic, parts)) in topics.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(topic);
        out.push('[');
        for (j, (partition, first, last)) in parts.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&format!("{partition}={first}:{}", last + 1));
        }
        out.push(']');
    }
    out
}

/// `topic[partition=first:last+1,...]` of a batch of consumed records, for log lines and
/// errors (the PHQ consumer's and the engine's): [`format_batch_ref`] of their positions.
pub(crate) fn batch_ref(records: &[crate::consumer::ConsumerRecord]) -> String {
    format_batch_ref(records.iter().map(|r| (&*r.topic, r.partition, r.offset)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_format_as_the_python_log_lines() {
        let r = json!({"topic": "events", "partition": 2, "offset": 41, "key": "e-7", "hist": {"svc": "x"}});
        assert_eq!(format_kafka_ref(&r), "events:2:41:e-7");
        assert_eq!(format_kafka_ref(&json!({"topic": "t"})), "t:None:None:None");
        assert_eq!(format_batch_ref(Vec::<(&str, i32, i64)>::new()), "");
        let positions = [
            ("t", 0, 10),
            ("t", 0, 11),
            ("u", 2, 7),
            ("t", 1, 3),
            ("t", 0, 12),
            ("u", 2, 5),
            ("t", 1, 4),
        ];
        assert_eq!(format_batch_ref(positions), "t[0=10:13,1=3:5],u[2=5:8]");
    }
}
