//! The AMQP objects' endpoints: `/api/vhosts`, `/api/queues…`, `/api/exchanges…`,
//! `/api/bindings…` (docs/http-api.md). Handlers parse the request, call the door's
//! [`AmqpManagement`] and shape the answer; the rules live in the door.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    AmqpManagement, ApiError, ApiResult, BindingInfo, ExchangeInfo, ExchangeSpec, Purged,
    QueueInfo, QueueSpec, VhostInfo, path_segment, properties_key,
};
use crate::AdminServer;

/// The default exchange's name in URLs (its real name is empty), as in RabbitMQ.
const DEFAULT_EXCHANGE: &str = "amq.default";

pub(super) fn routes() -> Router<AdminServer> {
    Router::new()
        .route("/api/vhosts", get(vhosts))
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(put_queue).delete(delete_queue),
        )
        .route("/api/queues/{vhost}/{name}/contents", delete(purge_queue))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange).put(put_exchange).delete(delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/{side}",
            get(exchange_bindings),
        )
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings_between).post(post_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(binding).delete(delete_binding),
        )
}

/// `Path` with a JSON 400 instead of axum's plain-text rejection.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `Query` with a JSON 400.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A JSON request body; an empty body is `{}`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

fn door(server: &AdminServer) -> ApiResult<&Arc<dyn AmqpManagement>> {
    server.amqp.as_ref().ok_or_else(|| {
        ApiError::new(
            super::ApiStatus::Unavailable,
            "the AMQP door is not running in this server",
        )
    })
}

/// Declare arguments as the text they are kept as; nested values are refused.
fn argument_texts(
    arguments: serde_json::Map<String, serde_json::Value>,
) -> ApiResult<BTreeMap<String, String>> {
    arguments
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "argument '{k}': expected a string, number or boolean"
                    )));
                }
            };
            Ok((k, text))
        })
        .collect()
}

fn yes() -> bool {
    true
}

