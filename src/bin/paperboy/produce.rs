//! `paperboy produce`: stdin lines (or generated records) to a topic; with
//! `transactional.id`, in transactions.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use paperboy::envelope;
use paperboy::producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use clap::Args;

use crate::connect::ConnArgs;
use crate::signal::StopSignal;

/// Sends each line of stdin as one record (or --count generated records), waits for
/// every acknowledgement, and prints a summary. Exits non-zero if any record failed.
///
/// With -X transactional.id=ID the input is written in transactions (read_committed
/// consumers see only committed ones): each commits after --transaction-records records
/// or --transaction-ms after its first, and at the end of the input; a failure or
/// SIGINT/SIGTERM aborts the open one (exit non-zero), those committed before stay.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to write to
    #[arg(short = 't', long)]
    topic: String,
    /// Split each line at the first SEP into key and value
    #[arg(short = 'K', long = "key-separator", value_name = "SEP")]
    key_separator: Option<String>,
    /// none, gzip, snappy, lz4 or zstd (default snappy)
    #[arg(short = 'z', long, value_name = "CODEC")]
    compression: Option<String>,
    /// 0, 1 or all (default all)
    #[arg(long)]
    acks: Option<String>,
    /// Write every record to partition N
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    /// Wrap each line (a JSON value) in the PHQ envelope of SERVICE, keyed by the line's
    /// key or a generated id; written as Python's json.dumps writes it
    #[arg(long, value_name = "SERVICE")]
    envelope: Option<String>,
    /// Send N generated records instead of reading stdin
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Size of each generated value
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    size: usize,
    /// Records per transaction at most (with transactional.id)
    #[arg(long = "transaction-records", value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    transaction_records: u64,
    /// A transaction commits this long after its first record at the latest
    #[arg(long = "transaction-ms", value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    transaction_ms: u64,
    /// No summary
    #[arg(short, long)]
    quiet: bool,
}

