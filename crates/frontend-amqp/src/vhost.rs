//! Virtual hosts and users. A vhost is a namespace for exchanges and queues: `/` always
//! exists, others come from `amqp.vhosts`. Users come from `amqp.users`, plus the built-in
//! `guest`/`guest`, accepted from loopback addresses only (RabbitMQ's `loopback_users`).
//!
//! Names: the door and the broker see one flat namespace, so a name local to vhost `v`
//! becomes an *internal* name — itself in `/` (queues and topics created before vhosts keep
//! their names), `vhost.<v>.<name>` elsewhere. Vhost names have no dots and `/`'s clients may
//! not use names starting with `vhost.` (403), so [`split`] always finds the vhost and the
//! local name back. A Kafka client sees a queue `orders` of vhost `dev` as topic
//! `vhost.dev.orders`.

use std::net::IpAddr;

use crate::errors::{ACCESS_REFUSED, AmqpError, NOT_ALLOWED};

/// The default vhost.
pub const DEFAULT_VHOST: &str = "/";
/// How internal names of vhosts other than `/` start; refused as a name in `/`.
pub const PREFIX: &str = "vhost.";
/// The built-in user, accepted from loopback only.
const GUEST: (&str, &str) = ("guest", "guest");

/// The vhost a connection opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vhost(pub String);

impl Default for Vhost {
    fn default() -> Self {
        Vhost(DEFAULT_VHOST.to_string())
    }
}

impl Vhost {
    /// The internal name of `local`, a name in this vhost.
    pub fn internal(&self, local: &str) -> String {
        if self.0 == DEFAULT_VHOST {
            local.to_string()
        } else {
            format!("{PREFIX}{}.{local}", self.0)
        }
    }

    /// 403 for a name `/`'s clients may not use (it would reach into another vhost).
    pub fn check_local(&self, local: &str) -> Result<(), AmqpError> {
        if self.0 == DEFAULT_VHOST && local.starts_with(PREFIX) {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                format!("name '{local}' contains the reserved prefix '{PREFIX}'"),
            ));
        }
        Ok(())
    }
}

/// An internal name's (vhost, local name).
pub fn split(internal: &str) -> (&str, &str) {
    internal
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .unwrap_or((DEFAULT_VHOST, internal))
}

/// `'<local>' in vhost '<vhost>'`, as RabbitMQ's reply texts name a resource.
pub fn describe(internal: &str) -> String {
    let (vhost, local) = split(internal);
    format!("'{local}' in vhost '{vhost}'")
}

/// Whether `name` may be a configured vhost: no dots (see the module doc), not empty.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A configured user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    /// The vhosts it may open; `None`: every one.
    pub vhosts: Option<Vec<String>>,
}

/// Parses `amqp.vhosts` (comma-separated; `/` is always served). Invalid names are
/// returned apart, for the caller to log.
pub fn parse_vhosts(s: &str) -> (Vec<String>, Vec<String>) {
    let mut ok = vec![DEFAULT_VHOST.to_string()];
    let mut bad = Vec::new();
    for v in s.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        if v == DEFAULT_VHOST || ok.iter().any(|o| o == v) {
            continue;
        }
        if valid_name(v) {
            ok.push(v.to_string());
        } else {
            bad.push(v.to_string());
        }
    }
    (ok, bad)
}

/// Parses `amqp.users`: comma-separated `name:password` or `name:password:vhost|vhost…`.
/// Entries without a password are returned apart, for the caller to log.
pub fn parse_users(s: &str) -> (Vec<User>, Vec<String>) {
    let mut users = Vec::new();
    let mut bad = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let (Some(name), Some(password)) = (parts.next(), parts.next()) else {
            bad.push(entry.split(':').next().unwrap_or_default().to_string());
            continue;
        };
        if name.is_empty() || password.is_empty() {
            bad.push(name.to_string());
            continue;
        }
        let vhosts = parts
            .next()
            .map(|v| v.split('|').map(|v| v.trim().to_string()).collect());
        users.push(User {
            name: name.to_string(),
            password: password.to_string(),
            vhosts,
        });
    }
    (users, bad)
}

/// Who may log in: the configured users and guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub vhosts: Vec<String>,
    pub users: Vec<User>,
}

