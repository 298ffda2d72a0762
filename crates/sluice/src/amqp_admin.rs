//! The AMQP door's management operations behind the admin API's trait. The admin crate may
//! not depend on a front door (scripts/check-layers.py), so the binary, which has both,
//! adapts the door's [`frontend_amqp::DoorHandle`] to [`admin::api::AmqpManagement`]: the
//! same operations, the admin crate's JSON types, the door's error kinds as HTTP statuses.

use admin::api::{
    AmqpManagement, ApiError, ApiFuture, ApiResult, ApiStatus, BindingInfo, ExchangeInfo,
    ExchangeSpec, MessageStats, QueueInfo, QueueSpec,
};
use frontend_amqp::{BindingView, DoorHandle, ManageError, ManageErrorKind, QueueView};

/// The AMQP door, as the admin server sees it.
pub struct AmqpAdmin(pub DoorHandle);

fn api_error(e: ManageError) -> ApiError {
    let status = match e.kind {
        ManageErrorKind::NotFound => ApiStatus::NotFound,
        ManageErrorKind::Invalid => ApiStatus::BadRequest,
        ManageErrorKind::Refused => ApiStatus::Forbidden,
        ManageErrorKind::Conflict => ApiStatus::Conflict,
        ManageErrorKind::Internal => ApiStatus::Internal,
    };
    ApiError::new(status, e.message)
}

fn queue_info(q: QueueView) -> QueueInfo {
    QueueInfo {
        effective_policy: (&q.policy).into(),
        vhost: q.vhost,
        name: q.name,
        durable: q.durable,
        auto_delete: q.auto_delete,
        exclusive: q.exclusive,
        arguments: q.arguments,
        messages: q.counts.ready + q.counts.unacked,
        messages_ready: q.counts.ready,
        messages_unacknowledged: q.counts.unacked,
        messages_scheduled: q.counts.scheduled,
        consumers: q.consumers,
        message_stats: MessageStats {
            published: q.totals.published,
            delivered: q.totals.delivered,
            acked: q.totals.acked,
            returned: q.totals.returned,
            dead_lettered: q.totals.dead_lettered,
        },
    }
}

fn exchange_info(x: frontend_amqp::ExchangeView) -> ExchangeInfo {
    ExchangeInfo {
        vhost: x.vhost,
        name: x.name,
        kind: x.kind.to_string(),
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: x
            .alternate
            .map(|a| ("alternate-exchange".to_string(), a))
            .into_iter()
            .collect(),
        builtin: x.builtin,
    }
}

fn binding_info(b: BindingView) -> BindingInfo {
    BindingInfo {
        vhost: b.vhost,
        source: b.source,
        destination: b.destination,
        destination_type: if b.to_exchange { "exchange" } else { "queue" }.to_string(),
        routing_key: b.routing_key,
        arguments: b.arguments.into_iter().collect(),
        // Filled in by the API.
        properties_key: String::new(),
    }
}

fn binding_view(b: &BindingInfo) -> BindingView {
    BindingView {
        vhost: b.vhost.clone(),
        source: b.source.clone(),
        destination: b.destination.clone(),
        to_exchange: b.to_exchange(),
        routing_key: b.routing_key.clone(),
        arguments: b
            .arguments
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

impl AmqpManagement for AmqpAdmin {
    fn vhosts(&self) -> Vec<String> {
        self.0.vhosts()
    }

    fn queues<'a>(&'a self, vhost: Option<&'a str>) -> ApiFuture<'a, Vec<QueueInfo>> {
        Box::pin(async move {
            let queues = self.0.queues(vhost).await.map_err(api_error)?;
            Ok(queues.into_iter().map(queue_info).collect())
        })
    }

    fn queue<'a>(&'a self, vhost: &'a str, name: &'a str) -> ApiFuture<'a, QueueInfo> {
        Box::pin(async move {
            let q = self.0.queue(vhost, name).await.map_err(api_error)?;
            Ok(queue_info(q))
        })
    }

    fn declare_queue(&self, vhost: &str, name: &str, spec: QueueSpec) -> ApiResult<bool> {
        let spec = frontend_amqp::QueueSpec {
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments,
        };
        self.0.declare_queue(vhost, name, spec).map_err(api_error)
    }

    fn delete_queue<'a>(
        &'a self,
        vhost: &'a str,
        name: &'a str,
        if_unused: bool,
        if_empty: bool,
    ) -> ApiFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .delete_queue(vhost, name, if_unused, if_empty)
                .await
                .map_err(api_error)
        })
    }

    fn purge_queue<'a>(&'a self, vhost: &'a str, name: &'a str) -> ApiFuture<'a, u64> {
        Box::pin(async move { self.0.purge_queue(vhost, name).await.map_err(api_error) })
    }

    fn exchanges(&self, vhost: Option<&str>) -> ApiResult<Vec<ExchangeInfo>> {
        let all = self.0.exchanges(vhost).map_err(api_error)?;
        Ok(all.into_iter().map(exchange_info).collect())
    }

    fn exchange(&self, vhost: &str, name: &str) -> ApiResult<ExchangeInfo> {
        self.0
            .exchange(vhost, name)
            .map(exchange_info)
            .map_err(api_error)
    }

    fn declare_exchange(&self, vhost: &str, name: &str, spec: ExchangeSpec) -> ApiResult<bool> {
        let spec = frontend_amqp::ExchangeSpec {
            kind: spec.kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            alternate: spec.alternate,
        };
        self.0
            .declare_exchange(vhost, name, spec)
            .map_err(api_error)
    }

    fn delete_exchange(&self, vhost: &str, name: &str, if_unused: bool) -> ApiResult<()> {
        self.0
            .delete_exchange(vhost, name, if_unused)
            .map_err(api_error)
    }

    fn bindings(&self, vhost: Option<&str>) -> ApiResult<Vec<BindingInfo>> {
        let all = self.0.bindings(vhost).map_err(api_error)?;
        Ok(all.into_iter().map(binding_info).collect())
    }

    fn bind(&self, binding: &BindingInfo) -> ApiResult<bool> {
        self.0.bind(&binding_view(binding)).map_err(api_error)
    }

    fn unbind(&self, binding: &BindingInfo) -> ApiResult<()> {
        self.0.unbind(&binding_view(binding)).map_err(api_error)
    }
}
