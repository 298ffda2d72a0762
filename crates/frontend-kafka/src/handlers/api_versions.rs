//! ApiVersions: the supported table. Unsupported request versions get
//! UNSUPPORTED_VERSION with the table in a v0 body, as Kafka answers (clients then retry
//! with a version they share).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use crate::versions::SUPPORTED;

pub fn response(error_code: i16) -> ApiVersionsResponse {
    // Only non-default tagged fields are written by kafka-protocol: none here, which old
    // librdkafka (< 2.2) needs.
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

pub fn unsupported() -> ApiVersionsResponse {
    response(ResponseError::UnsupportedVersion.code())
}
