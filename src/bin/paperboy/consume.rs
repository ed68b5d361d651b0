//! `paperboy consume`: records as JSON lines on stdout, from a group or assigned
//! partitions.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig, ConsumerRecord, TopicPartition};
use paperboy::envelope;
use paperboy::OffsetSpec;

use clap::Args;

use crate::connect::ConnArgs;
use crate::signal::StopSignal;

/// Where manually assigned partitions start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartOffset {
    Beginning,
    End,
    /// This offset.
    At(i64),
    /// This many records before the end (kcat's `-o -N`).
    BeforeEnd(i64),
}

fn parse_offset(v: &str) -> Result<StartOffset, String> {
    match v {
        "beginning" => Ok(StartOffset::Beginning),
        "end" => Ok(StartOffset::End),
        _ => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(StartOffset::At(n)),
            Ok(n) => Ok(StartOffset::BeforeEnd(n.checked_neg().unwrap_or(i64::MAX))),
            Err(_) => Err(format!("{v}: expected a number, -N, beginning or end")),
        },
    }
}

/// Prints each record as one JSON object per line on stdout:
///   {"topic":"t","partition":0,"offset":5,"timestamp":1700000000000,"key":"k","value":"v"}
/// timestamp is in ms since the epoch; a missing key or value (tombstone) is null. A key
/// or value that is not UTF-8 is written as "key_hex" / "value_hex" (lowercase hex of the
/// bytes) instead, so nothing is lost. With --group, joins the consumer group and commits
/// after printing each batch (what was printed, nothing more). Otherwise assigns
/// partitions by hand and commits nothing: the --partition(s) given, or every partition
/// of the topic. Runs until --count records, the end with -e, stdout closing, or
/// SIGINT/SIGTERM (a clean stop: exit 0; a second signal exits at once). Prints a
/// summary on stderr. Exits non-zero on errors.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to read
    #[arg(short = 't', long)]
    topic: String,
    /// Consume as a member of GROUP (not with --partition/--offset); -X group.id=G too
    #[arg(short = 'G', long, conflicts_with_all = ["partitions", "offset"])]
    group: Option<String>,
    /// Read partition N (repeatable; default every partition)
    #[arg(short = 'p', long = "partition", value_name = "N",
          value_parser = clap::value_parser!(i32).range(0..))]
    partitions: Vec<i32>,
    /// Start at OFFSET in every partition read: a number, -N (N before the end),
    /// beginning or end
    #[arg(short = 'o', long, allow_hyphen_values = true, value_parser = parse_offset)]
    offset: Option<StartOffset>,
    /// With no committed offset (or out of range), start at the beginning
    /// (auto.offset.reset=earliest; default: the end)
    #[arg(long = "from-beginning")]
    from_beginning: bool,
    /// Exit after N records
    #[arg(short = 'c', long, value_name = "N")]
    count: Option<u64>,
    /// Exit once every assigned partition is read to its end (the high watermark of the
    /// latest fetch)
    #[arg(short = 'e', long = "exit-at-end")]
    exit_at_end: bool,
    /// Unpack PHQ envelopes: "value" is the envelope's item, "hist" its hist; a value
    /// that is not an envelope is printed as is, with "envelope_error" saying why
    #[arg(long)]
    envelope: bool,
    /// No summary
    #[arg(short, long)]
    quiet: bool,
}

impl ConsumeArgs {
    /// `-X group.id=G` is `--group G`; the rest of the properties, bootstrap included.
    fn resolve(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut props = Vec::new();
        for (k, v) in self.conn.properties()? {
            if k == "group.id" {
                self.group = Some(v);
            } else {
                props.push((k, v));
            }
        }
        if self.group.is_some() && (!self.partitions.is_empty() || self.offset.is_some()) {
            return Err(
                "--group cannot be combined with --partition or --offset: the group assigns \
                 partitions and starts them at the committed offsets"
                    .to_owned(),
            );
        }
        self.partitions.sort_unstable();
        self.partitions.dedup();
        Ok(props)
    }
}

/// Why consuming stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    Count,
    End,
    Signal,
    /// Stdout was closed (e.g. `| head`).
    OutputClosed,
}

