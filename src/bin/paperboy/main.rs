//! `paperboy`: the command-line tool.
//!
//! ```text
//! paperboy produce --bootstrap HOST:PORT --topic TOPIC [options] < lines
//! paperboy consume --bootstrap HOST:PORT --topic TOPIC [options] > json-lines
//! paperboy dev [--port PORT] [--nodes N] [--partitions N]
//! ```
//! See `paperboy help` for the options. One file per command (`produce.rs`,
//! `consume.rs`, `dev.rs`), and the signal handling they share (`signal.rs`).

use std::process::ExitCode;

mod consume;
mod dev;
mod produce;
mod signal;

const USAGE: &str = "\
paperboy: a pure-Rust Kafka client

USAGE:
    paperboy produce --bootstrap HOST:PORT --topic TOPIC [OPTIONS]
    paperboy consume --bootstrap HOST:PORT --topic TOPIC [OPTIONS]
    paperboy dev [OPTIONS]          a local Kafka in this process (no Java needed)
    paperboy help

PRODUCE:
    Sends each line of stdin as one record (or --count generated records), waits for
    every acknowledgement, and prints a summary. Exits non-zero if any record failed.

    -b, --bootstrap LIST      bootstrap servers, comma-separated (required)
    -t, --topic TOPIC         topic to write to (required)
    -K, --key-separator SEP   split each line at the first SEP into key and value
    -z, --compression CODEC   none, gzip, snappy, lz4 or zstd (default snappy)
        --acks ACKS           0, 1 or all (default all)
        --partition N         write every record to partition N
        --envelope SERVICE    wrap each line (a JSON value) in the PHQ envelope of SERVICE,
                              keyed by the line's key or a generated id; written as
                              Python's json.dumps writes it, every number kept
        --count N             send N generated records instead of reading stdin
        --size BYTES          size of each generated value (default 100)
    -X, --property KEY=VALUE  any producer property (linger.ms, batch.size, ...); with
                              -X transactional.id=ID the input is written in transactions
                              (read_committed consumers see only committed ones): each
                              commits after --transaction-records records or
                              --transaction-ms after its first, and at the end of the
                              input; a failure or SIGINT/SIGTERM aborts the open one
                              (exit non-zero), those committed before stay
        --transaction-records N   records per transaction at most (default 10000)
        --transaction-ms MS       a transaction commits this long after its first record
                              at the latest (default 1000)
    -q, --quiet               no summary

CONSUME:
    Prints each record as one JSON object per line on stdout:
      {\"topic\":\"t\",\"partition\":0,\"offset\":5,\"timestamp\":1700000000000,\"key\":\"k\",\"value\":\"v\"}
    timestamp is in ms since the epoch; a missing key or value (tombstone) is null. A key
    or value that is not UTF-8 is written as \"key_hex\" / \"value_hex\" (lowercase hex of
    the bytes) instead of \"key\" / \"value\", so nothing is lost.
    With --group, joins the consumer group and commits after printing each batch (what
    was printed, nothing more). Otherwise assigns partitions by hand and commits nothing:
    the --partition(s) given, or every partition of the topic.
    Runs until --count records, the end with -e, stdout closing, or SIGINT/SIGTERM (a
    clean stop: exit 0; a second signal exits at once). Prints a summary on stderr.
    Exits non-zero on errors.

    -b, --bootstrap LIST      bootstrap servers, comma-separated (required)
    -t, --topic TOPIC         topic to read (required)
    -G, --group GROUP         consume as a member of GROUP (not with --partition/--offset)
    -p, --partition N         read partition N (repeatable; default every partition)
    -o, --offset OFFSET       start at OFFSET in every partition read: a number, -N (N
                              before the end), beginning or end
        --from-beginning      with no committed offset (or out of range), start at the
                              beginning (auto.offset.reset=earliest; default: the end)
    -c, --count N             exit after N records
    -e, --exit-at-end         exit once every assigned partition is read to its end
                              (the high watermark of the latest fetch)
        --envelope            unpack PHQ envelopes (as paperboy::phq::envelope::unpack_json
                              reads them): \"value\" is the envelope's item (as JSON, every
                              number exactly as written; NaN/Infinity as null) and
                              \"hist\" its hist (null when missing or dropped, with
                              \"hist_truncated\":true when dropped for its depth); a value
                              that is not an envelope (or is empty) is printed as is, with
                              \"envelope_error\" saying why
    -X, --property KEY=VALUE  any consumer property (fetch.max.wait.ms, isolation.level,
                              ...); -X group.id=G is --group G
    -q, --quiet               no summary

DEV:
    Runs an in-process Kafka cluster on 127.0.0.1 (default port 9092) until SIGINT or
    SIGTERM and prints its bootstrap address; see `paperboy dev --help`.
";

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("produce") => match produce::parse(&args[1..]) {
            Ok(Some(a)) => produce::run(a).await,
            Ok(None) => {
                print!("{USAGE}");
                Ok(())
            }
            Err(e) => Err(format!("{e}\n\n{USAGE}")),
        },
        Some("consume") => match consume::parse(&args[1..]) {
            Ok(Some(a)) => consume::run(a).await,
            Ok(None) => {
                print!("{USAGE}");
                Ok(())
            }
            Err(e) => Err(format!("{e}\n\n{USAGE}")),
        },
        Some("dev") => match dev::parse(&args[1..]) {
            Ok(Some(a)) => dev::run(a).await,
            Ok(None) => {
                print!("{}", dev::USAGE);
                Ok(())
            }
            Err(e) => Err(format!("{e}\n\n{}", dev::USAGE)),
        },
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other}\n\n{USAGE}")),
        None => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paperboy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Warnings and errors of the library on stderr; `RUST_LOG` (for example `debug` or
/// `paperboy=debug,warn`) chooses more or less.
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(filter)
        .try_init();
}
