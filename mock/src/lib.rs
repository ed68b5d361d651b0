//! `paperboy-mock`: an in-process Kafka cluster for tests.
//!
//! A [`Cluster`] of 1 to N nodes listens on loopback ports and speaks the real Kafka wire
//! protocol, at the versions Kafka 4.x accepts (negotiated through ApiVersions), so any
//! client (Paperboy, kcat, the Java client) can talk to it: produce and fetch, consumer
//! groups and their offsets, and transactions (protocol version 1: transactional
//! producers, read_committed consumers, offsets committed in a transaction). It keeps everything in
//! memory, and a test can inject faults: errors, delays, dropped connections, nodes down,
//! leaders and coordinators moved, and see which requests arrived.
//!
//! ```no_run
//! use paperboy_mock::{ApiKey, Cluster, Fault, ResponseError};
//!
//! # async fn run() -> std::io::Result<()> {
//! let cluster = Cluster::builder().nodes(3).topic("orders", 6).build().await?;
//! // The next two Produce requests to the leader of orders/0 fail with NOT_LEADER_OR_FOLLOWER.
//! cluster.inject(
//!     Fault::error(ApiKey::Produce, ResponseError::NotLeaderOrFollower)
//!         .on_partition("orders", 0)
//!         .times(2),
//! );
//! let bootstrap = cluster.bootstrap(); // give it to the client under test
//! # drop(bootstrap);
//! # Ok(()) }
//! ```
//!
//! See `STATUS.md` in the crate for what is served and what is not yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cluster;
mod faults;
mod handlers;
mod log;
mod sasl;
mod server;
mod state;
mod versions;

pub use cluster::{Cluster, ClusterBuilder};
pub use faults::{Fault, FaultId, FaultKind, RequestRecord};
pub use kafka_protocol::messages::ApiKey;
pub use kafka_protocol::ResponseError;
pub use sasl::SaslMechanism;

/// The API versions the cluster advertises: (API, lowest, highest).
pub fn served_versions() -> impl Iterator<Item = (ApiKey, i16, i16)> {
    versions::SERVED.iter().copied()
}