impl Stopped {
    fn describe(self) -> &'static str {
        match self {
            Stopped::Count => "--count reached",
            Stopped::End => "end of every partition reached",
            Stopped::Signal => "stopped by signal",
            Stopped::OutputClosed => "stdout closed",
        }
    }
}

/// Most records handed out (and printed, and committed) at once.
const MAX_BATCH: usize = 5000;
/// Longest wait for a batch to fill before printing what came.
const BATCH_WAIT: Duration = Duration::from_millis(100);

#[derive(Default)]
struct ConsumeTally {
    records: u64,
    bytes: u64,
    not_envelopes: u64,
}

pub(crate) async fn run(mut a: ConsumeArgs) -> Result<(), String> {
    let properties = a.resolve()?;
    let topic = a.topic.clone();
    let mut cfg = ConsumerConfig::default();
    // Commits are explicit, after printing; -X may still turn auto-commit on.
    cfg.set("enable.auto.commit", "false")
        .map_err(|e| e.to_string())?;
    for (k, v) in &properties {
        cfg.set(k, v).map_err(|e| e.to_string())?;
    }
    if let Some(g) = &a.group {
        cfg.set("group.id", g).map_err(|e| e.to_string())?;
    }
    if a.from_beginning {
        cfg.set("auto.offset.reset", "earliest")
            .map_err(|e| e.to_string())?;
    }
    // Before connecting, so a signal during a slow start is a clean stop too.
    let stop = StopSignal::install()?;
    let start = Instant::now();
    let consumer = tokio::select! {
        biased;
        _ = stop.wait() => return Ok(()),
        c = Consumer::new(cfg) => c.map_err(|e| e.to_string())?,
    };
    let mut tally = ConsumeTally::default();
    let result = consume_loop(&consumer, &a, &topic, &stop, &mut tally).await;
    consumer.close().await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    if !a.quiet {
        let how = match &result {
            Ok(s) => s.describe(),
            Err(_) => "stopped by an error",
        };
        let envelopes = if a.envelope && tally.not_envelopes > 0 {
            format!(", {} not PHQ envelopes", tally.not_envelopes)
        } else {
            String::new()
        };
        eprintln!(
            "paperboy consume: {} records, {} key+value bytes, {:.1}s, {:.0} records/s, {:.2} MB/s{envelopes} ({how})",
            tally.records,
            tally.bytes,
            secs,
            tally.records as f64 / secs,
            tally.bytes as f64 / secs / 1e6,
        );
    }
    result.map(|_| ())
}

