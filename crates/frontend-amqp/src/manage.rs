//! The door's management operations, for the admin HTTP API (`/api/…`, docs/http-api.md)
//! that `sluice queue|exchange|binding` and later the console use: queues, exchanges and
//! bindings by vhost and local name, under the rules the AMQP methods follow (reserved
//! names, inequivalent redeclares, if-unused / if-empty, a queue's or exchange's bindings
//! going with it, consumers of a deleted queue cancelled).
//!
//! [`DoorHandle`] is the door's shared state, opened once per process: [`crate::serve_handle`]
//! serves AMQP clients on it, and the binary hands it to the admin server (which may not
//! depend on this crate) behind the admin crate's trait. There is no connection here, so
//! nothing is exclusive to the caller: an operator may purge, bind to or delete a queue
//! another connection declared exclusive, as RabbitMQ's management API may, but not
//! declare one (`exclusive` needs an owner).

use std::collections::BTreeMap;
use std::sync::Arc;

use broker::metrics::QueueTotals;
use broker::queue::QueuePolicy;
use broker::{Broker, BrokerError, QueueCounts};

use crate::config::AmqpConfig;
use crate::door::{AUTO_DELETE_SETTING, Door};
use crate::errors::{
    ACCESS_REFUSED, AmqpError, COMMAND_INVALID, NOT_FOUND, PRECONDITION_FAILED, RESOURCE_LOCKED,
    from_broker,
};
use crate::queue_methods::{DURABLE_SETTING, check_queue_name};
use crate::topology::{Binding, Destination, Exchange, ExchangeKind, is_builtin};
use crate::vhost::{Vhost, describe, split};

/// Longest queue, exchange or routing-key name: AMQP's short string.
const NAME_MAX_BYTES: usize = 255;
/// How the settings the door keeps beside the declare arguments start (`amqp.durable`, …):
/// refused as argument names.
const SETTING_PREFIX: &str = "amqp.";

/// Why a management operation failed, in terms an HTTP API can map to a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManageErrorKind {
    /// No such vhost, queue, exchange or binding.
    NotFound,
    /// The request itself is wrong: an unknown exchange type, a bad argument, an empty name.
    Invalid,
    /// Not permitted: reserved names, the default and built-in exchanges.
    Refused,
    /// Conflicts with what exists: an inequivalent redeclare, in use, not empty, locked.
    Conflict,
    /// The broker failed (storage, shutting down).
    Internal,
}

/// A failed management operation with a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManageError {
    pub kind: ManageErrorKind,
    pub message: String,
}

impl ManageError {
    fn new(kind: ManageErrorKind, message: impl Into<String>) -> ManageError {
        ManageError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ManageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManageError {}

impl From<AmqpError> for ManageError {
    fn from(e: AmqpError) -> ManageError {
        let kind = match e.code {
            NOT_FOUND => ManageErrorKind::NotFound,
            ACCESS_REFUSED => ManageErrorKind::Refused,
            PRECONDITION_FAILED | RESOURCE_LOCKED => ManageErrorKind::Conflict,
            COMMAND_INVALID => ManageErrorKind::Invalid,
            _ => ManageErrorKind::Internal,
        };
        ManageError::new(kind, e.text)
    }
}

pub type ManageResult<T> = Result<T, ManageError>;

/// One queue as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueView {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// Declared exclusive by a connection that is still open.
    pub exclusive: bool,
    /// The declare arguments (`x-…`), as their text.
    pub arguments: BTreeMap<String, String>,
    /// What the arguments make of the queue (TTL, dead letters, limits, priorities).
    pub policy: QueuePolicy,
    pub counts: QueueCounts,
    /// Consumers subscribed now (basic.consume), whether or not they hold messages.
    pub consumers: u32,
    /// Counters since the broker started.
    pub totals: QueueTotals,
}

/// What a queue declare asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueSpec {
    pub durable: bool,
    pub auto_delete: bool,
    /// Declare arguments as their text (an AMQP declare's values are kept as text too, so
    /// `60000` from either side is the same setting).
    pub arguments: BTreeMap<String, String>,
}

/// One exchange as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeView {
    pub vhost: String,
    /// `""` for the default exchange.
    pub name: String,
    /// direct, fanout, topic or headers.
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    /// The `alternate-exchange` argument (a name in the same vhost).
    pub alternate: Option<String>,
    /// One of `amq.*` or the default exchange: always there, cannot be deleted.
    pub builtin: bool,
}

