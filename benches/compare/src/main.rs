//! Paperboy side by side with rdkafka (librdkafka) and krafka against the same broker.
//!
//! The parent creates topics, then runs every measurement in a child process of its own
//! (`compare worker --client ... --scenario ...`), alternating the clients, so that each
//! client's CPU time (ru_utime + ru_stime) and peak RSS (ru_maxrss, and the child's own
//! VmHWM) are its own. Figures are medians over `--runs`.
//!
//! `-X KEY=VALUE` (repeatable) and `--properties-file` give client properties, by their
//! librdkafka names, to every client and to the admin that creates the topics (krafka,
//! which takes no properties, gets them mapped onto its builders; one it cannot express
//! makes its rows "n/a"): a secured
//! listener is measured with, for example,
//! `--bootstrap localhost:9102 -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512
//! -X sasl.username=alice -X sasl.password=... -X ssl.ca.location=ca.pem`. The rows are
//! labelled from security.protocol and sasl.mechanism (or `--label`). Workers get the
//! properties on stdin, not in their arguments, and secret values are never printed.
//!
//! `--scenario sweep` (not among the defaults) repeats the memory scenario at budgets of
//! 4, 16, 64 and 256 MiB on a 1 GiB topic of 1 KiB values, each client given the same
//! total (`--quick`: 4 and 16 MiB on 64 MiB).
//!
//! Environment: `PAPERBOY_BOOTSTRAP` (the broker), `COMPARE_LINGER_MS` (linger.ms of both
//! producers, default 5), `RUST_LOG` (Paperboy's and krafka's logs in a worker), `COMPARE_DEBUG`
//! (a Paperboy consumer worker prints each batch and its queue).

mod kf;
mod pb;
mod report;
mod rk;
mod workload;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use paperboy::{Client, ClientConfig, ConfigError, NewTopic};
use serde::Serialize;

use workload::{Properties, WorkerOut};

#[derive(Parser)]
#[command(
    name = "compare",
    about = "Paperboy vs rdkafka and krafka: produce/consume throughput, produce latency, consumer memory",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// One measurement in this process (run by the parent; prints one JSON line).
    Worker(WorkerArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The broker.
    #[arg(long, env = "PAPERBOY_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Records per throughput run, for every size (default: 2000000 of 100 B, 500000 of 1 KiB).
    #[arg(long)]
    messages: Option<u64>,
    /// Runs per client and case, alternating the clients; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these clients (paperboy, rdkafka, krafka); repeat or comma-separate. The others'
    /// columns show "not run". Paperboy still writes the topics the consumers read.
    #[arg(long, value_delimiter = ',', default_values_t = [ClientKind::Paperboy, ClientKind::Rdkafka, ClientKind::Krafka])]
    clients: Vec<ClientKind>,
    /// Only these scenarios (produce, consume, latency, memory, sweep); repeat or
    /// comma-separate. Default: all but sweep (which reads a topic of 1 GiB; it runs only
    /// when named).
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Value sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1024])]
    sizes: Vec<usize>,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Latency scenario: records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Latency scenario: seconds measured (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    latency_secs: u64,
    /// Memory scenario: how long the handler stalls after the first record, ms.
    #[arg(long, default_value_t = 3000)]
    stall_ms: u64,
    /// Sweep scenario: the budgets, MiB (queued.max.messages.kbytes = budget x 1024).
    /// Default 4,16,64,256; with --quick 4,16.
    #[arg(long, value_delimiter = ',')]
    sweep_budgets: Vec<u64>,
    /// Sweep scenario: MiB of values in its topic, written once by Paperboy (default 1024,
    /// with --quick 64). It should be well above the largest budget: Paperboy's budget
    /// counts compressed batches, about half their values' size here.
    #[arg(long)]
    sweep_mib: Option<u64>,
    /// Sweep scenario: the size of every value, bytes.
    #[arg(long, default_value_t = 1024)]
    sweep_size: usize,
    /// Sweep scenario: give rdkafka budget/partitions KiB instead of the whole budget (the
    /// reading of queued.max.messages.kbytes as per partition; librdkafka 2.12's
    /// subscribing consumer applies it to its one queue, across partitions). Slow at small
    /// budgets: with 4096/6 KiB rdkafka drains about 1 MB/s (its fetch backs off 1 s
    /// whenever the queue is over the limit).
    #[arg(long)]
    sweep_rdkafka_per_partition: bool,
    /// A small smoke run: 20000 records, one run, two seconds of latency, short stall
    /// (and, for the sweep, a 64 MiB topic and budgets of 4 and 16 MiB).
    #[arg(long)]
    quick: bool,
    /// Leave the topics in place (for running workers by hand).
    #[arg(long, hide = true)]
    keep_topics: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A client property by its librdkafka name, given to every client and to the admin
    /// that creates the topics, after the benchmark's own settings (so it overrides them);
    /// a producer's property is skipped by consumers and the other way round, as
    /// librdkafka does. krafka gets it mapped onto its builders; if it has no equivalent,
    /// krafka's rows are "n/a". Repeatable: -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 ...
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", value_parser = workload::parse_property)]
    property: Vec<(String, String)>,
    /// Client properties from a file, one KEY=VALUE a line (# comments), before any -X:
    /// keeps a password off the command line.
    #[arg(long, value_name = "FILE")]
    properties_file: Option<std::path::PathBuf>,
    /// The label of the rows in the table and the JSON (default: security.protocol and
    /// sasl.mechanism when given, e.g. "SASL_SSL SCRAM-SHA-512"; none otherwise).
    #[arg(long)]
    label: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Paperboy,
    Rdkafka,
    Krafka,
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientKind::Paperboy => "paperboy",
            ClientKind::Rdkafka => "rdkafka",
            ClientKind::Krafka => "krafka",
        })
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Produce,
    Consume,
    Latency,
    Memory,
    /// The memory scenario at several budgets (--sweep-budgets), on a topic of its own.
    Sweep,
}

