//! What both clients are given: the payload, the settings, and what a worker reports.

use std::future::Future;
use std::ops::Range;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use serde::{Deserialize, Serialize};

/// Bytes of text that payloads are cut from: words and numbers, about as compressible by
/// snappy as JSON events (roughly 2:1), identical for both clients.
pub const POOL_LEN: usize = 1 << 20;

pub fn pool() -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "event", "user", "order", "total", "amount", "status", "created", "updated", "paperboy",
        "kafka", "region", "price", "item", "quantity", "session", "device", "true", "false",
        "null", "id", "name", "value", "score", "tags",
    ];
    let mut out = Vec::with_capacity(POOL_LEN + 64);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < POOL_LEN {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if r.is_multiple_of(3) {
            let digits = (r >> 8).to_string();
            out.extend_from_slice(&digits.as_bytes()[..((r >> 4) % 6 + 2) as usize]);
        } else {
            out.extend_from_slice(WORDS[(r >> 16) as usize % WORDS.len()].as_bytes());
        }
        out.push(if r.is_multiple_of(7) { b'"' } else { b' ' });
    }
    out.truncate(POOL_LEN);
    out
}

/// Where record `i`'s value of `size` bytes lies in the pool.
pub fn value_range(i: u64, size: usize) -> Range<usize> {
    let span = (POOL_LEN - size) as u64;
    let off = (i.wrapping_mul(2_654_435_761) % span) as usize;
    off..off + size
}

/// Producer settings given to both clients (all names are valid for both).
pub fn producer_props() -> Vec<(&'static str, String)> {
    let linger = std::env::var("COMPARE_LINGER_MS").unwrap_or_else(|_| "5".into());
    let props = vec![
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("compression.codec", "snappy"),
        ("linger.ms", linger.as_str()),
        ("batch.size", "1000000"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "100000"),
        ("queue.buffering.max.kbytes", "65536"),
        ("max.in.flight.requests.per.connection", "5"),
        ("message.timeout.ms", "120000"),
    ];
    props.into_iter().map(|(k, v)| (k, v.to_owned())).collect()
}

/// Consumer settings given to both clients, besides the group id and any budget.
pub fn consumer_props() -> Vec<(&'static str, &'static str)> {
    vec![("auto.offset.reset", "earliest")]
}

/// What one worker process measured itself (CPU and peak RSS come from the parent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerOut {
    /// Records produced and acknowledged, or consumed.
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Seconds the measured part took.
    pub elapsed_s: f64,
    /// Consumers: seconds from creating the consumer to the first record (group join
    /// and first fetch); not part of `elapsed_s`.
    pub first_record_s: Option<f64>,
    /// Latency scenario: microseconds from send to acknowledgement, p50/p99/p99.9.
    pub latency_us: Option<[u64; 3]>,
    /// Records that failed.
    pub errors: u64,
    /// The worker's own VmHWM (peak resident set) at exit, KiB.
    pub vm_hwm_kib: u64,
}

/// Percentiles p (0..1) of sorted samples.
pub fn percentiles(samples: &mut [u64]) -> [u64; 3] {
    samples.sort_unstable();
    let at = |p: f64| -> u64 {
        if samples.is_empty() {
            return 0;
        }
        let idx = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[idx]
    };
    [at(0.50), at(0.99), at(0.999)]
}

/// The peak resident set of this process so far, KiB (VmHWM of /proc/self/status).
pub fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Paces sends at `rate` per second: how many should have been sent `elapsed` after
/// the start.
pub fn due(rate: u64, elapsed: Duration, total: u64) -> u64 {
    ((elapsed.as_secs_f64() * rate as f64) as u64 + 1).min(total)
}

/// Client properties given with `-X KEY=VALUE` (or a properties file): passed to both
/// clients and to the admin, after the benchmark's own settings (so they override them).
pub type Properties = Vec<(String, String)>;

/// Parses `KEY=VALUE`.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE".to_owned())?;
    let k = k.trim();
    if k.is_empty() {
        return Err("expected KEY=VALUE, the key is empty".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Reads a properties file: one `KEY=VALUE` a line, blank lines and `#` comments skipped.
pub fn read_properties(path: &std::path::Path) -> Result<Properties, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The line itself is not echoed: it may hold a secret.
        out.push(parse_property(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?);
    }
    Ok(out)
}

/// Whether a property's value is a secret (never printed).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "oauthbearer.config",
        "token",
        "key.pem",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The value as it may be shown.
pub fn shown(key: &str, value: &str) -> String {
    if is_secret(key) {
        "[redacted]".into()
    } else {
        value.to_owned()
    }
}

/// `text` with the value of every secret property replaced (for error messages that
/// might echo one).
pub fn scrub(text: &str, props: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (k, v) in props {
        if is_secret(k) && !v.is_empty() {
            out = out.replace(v.as_str(), "[redacted]");
        }
    }
    out
}

/// The label of rows measured with these properties: `SASL_SSL SCRAM-SHA-512` from
/// security.protocol and sasl.mechanism(s); none when neither is given.
pub fn label(props: &[(String, String)]) -> Option<String> {
    let last = |keys: &[&str]| {
        props
            .iter()
            .rev()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .map(|(_, v)| v.trim().to_owned())
    };
    let protocol = last(&["security.protocol"]).map(|p| p.to_ascii_uppercase());
    let mechanism = last(&["sasl.mechanism", "sasl.mechanisms"]).map(|m| m.to_ascii_uppercase());
    match (protocol, mechanism) {
        (Some(p), Some(m)) if p.starts_with("SASL") => Some(format!("{p} {m}")),
        (Some(p), _) => Some(p),
        (None, m) => m,
    }
}

/// A record sent in the latency scenario: its index, when it was sent, and its delivery.
pub type Sent<F> = (u64, Instant, F);

/// The latency scenario's collector: awaits the deliveries of the async clients as they
/// complete, all in one task (as rdkafka's delivery callback runs on one thread), not a
/// task per record, whose spawning and waking cost more than the client did. Returns the
/// microseconds from send to acknowledgement of records from index `warm` on, and the
/// counts of records acknowledged and failed.
pub async fn collect_latencies<F, T, E>(
    mut rx: mpsc::UnboundedReceiver<Sent<F>>,
    warm: u64,
) -> (Vec<u64>, u64, u64)
where
    F: Future<Output = Result<T, E>>,
{
    let mut pending = FuturesUnordered::new();
    let (mut samples, mut ok, mut errors) = (Vec::new(), 0u64, 0u64);
    let mut open = true;
    loop {
        tokio::select! {
            sent = rx.recv(), if open => match sent {
                Some((i, t, delivery)) => pending.push(async move {
                    let r = delivery.await;
                    (i, r.is_ok().then(|| t.elapsed().as_micros() as u64))
                }),
                None => open = false,
            },
            Some((i, us)) = pending.next(), if !pending.is_empty() => match us {
                Some(us) => {
                    ok += 1;
                    if i >= warm {
                        samples.push(us);
                    }
                }
                None => errors += 1,
            },
            else => break,
        }
    }
    (samples, ok, errors)
}
