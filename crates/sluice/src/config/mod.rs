//! `sluice server` configuration: built-in defaults, overridden by a TOML file (`--config`),
//! overridden by `SLUICE_…` environment variables, overridden by flags (`--data-dir`, `--set
//! key=value`, …). Every key is listed once, in its owning crate's `CONFIG_KEYS` (gathered
//! by [`spec::keys`]); each crate builds its config from [`Layered`] through
//! `common::config::Settings`.
//!
//! Errors name the key, where the value came from and what is allowed, so a user can fix a
//! typo without reading the source.

pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use common::config::Settings;
use spec::{KeySpec, Kind};

/// A parsed configuration value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    fn to_toml(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => toml::Value::String(s.clone()).to_string(),
        }
    }
}

/// A configuration mistake, phrased for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Where overrides come from. `env` is a lookup so tests need not touch the process env.
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// `(key, value, origin)` in increasing precedence, e.g. `("storage.dir", "/x", "--data-dir")`.
    pub flags: Vec<(String, String, String)>,
}

/// The effective configuration as a flat key → (value, origin) map.
#[derive(Clone, Debug)]
pub struct Layered {
    values: BTreeMap<&'static str, (Value, String)>,
}

impl Layered {
    pub fn load(sources: &Sources<'_>) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        for spec in spec::keys() {
            let parsed: toml::Value =
                toml::from_str::<toml::Table>(&format!("v = {}", spec.default))
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .ok_or_else(|| err(format!("internal: bad default for {}", spec.key)))?;
            let v = from_toml(spec, &parsed, "built-in default")?;
            values.insert(spec.key, (v, "default".to_string()));
        }
        let mut layered = Layered { values };
        if let Some(path) = sources.file {
            layered.apply_file(path)?;
        }
        for spec in spec::keys() {
            let var = spec.env_var();
            if let Some(raw) = (sources.env)(&var) {
                let v = from_str(spec, &raw, &format!("environment variable {var}"))?;
                layered.values.insert(spec.key, (v, var));
            }
        }
        for (key, raw, origin) in &sources.flags {
            let spec = spec::find(key).ok_or_else(|| unknown_key(key, origin))?;
            let v = from_str(spec, raw, origin)?;
            layered.values.insert(spec.key, (v, origin.clone()));
        }
        layered.check_relations()?;
        Ok(layered)
    }

    /// Checks between keys: each pair must hold `lower <= upper`.
    fn check_relations(&self) -> Result<(), ConfigError> {
        const PAIRS: &[(&str, &str)] = &[
            (
                "groups.min_session_timeout_ms",
                "groups.max_session_timeout_ms",
            ),
            ("limits.message_max_bytes", "limits.max_frame_bytes"),
        ];
        for (lower, upper) in PAIRS {
            let (l, u) = (self.int(lower), self.int(upper));
            if l > u {
                return Err(err(format!(
                    "`{lower}` ({l}, from {}) must not exceed `{upper}` ({u}, from {})",
                    self.values[lower].1, self.values[upper].1
                )));
            }
        }
        Ok(())
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read config file {}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            err(format!(
                "config file {} is not valid TOML: {e}",
                path.display()
            ))
        })?;
        let origin = format!("config file {}", path.display());
        for (top, value) in &table {
            match value {
                toml::Value::Table(section) if spec::sections().contains(&top.as_str()) => {
                    for (name, v) in section {
                        let key = format!("{top}.{name}");
                        let spec = spec::find(&key).ok_or_else(|| unknown_key(&key, &origin))?;
                        let parsed = from_toml(spec, v, &origin)?;
                        self.values.insert(spec.key, (parsed, origin.clone()));
                    }
                }
                _ => {
                    // A top-level Kafka name such as "auto.create.topics.enable" = false.
                    let spec = spec::find(top)
                        .filter(|s| s.kafka_name == Some(top.as_str()))
                        .ok_or_else(|| unknown_key(top, &origin))?;
                    let parsed = from_toml(spec, value, &origin)?;
                    self.values.insert(spec.key, (parsed, origin.clone()));
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> &Value {
        match self.values.get(key) {
            Some((v, _)) => v,
            None => panic!("config key {key} missing from spec"),
        }
    }

    /// The effective configuration as a commented TOML document.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# Effective sluice server configuration.\n\
             # Precedence: flags > SLUICE_* environment > config file > built-in defaults.\n",
        );
        for section in spec::sections() {
            out.push_str(&format!("\n[{section}]\n"));
            for spec in spec::keys().iter().filter(|k| k.section() == section) {
                let (value, origin) = &self.values[spec.key];
                out.push_str(&format!("# {}\n", spec.doc));
                let mut meta = format!(
                    "# allowed: {}; env {}",
                    spec.kind.describe(),
                    spec.env_var()
                );
                if let Some(kafka) = spec.kafka_name {
                    meta.push_str(&format!("; Kafka: {kafka}"));
                }
                if origin != "default" {
                    meta.push_str(&format!("; set by {origin}"));
                }
                out.push_str(&meta);
                out.push('\n');
                out.push_str(&format!("{} = {}\n", spec.name(), value.to_toml()));
            }
        }
        out
    }

    /// The server's own settings (each crate reads its own through [`Settings`]).
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            admin_enabled: self.bool("admin.enabled"),
            admin_listener: self.str("admin.listener"),
            data_dir: PathBuf::from(self.str("storage.dir")),
            shutdown_timeout_ms: self.int("server.shutdown_timeout_ms") as u64,
            log_json: self.str("log.format") == "json",
            log_level: self.str("log.level"),
        }
    }
}

