//! The front-door registry: every protocol the server speaks is bound, started, watched and
//! stopped the same way, and listed in `/health` and the start banner.
//!
//! Adding a door (AMQP, RocketMQ, MQTT): give its crate a `serve(listener, broker, config,
//! shutdown)` like `frontend_kafka::serve`, implement [`FrontDoor`] for it below (its config
//! comes from the door crate's own section of the server config), and add it to
//! [`configured`]. Nothing else in the server changes.
//!
//! Order of events: every door's listener is bound before any door serves (an address in use
//! fails the start with nothing half-running); on shutdown every door sees the signal, stops
//! accepting and finishes its in-flight requests within the grace period, then the broker
//! shuts down.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Layered, ServerConfig};

/// One protocol's listener and service.
pub trait FrontDoor: Send {
    /// The protocol's name, as in the request metrics' `protocol` label and `/health`.
    fn protocol(&self) -> &'static str;
    /// The address to bind, and the config key or flag that sets it (for error messages).
    fn listen_on(&self) -> (&str, &'static str);
    /// What clients are told to connect to, given the bound listener (`None`: the
    /// protocol has no such notion).
    fn advertised(&self, bound: std::net::SocketAddr) -> Option<String>;
    /// Opens what the door's connections share, once, after every listener is bound and
    /// before [`FrontDoor::serve`]; returns its queues, exchanges and bindings for the
    /// admin API's `/api/…`, when the door has them (AMQP).
    fn amqp_management(
        &mut self,
        _broker: &Arc<broker::Broker>,
    ) -> Option<Arc<dyn admin::api::AmqpManagement>> {
        None
    }
    /// Serves clients on `listener` until `shutdown` flips to true, then finishes in-flight
    /// requests and returns.
    fn serve(
        self: Box<Self>,
        listener: TcpListener,
        broker: Arc<broker::Broker>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxedServe;
}

/// A door's serving future.
pub type BoxedServe =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// The doors the configuration enables, in start order.
pub fn configured(settings: &Layered, server: &ServerConfig) -> Vec<Box<dyn FrontDoor>> {
    vec![
        Box::new(KafkaDoor::new(settings, server)),
        Box::new(AmqpDoor::new(settings, server)),
    ]
}

/// The doors, bound and serving.
pub struct RunningDoors {
    pub listeners: Vec<admin::DoorListener>,
    /// The AMQP door's management operations, for the admin API.
    pub amqp: Option<Arc<dyn admin::api::AmqpManagement>>,
    tasks: JoinSet<(&'static str, std::io::Result<()>)>,
}

/// Binds every door's listener, then starts each. An address that cannot be bound fails
/// the whole start (nothing is serving yet).
pub async fn start(
    doors: Vec<Box<dyn FrontDoor>>,
    broker: &Arc<broker::Broker>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<RunningDoors> {
    let mut bound = Vec::with_capacity(doors.len());
    for door in doors {
        let (addr, key) = door.listen_on();
        let what = format!("{} clients", door.protocol());
        let listener = crate::server::bind(addr, &what, key).await?;
        bound.push((door, listener));
    }
    let mut running = RunningDoors {
        listeners: Vec::with_capacity(bound.len()),
        amqp: None,
        tasks: JoinSet::new(),
    };
    for (mut door, listener) in bound {
        if let Some(m) = door.amqp_management(broker) {
            running.amqp = Some(m);
        }
        let address = listener.local_addr()?;
        let protocol = door.protocol();
        running.listeners.push(admin::DoorListener {
            protocol,
            address,
            advertised: door.advertised(address),
        });
        let serve = door.serve(listener, broker.clone(), shutdown.clone());
        running.tasks.spawn(async move { (protocol, serve.await) });
    }
    Ok(running)
}

impl RunningDoors {
    /// Resolves when a door stops on its own (it should not while the server runs), with
    /// why; never resolves when there are no doors.
    pub async fn stopped(&mut self) -> anyhow::Error {
        match self.tasks.join_next().await {
            Some(Ok((protocol, Ok(())))) => {
                anyhow::anyhow!("the {protocol} listener stopped unexpectedly")
            }
            Some(Ok((protocol, Err(e)))) => anyhow::anyhow!("the {protocol} listener failed: {e}"),
            Some(Err(e)) => anyhow::anyhow!("a front-door task failed: {e}"),
            None => std::future::pending().await,
        }
    }

    /// After the shutdown signal: waits up to `grace` for every door to finish its in-flight
    /// requests, then aborts what is left.
    pub async fn stop(mut self, grace: Duration) {
        let all = async {
            while let Some(r) = self.tasks.join_next().await {
                match r {
                    Ok((_, Ok(()))) => {}
                    Ok((protocol, Err(e))) => {
                        tracing::warn!(protocol, error = %e, "listener ended with an error");
                    }
                    Err(e) => tracing::warn!(error = %e, "front-door task failed"),
                }
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                timeout_ms = grace.as_millis() as u64,
                "in-flight requests did not finish in time; closing anyway"
            );
            self.tasks.abort_all();
        }
    }
}

/// The Kafka protocol door (`frontend-kafka`).
struct KafkaDoor {
    listener: frontend_kafka::KafkaListener,
    config: frontend_kafka::KafkaConfig,
}

impl KafkaDoor {
    fn new(settings: &Layered, server: &ServerConfig) -> KafkaDoor {
        let config = frontend_kafka::KafkaConfig {
            shutdown_grace_ms: server.shutdown_timeout_ms,
            ..frontend_kafka::KafkaConfig::from_settings(settings)
        };
        KafkaDoor {
            listener: frontend_kafka::KafkaListener::from_settings(settings),
            config,
        }
    }

    /// The host and port clients are told: the configured ones, else the bound port and
    /// the listener's host, with unspecified addresses (0.0.0.0, ::) replaced by loopback.
    fn advertise(&self, bound: std::net::SocketAddr) -> (String, u16) {
        let host = self.listener.advertised_host.clone().unwrap_or_else(|| {
            let ip = bound.ip();
            if ip.is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                ip.to_string()
            }
        });
        (host, self.listener.advertised_port.unwrap_or(bound.port()))
    }
}

impl FrontDoor for KafkaDoor {
    fn protocol(&self) -> &'static str {
        frontend_kafka::PROTOCOL
    }

    fn listen_on(&self) -> (&str, &'static str) {
        (&self.listener.listener, "--kafka-listener")
    }

    fn advertised(&self, bound: std::net::SocketAddr) -> Option<String> {
        let (host, port) = self.advertise(bound);
        Some(format!("{host}:{port}"))
    }

    fn serve(
        self: Box<Self>,
        listener: TcpListener,
        broker: Arc<broker::Broker>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxedServe {
        let mut config = self.config.clone();
        match listener.local_addr() {
            Ok(bound) => (config.advertised_host, config.advertised_port) = self.advertise(bound),
            Err(e) => return Box::pin(async move { Err(e) }),
        }
        Box::pin(frontend_kafka::serve(listener, broker, config, shutdown))
    }
}

/// The AMQP 0-9-1 door (`frontend-amqp`).
struct AmqpDoor {
    config: frontend_amqp::AmqpConfig,
    /// Opened by `amqp_management` (else by `serve`).
    handle: Option<frontend_amqp::DoorHandle>,
}

impl AmqpDoor {
    fn new(settings: &Layered, server: &ServerConfig) -> AmqpDoor {
        AmqpDoor {
            config: frontend_amqp::AmqpConfig {
                shutdown_grace_ms: server.shutdown_timeout_ms,
                ..frontend_amqp::AmqpConfig::from_settings(settings)
            },
            handle: None,
        }
    }
}

impl FrontDoor for AmqpDoor {
    fn protocol(&self) -> &'static str {
        frontend_amqp::PROTOCOL
    }

    fn listen_on(&self) -> (&str, &'static str) {
        (&self.config.listener, "--amqp-listener")
    }

    fn advertised(&self, _bound: std::net::SocketAddr) -> Option<String> {
        None
    }

    fn amqp_management(
        &mut self,
        broker: &Arc<broker::Broker>,
    ) -> Option<Arc<dyn admin::api::AmqpManagement>> {
        let handle = self
            .handle
            .get_or_insert_with(|| {
                frontend_amqp::DoorHandle::open(broker.clone(), self.config.clone())
            })
            .clone();
        Some(Arc::new(crate::amqp_admin::AmqpAdmin(handle)))
    }

    fn serve(
        self: Box<Self>,
        listener: TcpListener,
        broker: Arc<broker::Broker>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxedServe {
        let AmqpDoor { config, handle } = *self;
        let handle = handle.unwrap_or_else(|| frontend_amqp::DoorHandle::open(broker, config));
        Box::pin(frontend_amqp::serve_handle(listener, handle, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door(flags: &[(&str, &str)]) -> KafkaDoor {
        let settings = Layered::load(&crate::config::Sources {
            file: None,
            env: &|_: &str| None,
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string(), "test".to_string()))
                .collect(),
        })
        .unwrap();
        KafkaDoor::new(&settings, &settings.server_config())
    }

    #[test]
    fn kafka_clients_are_told_loopback_for_a_wildcard_listener() {
        let advertised = |d: &KafkaDoor, a: &str| d.advertised(a.parse().unwrap()).unwrap();
        let plain = door(&[]);
        assert_eq!(advertised(&plain, "0.0.0.0:9092"), "127.0.0.1:9092");
        assert_eq!(advertised(&plain, "10.1.2.3:40000"), "10.1.2.3:40000");
        let named = door(&[
            ("kafka.advertised_host", "broker.example"),
            ("kafka.advertised_port", "19092"),
        ]);
        assert_eq!(advertised(&named, "0.0.0.0:9092"), "broker.example:19092");
    }

    #[test]
    fn the_kafka_door_takes_its_keys_and_the_server_grace() {
        let d = door(&[
            ("limits.max_connections", "7"),
            ("server.shutdown_timeout_ms", "1234"),
        ]);
        assert_eq!(d.config.max_connections, 7);
        assert_eq!(d.config.shutdown_grace_ms, 1234);
    }

    #[test]
    fn the_amqp_door_takes_its_keys_and_the_server_grace() {
        let settings = Layered::load(&crate::config::Sources {
            file: None,
            env: &|_: &str| None,
            flags: [
                ("amqp.listener", "127.0.0.1:0"),
                ("amqp.frame_max", "65536"),
                ("server.shutdown_timeout_ms", "1234"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string(), "test".to_string()))
            .collect(),
        })
        .unwrap();
        let d = AmqpDoor::new(&settings, &settings.server_config());
        assert_eq!(d.protocol(), "amqp");
        assert_eq!(d.listen_on(), ("127.0.0.1:0", "--amqp-listener"));
        assert_eq!(d.config.frame_max, 65536);
        assert_eq!(d.config.shutdown_grace_ms, 1234);
        let doors = configured(&settings, &settings.server_config());
        let protocols: Vec<&str> = doors.iter().map(|d| d.protocol()).collect();
        assert_eq!(protocols, ["kafka", "amqp"]);
    }
}