#[derive(Args, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    client: ClientKind,
    #[arg(long)]
    scenario: Scenario,
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value = "")]
    group: String,
    #[arg(long, default_value_t = 0)]
    messages: u64,
    #[arg(long)]
    size: usize,
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    #[arg(long, default_value_t = 5)]
    secs: u64,
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    #[arg(long, default_value_t = 0)]
    stall_ms: u64,
    /// queued.max.messages.kbytes; unset means the client's default.
    #[arg(long)]
    budget_kib: Option<u64>,
    /// rdkafka: queued.min.messages; unset means librdkafka's default.
    #[arg(long)]
    queued_min_messages: Option<u64>,
    /// krafka: max_buffered_records; unset means krafka's default.
    #[arg(long)]
    max_buffered_records: Option<u64>,
    /// Client properties, after the benchmark's own (as for a comparison run).
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", value_parser = workload::parse_property)]
    property: Vec<(String, String)>,
    /// Read more client properties from stdin first, as JSON [[key, value], ...]: how the
    /// parent passes them, so no secret shows in a process's arguments.
    #[arg(long, hide = true)]
    properties_stdin: bool,
}

/// One child's figures: its own plus the kernel's accounting of it.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub out: WorkerOut,
    pub cpu_s: f64,
    pub maxrss_kib: u64,
    pub wall_s: f64,
}

/// A case: one scenario, variant and size, for every client.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub scenario: Scenario,
    pub variant: String,
    /// The sweep's budget (the same total for every client), KiB.
    pub budget_kib: Option<u64>,
    pub size: usize,
    pub messages: u64,
    pub paperboy: Vec<Measured>,
    pub rdkafka: Vec<Measured>,
    pub krafka: Vec<Measured>,
    /// Clients not run in this case, and why ("n/a: krafka has no ...", "not run").
    pub not_run: Vec<(ClientKind, String)>,
    /// Runs that failed (left out of the medians).
    pub failures: Vec<String>,
}

