//! A real three-node Kafka cluster that a test starts (under `.kafka/<name>`, on ports
//! `port..port+5`) and that stops when the handle is dropped.

use std::path::PathBuf;
use std::process::Command;

pub struct Cluster {
    pub home: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Starts three nodes with fresh storage: PLAINTEXT on `port`, `port + 2`, `port + 4`.
    pub fn start(name: &str, port: u16) -> Cluster {
        let home = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".kafka")
            .join(name);
        let c = Cluster { home, port };
        c.kafka(&["start", "--nodes", "3"]);
        c
    }

    /// Runs `scripts/kafka` for this cluster; panics when it fails.
    pub fn kafka(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka");
        let status = Command::new(script)
            .args(args)
            .env("KAFKA_HOME", &self.home)
            .env("KAFKA_PORT", self.port.to_string())
            .status()
            .expect("scripts/kafka runs");
        assert!(status.success(), "scripts/kafka {args:?} failed");
    }

    /// A handle to the same cluster that does not stop it when dropped (for threads).
    pub fn handle(&self) -> ClusterHandle {
        ClusterHandle {
            home: self.home.clone(),
            port: self.port,
        }
    }

    /// SIGKILLs node `id` (1..=3).
    pub fn kill(&self, id: i32) {
        self.kafka(&["kill", &id.to_string()]);
    }

    /// Starts node `id` again and waits until it is up.
    pub fn start_node(&self, id: i32) {
        self.kafka(&["start-node", &id.to_string()]);
    }

    pub fn bootstrap(&self) -> String {
        let p = self.port;
        format!("127.0.0.1:{p},127.0.0.1:{},127.0.0.1:{}", p + 2, p + 4)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kafka(&["stop"]);
    }
}

/// [`Cluster`]'s commands, without stopping the cluster on drop.
pub struct ClusterHandle {
    home: PathBuf,
    port: u16,
}

impl ClusterHandle {
    pub fn kill(&self, id: i32) {
        let c = Cluster {
            home: self.home.clone(),
            port: self.port,
        };
        c.kill(id);
        std::mem::forget(c);
    }
}
