//! ApiVersions (key 18), v0–4. Always answered with response header v0 (KIP-511); an unsupported request
//! version gets the v0 layout with UNSUPPORTED_VERSION and the key list, so the client can retry lower.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{HandlerResult, RequestContext, Response};
use crate::codec::{self, CodecError, SUPPORTED_APIS};
use crate::errors::ResponseError;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = *key as i16;
            version.min_version = *min;
            version.max_version = *max;
            version
        })
        .collect()
}

pub fn handle(context: &RequestContext, _body: ApiVersionsRequest) -> HandlerResult {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = api_keys();
    context.respond(&response)
}

/// The v0-layout answer to an ApiVersions request of a version this broker does not know.
pub fn unsupported_version_response(correlation_id: i32) -> Result<Response, CodecError> {
    let mut response = ApiVersionsResponse::default();
    response.error_code = ResponseError::UnsupportedVersion.code();
    response.api_keys = api_keys();
    let frame: Bytes = codec::encode_response(ApiKey::ApiVersions, 0, correlation_id, &response)?;
    Ok(Response { chunks: vec![frame] })
}
