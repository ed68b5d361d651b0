//! `paperboy metadata`, `topics`, `groups` and `offsets`: what an operator reaches for
//! besides producing and consuming. Text for people, `--json` for scripts.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};
use paperboy::{Client, ConfigResource, NewTopic, OffsetSpec, TopicPartition};
use serde_json::{json, Value};

use crate::connect::{key_value, ConnArgs};

/// A line on stdout; a closed stdout (`| head`) is not an error for a listing.
macro_rules! outln {
    ($($arg:tt)*) => {
        emit(&format!($($arg)*))
    };
}

fn emit(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn err(e: paperboy::Error) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------
// metadata

/// Brokers, topics, partitions, leaders, replicas and in-sync replicas.
#[derive(Debug, Args)]
pub(crate) struct MetadataArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only this topic (repeatable; default every topic)
    #[arg(short = 't', long = "topic")]
    topics: Vec<String>,
    /// JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) async fn metadata(a: MetadataArgs) -> Result<(), String> {
    let client = a.conn.client().await?;
    let cluster = if a.topics.is_empty() {
        client.refresh_all_metadata().await.map_err(err)?
    } else {
        let names: Vec<&str> = a.topics.iter().map(String::as_str).collect();
        client.refresh_metadata(&names).await.map_err(err)?
    };
    let mut brokers: Vec<_> = cluster.brokers.values().collect();
    brokers.sort_by_key(|b| b.node_id);
    let mut topics: Vec<_> = cluster
        .topics
        .values()
        .filter(|t| a.topics.is_empty() || a.topics.contains(&t.name))
        .collect();
    topics.sort_by(|x, y| x.name.cmp(&y.name));
    for t in &a.topics {
        if !cluster.topics.contains_key(t) {
            return Err(format!("unknown topic {t}"));
        }
    }
    if a.json {
        print_json(&json!({
            "cluster_id": cluster.cluster_id,
            "controller": cluster.controller_id,
            "brokers": brokers.iter().map(|b| json!({
                "id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack,
            })).collect::<Vec<_>>(),
            "topics": topics.iter().map(|t| json!({
                "name": t.name,
                "id": t.id.to_string(),
                "internal": t.internal,
                "partitions": t.partitions.iter().map(|p| json!({
                    "partition": p.id,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "error": p.error.map(|e| e.name()),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
        client.close().await;
        return Ok(());
    }
    outln!(
        "Cluster {} ({} brokers, controller {}):",
        cluster.cluster_id.as_deref().unwrap_or("?"),
        brokers.len(),
        cluster.controller_id
    );
    for b in &brokers {
        let rack = b
            .rack
            .as_deref()
            .map(|r| format!(" rack {r}"))
            .unwrap_or_default();
        outln!("  broker {} at {}{rack}", b.node_id, b.addr());
    }
    outln!("{} topics:", topics.len());
    for t in &topics {
        let internal = if t.internal { " (internal)" } else { "" };
        outln!(
            "  topic \"{}\" with {} partitions{internal}:",
            t.name,
            t.partitions.len()
        );
        for p in &t.partitions {
            let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            let error = p.error.map(|e| format!(", error {e}")).unwrap_or_default();
            outln!(
                "    partition {}, leader {}, replicas: {}, isrs: {}{error}",
                p.id,
                p.leader,
                list(&p.replicas),
                list(&p.isr)
            );
        }
    }
    client.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------
// topics

#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
    /// Topic names, one per line
    List {
        #[command(flatten)]
        conn: ConnArgs,
        /// Internal topics too (__consumer_offsets, ...)
        #[arg(long)]
        internal: bool,
        /// JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// A topic's partitions and the configuration set on it
    Describe {
        #[command(flatten)]
        conn: ConnArgs,
        /// The topic
        topic: String,
        /// Every configuration entry, defaults included
        #[arg(long)]
        all_configs: bool,
        /// JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Create a topic
    Create {
        #[command(flatten)]
        conn: ConnArgs,
        /// The topic
        topic: String,
        /// Partitions
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor (-1: the broker's default.replication.factor)
        #[arg(long = "replication-factor", default_value_t = -1, allow_hyphen_values = true)]
        replication_factor: i16,
        /// A topic configuration (repeatable): retention.ms=86400000, cleanup.policy=compact
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// Delete topics
    Delete {
        #[command(flatten)]
        conn: ConnArgs,
        /// The topics
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Change a topic's configuration, or grow its partitions
    AlterConfig {
        #[command(flatten)]
        conn: ConnArgs,
        /// The topic
        topic: String,
        /// Set a configuration entry (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Remove a configuration entry: back to the default (repeatable)
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Grow the topic to N partitions
        #[arg(long, value_name = "N")]
        partitions: Option<i32>,
    },
}

pub(crate) async fn topics(c: TopicsCommand) -> Result<(), String> {
    match c {
        TopicsCommand::List {
            conn,
            internal,
            json,
        } => {
            let client = conn.client().await?;
            let cluster = client.refresh_all_metadata().await.map_err(err)?;
            let mut names: Vec<&str> = cluster
                .topics
                .values()
                .filter(|t| internal || !t.internal)
                .map(|t| t.name.as_str())
                .collect();
            names.sort_unstable();
            if json {
                print_json(&json!(names));
            } else {
                for n in names {
                    outln!("{n}");
                }
            }
            client.close().await;
        }
        TopicsCommand::Describe {
            conn,
            topic,
            all_configs,
            json,
        } => {
            let client = conn.client().await?;
            let cluster = client.refresh_metadata(&[&topic]).await.map_err(err)?;
            let t = cluster
                .topic(&topic)
                .ok_or_else(|| format!("unknown topic {topic}"))?;
            let configs: Vec<_> = client
                .describe_configs(&ConfigResource::Topic(topic.clone()))
                .await
                .map_err(err)?
                .into_iter()
                .filter(|e| all_configs || !e.is_default)
                .collect();
            if json {
                print_json(&json!({
                    "name": t.name,
                    "id": t.id.to_string(),
                    "partitions": t.partitions.iter().map(|p| json!({
                        "partition": p.id, "leader": p.leader, "replicas": p.replicas, "isr": p.isr,
                    })).collect::<Vec<_>>(),
                    "configs": configs.iter().map(|e| (e.name.clone(), json!(e.value))).collect::<serde_json::Map<_, _>>(),
                }));
            } else {
                outln!(
                    "topic {} ({} partitions, id {})",
                    t.name,
                    t.partitions.len(),
                    t.id
                );
                for p in &t.partitions {
                    outln!(
                        "  partition {}: leader {}, replicas {:?}, isr {:?}",
                        p.id,
                        p.leader,
                        p.replicas,
                        p.isr
                    );
                }
                for e in &configs {
                    outln!("  {}={}", e.name, e.value.as_deref().unwrap_or("(hidden)"));
                }
            }
            client.close().await;
        }
        TopicsCommand::Create {
            conn,
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let client = conn.client().await?;
            let mut t = NewTopic::new(&topic, partitions, replication_factor);
            for (k, v) in configs {
                t = t.with_config(k, v);
            }
            client.create_topics(&[t]).await.map_err(err)?;
            eprintln!("paperboy: created topic {topic} with {partitions} partitions");
            client.close().await;
        }
        TopicsCommand::Delete { conn, topics } => {
            let client = conn.client().await?;
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            client.delete_topics(&names).await.map_err(err)?;
            eprintln!("paperboy: deleted {}", topics.join(", "));
            client.close().await;
        }
        TopicsCommand::AlterConfig {
            conn,
            topic,
            set,
            delete,
            partitions,
        } => {
            if set.is_empty() && delete.is_empty() && partitions.is_none() {
                return Err("nothing to change: give --set, --delete or --partitions".into());
            }
            let client = conn.client().await?;
            let mut changes: Vec<(&str, Option<&str>)> = set
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .collect();
            changes.extend(delete.iter().map(|k| (k.as_str(), None)));
            if !changes.is_empty() {
                client
                    .alter_configs(&ConfigResource::Topic(topic.clone()), &changes)
                    .await
                    .map_err(err)?;
            }
            if let Some(n) = partitions {
                client.create_partitions(&topic, n).await.map_err(err)?;
            }
            client.close().await;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// groups

#[derive(Debug, Subcommand)]
pub(crate) enum GroupsCommand {
    /// Every group: id, state, type
    List {
        #[command(flatten)]
        conn: ConnArgs,
        /// JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// A group's members and assignments, and per partition its committed offset, the
    /// end offset and the lag
    Describe {
        #[command(flatten)]
        conn: ConnArgs,
        /// The group
        group: String,
        /// JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Set a group's committed offsets for a topic (the group must have no members)
    ResetOffsets {
        #[command(flatten)]
        conn: ConnArgs,
        /// The group
        group: String,
        /// The topic whose partitions are reset
        #[arg(short = 't', long)]
        topic: String,
        /// To the first offset still in the log
        #[arg(long = "to-earliest", group = "to")]
        to_earliest: bool,
        /// To the end
        #[arg(long = "to-latest", group = "to")]
        to_latest: bool,
        /// To this offset in every partition
        #[arg(long = "to-offset", value_name = "OFFSET", group = "to")]
        to_offset: Option<i64>,
        /// To the first record at or after this time (ms since the epoch)
        #[arg(long = "to-time", value_name = "MS", group = "to")]
        to_time: Option<i64>,
        /// Print what would be set, set nothing
        #[arg(long = "dry-run")]
        dry_run: bool,
    },
}

pub(crate) async fn groups(c: GroupsCommand) -> Result<(), String> {
    match c {
        GroupsCommand::List { conn, json } => {
            let client = conn.client().await?;
            let groups = client.list_groups().await.map_err(err)?;
            if json {
                print_json(&json!(groups
                    .iter()
                    .map(|g| json!({
                        "group": g.group_id, "state": g.state, "type": g.group_type,
                        "protocol_type": g.protocol_type,
                    }))
                    .collect::<Vec<_>>()));
            } else {
                for g in &groups {
                    outln!("{}\t{}\t{}", g.group_id, g.state, g.group_type);
                }
            }
            client.close().await;
        }
        GroupsCommand::Describe { conn, group, json } => {
            let client = conn.client().await?;
            describe_group(&client, &group, json).await?;
            client.close().await;
        }
        GroupsCommand::ResetOffsets {
            conn,
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_time,
            dry_run,
        } => {
            let spec = match (to_earliest, to_latest, to_offset, to_time) {
                (true, ..) => Some(OffsetSpec::Earliest),
                (_, true, ..) => Some(OffsetSpec::Latest),
                (_, _, Some(_), _) => None,
                (_, _, _, Some(ms)) => Some(OffsetSpec::Timestamp(ms)),
                _ => {
                    return Err(
                        "where to? give --to-earliest, --to-latest, --to-offset or --to-time"
                            .into(),
                    )
                }
            };
            let client = conn.client().await?;
            let cluster = client.refresh_metadata(&[&topic]).await.map_err(err)?;
            let t = cluster
                .topic(&topic)
                .ok_or_else(|| format!("unknown topic {topic}"))?;
            let mut offsets = Vec::new();
            for p in &t.partitions {
                let offset = match spec {
                    Some(spec) => {
                        let o = client.list_offset(&topic, p.id, spec).await.map_err(err)?;
                        if o < 0 {
                            // No record at or after that time: the end.
                            client
                                .list_offset(&topic, p.id, OffsetSpec::Latest)
                                .await
                                .map_err(err)?
                        } else {
                            o
                        }
                    }
                    None => to_offset.unwrap_or(0),
                };
                offsets.push((TopicPartition::new(&topic, p.id), offset));
            }
            for (tp, o) in &offsets {
                outln!("{}\t{}\t{o}", tp.topic, tp.partition);
            }
            if !dry_run {
                client
                    .alter_group_offsets(&group, &offsets)
                    .await
                    .map_err(|e| {
                        format!("{e} (a group's offsets can be reset only while it has no members)")
                    })?;
            }
            client.close().await;
        }
    }
    Ok(())
}

async fn describe_group(client: &Client, group: &str, json: bool) -> Result<(), String> {
    let d = client.describe_group(group).await.map_err(err)?;
    let committed = client.group_offsets(group).await.map_err(err)?;
    let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for m in &d.members {
        for tp in &m.assignment {
            owner.insert(tp.clone(), m.member_id.clone());
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let mut rows = Vec::new();
    for tp in &partitions {
        let end = client
            .list_offset(&tp.topic, tp.partition, OffsetSpec::Latest)
            .await
            .map_err(err)?;
        let offset = committed.get(tp).copied();
        let lag = offset.map(|o| (end - o).max(0));
        rows.push((tp, offset, end, lag, owner.get(tp)));
    }
    if json {
        print_json(&json!({
            "group": d.group_id,
            "state": d.state,
            "type": d.group_type,
            "assignor": d.assignor,
            "members": d.members.iter().map(|m| json!({
                "member_id": m.member_id,
                "instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "host": m.host,
                "assignment": m.assignment.iter().map(|tp| json!({"topic": tp.topic, "partition": tp.partition})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "offsets": rows.iter().map(|(tp, offset, end, lag, member)| json!({
                "topic": tp.topic, "partition": tp.partition, "committed": offset,
                "end": end, "lag": lag, "member": member,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    outln!(
        "group {} ({}, {} protocol, assignor {}, {} members)",
        d.group_id,
        d.state,
        if d.group_type.is_empty() {
            "?"
        } else {
            &d.group_type
        },
        if d.assignor.is_empty() {
            "-"
        } else {
            &d.assignor
        },
        d.members.len()
    );
    for m in &d.members {
        outln!(
            "  member {} client {} host {}: {}",
            m.member_id,
            m.client_id,
            m.host,
            m.assignment
                .iter()
                .map(|tp| tp.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    outln!("  TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG");
    for (tp, offset, end, lag, _) in &rows {
        let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
        outln!(
            "  {}\t{}\t{}\t{end}\t{}",
            tp.topic,
            tp.partition,
            show(*offset),
            show(*lag)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// offsets

/// Offsets of a topic's partitions: the earliest, the latest, or the first at or after a
/// time.
#[derive(Debug, Args)]
pub(crate) struct OffsetsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The topic
    #[arg(short = 't', long)]
    topic: String,
    /// Only partition N (repeatable; default every partition)
    #[arg(short = 'p', long = "partition", value_name = "N")]
    partitions: Vec<i32>,
    /// earliest, latest, or a time in ms since the epoch
    #[arg(long, default_value = "latest")]
    time: String,
    /// JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) async fn offsets(a: OffsetsArgs) -> Result<(), String> {
    let spec = match a.time.as_str() {
        "earliest" | "beginning" => OffsetSpec::Earliest,
        "latest" | "end" => OffsetSpec::Latest,
        t => OffsetSpec::Timestamp(
            t.parse()
                .map_err(|_| format!("--time {t}: earliest, latest or ms since the epoch"))?,
        ),
    };
    let client = a.conn.client().await?;
    let cluster = client.refresh_metadata(&[&a.topic]).await.map_err(err)?;
    let t = cluster
        .topic(&a.topic)
        .ok_or_else(|| format!("unknown topic {}", a.topic))?;
    let ids: Vec<i32> = if a.partitions.is_empty() {
        t.partitions.iter().map(|p| p.id).collect()
    } else {
        for p in &a.partitions {
            if t.partition(*p).is_none() {
                return Err(format!("topic {} has no partition {p}", a.topic));
            }
        }
        a.partitions.clone()
    };
    let mut rows = Vec::new();
    for p in ids {
        let o = client.list_offset(&a.topic, p, spec).await.map_err(err)?;
        rows.push((p, o));
    }
    if a.json {
        print_json(&json!(rows
            .iter()
            .map(|(p, o)| json!({"topic": a.topic, "partition": p, "offset": o}))
            .collect::<Vec<_>>()));
    } else {
        for (p, o) in rows {
            outln!("{}\t{p}\t{o}", a.topic);
        }
    }
    client.close().await;
    Ok(())
}