fn created(new: bool) -> StatusCode {
    if new {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueBody {
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingBody {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct DeleteFlags {
    #[serde(rename = "if-unused", default)]
    if_unused: bool,
    #[serde(rename = "if-empty", default)]
    if_empty: bool,
}

async fn vhosts(State(s): State<AdminServer>) -> ApiResult<Json<Vec<VhostInfo>>> {
    let names = door(&s)?.vhosts();
    Ok(Json(
        names.into_iter().map(|name| VhostInfo { name }).collect(),
    ))
}

async fn queues(State(s): State<AdminServer>) -> ApiResult<Json<Vec<QueueInfo>>> {
    Ok(Json(door(&s)?.queues(None).await?))
}

async fn queues_in(
    State(s): State<AdminServer>,
    ApiPath(vhost): ApiPath<String>,
) -> ApiResult<Json<Vec<QueueInfo>>> {
    Ok(Json(door(&s)?.queues(Some(&vhost)).await?))
}

async fn queue(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<QueueInfo>> {
    Ok(Json(door(&s)?.queue(&vhost, &name).await?))
}

async fn put_queue(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
    bytes: Bytes,
) -> ApiResult<StatusCode> {
    let b: QueueBody = body(&bytes)?;
    let spec = QueueSpec {
        durable: b.durable,
        auto_delete: b.auto_delete,
        arguments: argument_texts(b.arguments)?,
    };
    Ok(created(door(&s)?.declare_queue(&vhost, &name, spec)?))
}

async fn delete_queue(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
    ApiQuery(flags): ApiQuery<DeleteFlags>,
) -> ApiResult<StatusCode> {
    door(&s)?
        .delete_queue(&vhost, &name, flags.if_unused, flags.if_empty)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn purge_queue(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Purged>> {
    let message_count = door(&s)?.purge_queue(&vhost, &name).await?;
    Ok(Json(Purged { message_count }))
}

async fn queue_bindings(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<BindingInfo>>> {
    let d = door(&s)?;
    d.queue(&vhost, &name).await?;
    let all = all_bindings(d.as_ref(), Some(&vhost))?;
    Ok(Json(
        all.into_iter()
            .filter(|b| !b.to_exchange() && b.destination == name)
            .collect(),
    ))
}

/// An exchange name from a URL (`amq.default` is the default exchange).
fn exchange_name(name: &str) -> &str {
    if name == DEFAULT_EXCHANGE { "" } else { name }
}

async fn exchanges(State(s): State<AdminServer>) -> ApiResult<Json<Vec<ExchangeInfo>>> {
    Ok(Json(door(&s)?.exchanges(None)?))
}

async fn exchanges_in(
    State(s): State<AdminServer>,
    ApiPath(vhost): ApiPath<String>,
) -> ApiResult<Json<Vec<ExchangeInfo>>> {
    Ok(Json(door(&s)?.exchanges(Some(&vhost))?))
}

async fn exchange(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<ExchangeInfo>> {
    Ok(Json(door(&s)?.exchange(&vhost, exchange_name(&name))?))
}

async fn put_exchange(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
    bytes: Bytes,
) -> ApiResult<StatusCode> {
    let b: ExchangeBody = body(&bytes)?;
    let mut arguments = argument_texts(b.arguments)?;
    let alternate = arguments.remove("alternate-exchange");
    if let Some(other) = arguments.keys().next() {
        return Err(ApiError::bad_request(format!(
            "exchange argument '{other}' is not supported (only alternate-exchange)"
        )));
    }
    let spec = ExchangeSpec {
        kind: b.kind,
        durable: b.durable,
        auto_delete: b.auto_delete,
        internal: b.internal,
        alternate,
    };
    let new = door(&s)?.declare_exchange(&vhost, exchange_name(&name), spec)?;
    Ok(created(new))
}

async fn delete_exchange(
    State(s): State<AdminServer>,
    ApiPath((vhost, name)): ApiPath<(String, String)>,
    ApiQuery(flags): ApiQuery<DeleteFlags>,
) -> ApiResult<StatusCode> {
    door(&s)?.delete_exchange(&vhost, exchange_name(&name), flags.if_unused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `…/bindings/source`: the bindings the exchange routes through; `…/destination`: the
/// exchange-to-exchange bindings feeding it.
async fn exchange_bindings(
    State(s): State<AdminServer>,
    ApiPath((vhost, name, side)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Vec<BindingInfo>>> {
    let d = door(&s)?;
    let name = exchange_name(&name);
    let source = match side.as_str() {
        "source" => true,
        "destination" => false,
        _ => {
            return Err(ApiError::not_found(format!(
                "no endpoint bindings/{side}: use bindings/source or bindings/destination"
            )));
        }
    };
    d.exchange(&vhost, name)?;
    let all = all_bindings(d.as_ref(), Some(&vhost))?;
    Ok(Json(
        all.into_iter()
            .filter(|b| {
                if source {
                    b.source == name
                } else {
                    b.to_exchange() && b.destination == name
                }
            })
            .collect(),
    ))
}

/// The door's bindings with their `properties_key`.
fn all_bindings(d: &dyn AmqpManagement, vhost: Option<&str>) -> ApiResult<Vec<BindingInfo>> {
    let mut all = d.bindings(vhost)?;
    for b in &mut all {
        b.properties_key = properties_key(&b.routing_key, &b.arguments);
    }
    Ok(all)
}

async fn bindings(State(s): State<AdminServer>) -> ApiResult<Json<Vec<BindingInfo>>> {
    Ok(Json(all_bindings(door(&s)?.as_ref(), None)?))
}

async fn bindings_in(
    State(s): State<AdminServer>,
    ApiPath(vhost): ApiPath<String>,
) -> ApiResult<Json<Vec<BindingInfo>>> {
    Ok(Json(all_bindings(door(&s)?.as_ref(), Some(&vhost))?))
}

/// The source and destination a binding URL names: `…/e/{source}/q/{queue}` or
/// `…/e/{source}/e/{exchange}`.
struct Between {
    vhost: String,
    source: String,
    destination: String,
    to_exchange: bool,
}

impl Between {
    fn parse(vhost: String, source: String, kind: &str, destination: String) -> ApiResult<Self> {
        let to_exchange = match kind {
            "q" => false,
            "e" => true,
            _ => {
                return Err(ApiError::not_found(format!(
                    "no endpoint for destination type '{kind}': use q (queue) or e (exchange)"
                )));
            }
        };
        Ok(Between {
            vhost,
            source: exchange_name(&source).to_string(),
            destination: if to_exchange {
                exchange_name(&destination).to_string()
            } else {
                destination
            },
            to_exchange,
        })
    }

    /// 404 unless the source and the destination exist.
    async fn check(&self, d: &dyn AmqpManagement) -> ApiResult<()> {
        d.exchange(&self.vhost, &self.source)?;
        if self.to_exchange {
            d.exchange(&self.vhost, &self.destination)?;
        } else {
            d.queue(&self.vhost, &self.destination).await?;
        }
        Ok(())
    }

    fn matching(&self, d: &dyn AmqpManagement) -> ApiResult<Vec<BindingInfo>> {
        Ok(all_bindings(d, Some(&self.vhost))?
            .into_iter()
            .filter(|b| {
                b.source == self.source
                    && b.destination == self.destination
                    && b.to_exchange() == self.to_exchange
            })
            .collect())
    }

    fn one(&self, d: &dyn AmqpManagement, props: &str) -> ApiResult<BindingInfo> {
        self.matching(d)?
            .into_iter()
            .find(|b| b.properties_key == props)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no binding from exchange '{}' to {} '{}' with properties key '{props}' in vhost '{}'",
                    self.source,
                    if self.to_exchange { "exchange" } else { "queue" },
                    self.destination,
                    self.vhost
                ))
            })
    }

    fn location(&self, props: &str) -> String {
        let source = if self.source.is_empty() {
            DEFAULT_EXCHANGE
        } else {
            &self.source
        };
        format!(
            "/api/bindings/{}/e/{}/{}/{}/{}",
            path_segment(&self.vhost),
            path_segment(source),
            if self.to_exchange { "e" } else { "q" },
            path_segment(&self.destination),
            path_segment(props)
        )
    }
}

async fn bindings_between(
    State(s): State<AdminServer>,
    ApiPath((vhost, source, kind, destination)): ApiPath<(String, String, String, String)>,
) -> ApiResult<Json<Vec<BindingInfo>>> {
    let d = door(&s)?.as_ref();
    let between = Between::parse(vhost, source, &kind, destination)?;
    between.check(d).await?;
    Ok(Json(between.matching(d)?))
}

async fn post_binding(
    State(s): State<AdminServer>,
    ApiPath((vhost, source, kind, destination)): ApiPath<(String, String, String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let d = door(&s)?.as_ref();
    let between = Between::parse(vhost, source, &kind, destination)?;
    let b: BindingBody = body(&bytes)?;
    let arguments = argument_texts(b.arguments)?;
    let props = properties_key(&b.routing_key, &arguments);
    let binding = BindingInfo {
        vhost: between.vhost.clone(),
        source: between.source.clone(),
        destination: between.destination.clone(),
        destination_type: if between.to_exchange {
            "exchange"
        } else {
            "queue"
        }
        .to_string(),
        routing_key: b.routing_key,
        arguments,
        properties_key: props.clone(),
    };
    let new = d.bind(&binding)?;
    Ok((created(new), [(header::LOCATION, between.location(&props))]).into_response())
}

async fn binding(
    State(s): State<AdminServer>,
    ApiPath((vhost, source, kind, destination, props)): ApiPath<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> ApiResult<Json<BindingInfo>> {
    let d = door(&s)?.as_ref();
    let between = Between::parse(vhost, source, &kind, destination)?;
    between.check(d).await?;
    Ok(Json(between.one(d, &props)?))
}

async fn delete_binding(
    State(s): State<AdminServer>,
    ApiPath((vhost, source, kind, destination, props)): ApiPath<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> ApiResult<StatusCode> {
    let d = door(&s)?.as_ref();
    let between = Between::parse(vhost, source, &kind, destination)?;
    between.check(d).await?;
    let found = between.one(d, &props)?;
    d.unbind(&found)?;
    Ok(StatusCode::NO_CONTENT)
}
