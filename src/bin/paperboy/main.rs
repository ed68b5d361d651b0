//! `paperboy`: the command-line tool, one static binary with no C.
//!
//! ```text
//! paperboy produce   -b HOST:PORT -t TOPIC [options] < lines
//! paperboy consume   -b HOST:PORT -t TOPIC [options] > json-lines
//! paperboy metadata  -b HOST:PORT [-t TOPIC] [--json]
//! paperboy topics    list|describe|create|delete|alter-config ...
//! paperboy groups    list|describe|reset-offsets ...
//! paperboy offsets   -b HOST:PORT -t TOPIC [--time earliest|latest|MS] [--json]
//! paperboy perf      produce|consume -b HOST:PORT -t TOPIC [--count N] [--size B]
//! paperboy dev       [--port PORT] [--nodes N] [--partitions N]
//! paperboy completions bash|zsh|fish|...
//! ```
//! `paperboy help COMMAND` for the options. One file per command (`produce.rs`,
//! `consume.rs`, `admin.rs` for metadata/topics/groups/offsets, `perf.rs`, `dev.rs`), the
//! connection options they share (`connect.rs`) and signal handling (`signal.rs`).

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod admin;
mod connect;
mod consume;
mod dev;
mod perf;
mod produce;
mod signal;

/// A pure-Rust Kafka client: produce, consume, inspect and administer a cluster.
#[derive(Debug, Parser)]
#[command(name = "paperboy", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send stdin's lines (or generated records) to a topic
    Produce(produce::ProduceArgs),
    /// Print a topic's records as JSON lines
    Consume(consume::ConsumeArgs),
    /// Brokers, topics, partitions, leaders, replicas and in-sync replicas (kcat -L)
    Metadata(admin::MetadataArgs),
    /// List, describe, create, delete topics and change their configuration
    #[command(subcommand)]
    Topics(admin::TopicsCommand),
    /// List and describe consumer groups (members, assignments, offsets, lag); reset
    /// their offsets
    #[command(subcommand)]
    Groups(admin::GroupsCommand),
    /// Earliest, latest or by-time offsets of a topic's partitions (kcat -Q)
    Offsets(admin::OffsetsArgs),
    /// A quick load test: produce or consume with progress, rates and latencies
    #[command(subcommand)]
    Perf(perf::PerfCommand),
    /// A local Kafka in this process (no Java needed)
    Dev(dev::DevArgs),
    /// Shell completions for bash, zsh, fish, elvish or powershell, on stdout
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Produce(a) => produce::run(a).await,
        Command::Consume(a) => consume::run(a).await,
        Command::Metadata(a) => admin::metadata(a).await,
        Command::Topics(c) => admin::topics(c).await,
        Command::Groups(c) => admin::groups(c).await,
        Command::Offsets(a) => admin::offsets(a).await,
        Command::Perf(c) => perf::run(c).await,
        Command::Dev(a) => dev::run(a).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "paperboy",
                &mut std::io::stdout(),
            );
            Ok(())
        }
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
