//! What every command that talks to a cluster takes: the bootstrap servers, `-X`
//! properties and a properties file (`-F`), as kcat and the Java tools take them.

use std::path::PathBuf;

use clap::Args;
use paperboy::{Client, ClientConfig};

/// Connection options, shared by the commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnArgs {
    /// Bootstrap servers, comma-separated (or KAFKA_BOOTSTRAP)
    #[arg(
        short = 'b',
        long = "bootstrap",
        env = "KAFKA_BOOTSTRAP",
        value_name = "LIST"
    )]
    pub(crate) bootstrap: String,
    /// A client property, as librdkafka or Java name it (repeatable): security.protocol,
    /// sasl.mechanism, linger.ms, isolation.level, ...
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", value_parser = key_value)]
    pub(crate) properties: Vec<(String, String)>,
    /// A properties file (KEY=VALUE lines, # comments), read before -X
    #[arg(short = 'F', long = "config-file", value_name = "FILE")]
    pub(crate) config_file: Option<PathBuf>,
}

/// `KEY=VALUE`.
pub(crate) fn key_value(v: &str) -> Result<(String, String), String> {
    v.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{v}: expected KEY=VALUE"))
}

impl ConnArgs {
    /// The properties: the file's, then `-X`'s (which win), then `bootstrap.servers`.
    pub(crate) fn properties(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        if let Some(path) = &self.config_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("-F {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let kv = key_value(line)
                    .map_err(|e| format!("-F {} line {}: {e}", path.display(), n + 1))?;
                out.push(kv);
            }
        }
        out.extend(self.properties.iter().cloned());
        out.push(("bootstrap.servers".to_owned(), self.bootstrap.clone()));
        Ok(out)
    }

    /// A client with these settings.
    pub(crate) async fn client(&self) -> Result<Client, String> {
        let mut cfg = ClientConfig::default();
        for (k, v) in self.properties()? {
            cfg.set(&k, &v).map_err(|e| e.to_string())?;
        }
        Client::connect(cfg).await.map_err(|e| e.to_string())
    }
}
