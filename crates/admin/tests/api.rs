//! `/api/…` over real HTTP with a stand-in for the AMQP door: the statuses, JSON errors,
//! argument texts and binding URLs a client relies on (the door's own rules are tested
//! with the real binary in crates/e2e/tests/queue_cli.rs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sluice_admin::api::{
    AmqpManagement, ApiError, ApiFuture, ApiResult, BindingInfo, ExchangeInfo, ExchangeSpec,
    MessageStats, QueueInfo, QueuePolicyInfo, QueueSpec,
};
use sluice_admin::{AdminServer, Listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Queues and bindings in memory; `/` is the only vhost.
#[derive(Default)]
struct FakeDoor {
    queues: Mutex<BTreeMap<String, QueueSpec>>,
    bindings: Mutex<Vec<BindingInfo>>,
}

fn check_vhost(vhost: &str) -> ApiResult<()> {
    if vhost == "/" {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no vhost '{vhost}'")))
    }
}

impl FakeDoor {
    fn info(&self, name: &str) -> ApiResult<QueueInfo> {
        let queues = self.queues.lock().unwrap();
        let spec = queues
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("no queue '{name}'")))?;
        Ok(QueueInfo {
            vhost: "/".into(),
            name: name.into(),
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            exclusive: false,
            arguments: spec.arguments.clone(),
            effective_policy: QueuePolicyInfo::default(),
            messages: 0,
            messages_ready: 0,
            messages_unacknowledged: 0,
            messages_scheduled: 0,
            consumers: 0,
            message_stats: MessageStats::default(),
        })
    }
}

impl AmqpManagement for FakeDoor {
    fn vhosts(&self) -> Vec<String> {
        vec!["/".into()]
    }

    fn queues<'a>(&'a self, vhost: Option<&'a str>) -> ApiFuture<'a, Vec<QueueInfo>> {
        Box::pin(async move {
            check_vhost(vhost.unwrap_or("/"))?;
            let names: Vec<String> = self.queues.lock().unwrap().keys().cloned().collect();
            names.iter().map(|n| self.info(n)).collect()
        })
    }

    fn queue<'a>(&'a self, vhost: &'a str, name: &'a str) -> ApiFuture<'a, QueueInfo> {
        Box::pin(async move {
            check_vhost(vhost)?;
            self.info(name)
        })
    }

    fn declare_queue(&self, vhost: &str, name: &str, spec: QueueSpec) -> ApiResult<bool> {
        check_vhost(vhost)?;
        let mut queues = self.queues.lock().unwrap();
        match queues.get(name) {
            Some(existing) if *existing == spec => Ok(false),
            Some(_) => Err(ApiError::new(
                sluice_admin::api::ApiStatus::Conflict,
                "exists with other settings",
            )),
            None => {
                queues.insert(name.into(), spec);
                Ok(true)
            }
        }
    }

    fn delete_queue<'a>(
        &'a self,
        vhost: &'a str,
        name: &'a str,
        _if_unused: bool,
        _if_empty: bool,
    ) -> ApiFuture<'a, ()> {
        Box::pin(async move {
            check_vhost(vhost)?;
            self.queues
                .lock()
                .unwrap()
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| ApiError::not_found(format!("no queue '{name}'")))
        })
    }

    fn purge_queue<'a>(&'a self, vhost: &'a str, name: &'a str) -> ApiFuture<'a, u64> {
        Box::pin(async move {
            self.info(name)?;
            check_vhost(vhost).map(|()| 7)
        })
    }

    fn exchanges(&self, _vhost: Option<&str>) -> ApiResult<Vec<ExchangeInfo>> {
        Ok(Vec::new())
    }

    fn exchange(&self, _vhost: &str, name: &str) -> ApiResult<ExchangeInfo> {
        Ok(ExchangeInfo {
            vhost: "/".into(),
            name: name.into(),
            kind: "topic".into(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: BTreeMap::new(),
            builtin: name.is_empty(),
        })
    }

    fn declare_exchange(&self, _vhost: &str, _name: &str, _spec: ExchangeSpec) -> ApiResult<bool> {
        Ok(true)
    }

    fn delete_exchange(&self, _vhost: &str, _name: &str, _if_unused: bool) -> ApiResult<()> {
        Ok(())
    }

    fn bindings(&self, _vhost: Option<&str>) -> ApiResult<Vec<BindingInfo>> {
        Ok(self.bindings.lock().unwrap().clone())
    }

    fn bind(&self, binding: &BindingInfo) -> ApiResult<bool> {
        let mut all = self.bindings.lock().unwrap();
        // The door knows no properties key: the API computes it.
        let b = BindingInfo {
            properties_key: String::new(),
            ..binding.clone()
        };
        if all.contains(&b) {
            return Ok(false);
        }
        all.push(b);
        Ok(true)
    }

    fn unbind(&self, binding: &BindingInfo) -> ApiResult<()> {
        let mut all = self.bindings.lock().unwrap();
        all.retain(|b| {
            (&b.routing_key, &b.arguments) != (&binding.routing_key, &binding.arguments)
        });
        Ok(())
    }
}

/// `method path` with `body`: (status, lower-cased head, body).
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_ascii_lowercase(), body.to_string())
}