impl Settings for Layered {
    fn int(&self, key: &str) -> i64 {
        match self.get(key) {
            Value::Int(i) => *i,
            other => panic!("config key {key} is not an integer: {other:?}"),
        }
    }

    fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            Value::Bool(b) => *b,
            other => panic!("config key {key} is not a bool: {other:?}"),
        }
    }

    fn str(&self, key: &str) -> String {
        match self.get(key) {
            Value::Str(s) => s.clone(),
            other => panic!("config key {key} is not a string: {other:?}"),
        }
    }
}

/// The server's own settings (the admin listener, data directory, shutdown, logging).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub admin_enabled: bool,
    pub admin_listener: String,
    pub data_dir: PathBuf,
    pub shutdown_timeout_ms: u64,
    pub log_json: bool,
    pub log_level: String,
}

fn unknown_key(key: &str, origin: &str) -> ConfigError {
    let close: Vec<&str> = spec::keys()
        .iter()
        .filter(|k| k.name() == key.rsplit('.').next().unwrap_or(key) || similar(k.key, key))
        .map(|k| k.key)
        .collect();
    let hint = if close.is_empty() {
        "run `sluice server --print-config` to see every key".to_string()
    } else {
        format!("did you mean {}?", close.join(" or "))
    };
    err(format!(
        "unknown configuration key `{key}` (from {origin}); {hint}"
    ))
}

/// Typo check: edit distance of at most 2.
fn similar(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

fn invalid(spec: &KeySpec, shown: &str, origin: &str) -> ConfigError {
    err(format!(
        "invalid value {shown} for `{}` (from {origin}): expected {}",
        spec.key,
        spec.kind.describe()
    ))
}

fn from_toml(spec: &KeySpec, v: &toml::Value, origin: &str) -> Result<Value, ConfigError> {
    let shown = v.to_string();
    let value = match (spec.kind, v) {
        (Kind::Int { .. }, toml::Value::Integer(i)) => Value::Int(*i),
        (Kind::Bool, toml::Value::Boolean(b)) => Value::Bool(*b),
        (Kind::Str | Kind::Enum(_) | Kind::Addr, toml::Value::String(s)) => Value::Str(s.clone()),
        _ => return Err(invalid(spec, &shown, origin)),
    };
    check(spec, value, &shown, origin)
}

fn from_str(spec: &KeySpec, raw: &str, origin: &str) -> Result<Value, ConfigError> {
    let shown = format!("`{raw}`");
    let value = match spec.kind {
        Kind::Int { .. } => Value::Int(
            raw.trim()
                .replace('_', "")
                .parse()
                .map_err(|_| invalid(spec, &shown, origin))?,
        ),
        Kind::Bool => Value::Bool(match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(invalid(spec, &shown, origin)),
        }),
        Kind::Str | Kind::Enum(_) | Kind::Addr => Value::Str(raw.to_string()),
    };
    check(spec, value, &shown, origin)
}

fn check(spec: &KeySpec, value: Value, shown: &str, origin: &str) -> Result<Value, ConfigError> {
    let ok = match (&spec.kind, &value) {
        (Kind::Int { min, max }, Value::Int(i)) => (*min..=*max).contains(i),
        (Kind::Enum(options), Value::Str(s)) => options.contains(&s.as_str()),
        (Kind::Addr, Value::Str(s)) => valid_addr(s),
        (Kind::Str, Value::Str(_)) | (Kind::Bool, Value::Bool(_)) => true,
        _ => false,
    };
    if ok {
        Ok(value)
    } else {
        Err(invalid(spec, shown, origin))
    }
}

