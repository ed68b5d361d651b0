//! Medians, the table on stdout and the JSON file.

use std::time::Duration;

use serde_json::{json, Value};

use crate::workload;
use crate::{kf, Case, ClientKind, Measured, RunArgs, Scenario};

pub struct Report {
    cases: Vec<Case>,
    args: Value,
    /// What the rows were measured over (e.g. "SASL_SSL SCRAM-SHA-512"), if labelled.
    label: Option<String>,
    notes: Vec<String>,
    total: Duration,
}

/// Which way is better for a metric.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

struct Row {
    metric: &'static str,
    better: Better,
    /// Whether Paperboy ÷ the others means anything for this row.
    ratios: bool,
    paperboy: f64,
    rdkafka: f64,
    krafka: f64,
}

/// Paperboy's figure over another client's, and whether Paperboy is behind by it.
fn ratio(paperboy: f64, other: f64, better: Better) -> (f64, bool) {
    let r = paperboy / other;
    let behind = match better {
        Better::Higher => r < 1.0,
        Better::Lower => r > 1.0,
    };
    (r, behind)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn med(runs: &[Measured], f: impl Fn(&Measured) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

fn rate(m: &Measured) -> f64 {
    m.out.records as f64 / m.out.elapsed_s.max(1e-9)
}
fn mbps(m: &Measured) -> f64 {
    m.out.bytes as f64 / m.out.elapsed_s.max(1e-9) / 1e6
}
fn cpu_per_m(m: &Measured) -> f64 {
    m.cpu_s / (m.out.records.max(1) as f64) * 1e6
}
fn rss_mib(m: &Measured) -> f64 {
    m.out.vm_hwm_kib as f64 / 1024.0
}
fn lat_ms(i: usize) -> impl Fn(&Measured) -> f64 {
    move |m| {
        m.out
            .latency_us
            .map(|l| l[i] as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    }
}

impl Report {
    pub fn new(run: &RunArgs, cases: Vec<Case>, total: Duration) -> Report {
        let mut props = String::new();
        for (k, v) in workload::producer_props() {
            props.push_str(&format!("{k}={v} "));
        }
        let mut notes = vec![
            format!(
                "Producer settings, identical for every client: {}(records unkeyed: sticky partitioning in all three).",
                props
            ),
            format!("krafka takes no properties: the settings are mapped onto its builders (acks, idempotent, compression, linger, batch_size, buffer_memory = queue.buffering.max.kbytes, delivery_timeout = message.timeout.ms). It has no equivalent of {}; those are left at krafka's behaviour.", kf::NOT_MATCHED),
            "Consumer settings: group.id new per run, auto.offset.reset=earliest, everything else each client's default (auto commit on in all three; classic group protocol in all three).".into(),
            "Paperboy: Producer::enqueue with deliveries awaited by a second task; Consumer::recv_batch(1000, 100 ms); tokio multi-thread runtime. rdkafka: BaseProducer + delivery callback, polled by the sending thread, which sleeps 1 ms when the queue is full (ThreadedProducer for latency); BaseConsumer::poll. krafka: as Paperboy, Producer::enqueue with its DeliveryHandles awaited by a second task; Consumer::poll(100 ms) with max_poll_records=1000 (its default is 500), fetching inside poll (prefetch bounded by max_buffered_records, default 500 records); tokio multi-thread runtime.".into(),
            "Consume rate is measured from the first record to the last (the group join is the 'first record after' row). Produce rate includes creating the producer.".into(),
            "Latency: send call to acknowledgement callback/future, at a fixed rate, after 1 s of warm-up; linger.ms=5 is part of it.".into(),
            "CPU: user+system seconds of the whole client process (wait4 rusage), per million records. Peak RSS: the child's VmHWM (ru_maxrss is in the JSON too).".into(),
            "Memory scenario: the handler stalls after the first record so the prefetch fills to what the settings allow, then drains the topic. queued.max.messages.kbytes is a budget across all partitions in Paperboy, and per partition in librdkafka (65536 KiB is the default of both), so '64 MiB in total' gives rdkafka 65536/partitions KiB per partition. librdkafka also stops prefetching a partition at queued.min.messages (default 100000 per partition). Paperboy keeps batches compressed in its queue; librdkafka queues decompressed messages. krafka has no byte budget (its rows with one are n/a); its prefetch is max_buffered_records (500 records by default), so its 'client defaults' row measures a much smaller queue.".into(),
            format!("Topics: {} partitions, replication factor 1, fresh per run (consumers read one topic per size, written once by Paperboy).", run.partitions),
            "Machine: 2 cores shared with the broker (and with whatever else runs); figures vary run to run by 10-20%.".into(),
        ];
        if cases.iter().any(|c| c.scenario == Scenario::Sweep) {
            notes.push(sweep_note(run));
        }
        if !run.property.is_empty() {
            let shown: Vec<String> = run
                .property
                .iter()
                .map(|(k, v)| format!("{k}={}", workload::shown(k, v)))
                .collect();
            notes.push(format!(
                "Client properties given to every client (krafka: mapped onto its builders) and to the admin that creates the topics (-X, after the settings above){}: {}. Bootstrap {}.",
                run.label
                    .as_deref()
                    .map(|l| format!(", rows labelled '{l}'"))
                    .unwrap_or_default(),
                shown.join(" "),
                run.bootstrap
            ));
        }
        let tls = run
            .property
            .iter()
            .rev()
            .find(|(k, _)| k == "security.protocol");
        if tls.is_some_and(|(_, v)| v.to_ascii_uppercase().ends_with("SSL")) {
            notes.push(format!(
                "TLS: Paperboy uses rustls (its default crypto provider, graviola); rdkafka uses librdkafka {} with the system's OpenSSL; krafka uses rustls with ring (its default feature).",
                rdkafka::util::get_rdkafka_version().1
            ));
        }
        let args = json!({
            "bootstrap": run.bootstrap,
            "messages": run.messages,
            "runs": run.runs,
            "sizes": run.sizes,
            "partitions": run.partitions,
            "rate": run.rate,
            "latency_secs": run.latency_secs,
            "stall_ms": run.stall_ms,
            "sweep_budgets_mib": crate::sweep_budgets(run),
            "sweep_mib": crate::sweep_mib(run),
            "sweep_size": run.sweep_size,
            "sweep_rdkafka_per_partition": run.sweep_rdkafka_per_partition,
            "quick": run.quick,
            "label": run.label,
            "properties": run
                .property
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(workload::shown(k, v))))
                .collect::<serde_json::Map<String, Value>>(),
        });
        Report {
            cases,
            args,
            label: run.label.clone(),
            notes,
            total,
        }
    }

    fn rows(case: &Case) -> Vec<Row> {
        let (p, r, k) = (&case.paperboy, &case.rdkafka, &case.krafka);
        let row = |metric, better, f: &dyn Fn(&Measured) -> f64| Row {
            metric,
            better,
            ratios: true,
            paperboy: med(p, f),
            rdkafka: med(r, f),
            krafka: med(k, f),
        };
        use Better::*;
        match case.scenario {
            Scenario::Produce => vec![
                row("records/s", Higher, &rate),
                row("MB/s (values)", Higher, &mbps),
                row("CPU s per M records", Lower, &cpu_per_m),
                row("peak RSS MiB", Lower, &rss_mib),
            ],
            Scenario::Consume => vec![
                row("records/s", Higher, &rate),
                row("MB/s (values)", Higher, &mbps),
                row("first record after s", Lower, &|m| {
                    m.out.first_record_s.unwrap_or(f64::NAN)
                }),
                row("CPU s per M records", Lower, &cpu_per_m),
                row("peak RSS MiB", Lower, &rss_mib),
            ],
            Scenario::Latency => vec![
                row("p50 ms", Lower, &lat_ms(0)),
                row("p99 ms", Lower, &lat_ms(1)),
                row("p99.9 ms", Lower, &lat_ms(2)),
                row("CPU s per M records", Lower, &cpu_per_m),
                row("peak RSS MiB", Lower, &rss_mib),
            ],
            Scenario::Memory => vec![
                row("peak RSS MiB", Lower, &rss_mib),
                row("CPU s per M records", Lower, &cpu_per_m),
            ],
            Scenario::Sweep => {
                let budget_mib = case.budget_kib.unwrap_or(0) as f64 / 1024.0;
                vec![
                    row("peak RSS MiB", Lower, &rss_mib),
                    Row {
                        ratios: false,
                        ..row("peak RSS - budget MiB (overhead)", Lower, &|m| {
                            rss_mib(m) - budget_mib
                        })
                    },
                ]
            }
        }
    }

    fn title(case: &Case, rate: u64, label: Option<&str>) -> String {
        let title = match case.scenario {
            Scenario::Produce => "produce, acks=all, idempotent".into(),
            Scenario::Consume => "consume, group, full topic".into(),
            Scenario::Latency => format!("produce latency at {rate} records/s"),
            Scenario::Memory => format!("consumer memory: {}", case.variant),
            Scenario::Sweep => format!("budget sweep, stalled handler: {}", case.variant),
        };
        match label {
            Some(l) => format!("{title}, {l}"),
            None => title,
        }
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| scenario | size | records | metric | better | Paperboy | rdkafka | krafka | Paperboy ÷ rdkafka | Paperboy ÷ krafka |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for case in &self.cases {
            let title = Self::title(
                case,
                self.args["rate"].as_u64().unwrap_or(0),
                self.label.as_deref(),
            );
            for (i, row) in Self::rows(case).iter().enumerate() {
                // A client not run: why, in its first cell of the case; "n/a" below it.
                let cell = |client: ClientKind, v: f64| match case.not_run(client) {
                    Some(why) if i == 0 => why.to_owned(),
                    Some(_) => "n/a".to_owned(),
                    None => fmt(v),
                };
                let vs = |client: ClientKind, v: f64| {
                    if !row.ratios
                        || case.not_run(client).is_some()
                        || case.not_run(ClientKind::Paperboy).is_some()
                    {
                        return "-".to_owned();
                    }
                    let (r, behind) = ratio(row.paperboy, v, row.better);
                    if r.is_nan() {
                        "-".to_owned()
                    } else {
                        format!("{r:.2}{}", if behind { " (behind)" } else { "" })
                    }
                };
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    if i == 0 { title.as_str() } else { "" },
                    if i == 0 {
                        size_label(case.size)
                    } else {
                        String::new()
                    },
                    if i == 0 {
                        case.messages.to_string()
                    } else {
                        String::new()
                    },
                    row.metric,
                    match row.better {
                        Better::Higher => "higher",
                        Better::Lower => "lower",
                    },
                    cell(ClientKind::Paperboy, row.paperboy),
                    cell(ClientKind::Rdkafka, row.rdkafka),
                    cell(ClientKind::Krafka, row.krafka),
                    vs(ClientKind::Rdkafka, row.rdkafka),
                    vs(ClientKind::Krafka, row.krafka),
                ));
            }
        }
        for case in &self.cases {
            for f in &case.failures {
                s.push_str(&format!(
                    "\nFAILED ({:?} {} {}): {f}",
                    case.scenario,
                    size_label(case.size),
                    case.variant
                ));
            }
        }
        s.push_str("\nNotes:\n");
        for n in &self.notes {
            s.push_str(&format!("- {n}\n"));
        }
        s.push_str(&format!(
            "- Medians of {} run(s) per client and case; whole comparison took {:.0} s.\n",
            self.args["runs"],
            self.total.as_secs_f64()
        ));
        s
    }

    pub fn json(&self) -> Value {
        let cases: Vec<Value> = self
            .cases
            .iter()
            .map(|c| {
                let rows: Vec<Value> = Self::rows(c)
                    .iter()
                    .map(|r| {
                        let over = |v: f64| if r.ratios { json!(r.paperboy / v) } else { Value::Null };
                        json!({
                            "metric": r.metric,
                            "better": if r.better == Better::Higher { "higher" } else { "lower" },
                            "paperboy": r.paperboy,
                            "rdkafka": r.rdkafka,
                            "krafka": r.krafka,
                            "paperboy_over_rdkafka": over(r.rdkafka),
                            "paperboy_over_krafka": over(r.krafka),
                        })
                    })
                    .collect();
                json!({
                    "scenario": c.scenario,
                    "label": self.label,
                    "variant": c.variant,
                    "budget_kib": c.budget_kib,
                    "size": c.size,
                    "records": c.messages,
                    "medians": rows,
                    "runs": { "paperboy": c.paperboy, "rdkafka": c.rdkafka, "krafka": c.krafka },
                    "not_run": c.not_run.iter().map(|(k, why)| (k.to_string(), Value::String(why.clone()))).collect::<serde_json::Map<String, Value>>(),
                    "failures": c.failures,
                })
            })
            .collect();
        json!({
            "args": self.args,
            "cases": cases,
            "notes": self.notes,
            "total_s": self.total.as_secs_f64(),
        })
    }
}

