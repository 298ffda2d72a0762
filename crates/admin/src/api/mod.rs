//! `/api/…`: the JSON management API (docs/http-api.md), shaped after RabbitMQ's
//! management API: queues, exchanges and bindings by vhost and name, read with GET,
//! declared with PUT (bindings: POST), removed with DELETE. `sluice queue|exchange|binding`
//! call it; the console (issue 21) will too.
//!
//! This crate may not depend on a front door, so the AMQP door's operations come in as an
//! [`AmqpManagement`] trait object the binary builds around the door
//! ([`crate::AdminServer::with_amqp`]); without one every AMQP endpoint answers 503.
//!
//! Every error is `{"error": "…"}` with a status saying which kind ([`ApiError`]): 400 a
//! bad request, 403 not permitted, 404 not found, 409 a conflict with what exists, 503 the
//! door is not running, 500 the broker failed.

mod amqp;
mod model;

use std::future::Future;
use std::pin::Pin;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::AdminServer;
pub use model::{
    BindingInfo, ErrorBody, ExchangeInfo, ExchangeSpec, MessageStats, Purged, QueueInfo,
    QueuePolicyInfo, QueueSpec, VhostInfo,
};

/// The kinds of API errors, each one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiStatus {
    BadRequest,
    Forbidden,
    NotFound,
    Conflict,
    Unavailable,
    Internal,
}

impl ApiStatus {
    pub fn code(self) -> StatusCode {
        match self {
            ApiStatus::BadRequest => StatusCode::BAD_REQUEST,
            ApiStatus::Forbidden => StatusCode::FORBIDDEN,
            ApiStatus::NotFound => StatusCode::NOT_FOUND,
            ApiStatus::Conflict => StatusCode::CONFLICT,
            ApiStatus::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiStatus::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed API call: its status and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: ApiStatus,
    pub message: String,
}

impl ApiError {
    pub fn new(status: ApiStatus, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ApiStatus::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ApiStatus::NotFound, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status.code(), Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
/// What the asynchronous operations of [`AmqpManagement`] return.
pub type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = ApiResult<T>> + Send + 'a>>;

/// The AMQP door's management operations, by vhost and the name clients use (`""`: the
/// default exchange). Errors say which status to answer with.
pub trait AmqpManagement: Send + Sync {
    /// The vhosts served, `/` first.
    fn vhosts(&self) -> Vec<String>;
    /// The queues of `vhost` (every vhost's when `None`; 404 for an unknown vhost).
    fn queues<'a>(&'a self, vhost: Option<&'a str>) -> ApiFuture<'a, Vec<QueueInfo>>;
    fn queue<'a>(&'a self, vhost: &'a str, name: &'a str) -> ApiFuture<'a, QueueInfo>;
    /// True when created, false when it existed declared alike (409 when not alike).
    fn declare_queue(&self, vhost: &str, name: &str, spec: QueueSpec) -> ApiResult<bool>;
    /// Deletes a queue with its bindings and messages; its consumers are cancelled.
    fn delete_queue<'a>(
        &'a self,
        vhost: &'a str,
        name: &'a str,
        if_unused: bool,
        if_empty: bool,
    ) -> ApiFuture<'a, ()>;
    /// Drops the ready messages; returns how many.
    fn purge_queue<'a>(&'a self, vhost: &'a str, name: &'a str) -> ApiFuture<'a, u64>;
    fn exchanges(&self, vhost: Option<&str>) -> ApiResult<Vec<ExchangeInfo>>;
    fn exchange(&self, vhost: &str, name: &str) -> ApiResult<ExchangeInfo>;
    fn declare_exchange(&self, vhost: &str, name: &str, spec: ExchangeSpec) -> ApiResult<bool>;
    fn delete_exchange(&self, vhost: &str, name: &str, if_unused: bool) -> ApiResult<()>;
    /// Every binding of `vhost` (every vhost's when `None`); `properties_key` is filled in
    /// by the API.
    fn bindings(&self, vhost: Option<&str>) -> ApiResult<Vec<BindingInfo>>;
    /// True when the binding is new.
    fn bind(&self, binding: &BindingInfo) -> ApiResult<bool>;
    /// 404 when there is no such binding.
    fn unbind(&self, binding: &BindingInfo) -> ApiResult<()>;
}

/// The `/api` routes.
pub(crate) fn routes() -> Router<AdminServer> {
    amqp::routes()
}

/// JSON 404 for a path no route serves.
pub(crate) async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint {}", uri.path()))
}

/// JSON 405 for a method a route does not serve.
pub(crate) async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let body = ErrorBody {
        error: format!("{method} is not served on {}", uri.path()),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// `s` as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded (`/` → `%2F`, so the default vhost is `%2F`).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `properties_key` of a binding with `routing_key` and `arguments`: the routing key
/// (`~` doubled; `~` alone for an empty key), then `~` and a hash of the arguments when
/// there are some. Distinct bindings between one source and destination get distinct keys.
pub fn properties_key(
    routing_key: &str,
    arguments: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut key = if routing_key.is_empty() {
        "~".to_string()
    } else {
        routing_key.replace('~', "~~")
    };
    if !arguments.is_empty() {
        // FNV-1a over the sorted arguments: stable across processes and versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in arguments {
            for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        if !routing_key.is_empty() {
            key.push('~');
        }
        key.push_str(&format!("{h:016x}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(path_segment("/"), "%2F");
        assert_eq!(path_segment("orders.eu-1_x~"), "orders.eu-1_x~");
        assert_eq!(path_segment("a b/#*"), "a%20b%2F%23%2A");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn properties_keys_tell_bindings_apart() {
        let none = BTreeMap::new();
        let args: BTreeMap<String, String> = [("x-match".to_string(), "any".to_string())].into();
        let keys = [
            properties_key("", &none),
            properties_key("~", &none),
            properties_key("a", &none),
            properties_key("a", &args),
            properties_key("", &args),
            properties_key("a~", &none),
        ];
        assert_eq!(keys[0], "~");
        assert_eq!(keys[2], "a");
        let mut unique = keys.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(
            properties_key("a", &args),
            properties_key("a", &args.clone()),
            "stable"
        );
    }
}