impl Case {
    /// Why `client` was not run in this case, if it was not.
    pub fn not_run(&self, client: ClientKind) -> Option<&str> {
        self.not_run
            .iter()
            .find(|(c, _)| *c == client)
            .map(|(_, why)| why.as_str())
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Some(Cmd::Worker(w)) => worker(w),
        None => match orchestrate(cli.run) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("compare: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}

fn worker(mut args: WorkerArgs) -> i32 {
    if args.properties_stdin {
        let mut text = String::new();
        let parsed = std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_str::<Properties>(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(mut props) => {
                props.append(&mut args.property);
                args.property = props;
            }
            Err(e) => {
                eprintln!("worker: client properties on stdin: {e}");
                return 1;
            }
        }
    }
    let args = &args;
    // RUST_LOG=paperboy=debug (for example) shows what Paperboy does, on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let result = match args.client {
        ClientKind::Paperboy => pb::run(args),
        ClientKind::Rdkafka => rk::run(args),
        ClientKind::Krafka => kf::run(args),
    };
    match result {
        Ok(mut out) => {
            out.vm_hwm_kib = workload::vm_hwm_kib();
            println!("{}", serde_json::to_string(&out).expect("serializable"));
            0
        }
        Err(e) => {
            eprintln!(
                "worker {:?} {:?}: {}",
                args.client,
                args.scenario,
                workload::scrub(&e.to_string(), &args.property)
            );
            1
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Every client, in the order of the table's columns (and of `ClientKind`'s values).
pub const ALL_CLIENTS: [ClientKind; 3] = [
    ClientKind::Paperboy,
    ClientKind::Rdkafka,
    ClientKind::Krafka,
];

/// Why krafka has no memory rows with a budget.
pub const KRAFKA_NO_BUDGET: &str = "krafka has no byte budget for its prefetch";

/// What a consumer worker is given beyond the benchmark's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// queued.max.messages.kbytes (Paperboy, rdkafka).
    pub budget_kib: Option<u64>,
    /// queued.min.messages (rdkafka).
    pub queued_min_messages: Option<u64>,
    /// max_buffered_records (krafka).
    pub max_buffered_records: Option<u64>,
}

impl Setup {
    fn budget(kib: u64) -> Setup {
        Setup {
            budget_kib: Some(kib),
            ..Setup::default()
        }
    }
}

/// Per client (in `ALL_CLIENTS` order): its setup, or why it is n/a.
type Setups = [Result<Setup, &'static str>; 3];

/// librdkafka's largest queued.min.messages: high enough that the byte budget binds.
pub const RDKAFKA_MAX_QUEUED_MIN_MESSAGES: u64 = 10_000_000;

/// The sweep's budgets, MiB.
fn sweep_budgets(run: &RunArgs) -> Vec<u64> {
    match (run.sweep_budgets.is_empty(), run.quick) {
        (false, _) => run.sweep_budgets.clone(),
        (true, false) => vec![4, 16, 64, 256],
        (true, true) => vec![4, 16],
    }
}

/// The sweep's topic, MiB of values.
fn sweep_mib(run: &RunArgs) -> u64 {
    run.sweep_mib.unwrap_or(if run.quick { 64 } else { 1024 })
}

/// Each client's settings at a sweep budget of `mib` MiB.
fn sweep_setups(run: &RunArgs, mib: u64) -> Setups {
    let kib = mib * 1024;
    let rdkafka_kib = if run.sweep_rdkafka_per_partition {
        (kib / run.partitions.max(1) as u64).max(1)
    } else {
        kib
    };
    [
        Ok(Setup::budget(kib)),
        Ok(Setup {
            budget_kib: Some(rdkafka_kib),
            queued_min_messages: Some(RDKAFKA_MAX_QUEUED_MIN_MESSAGES),
            ..Setup::default()
        }),
        // krafka counts records: the budget in records of this size.
        Ok(Setup {
            max_buffered_records: Some((kib * 1024 / run.sweep_size.max(1) as u64).max(1)),
            ..Setup::default()
        }),
    ]
}

/// Runs a worker as a child process and collects its rusage with wait4. The client
/// properties go to its stdin (not its arguments, which `ps` shows to everyone).
fn spawn_worker(args: &[String], props: &Properties) -> Res<Measured> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.arg("worker").args(args).stdout(Stdio::piped());
    if props.is_empty() {
        cmd.stdin(Stdio::null());
    } else {
        cmd.arg("--properties-stdin").stdin(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A few hundred bytes: the pipe takes them before the child reads. A write error
        // (the child died at once) shows as the child's failure below.
        let _ = stdin.write_all(serde_json::to_string(props)?.as_bytes());
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, zeroed is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet reaped (std's Child is never waited on here).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()).into());
    }
    let wall_s = started.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("worker {args:?} failed (status {status})").into());
    }
    let out: WorkerOut = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("worker output {stdout:?}: {e}"))?;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        out,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        maxrss_kib: usage.ru_maxrss as u64,
        wall_s,
    })
}

