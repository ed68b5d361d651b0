//! API version negotiation.
//!
//! A broker answers ApiVersions with the range of versions it speaks for each API. The
//! client speaks the range kafka-protocol generates, raised to the floor Kafka 4.0 enforces
//! (KIP-896). The version used for a request is the highest version in both ranges.
//!
//! Kafka 4.0 still advertises Produce v0-v2 but closes the connection on them
//! (KAFKA-18659), so the floor is applied to our side, never taken from the broker's.
//!
//! # References
//! - KIP-35 (ApiVersions), KIP-511 (client name and version), KIP-896 (removed versions)

use std::collections::HashMap;

use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

/// The lowest version this crate sends for `api`.
///
/// These are the minimums Kafka 4.0 accepts (KIP-896); older brokers (3.x) accept them too.
pub fn client_min_version(api: ApiKey) -> i16 {
    let generated = api.valid_versions().min;
    let floor = match api {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets | ApiKey::OffsetFetch => 1,
        ApiKey::OffsetCommit | ApiKey::CreateTopics | ApiKey::OffsetForLeaderEpoch => 2,
        ApiKey::DeleteTopics => 1,
        _ => 0,
    };
    generated.max(floor)
}

/// The range of versions this crate speaks for `api`.
pub fn client_versions(api: ApiKey) -> VersionRange {
    VersionRange {
        min: client_min_version(api),
        max: api.valid_versions().max,
    }
}

/// The versions a broker advertised, and the choice of version for each request.
#[derive(Debug, Clone, Default)]
pub struct ApiVersions {
    broker: HashMap<i16, VersionRange>,
}

impl ApiVersions {
    /// Builds the table from a broker's ApiVersions response.
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let broker = response
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
        ApiVersions { broker }
    }

    /// The range the broker advertised for `api`, if any.
    pub fn broker_range(&self, api: ApiKey) -> Option<VersionRange> {
        self.broker.get(&(api as i16)).copied()
    }

    /// The version to use for `api`: the highest both sides speak.
    ///
    /// Returns `None` when the broker does not support `api` at any version this crate
    /// speaks.
    pub fn negotiate(&self, api: ApiKey) -> Option<i16> {
        let both = self.broker_range(api)?.intersect(&client_versions(api));
        (!both.is_empty()).then_some(both.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    fn table(entries: &[(ApiKey, i16, i16)]) -> ApiVersions {
        let mut resp = ApiVersionsResponse::default();
        resp.api_keys = entries
            .iter()
            .map(|&(k, min, max)| {
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect();
        ApiVersions::from_response(&resp)
    }

    #[test]
    fn picks_highest_common_version() {
        let t = table(&[(ApiKey::Metadata, 0, 12), (ApiKey::Fetch, 4, 99)]);
        assert_eq!(t.negotiate(ApiKey::Metadata), Some(12));
        assert_eq!(
            t.negotiate(ApiKey::Fetch),
            Some(ApiKey::Fetch.valid_versions().max)
        );
        assert_eq!(t.negotiate(ApiKey::Produce), None);
    }

    #[test]
    fn never_goes_below_the_kafka_4_floor() {
        // Kafka 4.0 advertises Produce 0..=2 support but rejects it: never pick it.
        let t = table(&[(ApiKey::Produce, 0, 2)]);
        assert_eq!(t.negotiate(ApiKey::Produce), None);
        let t = table(&[(ApiKey::Produce, 0, 11)]);
        assert_eq!(t.negotiate(ApiKey::Produce), Some(11));
        assert_eq!(client_min_version(ApiKey::Produce), 3);
        assert_eq!(client_min_version(ApiKey::OffsetCommit), 2);
    }
}