fn valid_addr(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_with(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &[(&str, &str)],
    ) -> Result<Layered, ConfigError> {
        let flags = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string(), format!("--set {k}")))
            .collect();
        Layered::load(&Sources { file, env, flags })
    }

    #[test]
    fn precedence_flags_over_env_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "[storage]\ndir = \"/from-file\"\nsegment_bytes = 2097152\n[topics]\nnum_partitions = 3\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "SLUICE_STORAGE_DIR" => Some("/from-env".to_string()),
            "SLUICE_TOPICS_NUM_PARTITIONS" => Some("5".to_string()),
            _ => None,
        };
        let c = load_with(Some(&path), &env, &[("storage.dir", "/from-flag")]).unwrap();
        assert_eq!(c.server_config().data_dir, PathBuf::from("/from-flag"));
        let b = broker::BrokerConfig::from_settings(&c, Path::new("d"));
        assert_eq!(b.default_partitions, 5);
        let store = storage::StoreConfig::from_settings(&c, PathBuf::from("d"));
        assert_eq!(store.segment_bytes, 2097152);
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[storage]\nsegmnt_bytes = 5\n").unwrap();
        let e = load_with(Some(&path), &no_env, &[]).unwrap_err();
        assert!(e.0.contains("storage.segmnt_bytes"), "{e}");
        assert!(e.0.contains("storage.segment_bytes"), "{e}");
        std::fs::write(&path, "[nope]\nx = 1\n").unwrap();
        let e = load_with(Some(&path), &no_env, &[]).unwrap_err();
        assert!(e.0.contains("`nope`"), "{e}");
    }

    #[test]
    fn invalid_value_names_key_and_range() {
        let e = load_with(None, &no_env, &[("storage.segment_bytes", "12")]).unwrap_err();
        assert!(e.0.contains("storage.segment_bytes"), "{e}");
        assert!(e.0.contains("1048576..=4294967296"), "{e}");
        let e = load_with(None, &no_env, &[("storage.flush", "sometimes")]).unwrap_err();
        assert!(e.0.contains("async, sync"), "{e}");
        let env = |k: &str| (k == "SLUICE_KAFKA_LISTENER").then(|| "nope".to_string());
        let e = load_with(None, &env, &[]).unwrap_err();
        assert!(e.0.contains("SLUICE_KAFKA_LISTENER"), "{e}");
    }

    #[test]
    fn related_keys_are_checked_together() {
        let e = load_with(
            None,
            &no_env,
            &[("groups.min_session_timeout_ms", "2000000")],
        )
        .unwrap_err();
        assert!(e.0.contains("groups.max_session_timeout_ms"), "{e}");
    }

    #[test]
    fn kafka_names_are_aliases() {
        let c = load_with(None, &no_env, &[("auto.create.topics.enable", "false")]).unwrap();
        assert!(!broker::BrokerConfig::from_settings(&c, Path::new("d")).auto_create_topics);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "\"num.partitions\" = 4\n").unwrap();
        let c = load_with(Some(&path), &no_env, &[]).unwrap();
        assert_eq!(c.int("topics.num_partitions"), 4);
    }

    #[test]
    fn print_config_round_trips() {
        let l = load_with(
            None,
            &no_env,
            &[("log.format", "json"), ("storage.flush", "sync")],
        )
        .unwrap();
        let text = l.to_toml();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, &text).unwrap();
        let again = load_with(Some(&path), &no_env, &[]).unwrap();
        for k in spec::keys() {
            assert_eq!(again.get(k.key), l.get(k.key), "{}", k.key);
        }
        assert!(text.contains("format = \"json\""));
        assert!(text.contains("flush = \"sync\""));
    }

    /// The layered defaults (parsed as TOML, the way a user's values are) build each
    /// crate's `Default` config, and the named limit constants are what they say.
    #[test]
    fn defaults_build_each_crates_default_config() {
        let c = load_with(None, &no_env, &[]).unwrap();
        let kafka = frontend_kafka::KafkaConfig::from_settings(&c);
        assert_eq!(
            format!("{kafka:?}"),
            format!("{:?}", frontend_kafka::KafkaConfig::default())
        );
        assert_eq!(
            kafka.max_connections_per_ip,
            frontend_kafka::MAX_CONNECTIONS_PER_IP
        );
        assert_eq!(
            kafka.max_inflight_request_bytes,
            frontend_kafka::MAX_INFLIGHT_REQUEST_BYTES
        );
        assert_eq!(
            kafka.max_partitions_per_request,
            frontend_kafka::MAX_PARTITIONS_PER_REQUEST
        );
        assert_eq!(
            kafka.frame_read_timeout_ms,
            frontend_kafka::FRAME_READ_TIMEOUT_MS
        );
        let b = broker::BrokerConfig::default();
        assert_eq!(
            format!("{:?}", broker::BrokerConfig::from_settings(&c, &b.data_dir)),
            format!("{b:?}")
        );
        let store = storage::StoreConfig::from_settings(&c, PathBuf::from("d"));
        assert_eq!(
            store.max_decompressed_batch_bytes,
            common::limits::MAX_DECOMPRESSED_BATCH_BYTES
        );
        let env = |k: &str| (k == "SLUICE_LIMITS_MAX_CONNECTIONS_PER_IP").then(|| "3".to_string());
        let c = load_with(None, &env, &[]).unwrap();
        assert_eq!(
            frontend_kafka::KafkaConfig::from_settings(&c).max_connections_per_ip,
            3
        );
    }
}