/// What an exchange declare asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// direct, fanout, topic or headers.
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub alternate: Option<String>,
}

/// A binding, shown or asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingView {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    /// The destination is an exchange (exchange-to-exchange binding), not a queue.
    pub to_exchange: bool,
    pub routing_key: String,
    /// Binding arguments (headers exchanges), sorted, as their text.
    pub arguments: Vec<(String, String)>,
}

/// The door's shared state (exchanges, bindings, consumers of each queue), opened once.
#[derive(Clone)]
pub struct DoorHandle(pub(crate) Arc<Door>);

fn not_found(what: &str, internal: &str) -> ManageError {
    ManageError::new(
        ManageErrorKind::NotFound,
        format!("no {what} {}", describe(internal)),
    )
}

fn check_length(what: &str, name: &str) -> ManageResult<()> {
    if name.len() > NAME_MAX_BYTES {
        return Err(ManageError::new(
            ManageErrorKind::Invalid,
            format!(
                "{what} is {} bytes long; at most {NAME_MAX_BYTES}",
                name.len()
            ),
        ));
    }
    Ok(())
}

impl DoorHandle {
    /// Opens the door's state over `broker`: loads the saved exchanges and bindings and
    /// deletes what must not outlive a restart (transient queues and exchanges).
    pub fn open(broker: Arc<Broker>, config: AmqpConfig) -> DoorHandle {
        DoorHandle(Arc::new(Door::new(broker, config)))
    }

    fn broker(&self) -> &Broker {
        &self.0.broker
    }

    /// The vhosts served, `/` first.
    pub fn vhosts(&self) -> Vec<String> {
        self.0.access.vhosts.clone()
    }

    /// 404 unless `vhost` is served.
    fn vhost(&self, vhost: &str) -> ManageResult<Vhost> {
        if self.0.access.vhosts.iter().any(|v| v == vhost) {
            Ok(Vhost(vhost.to_string()))
        } else {
            Err(ManageError::new(
                ManageErrorKind::NotFound,
                format!("no vhost '{vhost}'"),
            ))
        }
    }

    /// The internal name of `local` in `vhost` (served; a name `/` may use).
    fn internal(&self, vhost: &str, local: &str, what: &str) -> ManageResult<String> {
        let v = self.vhost(vhost)?;
        check_length(&format!("{what} name"), local)?;
        v.check_local(local)?;
        Ok(v.internal(local))
    }

    fn require_queue(&self, internal: &str) -> ManageResult<()> {
        if self.broker().queue_exists(internal) {
            Ok(())
        } else {
            Err(not_found("queue", internal))
        }
    }

