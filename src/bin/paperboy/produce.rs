//! `paperboy produce`: stdin lines (or generated records) to a topic; with
//! `transactional.id`, in transactions.

use std::io::{BufRead, Write};
use std::time::Instant;

use bytes::Bytes;
use paperboy::phq::envelope;
use paperboy::producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

pub(crate) struct ProduceArgs {
    bootstrap: Option<String>,
    topic: Option<String>,
    key_separator: Option<String>,
    partition: Option<i32>,
    envelope: Option<String>,
    count: Option<u64>,
    size: usize,
    properties: Vec<(String, String)>,
    quiet: bool,
}

/// `Ok(None)` for `--help`.
pub(crate) fn parse(args: &[String]) -> Result<Option<ProduceArgs>, String> {
    let mut a = ProduceArgs {
        bootstrap: None,
        topic: None,
        key_separator: None,
        partition: None,
        envelope: None,
        count: None,
        size: 100,
        properties: Vec::new(),
        quiet: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-b" | "--bootstrap" => a.bootstrap = Some(value(flag)?),
            "-t" | "--topic" => a.topic = Some(value(flag)?),
            "-K" | "--key-separator" => a.key_separator = Some(value(flag)?),
            "-z" | "--compression" => a.properties.push(("compression.type".into(), value(flag)?)),
            "--acks" => a.properties.push(("acks".into(), value(flag)?)),
            "--partition" => {
                let v = value(flag)?;
                a.partition = Some(
                    v.parse()
                        .map_err(|_| format!("--partition {v}: not a number"))?,
                );
            }
            "--envelope" => a.envelope = Some(value(flag)?),
            "--count" => {
                let v = value(flag)?;
                a.count = Some(
                    v.parse()
                        .map_err(|_| format!("--count {v}: not a number"))?,
                );
            }
            "--size" => {
                let v = value(flag)?;
                a.size = v.parse().map_err(|_| format!("--size {v}: not a number"))?;
            }
            "-X" | "--property" => {
                let v = value(flag)?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("-X {v}: expected KEY=VALUE"))?;
                a.properties.push((k.to_owned(), val.to_owned()));
            }
            "-q" | "--quiet" => a.quiet = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Some(a))
}

struct Tally {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

pub(crate) async fn run(a: ProduceArgs) -> Result<(), String> {
    let bootstrap = a.bootstrap.ok_or("--bootstrap is required")?;
    let topic = a.topic.ok_or("--topic is required")?;
    let mut cfg = ProducerConfig::new(&bootstrap);
    for (k, v) in &a.properties {
        cfg.set(k, v).map_err(|e| e.to_string())?;
    }
    let producer = Producer::new(cfg).await.map_err(|e| e.to_string())?;

    // Deliveries are awaited in order by a second task, so sending never waits on them.
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
    let dt = envelope::now_dt();
    let record_for = |key: Option<Bytes>, value: Bytes| {
        let mut r = ProducerRecord::new(&topic);
        r.key = key;
        r.value = Some(value);
        r.partition = a.partition;
        r
    };
    if let Some(n) = a.count {
        let value = Bytes::from(
            (0..a.size)
                .map(|i| b'a' + (i % 26) as u8)
                .collect::<Vec<u8>>(),
        );
        for i in 0..n {
            let record = record_for(Some(Bytes::from(i.to_string())), value.clone());
            match producer.enqueue(record).await {
                Ok(d) => {
                    sent += 1;
                    bytes += value.len() as u64;
                    let _ = tx.send(d).await;
                }
                Err(e) => {
                    local_error = Some(e.to_string());
                    break;
                }
            }
        }
    } else {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        let mut n = 0u64;
        loop {
            // Reading stdin blocks; a line at a time is fine next to the network work.
            let line = match tokio::task::block_in_place(|| lines.next()) {
                None => break,
                Some(Ok(l)) => l,
                Some(Err(e)) => {
                    local_error = Some(format!("reading stdin: {e}"));
                    break;
                }
            };
            let (key, value) = match &a.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                    None => (None, line.clone()),
                },
                None => (None, line.clone()),
            };
            let (key, value) = match &a.envelope {
                None => (key.map(Bytes::from), Bytes::from(value)),
                Some(svc) => {
                    // From the line's text, as Python's json.loads/json.dumps would:
                    // every number kept (integers of any size, floats to the bit).
                    let packed = match envelope::pack_json(svc, &dt, &value, &[]) {
                        Ok(p) => p,
                        Err(e) => {
                            let e = match e {
                                paperboy::Error::Json(m) => m,
                                other => other.to_string(),
                            };
                            local_error = Some(format!("line {}: {e}", n + 1));
                            break;
                        }
                    };
                    let id = key.unwrap_or_else(|| generated_id(svc, n));
                    (Some(Bytes::from(id)), Bytes::from(packed))
                }
            };
            n += 1;
            let len = value.len() as u64;
            match producer.enqueue(record_for(key, value)).await {
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

fn generated_id(svc: &str, n: u64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{svc}-{ms}-{n}")
}