/// Checks the topic and partitions, then subscribes, or assigns and seeks.
async fn start_consuming(consumer: &Consumer, a: &ConsumeArgs, topic: &str) -> Result<(), String> {
    let client = consumer.client();
    let cluster = client
        .refresh_metadata(&[topic])
        .await
        .map_err(|e| format!("metadata of topic {topic}: {e}"))?;
    let known = cluster
        .topic(topic)
        .ok_or_else(|| format!("unknown topic {topic}"))?;
    if a.group.is_some() {
        consumer.subscribe(&[topic]).map_err(|e| e.to_string())?;
    } else {
        let ids: Vec<i32> = if a.partitions.is_empty() {
            known.partitions.iter().map(|p| p.id).collect()
        } else {
            for p in &a.partitions {
                if known.partition(*p).is_none() {
                    return Err(format!(
                        "topic {topic} has no partition {p} (it has {})",
                        known.partitions.len()
                    ));
                }
            }
            a.partitions.clone()
        };
        let tps: Vec<TopicPartition> = ids.iter().map(|p| TopicPartition::new(topic, *p)).collect();
        // Every start offset first, then all seeks at once: the fetcher's first fetch
        // then asks for every partition, rather than long-polling the first one seeked
        // while the others wait (up to fetch.max.wait.ms).
        let mut starts = Vec::new();
        if let Some(start) = a.offset {
            for tp in &tps {
                starts.push((tp, start_offset(consumer, tp, start).await?));
            }
        }
        consumer.assign(&tps).map_err(|e| e.to_string())?;
        for (tp, offset) in starts {
            consumer.seek(tp, offset).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The output is written to stdout in chunks of about this many bytes.
const OUT_CHUNK: usize = 256 << 10;

async fn consume_loop(
    consumer: &Consumer,
    a: &ConsumeArgs,
    topic: &str,
    stop: &StopSignal,
    tally: &mut ConsumeTally,
) -> Result<Stopped, String> {
    tokio::select! {
        biased;
        _ = stop.wait() => return Ok(Stopped::Signal),
        r = start_consuming(consumer, a, topic) => r?,
    }
    let in_group = a.group.is_some();

    // Printed but not yet committed (group only): per partition, the last record printed.
    let mut pending: BTreeMap<TopicPartition, ConsumerRecord> = BTreeMap::new();
    let mut out = Vec::with_capacity(OUT_CHUNK);
    let stdout = std::io::stdout();
    let stopped = loop {
        if a.count.is_some_and(|n| tally.records >= n) {
            break Stopped::Count;
        }
        if stop.is_set() {
            break Stopped::Signal;
        }
        let want = a.count.map_or(MAX_BATCH, |n| {
            (n - tally.records).min(MAX_BATCH as u64) as usize
        });
        // Records handed out by a batch call that a signal cancels were not printed, so
        // they are not committed either.
        let batch = tokio::select! {
            biased;
            _ = stop.wait() => break Stopped::Signal,
            b = consumer.recv_batch(want, BATCH_WAIT) => b,
        };
        let batch = match batch {
            Ok(b) => b,
            // A partition that cannot be fetched: the others go on, unless the run is to
            // read everything to the end (-e), which it then cannot.
            Err(e @ paperboy::Error::FetchFailed { .. }) if !a.exit_at_end => {
                eprintln!("paperboy: {e}");
                continue;
            }
            Err(e) => {
                if in_group {
                    commit_pending(consumer, &mut pending).await;
                }
                return Err(format!("consuming {topic}: {e}"));
            }
        };
        if !batch.is_empty() {
            out.clear();
            let (mut bytes, mut not_envelopes) = (0u64, 0u64);
            // Streamed: the lines go out whenever OUT_CHUNK bytes are ready, so the
            // output buffer holds about one chunk and one record, not a whole batch.
            let mut lock = stdout.lock();
            let mut written = Ok(());
            for (i, r) in batch.iter().enumerate() {
                bytes += (r.key.as_ref().map_or(0, Bytes::len)
                    + r.value.as_ref().map_or(0, Bytes::len)) as u64;
                if !write_json_line(&mut out, r, a.envelope) {
                    not_envelopes += 1;
                }
                if out.len() >= OUT_CHUNK || i + 1 == batch.len() {
                    written = lock.write_all(&out).map(|()| {
                        out.clear();
                        if out.capacity() > 2 * OUT_CHUNK {
                            out.shrink_to(OUT_CHUNK);
                        }
                    });
                    if written.is_err() {
                        break;
                    }
                }
            }
            match written.and_then(|()| lock.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    // Part of the batch may have gone out; none of it is committed.
                    break Stopped::OutputClosed;
                }
                Err(e) => return Err(format!("writing to stdout: {e}")),
            }
            drop(lock);
            // Counted once printed: a batch cut short by a closed stdout is not.
            tally.records += batch.len() as u64;
            tally.bytes += bytes;
            tally.not_envelopes += not_envelopes;
            if in_group {
                for r in batch {
                    pending.insert(r.topic_partition(), r);
                }
                commit_pending(consumer, &mut pending).await;
            }
        }
        if a.exit_at_end && at_end(consumer) {
            break Stopped::End;
        }
    };
    if in_group && !pending.is_empty() {
        // A commit failed earlier (e.g. during a rebalance): one more try, and an error
        // if what was printed could not be committed.
        commit_pending(consumer, &mut pending).await;
        if !pending.is_empty() {
            let parts: Vec<String> = pending.keys().map(ToString::to_string).collect();
            return Err(format!(
                "printed records of {} whose offsets could not be committed",
                parts.join(", ")
            ));
        }
    }
    Ok(stopped)
}

/// Commits what `pending` holds; keeps it on failure (to try again after the next
/// batch), drops partitions no longer assigned (another member owns them now).
async fn commit_pending(
    consumer: &Consumer,
    pending: &mut BTreeMap<TopicPartition, ConsumerRecord>,
) {
    if pending.is_empty() {
        return;
    }
    let assigned = consumer.assignment();
    pending.retain(|tp, r| {
        let keep = assigned.contains(tp);
        if !keep {
            eprintln!(
                "paperboy: {tp} was revoked before offset {} was committed; its new owner may print records again",
                r.offset + 1
            );
        }
        keep
    });
    let last: Vec<ConsumerRecord> = pending.values().cloned().collect();
    match consumer.commit_records(&last).await {
        Ok(()) => pending.clear(),
        Err(e) => eprintln!("paperboy: commit failed (will retry): {e}"),
    }
}

async fn start_offset(
    consumer: &Consumer,
    tp: &TopicPartition,
    start: StartOffset,
) -> Result<i64, String> {
    let list = |spec| async move {
        consumer
            .client()
            .list_offset(&tp.topic, tp.partition, spec)
            .await
            .map_err(|e| format!("offsets of {tp}: {e}"))
    };
    Ok(match start {
        StartOffset::At(n) => n,
        StartOffset::Beginning => list(OffsetSpec::Earliest).await?,
        StartOffset::End => list(OffsetSpec::Latest).await?,
        StartOffset::BeforeEnd(n) => {
            let end = list(OffsetSpec::Latest).await?;
            let first = list(OffsetSpec::Earliest).await?;
            end.saturating_sub(n).max(first)
        }
    })
}

/// Whether every assigned partition has been read to the high watermark of its latest
/// fetch (never before the first fetch of each, nor with nothing assigned).
fn at_end(consumer: &Consumer) -> bool {
    let assigned = consumer.assignment();
    if assigned.is_empty() {
        return false;
    }
    let lag = consumer.lag();
    assigned.iter().all(|tp| lag.get(tp) == Some(&0))
}

/// Appends one record as a JSON line. Returns false when `--envelope` was asked for and
/// the value is not a PHQ envelope (it is then printed as is, with `envelope_error`).
fn write_json_line(out: &mut Vec<u8>, r: &ConsumerRecord, unpack: bool) -> bool {
    let mut is_envelope = true;
    out.extend_from_slice(b"{\"topic\":");
    json_string(out, &r.topic);
    let _ = write!(
        out,
        ",\"partition\":{},\"offset\":{},\"timestamp\":{}",
        r.partition, r.offset, r.timestamp_ms
    );
    bytes_field(out, "key", r.key.as_deref());
    match (unpack, r.value.as_deref()) {
        (true, Some(v)) => match envelope::unpack_json(v) {
            Ok(Some(u)) => {
                // JSON text with every number as written in the envelope.
                out.extend_from_slice(b",\"value\":");
                out.extend_from_slice(u.item.as_bytes());
                out.extend_from_slice(b",\"hist\":");
                out.extend_from_slice(u.hist.as_bytes());
                if u.hist_truncated {
                    out.extend_from_slice(b",\"hist_truncated\":true");
                }
            }
            other => {
                is_envelope = false;
                let why = match other {
                    Err(e) => e.to_string(),
                    _ => "empty value: no PHQ message".to_owned(),
                };
                bytes_field(out, "value", Some(v));
                out.extend_from_slice(b",\"envelope_error\":");
                json_string(out, &why);
            }
        },
        (_, v) => bytes_field(out, "value", v),
    }
    out.extend_from_slice(b"}\n");
    is_envelope
}

/// `"name":"text"` for UTF-8, `"name_hex":"..."` for other bytes, `"name":null` for none.
fn bytes_field(out: &mut Vec<u8>, name: &str, bytes: Option<&[u8]>) {
    out.push(b',');
    match bytes.map(std::str::from_utf8) {
        None => {
            json_string(out, name);
            out.extend_from_slice(b":null");
        }
        Some(Ok(s)) => {
            json_string(out, name);
            out.push(b':');
            json_string(out, s);
        }
        Some(Err(_)) => {
            json_string(out, &format!("{name}_hex"));
            out.extend_from_slice(b":\"");
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in bytes.unwrap_or_default() {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            out.push(b'"');
        }
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a string serializes into a Vec");
}