    /// The queues of `vhost` (every vhost's when `None`), by vhost and name.
    pub async fn queues(&self, vhost: Option<&str>) -> ManageResult<Vec<QueueView>> {
        if let Some(v) = vhost {
            self.vhost(v)?;
        }
        let mut out = Vec::new();
        for internal in self.broker().list_queues() {
            if vhost.is_some_and(|v| split(&internal).0 != v) {
                continue;
            }
            match self.view(&internal).await {
                Ok(q) => out.push(q),
                // Deleted since the listing.
                Err(e) if e.kind == ManageErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Ok(out)
    }

    /// Queue `name` of `vhost`.
    pub async fn queue(&self, vhost: &str, name: &str) -> ManageResult<QueueView> {
        let internal = self.internal(vhost, name, "queue")?;
        self.view(&internal).await
    }

    async fn view(&self, internal: &str) -> ManageResult<QueueView> {
        let broker = self.broker();
        let settings = broker
            .queue_settings(internal)
            .ok_or_else(|| not_found("queue", internal))?;
        let counts = match broker.queue_counts(internal).await {
            Ok(c) => c,
            Err(BrokerError::UnknownTopicOrPartition) => {
                return Err(not_found("queue", internal));
            }
            Err(e) => return Err(from_broker(&e).into()),
        };
        let (vhost, local) = split(internal);
        let flag = |key: &str| settings.get(key).map(String::as_str);
        Ok(QueueView {
            vhost: vhost.to_string(),
            name: local.to_string(),
            durable: flag(DURABLE_SETTING) != Some("false"),
            auto_delete: flag(AUTO_DELETE_SETTING) == Some("true"),
            exclusive: self.0.owner(internal).is_some(),
            policy: broker.queue_policy(internal).unwrap_or_default(),
            arguments: settings
                .into_iter()
                .filter(|(k, _)| !k.starts_with(SETTING_PREFIX))
                .collect(),
            counts,
            consumers: self.0.consumer_count(internal),
            totals: broker.metrics().queue_totals(internal),
        })
    }

    /// Declares queue `name` in `vhost`: true when it was created, false when it existed
    /// declared alike.
    pub fn declare_queue(&self, vhost: &str, name: &str, spec: QueueSpec) -> ManageResult<bool> {
        if name.is_empty() {
            return Err(ManageError::new(
                ManageErrorKind::Invalid,
                "a queue needs a name (server-named queues are for AMQP clients)",
            ));
        }
        check_queue_name(name, true)?;
        let internal = self.internal(vhost, name, "queue")?;
        if let Some(k) = spec
            .arguments
            .keys()
            .find(|k| k.starts_with(SETTING_PREFIX))
        {
            return Err(ManageError::new(
                ManageErrorKind::Invalid,
                format!("argument '{k}': names starting with '{SETTING_PREFIX}' are reserved"),
            ));
        }
        if self.0.owner(&internal).is_some() {
            return Err(crate::door::locked(&internal).into());
        }
        let mut settings = spec.arguments;
        settings.insert(DURABLE_SETTING.to_string(), spec.durable.to_string());
        if spec.auto_delete {
            settings.insert(AUTO_DELETE_SETTING.to_string(), "true".to_string());
        }
        let asked = settings_text(&settings);
        let created = self
            .broker()
            .declare_queue(&internal, settings)
            .map_err(|e| match e {
                BrokerError::InvalidConfig(text) if text.starts_with("invalid arg") => {
                    ManageError::new(ManageErrorKind::Invalid, text)
                }
                BrokerError::InvalidConfig(_) => {
                    let current = self.broker().queue_settings(&internal).unwrap_or_default();
                    ManageError::new(
                        ManageErrorKind::Conflict,
                        format!(
                            "queue {} exists with other settings: {} (asked for {asked})",
                            describe(&internal),
                            settings_text(&current)
                        ),
                    )
                }
                other => from_broker(&other).into(),
            })?;
        if created {
            self.0.queue_declared(&internal);
        }
        Ok(created)
    }

    /// Deletes queue `name` of `vhost` with its bindings and messages; its consumers are
    /// cancelled. `if_unused`: refused while it has consumers; `if_empty`: while it holds
    /// messages (ready or unacknowledged).
    pub async fn delete_queue(
        &self,
        vhost: &str,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> ManageResult<()> {
        check_queue_name(name, false)?;
        let internal = self.internal(vhost, name, "queue")?;
        let q = self.view(&internal).await?;
        if if_unused && q.consumers > 0 {
            return Err(ManageError::new(
                ManageErrorKind::Conflict,
                format!(
                    "queue {} in use ({} consumers)",
                    describe(&internal),
                    q.consumers
                ),
            ));
        }
        if if_empty && q.counts.ready + q.counts.unacked > 0 {
            return Err(ManageError::new(
                ManageErrorKind::Conflict,
                format!(
                    "queue {} not empty ({} ready, {} unacknowledged)",
                    describe(&internal),
                    q.counts.ready,
                    q.counts.unacked
                ),
            ));
        }
        self.0.delete_queue(&internal)?;
        Ok(())
    }

    /// Drops the ready messages of queue `name` (unacknowledged ones stay with their
    /// consumers); returns how many.
    pub async fn purge_queue(&self, vhost: &str, name: &str) -> ManageResult<u64> {
        let internal = self.internal(vhost, name, "queue")?;
        self.require_queue(&internal)?;
        match self.broker().queue_purge(&internal).await {
            Ok(n) => Ok(n),
            Err(BrokerError::UnknownTopicOrPartition) => Err(not_found("queue", &internal)),
            Err(e) => Err(from_broker(&e).into()),
        }
    }

    /// The exchanges of `vhost` (every vhost's when `None`), built-in ones included.
    pub fn exchanges(&self, vhost: Option<&str>) -> ManageResult<Vec<ExchangeView>> {
        if let Some(v) = vhost {
            self.vhost(v)?;
        }
        let mut out: Vec<ExchangeView> = self
            .0
            .topology
            .exchanges()
            .into_iter()
            .filter(|(n, _)| vhost.is_none_or(|v| split(n).0 == v))
            .map(|(n, x)| exchange_view(&n, &x))
            .collect();
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Ok(out)
    }

    /// Exchange `name` of `vhost` (`""`: the default exchange).
    pub fn exchange(&self, vhost: &str, name: &str) -> ManageResult<ExchangeView> {
        let internal = self.internal(vhost, name, "exchange")?;
        let x = self.0.topology.exchange_or_404(&internal)?;
        Ok(exchange_view(&internal, &x))
    }

    /// Declares exchange `name` in `vhost`: true when created, false when it existed
    /// declared alike.
    pub fn declare_exchange(
        &self,
        vhost: &str,
        name: &str,
        spec: ExchangeSpec,
    ) -> ManageResult<bool> {
        if name.is_empty() {
            return Err(ManageError::new(
                ManageErrorKind::Refused,
                "operation not permitted on the default exchange",
            ));
        }
        let internal = self.internal(vhost, name, "exchange")?;
        let kind = ExchangeKind::parse(&spec.kind).map_err(|_| {
            ManageError::new(
                ManageErrorKind::Invalid,
                format!(
                    "unknown exchange type '{}': direct, fanout, topic or headers",
                    spec.kind
                ),
            )
        })?;
        let alternate = match spec.alternate {
            Some(ae) => Some(self.internal(vhost, &ae, "alternate exchange")?),
            None => None,
        };
        let wanted = Exchange {
            delayed: false,
            kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            alternate,
        };
        Ok(self
            .0
            .topology
            .declare_exchange(self.broker(), &internal, wanted, false)?)
    }

    /// Deletes exchange `name` of `vhost` with every binding naming it; `if_unused`:
    /// refused while it is the source of a binding.
    pub fn delete_exchange(&self, vhost: &str, name: &str, if_unused: bool) -> ManageResult<()> {
        let internal = self.internal(vhost, name, "exchange")?;
        // The API says what is not there (404), as RabbitMQ's management API does; the AMQP
        // method's delete of a missing exchange is delete-ok.
        self.0.topology.exchange_or_404(&internal)?;
        self.0
            .topology
            .delete_exchange(self.broker(), &internal, if_unused)?;
        Ok(())
    }

    /// The bindings of `vhost` (every vhost's when `None`), by source, destination, key.
    pub fn bindings(&self, vhost: Option<&str>) -> ManageResult<Vec<BindingView>> {
        if let Some(v) = vhost {
            self.vhost(v)?;
        }
        let mut out: Vec<BindingView> = self
            .0
            .topology
            .bindings()
            .iter()
            .filter(|b| vhost.is_none_or(|v| split(&b.exchange).0 == v))
            .map(binding_view)
            .collect();
        out.sort_by(|a, b| {
            (&a.vhost, &a.source, &a.destination, &a.routing_key).cmp(&(
                &b.vhost,
                &b.source,
                &b.destination,
                &b.routing_key,
            ))
        });
        Ok(out)
    }

    /// The binding `b` asks for, in internal names; a queue destination must exist.
    fn binding(&self, b: &BindingView) -> ManageResult<Binding> {
        check_length("routing key", &b.routing_key)?;
        let dest = if b.to_exchange {
            Destination::Exchange(self.internal(&b.vhost, &b.destination, "exchange")?)
        } else {
            Destination::Queue(self.internal(&b.vhost, &b.destination, "queue")?)
        };
        let mut arguments = b.arguments.clone();
        arguments.sort();
        Ok(Binding {
            exchange: self.internal(&b.vhost, &b.source, "exchange")?,
            destination: dest,
            key: b.routing_key.clone(),
            args: arguments,
        })
    }

    /// Binds (true when the binding is new); the source exchange and the destination must
    /// exist, and neither may be the default exchange.
    pub fn bind(&self, b: &BindingView) -> ManageResult<bool> {
        let binding = self.binding(b)?;
        if !split(&binding.exchange).1.is_empty() {
            self.0.topology.exchange_or_404(&binding.exchange)?;
        }
        if let Destination::Queue(q) = &binding.destination {
            self.require_queue(q)?;
        }
        Ok(self.0.topology.bind(self.broker(), binding)?)
    }

    /// Removes a binding; 404 when there is no such binding. The source goes if it is
    /// auto-delete and this was its last binding.
    pub fn unbind(&self, b: &BindingView) -> ManageResult<()> {
        let binding = self.binding(b)?;
        self.0.topology.exchange_or_404(&binding.exchange)?;
        match &binding.destination {
            Destination::Queue(q) => self.require_queue(q)?,
            Destination::Exchange(x) => {
                self.0.topology.exchange_or_404(x)?;
            }
        }
        if !self.0.topology.bindings().contains(&binding) {
            return Err(ManageError::new(
                ManageErrorKind::NotFound,
                format!(
                    "no binding from exchange '{}' to {} '{}' with routing key '{}'{} in vhost '{}'",
                    b.source,
                    if b.to_exchange { "exchange" } else { "queue" },
                    b.destination,
                    b.routing_key,
                    if b.arguments.is_empty() {
                        ""
                    } else {
                        " and these arguments"
                    },
                    b.vhost
                ),
            ));
        }
        Ok(self.0.topology.unbind(self.broker(), &binding)?)
    }
}

/// A queue's settings as people set them: `durable=true, x-message-ttl=60000`.
fn settings_text(settings: &BTreeMap<String, String>) -> String {
    let durable = settings.get(DURABLE_SETTING).map_or("true", String::as_str);
    let mut out = vec![format!("durable={durable}")];
    if settings.get(AUTO_DELETE_SETTING).map(String::as_str) == Some("true") {
        out.push("auto_delete=true".to_string());
    }
    out.extend(
        settings
            .iter()
            .filter(|(k, _)| !k.starts_with(SETTING_PREFIX))
            .map(|(k, v)| format!("{k}={v}")),
    );
    out.join(", ")
}

fn exchange_view(internal: &str, x: &Exchange) -> ExchangeView {
    let (vhost, local) = split(internal);
    ExchangeView {
        vhost: vhost.to_string(),
        name: local.to_string(),
        kind: x.kind.name(),
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        alternate: x.alternate.as_deref().map(|a| split(a).1.to_string()),
        builtin: is_builtin(internal),
    }
}

fn binding_view(b: &Binding) -> BindingView {
    let (vhost, source) = split(&b.exchange);
    BindingView {
        vhost: vhost.to_string(),
        source: source.to_string(),
        destination: split(b.destination.name()).1.to_string(),
        to_exchange: matches!(b.destination, Destination::Exchange(_)),
        routing_key: b.key.clone(),
        arguments: b.args.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_reply_codes_become_management_error_kinds() {
        let kind = |code| ManageError::from(AmqpError::channel(code, "x")).kind;
        assert_eq!(kind(NOT_FOUND), ManageErrorKind::NotFound);
        assert_eq!(kind(ACCESS_REFUSED), ManageErrorKind::Refused);
        assert_eq!(kind(PRECONDITION_FAILED), ManageErrorKind::Conflict);
        assert_eq!(kind(RESOURCE_LOCKED), ManageErrorKind::Conflict);
        assert_eq!(kind(COMMAND_INVALID), ManageErrorKind::Invalid);
        assert_eq!(
            kind(crate::errors::INTERNAL_ERROR),
            ManageErrorKind::Internal
        );
    }

    #[test]
    fn settings_read_as_declared() {
        let settings: BTreeMap<String, String> = [
            (DURABLE_SETTING.to_string(), "false".to_string()),
            (AUTO_DELETE_SETTING.to_string(), "true".to_string()),
            ("x-message-ttl".to_string(), "60000".to_string()),
        ]
        .into();
        assert_eq!(
            settings_text(&settings),
            "durable=false, auto_delete=true, x-message-ttl=60000"
        );
    }

    #[test]
    fn views_use_local_names() {
        let x = Exchange {
            delayed: false,
            kind: ExchangeKind::Topic,
            durable: true,
            auto_delete: false,
            internal: false,
            alternate: Some("vhost.dev.ae".into()),
        };
        let v = exchange_view("vhost.dev.logs", &x);
        assert_eq!((v.vhost.as_str(), v.name.as_str()), ("dev", "logs"));
        assert_eq!(v.alternate.as_deref(), Some("ae"));
        assert!(!v.builtin);
        assert!(exchange_view("amq.topic", &x).builtin);
        let b = binding_view(&Binding {
            exchange: "vhost.dev.logs".into(),
            destination: Destination::Queue("vhost.dev.errors".into()),
            key: "*.error".into(),
            args: Vec::new(),
        });
        assert_eq!(
            (b.source.as_str(), b.destination.as_str(), b.to_exchange),
            ("logs", "errors", false)
        );
    }
}