struct Tally {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

/// One record of the input: `(key, value)`.
type Input = (Option<Bytes>, Bytes);

/// The input, read on a thread of its own (reading stdin blocks): generated records
/// (`--count`) or stdin's lines, split at `--key-separator`, packed in the envelope of
/// `--envelope`. An `Err` ends it: what is wrong with the input.
fn spawn_input(a: &ProduceArgs) -> mpsc::Receiver<Result<Input, String>> {
    let (tx, rx) = mpsc::channel(1024);
    let (count, size) = (a.count, a.size);
    let key_separator = a.key_separator.clone();
    let service = a.envelope.clone();
    std::thread::spawn(move || {
        if let Some(n) = count {
            let value = Bytes::from(
                (0..size)
                    .map(|i| b'a' + (i % 26) as u8)
                    .collect::<Vec<u8>>(),
            );
            for i in 0..n {
                let record = (Some(Bytes::from(i.to_string())), value.clone());
                if tx.blocking_send(Ok(record)).is_err() {
                    return;
                }
            }
            return;
        }
        let dt = envelope::now_dt();
        let stdin = std::io::stdin();
        for (n, line) in stdin.lock().lines().enumerate() {
            let record = line
                .map_err(|e| format!("reading stdin: {e}"))
                .and_then(|line| {
                    parse_line(
                        &line,
                        n as u64,
                        key_separator.as_deref(),
                        service.as_deref(),
                        &dt,
                    )
                });
            let failed = record.is_err();
            if tx.blocking_send(record).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// One line of input as a record: split at the key separator, packed in the envelope.
fn parse_line(
    line: &str,
    n: u64,
    key_separator: Option<&str>,
    service: Option<&str>,
    dt: &str,
) -> Result<Input, String> {
    let (key, value) = match key_separator.and_then(|sep| line.split_once(sep)) {
        Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
        None => (None, line.to_owned()),
    };
    let Some(svc) = service else {
        return Ok((key.map(Bytes::from), Bytes::from(value)));
    };
    // From the line's text, as Python's json.loads/json.dumps would: every number kept
    // (integers of any size, floats to the bit).
    let packed = envelope::pack_json(svc, dt, &value, &[]).map_err(|e| {
        let e = match e {
            paperboy::Error::Json(m) => m,
            other => other.to_string(),
        };
        format!("line {}: {e}", n + 1)
    })?;
    let id = key.unwrap_or_else(|| generated_id(svc, n));
    Ok((Some(Bytes::from(id)), Bytes::from(packed)))
}

pub(crate) async fn run(a: ProduceArgs) -> Result<(), String> {
    let topic = a.topic.clone();
    let mut cfg = ProducerConfig::default();
    for (k, v) in a.conn.properties()? {
        cfg.set(&k, &v).map_err(|e| e.to_string())?;
    }
    if let Some(c) = &a.compression {
        cfg.set("compression.type", c).map_err(|e| e.to_string())?;
    }
    if let Some(acks) = &a.acks {
        cfg.set("acks", acks).map_err(|e| e.to_string())?;
    }
    let transactional = cfg.transactional_id().is_some();
    // Before connecting, so a signal during a slow start is a clean stop too.
    let stop = if transactional {
        Some(StopSignal::install()?)
    } else {
        None
    };
    let producer = Producer::new(cfg).await.map_err(|e| e.to_string())?;
    let input = spawn_input(&a);
    let record_for = |(key, value): Input| {
        let mut r = ProducerRecord::new(&topic);
        r.key = key;
        r.value = Some(value);
        r.partition = a.partition;
        r
    };
    match stop {
        Some(stop) => in_transactions(&a, &producer, input, record_for, &stop).await,
        None => plain(&a, &producer, input, record_for).await,
    }
}

/// Sends every record, with a second task awaiting the deliveries in order (so sending
/// never waits on them).
async fn plain(
    a: &ProduceArgs,
    producer: &Producer,
    mut input: mpsc::Receiver<Result<Input, String>>,
    record_for: impl Fn(Input) -> ProducerRecord,
) -> Result<(), String> {
    let (tx, mut rx) = mpsc::channel::<DeliveryFuture>(100_000);
    let waiter = tokio::spawn(async move {
        let mut t = Tally {
            delivered: 0,
            failed: 0,
            first_error: None,
        };
        while let Some(d) = rx.recv().await {
            match d.await {
                Ok(_) => t.delivered += 1,
                Err(e) => {
                    t.failed += 1;
                    t.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        t
    });

    let start = Instant::now();
    let mut bytes = 0u64;
    let mut sent = 0u64;
    let mut local_error = None;
    while let Some(next) = input.recv().await {
        let record = match next {
            Ok(r) => r,
            Err(e) => {
                local_error = Some(e);
                break;
            }
        };
        let len = record.1.len() as u64;
        match producer.enqueue(record_for(record)).await {
            Ok(d) => {
                sent += 1;
                bytes += len;
                let _ = tx.send(d).await;
            }
            Err(e) => {
                local_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    producer.flush().await;
    let tally = waiter.await.map_err(|e| e.to_string())?;
    producer.close().await;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    if !a.quiet {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "paperboy produce: {} records delivered, {} failed, {} value bytes, {:.1}s, {:.0} records/s, {:.2} MB/s",
            tally.delivered,
            tally.failed,
            bytes,
            secs,
            tally.delivered as f64 / secs,
            bytes as f64 / secs / 1e6
        );
    }
    if let Some(e) = local_error {
        return Err(format!("stopped after {sent} records: {e}"));
    }
    if tally.failed > 0 {
        return Err(format!(
            "{} of {sent} records failed; first error: {}",
            tally.failed,
            tally.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// With `transactional.id`: the input in transactions of at most
/// `--transaction-records` records, each committed within `--transaction-ms` of its
/// first record and at the end of the input. A failure (a record, a commit, bad input)
/// or a signal aborts the open transaction: read_committed consumers never see any of
/// it. Transactions committed before stay.
async fn in_transactions(
    a: &ProduceArgs,
    producer: &Producer,
    mut input: mpsc::Receiver<Result<Input, String>>,
    record_for: impl Fn(Input) -> ProducerRecord,
    stop: &StopSignal,
) -> Result<(), String> {
    let start = Instant::now();
    let (mut committed, mut transactions, mut bytes) = (0u64, 0u64, 0u64);
    let (mut open, mut open_bytes) = (0u64, 0u64);
    let mut due: Option<tokio::time::Instant> = None;
    let summary = |committed: u64, transactions: u64, bytes: u64| {
        if !a.quiet {
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "paperboy produce: {committed} records committed in {transactions} transactions, {bytes} value bytes, {secs:.1}s, {:.0} records/s",
                committed as f64 / secs
            );
        }
    };
    let result: Result<(), String> = loop {
        enum Next {
            Record(Input),
            Commit,
            End,
            Failed(String),
            Signal,
        }
        let next = tokio::select! {
            biased;
            _ = stop.wait() => Next::Signal,
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => Next::Commit,
            r = input.recv() => match r {
                Some(Ok(record)) => Next::Record(record),
                Some(Err(e)) => Next::Failed(e),
                None => Next::End,
            },
        };
        let commit = match next {
            Next::Record(record) => {
                if due.is_none() {
                    if let Err(e) = producer.begin_transaction() {
                        break Err(e.to_string());
                    }
                    due =
                        Some(tokio::time::Instant::now() + Duration::from_millis(a.transaction_ms));
                }
                let len = record.1.len() as u64;
                match producer.enqueue(record_for(record)).await {
                    // Its outcome counts in the commit, which fails if it failed.
                    Ok(delivery) => drop(delivery),
                    Err(e) => break Err(e.to_string()),
                }
                open += 1;
                open_bytes += len;
                open >= a.transaction_records
            }
            Next::Commit => true,
            Next::End => {
                if due.is_some() {
                    if let Err(e) = producer.commit_transaction().await {
                        break Err(format!("committing the last transaction: {e}"));
                    }
                    committed += open;
                    bytes += open_bytes;
                    transactions += 1;
                    open = 0;
                }
                break Ok(());
            }
            Next::Failed(e) => break Err(e),
            Next::Signal => break Err("stopped by signal".to_owned()),
        };
        if commit && due.is_some() {
            if let Err(e) = producer.commit_transaction().await {
                break Err(format!("committing a transaction: {e}"));
            }
            committed += std::mem::take(&mut open);
            bytes += std::mem::take(&mut open_bytes);
            transactions += 1;
            due = None;
        }
    };
    let result = match result {
        Ok(()) => Ok(()),
        Err(e) => {
            // What the open transaction holds is aborted.
            let aborted = if open > 0 || due.is_some() {
                match producer.abort_transaction().await {
                    Ok(()) => format!("; the open transaction ({open} records) was aborted"),
                    Err(abort) => {
                        format!("; aborting the open transaction ({open} records) failed: {abort}")
                    }
                }
            } else {
                String::new()
            };
            Err(format!(
                "{e}{aborted}; {committed} records were committed before"
            ))
        }
    };
    producer.close().await;
    summary(committed, transactions, bytes);
    result
}

fn generated_id(svc: &str, n: u64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{svc}-{ms}-{n}")
}
