//! `paperboy dev`: the in-process Kafka cluster of `paperboy-mock` as a standalone
//! server, so a developer has a local Kafka without Java.

use std::time::Duration;

use paperboy_mock::Cluster;

pub(crate) const USAGE: &str = "\
paperboy dev [OPTIONS]

    Runs an in-process Kafka cluster (paperboy-mock: the real wire protocol, everything
    in memory) on 127.0.0.1 until SIGINT or SIGTERM. Prints its bootstrap address on the
    first line of stdout. Any Kafka client can use it (kcat, the Java tools, Paperboy).
    Not a replacement for a real broker: no persistence.

        --port PORT           node i listens on PORT + i (default 9092; 0: ports the OS
                              picks)
        --nodes N             nodes of the cluster (default 1)
        --partitions N        partitions of a topic created without a count or created
                              automatically on first use (default 1)
        --retention-mb MB     per-partition retention.bytes (default 1024; 0: unlimited)
        --retention-ms MS     per-partition retention.ms (default: unlimited)
";

pub(crate) struct DevArgs {
    port: u16,
    nodes: usize,
    partitions: i32,
    retention_mb: usize,
    retention_ms: Option<u64>,
}

/// `Ok(None)` for `--help`.
pub(crate) fn parse(args: &[String]) -> Result<Option<DevArgs>, String> {
    let mut a = DevArgs {
        port: 9092,
        nodes: 1,
        partitions: 1,
        retention_mb: 1024,
        retention_ms: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name} {v}: not a non-negative number"))
        };
        match flag.as_str() {
            "--port" => {
                a.port =
                    u16::try_from(number(flag)?).map_err(|_| "--port: at most 65535".to_owned())?
            }
            "--nodes" => {
                a.nodes = match number(flag)? {
                    n @ 1..=64 => n as usize,
                    n => return Err(format!("--nodes {n}: between 1 and 64")),
                }
            }
            "--partitions" => {
                a.partitions = match number(flag)? {
                    n @ 1..=10_000 => n as i32,
                    n => return Err(format!("--partitions {n}: between 1 and 10000")),
                }
            }
            "--retention-mb" => a.retention_mb = number(flag)? as usize,
            "--retention-ms" => a.retention_ms = Some(number(flag)?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.port != 0 && usize::from(a.port) + a.nodes - 1 > usize::from(u16::MAX) {
        return Err(format!(
            "--port {} with --nodes {}: ports past 65535",
            a.port, a.nodes
        ));
    }
    Ok(Some(a))
}

/// Serves until SIGINT or SIGTERM, then stops every listener and connection.
pub(crate) async fn run(a: DevArgs) -> Result<(), String> {
    let mut builder = Cluster::builder()
        .nodes(a.nodes)
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
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| format!("SIGINT handler: {e}")),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("Ctrl-C handler: {e}"))
    }
}