impl Access {
    /// Checks a login (start-ok): the user exists with this password; `guest` only from a
    /// loopback address. Returns the user's name.
    pub fn login(&self, user: &[u8], password: &[u8], peer: IpAddr) -> Result<String, AmqpError> {
        let refused = || {
            AmqpError::connection(
                ACCESS_REFUSED,
                "login refused: wrong user or password, or guest from a non-loopback address",
            )
        };
        let (user, password) = match (std::str::from_utf8(user), std::str::from_utf8(password)) {
            (Ok(u), Ok(p)) => (u, p),
            _ => return Err(refused()),
        };
        if user == GUEST.0 && !peer.is_loopback() {
            return Err(refused());
        }
        let known = match self.users.iter().find(|u| u.name == user) {
            Some(u) => u.password == password,
            None => (user, password) == GUEST,
        };
        if known {
            Ok(user.to_string())
        } else {
            Err(refused())
        }
    }

    /// Checks connection.open: the vhost is served (530 "not found") and the user may open
    /// it (530 "refused"), as RabbitMQ answers both.
    pub fn open(&self, user: &str, vhost: &str) -> Result<Vhost, AmqpError> {
        if !self.vhosts.iter().any(|v| v == vhost) {
            return Err(AmqpError::connection(
                NOT_ALLOWED,
                format!("vhost {vhost} not found"),
            ));
        }
        let allowed = self
            .users
            .iter()
            .find(|u| u.name == user)
            .and_then(|u| u.vhosts.as_ref())
            .is_none_or(|list| list.iter().any(|v| v == vhost));
        if !allowed {
            return Err(AmqpError::connection(
                NOT_ALLOWED,
                format!("access to vhost '{vhost}' refused for user '{user}'"),
            ));
        }
        Ok(Vhost(vhost.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names_split_back_to_vhost_and_local_name() {
        let dev = Vhost("dev".into());
        assert_eq!(dev.internal("orders.eu"), "vhost.dev.orders.eu");
        assert_eq!(split("vhost.dev.orders.eu"), ("dev", "orders.eu"));
        assert_eq!(
            dev.internal(""),
            "vhost.dev.",
            "the default exchange of dev"
        );
        assert_eq!(split("vhost.dev."), ("dev", ""));
        let root = Vhost::default();
        assert_eq!(
            root.internal("orders"),
            "orders",
            "names in / are unchanged"
        );
        assert_eq!(split("orders.eu"), ("/", "orders.eu"));
        assert_eq!(describe("vhost.dev.q"), "'q' in vhost 'dev'");
        assert!(
            root.check_local("vhost.dev.q").is_err(),
            "/ cannot reach into dev"
        );
        assert!(
            dev.check_local("vhost.x").is_ok(),
            "dev's own name, internal vhost.dev.vhost.x"
        );
    }

    #[test]
    fn vhosts_and_users_parse_from_their_keys() {
        let (vhosts, bad) = parse_vhosts("dev, /,ops,a.b,dev");
        assert_eq!(vhosts, ["/", "dev", "ops"]);
        assert_eq!(bad, ["a.b"], "a dot would make internal names ambiguous");
        let (users, bad) = parse_users("alice:wonderland:dev|ops, bob:builder, eve");
        assert_eq!(users[0].password, "wonderland");
        assert_eq!(
            users[0].vhosts.as_deref(),
            Some(&["dev".to_string(), "ops".to_string()][..])
        );
        assert_eq!(users[1].vhosts, None);
        assert_eq!(bad, ["eve"]);
    }

    #[test]
    fn logins_and_vhost_access_follow_rabbitmq() {
        let (users, _) = parse_users("alice:secret:dev,bob:builder");
        let access = Access {
            vhosts: parse_vhosts("dev,ops").0,
            users,
        };
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.0.0.7".parse().unwrap();
        assert!(access.login(b"guest", b"guest", local).is_ok());
        assert_eq!(
            access.login(b"guest", b"guest", remote).unwrap_err().code,
            ACCESS_REFUSED
        );
        assert!(access.login(b"alice", b"secret", remote).is_ok());
        assert!(access.login(b"alice", b"nope", local).is_err());
        assert!(access.login(b"mallory", b"guest", local).is_err());
        assert_eq!(access.open("alice", "dev").unwrap(), Vhost("dev".into()));
        assert_eq!(access.open("alice", "ops").unwrap_err().code, NOT_ALLOWED);
        assert!(access.open("bob", "ops").is_ok(), "no list: every vhost");
        assert_eq!(access.open("guest", "nope").unwrap_err().code, NOT_ALLOWED);
        assert!(access.open("guest", "/").is_ok());
    }
}