/// What the sweep gave each client, budget by budget.
fn sweep_note(run: &RunArgs) -> String {
    let size = run.sweep_size.max(1) as u64;
    let n = (crate::sweep_mib(run) << 20).div_ceil(size);
    let mut per_budget = Vec::new();
    for mib in crate::sweep_budgets(run) {
        let [pb, rk, kf] = crate::sweep_setups(run, mib);
        let (pb, rk, kf) = (
            pb.unwrap_or_default(),
            rk.unwrap_or_default(),
            kf.unwrap_or_default(),
        );
        let rk_kib = rk.budget_kib.unwrap_or(0);
        // What librdkafka derives when fetch.max.bytes is not set (rdkafka_conf.c).
        let fetch_max = (rk_kib * 1024).clamp(1_000_000, 52_428_800);
        per_budget.push(format!(
            "{mib} MiB: Paperboy queued.max.messages.kbytes={}; rdkafka queued.max.messages.kbytes={rk_kib} queued.min.messages={} (fetch.max.bytes derived by librdkafka: {fetch_max}); krafka max_buffered_records={}",
            pb.budget_kib.unwrap_or(0),
            rk.queued_min_messages.unwrap_or(0),
            kf.max_buffered_records.unwrap_or(0),
        ));
    }
    format!(
        "Budget sweep: the memory scenario (handler stalled {} ms after the first record, then the topic drained) at several budgets, on one topic of {n} records of {size} B ({} MiB of values, snappy), written once by Paperboy. Settings per budget: {}. Paperboy's budget is one for all partitions and counts batches as fetched (compressed, about half their values here) plus a decompressed batch until its records are handed out. rdkafka: {}; queued.min.messages at librdkafka's maximum so that the byte limit binds; librdkafka counts decompressed payloads, in units of 1000 bytes. krafka has no byte budget: max_buffered_records is its closest setting (records, here budget ÷ value size), and it fetches only inside poll(), so a stalled handler stops its fetching. max.partition.fetch.bytes is every client's default (1 MiB). 'peak RSS - budget' is each client's peak minus the nominal budget.",
        run.stall_ms,
        crate::sweep_mib(run),
        per_budget.join("; "),
        if run.sweep_rdkafka_per_partition {
            "budget/partitions KiB each (--sweep-rdkafka-per-partition)"
        } else {
            "the whole budget: librdkafka 2.12 compares queued.max.messages.kbytes with the size of a subscribing consumer's one queue, which every partition's fetch queue forwards to, so it is a total across partitions (its documentation says so too)"
        }
    )
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 10_000.0 {
        let n = v.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
