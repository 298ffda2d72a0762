//! The CLI's client of the admin HTTP API (`/api/…`, docs/http-api.md), for the AMQP
//! objects the Kafka protocol cannot reach: one HTTP/1.1 request per call over hyper's
//! client (hyper is already built for the admin server), JSON in and out, a deadline on the
//! whole exchange. Errors say whether the server could not be reached (exit 2) or answered
//! with an error (exit 3; its `{"error": …}` message shown).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where `sluice server` serves the admin API by default (`admin.listener` is
/// 0.0.0.0:8080), as a client reaches it.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8080";
/// Most bytes of an answer read (a listing of every queue stays far below).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Why an admin API call failed.
#[derive(Debug)]
pub enum AdminError {
    /// No connection, or no answer in time.
    Unreachable { addr: String, reason: String },
    /// The server answered with an error status.
    Api {
        context: String,
        status: u16,
        message: String,
    },
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Unreachable { addr, reason } => write!(
                f,
                "no admin API at {addr} — is `sluice server` running with its admin listener? \
                 ({reason}); use --admin HOST:PORT or SLUICE_ADMIN to point elsewhere"
            ),
            AdminError::Api {
                context,
                status,
                message,
            } => write!(f, "{context}: {message} (HTTP {status})"),
        }
    }
}

impl std::error::Error for AdminError {}

/// One admin API server.
pub struct AdminClient {
    /// host:port
    addr: String,
    timeout: Duration,
}

/// An answer: its status and JSON body (`Null` when empty).
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl AdminClient {
    /// `admin` is host:port, or `http://host:port` (a trailing `/` is ignored).
    pub fn new(admin: &str, timeout: Duration) -> anyhow::Result<AdminClient> {
        if admin.starts_with("https://") {
            return Err(super::exit::usage(format!(
                "--admin {admin}: the admin API speaks plain HTTP; give host:port"
            )));
        }
        let addr = admin
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if addr.is_empty() || addr.contains('/') {
            return Err(super::exit::usage(format!(
                "--admin `{admin}` must look like host:port, e.g. 127.0.0.1:8080"
            )));
        }
        Ok(AdminClient { addr, timeout })
    }

    /// Sends `method path` with `body` as JSON; an error status becomes
    /// [`AdminError::Api`] naming `context`.
    pub async fn call(
        &self,
        context: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, AdminError> {
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(
                    self.unreachable(format!("no answer within {} ms", self.timeout.as_millis()))
                );
            }
        };
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| AdminError::Api {
                context: context.to_string(),
                status,
                message: format!(
                    "unexpected answer (not JSON: {e}): {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            })?
        };
        if status >= 400 {
            let message = json["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| json.to_string());
            return Err(AdminError::Api {
                context: context.to_string(),
                status,
                message,
            });
        }
        Ok(Answer { status, body: json })
    }

    /// `GET path`, its JSON.
    pub async fn get(&self, context: &str, path: &str) -> Result<serde_json::Value, AdminError> {
        Ok(self.call(context, Method::GET, path, None).await?.body)
    }

    fn unreachable(&self, reason: String) -> AdminError {
        AdminError::Unreachable {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// One request on a fresh connection: (status, body bytes).
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Bytes), AdminError> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.addr);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| self.unreachable(format!("cannot build the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_admin_address_is_the_servers_default_listener_port() {
        let spec = crate::config::spec::keys()
            .iter()
            .find(|k| k.key == "admin.listener")
            .expect("admin.listener key");
        let port = DEFAULT_ADMIN.rsplit(':').next().unwrap();
        assert!(
            spec.default
                .trim_matches('"')
                .ends_with(&format!(":{port}")),
            "{} vs {DEFAULT_ADMIN}",
            spec.default
        );
    }

    #[test]
    fn admin_addresses_take_an_http_prefix_but_not_https() {
        let t = Duration::from_secs(1);
        assert_eq!(
            AdminClient::new("http://h:1/", t).unwrap().addr,
            "h:1".to_string()
        );
        assert!(AdminClient::new("https://h:1", t).is_err());
        assert!(AdminClient::new("h:1/api", t).is_err());
    }
}