async fn serve(amqp: Option<Arc<dyn AmqpManagement>>) -> std::net::SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        storage::Store::open(storage::StoreConfig::new(dir.path().join("store"))).unwrap(),
    );
    let broker = broker::Broker::open(
        store,
        broker::BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        Arc::new(common::SystemClock),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listeners = Listeners {
        doors: Vec::new(),
        admin: addr,
    };
    let mut server = AdminServer::new(broker, dir.path().to_path_buf(), listeners);
    if let Some(amqp) = amqp {
        server = server.with_amqp(amqp);
    }
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = (dir, _tx);
        sluice_admin::serve(listener, server, rx).await
    });
    addr
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

#[tokio::test]
async fn without_an_amqp_door_the_api_answers_503_in_json() {
    let addr = serve(None).await;
    let (code, head, body) = call(addr, "GET", "/api/queues", "").await;
    assert_eq!(code, 503);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        error_of(&body).contains("AMQP door is not running"),
        "{body}"
    );
    let (code, _, body) = call(addr, "GET", "/api/nothing/here", "").await;
    assert_eq!(code, 404);
    assert_eq!(error_of(&body), "no endpoint /api/nothing/here");
}

#[tokio::test]
async fn queues_are_declared_read_purged_and_deleted_with_json_errors() {
    let door = Arc::new(FakeDoor::default());
    let addr = serve(Some(door.clone())).await;
    let spec = r#"{"arguments": {"x-message-ttl": 60000, "x-overflow": "reject-publish"}}"#;
    let (code, _, _) = call(addr, "PUT", "/api/queues/%2F/orders", spec).await;
    assert_eq!(code, 201, "created");
    let (code, _, _) = call(addr, "PUT", "/api/queues/%2F/orders", spec).await;
    assert_eq!(code, 204, "existed alike");
    let (code, _, body) = call(addr, "PUT", "/api/queues/%2F/orders", "").await;
    assert_eq!(
        (code, error_of(&body).as_str()),
        (409, "exists with other settings")
    );
    let saved = door.queues.lock().unwrap()["orders"].clone();
    assert!(saved.durable, "durable unless asked otherwise");
    assert_eq!(
        saved.arguments["x-message-ttl"], "60000",
        "numbers kept as text"
    );

    let (code, _, body) = call(addr, "GET", "/api/queues/%2F/orders", "").await;
    assert_eq!(code, 200);
    let q: QueueInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(q.arguments["x-overflow"], "reject-publish");
    let (code, _, body) = call(addr, "GET", "/api/queues", "").await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Vec<QueueInfo>>(&body).unwrap().len(),
        1
    );

    for (path, body, words) in [
        (
            "/api/queues/%2F/bad",
            r#"{"exclusive": true}"#,
            "unknown field `exclusive`",
        ),
        (
            "/api/queues/%2F/bad",
            r#"{"arguments": {"x": [1]}}"#,
            "argument 'x'",
        ),
        ("/api/queues/%2F/bad", "{not json", "request body"),
    ] {
        let (code, _, answer) = call(addr, "PUT", path, body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(error_of(&answer).contains(words), "{answer}");
    }
    let (code, _, body) = call(addr, "GET", "/api/queues/dev/orders", "").await;
    assert_eq!((code, error_of(&body).as_str()), (404, "no vhost 'dev'"));

    let (code, _, body) = call(addr, "DELETE", "/api/queues/%2F/orders/contents", "").await;
    assert_eq!(code, 200);
    assert_eq!(body, r#"{"message_count":7}"#);
    let (code, _, body) = call(addr, "PATCH", "/api/queues/%2F/orders", "").await;
    assert_eq!(code, 405);
    assert!(error_of(&body).contains("PATCH"), "{body}");
    let (code, _, _) = call(addr, "DELETE", "/api/queues/%2F/orders?if-empty=true", "").await;
    assert_eq!(code, 204);
    let (code, _, body) = call(addr, "DELETE", "/api/queues/%2F/orders", "").await;
    assert_eq!((code, error_of(&body).as_str()), (404, "no queue 'orders'"));
}

#[tokio::test]
async fn a_binding_is_created_at_and_deleted_by_its_location() {
    let door = Arc::new(FakeDoor::default());
    let addr = serve(Some(door.clone())).await;
    door.queues
        .lock()
        .unwrap()
        .insert("errors".into(), QueueSpec::default());
    let between = "/api/bindings/%2F/e/logs/q/errors";
    let (code, head, _) = call(addr, "POST", between, r#"{"routing_key": "*.error"}"#).await;
    assert_eq!(code, 201);
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or_else(|| panic!("no location in {head}"))
        .to_string();
    // (The head was lower-cased; the server sends `%2F` and `%2A`, which decode the same.)
    assert_eq!(
        location,
        format!("{between}/%2A.error").to_ascii_lowercase()
    );
    let (code, _, _) = call(addr, "POST", between, r#"{"routing_key": "*.error"}"#).await;
    assert_eq!(code, 204, "already bound");

    let (code, _, body) = call(addr, "GET", between, "").await;
    assert_eq!(code, 200);
    let listed: Vec<BindingInfo> = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].properties_key, "*.error");
    assert_eq!(listed[0].destination_type, "queue");
    let (code, _, body) = call(addr, "GET", &location, "").await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = call(addr, "DELETE", &location, "").await;
    assert_eq!(code, 204);
    let (code, _, body) = call(addr, "DELETE", &location, "").await;
    assert_eq!(code, 404);
    assert!(
        error_of(&body).contains("no binding from exchange 'logs'"),
        "{body}"
    );
    let (code, _, body) = call(addr, "GET", "/api/bindings/%2F/e/logs/x/errors", "").await;
    assert_eq!(code, 404);
    assert!(
        error_of(&body).contains("use q (queue) or e (exchange)"),
        "{body}"
    );
}
