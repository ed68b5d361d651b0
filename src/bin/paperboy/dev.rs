//! `paperboy dev`: the in-process Kafka cluster of `paperboy-mock` as a standalone
//! server, so a developer has a local Kafka without Java.

use std::time::Duration;

use clap::Args;
use paperboy_mock::Cluster;

/// Runs an in-process Kafka cluster (paperboy-mock: the real wire protocol, everything in
/// memory) on 127.0.0.1 until SIGINT or SIGTERM. Prints its bootstrap address on the
/// first line of stdout. Any Kafka client can use it (kcat, the Java tools, Paperboy).
/// Not a replacement for a real broker: no persistence.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Node i listens on PORT + i (0: ports the OS picks)
    #[arg(long, default_value_t = 9092)]
    port: u16,
    /// Nodes of the cluster
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    nodes: u64,
    /// Partitions of a topic created without a count or created automatically on first use
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Per-partition retention.bytes in MiB (0: unlimited)
    #[arg(long = "retention-mb", value_name = "MB", default_value_t = 1024)]
    retention_mb: usize,
    /// Per-partition retention.ms (default: unlimited)
    #[arg(long = "retention-ms", value_name = "MS")]
    retention_ms: Option<u64>,
}

/// Serves until SIGINT or SIGTERM, then stops every listener and connection.
pub(crate) async fn run(a: DevArgs) -> Result<(), String> {
    if a.port != 0 && u64::from(a.port) + a.nodes - 1 > u64::from(u16::MAX) {
        return Err(format!(
            "--port {} with --nodes {}: ports past 65535",
            a.port, a.nodes
        ));
    }
    let mut builder = Cluster::builder()
        .nodes(a.nodes as usize)
        .default_partitions(a.partitions)
        .port(a.port);
    if a.retention_mb > 0 {
        builder = builder.retention_bytes(a.retention_mb.saturating_mul(1 << 20));
    }
    if let Some(ms) = a.retention_ms {
        builder = builder.retention_time(Duration::from_millis(ms));
    }
    let cluster = builder.build().await.map_err(|e| {
        format!(
            "cannot listen on 127.0.0.1:{}{}: {e} (another Kafka running? try --port 0)",
            a.port,
            if a.nodes > 1 { " and up" } else { "" }
        )
    })?;
    // The address first, alone on its line, for scripts (`read -r BOOTSTRAP`).
    println!("{}", cluster.bootstrap());
    eprintln!(
        "paperboy dev: {} node(s), topics auto-created with {} partition(s); SIGINT or SIGTERM stops it",
        a.nodes, a.partitions
    );
    wait_for_stop().await?;
    cluster.shutdown();
    eprintln!("paperboy dev: stopped");
    Ok(())
}

async fn wait_for_stop() -> Result<(), String> {
    crate::signal::StopSignal::install()?.wait().await;
    Ok(())
}
