//! Configuration keys, owned by the crate whose settings they are: each crate lists its
//! keys ([`KeySpec`]: name, allowed values, built-in default, Kafka's name, doc) next to its
//! config struct, and builds that struct from a [`Settings`] lookup. The binary gathers
//! every crate's list into one table that drives the file, environment variables, flags
//! and `--print-config`; no key is defined twice.
//!
//! [`Defaults`] reads a list's built-in defaults, so each crate can test that its
//! `Default` impl and its keys' defaults agree.

/// What values a key accepts.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A signed integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Any string (paths, hosts).
    Str,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// `host:port`.
    Addr,
}

impl Kind {
    /// The allowed values, as shown in error messages.
    pub fn describe(&self) -> String {
        match self {
            Kind::Int { min, max } => format!("an integer in {min}..={max}"),
            Kind::Bool => "true or false".to_string(),
            Kind::Str => "a string".to_string(),
            Kind::Enum(options) => format!("one of {}", options.join(", ")),
            Kind::Addr => "an address host:port (port 0..=65535)".to_string(),
        }
    }
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// `section.key`, as written in the TOML file and `--set`.
    pub key: &'static str,
    pub kind: Kind,
    /// Built-in default in TOML syntax.
    pub default: &'static str,
    /// Kafka's broker config name, accepted as an alias by `--set` and in the file's top level.
    pub kafka_name: Option<&'static str>,
    pub doc: &'static str,
}

impl KeySpec {
    /// `SLUICE_` + key upper-cased with `.` → `_`, e.g. `SLUICE_STORAGE_DIR`.
    pub fn env_var(&self) -> String {
        format!("SLUICE_{}", self.key.replace('.', "_").to_ascii_uppercase())
    }

    pub fn section(&self) -> &'static str {
        self.key.split_once('.').map(|(s, _)| s).unwrap_or("")
    }

    pub fn name(&self) -> &'static str {
        self.key.split_once('.').map(|(_, n)| n).unwrap_or(self.key)
    }
}

/// Validated configuration values by key (the binary's layered config implements it).
/// Keys are `section.name`; asking for a key that is not in the table, or with the wrong
/// type, is a programming error and panics.
pub trait Settings {
    fn int(&self, key: &str) -> i64;
    fn bool(&self, key: &str) -> bool;
    fn str(&self, key: &str) -> String;
}

/// The built-in defaults of a key list, as [`Settings`].
#[derive(Clone, Copy, Debug)]
pub struct Defaults<'a>(pub &'a [KeySpec]);

impl Defaults<'_> {
    fn raw(&self, key: &str) -> &'static str {
        self.0
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("no key {key} in this list"))
            .default
    }
}

impl Settings for Defaults<'_> {
    fn int(&self, key: &str) -> i64 {
        let raw = self.raw(key).replace('_', "");
        raw.parse()
            .unwrap_or_else(|_| panic!("default of {key} is not an integer: {raw}"))
    }
    fn bool(&self, key: &str) -> bool {
        match self.raw(key) {
            "true" => true,
            "false" => false,
            raw => panic!("default of {key} is not a boolean: {raw}"),
        }
    }
    fn str(&self, key: &str) -> String {
        let raw = self.raw(key);
        raw.strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or_else(|| panic!("default of {key} is not a quoted string: {raw}"))
            .to_string()
    }
}

/// `i32::MAX` as an `i64` bound.
pub const I32_MAX: i64 = i32::MAX as i64;
/// Byte units for bounds and defaults.
pub const MIB: i64 = 1024 * 1024;
pub const GIB: i64 = 1024 * MIB;