struct Admin {
    rt: tokio::runtime::Runtime,
    client: Client,
    partitions: i32,
    tag: String,
    created: Vec<String>,
    keep: bool,
}

impl Admin {
    fn new(bootstrap: &str, partitions: i32, props: &Properties) -> Res<Admin> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut config = ClientConfig::from_properties([("bootstrap.servers", bootstrap)])?;
        for (k, v) in props {
            match config.set(k, v) {
                // A producer's or consumer's property: not the admin's business.
                Ok(_) | Err(ConfigError::UnknownKey { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let client = rt.block_on(Client::connect(config))?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        Ok(Admin {
            rt,
            client,
            partitions,
            tag: format!("{}-{}", std::process::id(), nanos % 1_000_000_000),
            created: Vec::new(),
            keep: false,
        })
    }

    /// A fresh topic: `partitions` partitions, one replica, no other settings.
    fn topic(&mut self, what: &str) -> Res<String> {
        let name = format!("compare-{what}-{}-{}", self.tag, self.created.len());
        self.rt.block_on(
            self.client
                .create_topics(&[NewTopic::new(&name, self.partitions, 1)]),
        )?;
        // Wait until every partition has a leader, so neither client pays for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let cluster = self.rt.block_on(self.client.refresh_metadata(&[&name]))?;
            let ready = cluster
                .topic(&name)
                .map(|t| t.partitions.len() == self.partitions as usize)
                .unwrap_or(false);
            if ready || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.created.push(name.clone());
        Ok(name)
    }

    fn delete(&mut self, name: &str) {
        if self.keep {
            eprintln!("keeping topic {name}");
            return;
        }
        if let Err(e) = self.rt.block_on(self.client.delete_topics(&[name])) {
            eprintln!("compare: could not delete topic {name}: {e}");
        }
        self.created.retain(|n| n != name);
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for name in std::mem::take(&mut self.created) {
            let _ = self.rt.block_on(self.client.delete_topics(&[&name]));
        }
    }
}

/// Gathers the client properties and the label, runs the comparison, and keeps any
/// secret value out of the error it may end with.
fn orchestrate(mut run: RunArgs) -> Res<()> {
    let mut props = match &run.properties_file {
        Some(path) => workload::read_properties(path)?,
        None => Vec::new(),
    };
    props.append(&mut run.property);
    run.property = props.clone();
    if run.label.is_none() {
        run.label = workload::label(&props);
    }
    if !props.is_empty() {
        let shown: Vec<String> = props
            .iter()
            .map(|(k, v)| format!("{k}={}", workload::shown(k, v)))
            .collect();
        eprintln!(
            "client properties for every client and the admin{}: {}",
            run.label
                .as_deref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default(),
            shown.join(" ")
        );
    }
    compare(run).map_err(|e| workload::scrub(&e.to_string(), &props).into())
}

fn compare(mut run: RunArgs) -> Res<()> {
    if run.quick {
        run.messages = Some(run.messages.unwrap_or(20_000));
        run.runs = 1;
        run.latency_secs = 2;
        run.stall_ms = run.stall_ms.min(1000);
    }
    let scenarios: Vec<Scenario> = if run.scenario.is_empty() {
        vec![
            Scenario::Produce,
            Scenario::Consume,
            Scenario::Latency,
            Scenario::Memory,
        ]
    } else {
        run.scenario.clone()
    };
    // krafka takes no properties; the -X ones are mapped onto its builders, and one it
    // cannot express makes all its rows n/a (rather than measuring something else).
    let krafka_na = kf::unsupported(&run.property);
    if let Some(why) = &krafka_na {
        if run.clients.contains(&ClientKind::Krafka) {
            eprintln!("krafka: n/a with these properties: {why}");
        }
    }
    let mut admin = Admin::new(&run.bootstrap, run.partitions, &run.property)?;
    admin.keep = run.keep_topics;
    let mut cx = Cx {
        run: &run,
        krafka_na: krafka_na.as_deref(),
        groups: 0,
    };
    let mut cases: Vec<Case> = Vec::new();
    let total_start = Instant::now();
    let per_size: Vec<Scenario> = scenarios
        .iter()
        .copied()
        .filter(|s| *s != Scenario::Sweep)
        .collect();
    for &size in run.sizes.iter().filter(|_| !per_size.is_empty()) {
        let n = run
            .messages
            .unwrap_or(if size <= 256 { 2_000_000 } else { 500_000 });
        // One full topic per size for the consumer scenarios, written once by Paperboy.
        let full = if per_size
            .iter()
            .any(|s| matches!(s, Scenario::Consume | Scenario::Memory))
        {
            Some(fill(&mut admin, &run, &format!("full{size}"), n, size)?)
        } else {
            None
        };
        for &scenario in &per_size {
            let variants: Vec<(&'static str, Setups)> = match scenario {
                Scenario::Memory => vec![
                    ("client defaults", [Ok(Setup::default()); 3]),
                    (
                        "queued.max.messages.kbytes=65536",
                        [
                            Ok(Setup::budget(65536)),
                            Ok(Setup::budget(65536)),
                            Err(KRAFKA_NO_BUDGET),
                        ],
                    ),
                    (
                        "64 MiB in total (rdkafka: 65536/partitions per partition)",
                        [
                            Ok(Setup::budget(65536)),
                            Ok(Setup::budget(65536 / run.partitions.max(1) as u64)),
                            Err(KRAFKA_NO_BUDGET),
                        ],
                    ),
                ],
                _ => vec![("", [Ok(Setup::default()); 3])],
            };
            for (variant, setups) in variants {
                let messages = match scenario {
                    Scenario::Latency => run.rate * (run.latency_secs + 1),
                    _ => n,
                };
                let topic = match scenario {
                    Scenario::Consume | Scenario::Memory => full.as_deref(),
                    _ => None,
                };
                let case = cx.case(
                    &mut admin,
                    scenario,
                    variant.into(),
                    None,
                    size,
                    messages,
                    topic,
                    &setups,
                )?;
                cases.push(case);
            }
        }
        if let Some(t) = full {
            admin.delete(&t);
        }
    }
    if scenarios.contains(&Scenario::Sweep) {
        // The memory scenario at several budgets, on one topic well above the largest.
        let size = run.sweep_size;
        let n = (sweep_mib(&run) << 20).div_ceil(size.max(1) as u64);
        let topic = fill(&mut admin, &run, &format!("sweep{size}"), n, size)?;
        for mib in sweep_budgets(&run) {
            let setups = sweep_setups(&run, mib);
            let case = cx.case(
                &mut admin,
                Scenario::Sweep,
                format!("{mib} MiB"),
                Some(mib * 1024),
                size,
                n,
                Some(&topic),
                &setups,
            )?;
            cases.push(case);
        }
        admin.delete(&topic);
    }
    let report = report::Report::new(&run, cases, total_start.elapsed());
    println!("{}", report.table());
    if let Some(path) = &run.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A fresh topic with `n` records of `size` bytes, written by Paperboy.
fn fill(admin: &mut Admin, run: &RunArgs, what: &str, n: u64, size: usize) -> Res<String> {
    let t = admin.topic(what)?;
    eprintln!("filling {t} with {n} records of {size} B");
    let m = spawn_worker(
        &worker_args(
            ClientKind::Paperboy,
            Scenario::Produce,
            run,
            &t,
            "",
            n,
            size,
            &Setup::default(),
        ),
        &run.property,
    )?;
    if m.out.records != n {
        return Err(format!("filling {t}: {} of {n} acknowledged", m.out.records).into());
    }
    eprintln!("filled {t} in {:.1} s", m.wall_s);
    Ok(t)
}

/// What every case of a comparison shares.
struct Cx<'a> {
    run: &'a RunArgs,
    krafka_na: Option<&'a str>,
    groups: u64,
}

impl Cx<'_> {
    /// Measures one case: `--runs` runs of every client, alternating. Consumers read
    /// `topic`; the other scenarios get a fresh topic per run.
    #[allow(clippy::too_many_arguments)]
    fn case(
        &mut self,
        admin: &mut Admin,
        scenario: Scenario,
        variant: String,
        budget_kib: Option<u64>,
        size: usize,
        messages: u64,
        topic: Option<&str>,
        setups: &Setups,
    ) -> Res<Case> {
        let run = self.run;
        let mut case = Case {
            scenario,
            variant,
            budget_kib,
            size,
            messages,
            paperboy: Vec::new(),
            rdkafka: Vec::new(),
            krafka: Vec::new(),
            not_run: Vec::new(),
            failures: Vec::new(),
        };
        let variant = case.variant.clone();
        let mut clients = Vec::new();
        for client in ALL_CLIENTS {
            let why = if !run.clients.contains(&client) {
                Some("not run (--clients)".to_owned())
            } else if let (ClientKind::Krafka, Some(why)) = (client, self.krafka_na) {
                Some(format!("n/a: {why}"))
            } else {
                setups[client as usize]
                    .err()
                    .map(|why| format!("n/a: {why}"))
            };
            match why {
                Some(why) => case.not_run.push((client, why)),
                None => clients.push(client),
            }
        }
        for i in 0..run.runs {
            // Alternate, and rotate who goes first (with three clients each takes
            // each place once in three runs), against drift.
            let mut order = clients.clone();
            let turn = i % order.len().max(1);
            order.rotate_left(turn);
            for client in order {
                let (topic, fresh) = match topic {
                    Some(t) => (t.to_owned(), false),
                    None => (
                        admin.topic(&format!("{scenario:?}{size}").to_lowercase())?,
                        true,
                    ),
                };
                self.groups += 1;
                let group = format!("compare-{}-g{}", admin.tag, self.groups);
                let setup = setups[client as usize].unwrap_or_default();
                let m = match spawn_worker(
                    &worker_args(
                        client, scenario, run, &topic, &group, messages, size, &setup,
                    ),
                    &run.property,
                ) {
                    Ok(m) => m,
                    Err(e) => {
                        // Reported, left out of the medians; the comparison goes on.
                        eprintln!(
                            "{scenario:?} {size} B {variant} run {} {client:?}: FAILED: {e}",
                            i + 1
                        );
                        case.failures.push(format!("{client:?} run {}: {e}", i + 1));
                        if fresh {
                            admin.delete(&topic);
                        }
                        continue;
                    }
                };
                eprintln!(
                    "{scenario:?} {size} B {variant} run {} {client:?}: {} records in {:.3} s, cpu {:.2} s, maxrss {} MiB, VmHWM {} MiB, wall {:.1} s{}",
                    i + 1,
                    m.out.records,
                    m.out.elapsed_s,
                    m.cpu_s,
                    m.maxrss_kib / 1024,
                    m.out.vm_hwm_kib / 1024,
                    m.wall_s,
                    m.out
                        .latency_us
                        .map(|l| format!(", latency p50/p99/p99.9 {:?} us", l))
                        .unwrap_or_default()
                );
                if m.out.errors > 0 {
                    return Err(format!(
                        "{client:?} {scenario:?}: {} records failed",
                        m.out.errors
                    )
                    .into());
                }
                match client {
                    ClientKind::Paperboy => case.paperboy.push(m),
                    ClientKind::Rdkafka => case.rdkafka.push(m),
                    ClientKind::Krafka => case.krafka.push(m),
                }
                if fresh {
                    admin.delete(&topic);
                }
            }
        }
        Ok(case)
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_args(
    client: ClientKind,
    scenario: Scenario,
    run: &RunArgs,
    topic: &str,
    group: &str,
    messages: u64,
    size: usize,
    setup: &Setup,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--client".into(),
        format!("{client:?}").to_lowercase(),
        "--scenario".into(),
        format!("{scenario:?}").to_lowercase(),
        "--bootstrap".into(),
        run.bootstrap.clone(),
        "--topic".into(),
        topic.into(),
        "--messages".into(),
        messages.to_string(),
        "--size".into(),
        size.to_string(),
        "--rate".into(),
        run.rate.to_string(),
        "--secs".into(),
        run.latency_secs.to_string(),
    ];
    if !group.is_empty() {
        a.extend(["--group".into(), group.into()]);
    }
    if matches!(scenario, Scenario::Memory | Scenario::Sweep) {
        a.extend(["--stall-ms".into(), run.stall_ms.to_string()]);
    }
    if let Some(b) = setup.budget_kib {
        a.extend(["--budget-kib".into(), b.to_string()]);
    }
    if let Some(m) = setup.queued_min_messages {
        a.extend(["--queued-min-messages".into(), m.to_string()]);
    }
    if let Some(m) = setup.max_buffered_records {
        a.extend(["--max-buffered-records".into(), m.to_string()]);
    }
    a
}
