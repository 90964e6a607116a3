//! The four kinds of grant a `[function.policy]` table holds, each parsed from its string.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A grant string that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} grant `{grant}`: {reason}")]
pub struct GrantError {
    /// Which list the grant was in: `sql`, `kv`, `outbound` or `secrets`.
    pub kind: &'static str,
    /// The grant as written.
    pub grant: String,
    /// What is wrong and how to write it instead.
    pub reason: String,
}

fn malformed(kind: &'static str, grant: &str, reason: impl Into<String>) -> GrantError {
    GrantError {
        kind,
        grant: grant.to_owned(),
        reason: reason.into(),
    }
}

/// An operation on a SQL table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SqlOperation {
    /// Reading rows (`SELECT`, and every read a statement makes on the way).
    Select,
    /// Adding rows.
    Insert,
    /// Changing rows.
    Update,
    /// Removing rows (including rows a `REPLACE` overwrites).
    Delete,
}

impl SqlOperation {
    /// The lower-case name used in grants.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlOperation::Select => "select",
            SqlOperation::Insert => "insert",
            SqlOperation::Update => "update",
            SqlOperation::Delete => "delete",
        }
    }

    fn parse(text: &str) -> Option<SqlOperation> {
        Some(match text {
            "select" => SqlOperation::Select,
            "insert" => SqlOperation::Insert,
            "update" => SqlOperation::Update,
            "delete" => SqlOperation::Delete,
            _ => return None,
        })
    }
}

impl fmt::Display for SqlOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `operation:table`, for example `select:orders`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SqlGrant {
    /// What may be done.
    pub operation: SqlOperation,
    /// To which table, lower-cased (SQLite table names are case-insensitive).
    pub table: String,
}

impl SqlGrant {
    /// Parses `operation:table`.
    pub fn parse(grant: &str) -> Result<SqlGrant, GrantError> {
        let Some((operation, table)) = grant.split_once(':') else {
            return Err(malformed(
                "sql",
                grant,
                "write it as operation:table, for example \"select:orders\"",
            ));
        };
        let operation = SqlOperation::parse(operation).ok_or_else(|| {
            malformed(
                "sql",
                grant,
                format!(
                    "unknown operation `{operation}`; use select, insert, update or delete \
                     (lower case)"
                ),
            )
        })?;
        if table == "*" {
            return Err(malformed(
                "sql",
                grant,
                "a wildcard table would grant every table; name each table the function needs",
            ));
        }
        let valid = !table.is_empty()
            && !table.starts_with(|c: char| c.is_ascii_digit())
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(malformed(
                "sql",
                grant,
                format!(
                    "`{table}` is not a table name (letters, digits and `_`, not starting \
                     with a digit)"
                ),
            ));
        }
        let table = table.to_ascii_lowercase();
        if table.starts_with("sqlite_") || table.starts_with("pragma_") {
            return Err(malformed(
                "sql",
                grant,
                "SQLite's internal tables (sqlite_*, pragma_*) are never granted to functions",
            ));
        }
        Ok(SqlGrant { operation, table })
    }
}

impl fmt::Display for SqlGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.operation, self.table)
    }
}

impl TryFrom<String> for SqlGrant {
    type Error = GrantError;
    fn try_from(text: String) -> Result<Self, GrantError> {
        SqlGrant::parse(&text)
    }
}

impl From<SqlGrant> for String {
    fn from(grant: SqlGrant) -> String {
        grant.to_string()
    }
}

/// Reading or writing a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvAccess {
    /// `get`, `exists`, `get-many`, and seeing the key in `list-keys`.
    Read,
    /// `set`, `delete`, `increment`, `set-many`, `delete-many`.
    Write,
}

impl KvAccess {
    /// The lower-case name used in grants.
    pub fn as_str(self) -> &'static str {
        match self {
            KvAccess::Read => "read",
            KvAccess::Write => "write",
        }
    }
}

impl fmt::Display for KvAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `access:key` or `access:prefix/*`, for example `read:cache/*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KvGrant {
    /// Read or write.
    pub access: KvAccess,
    /// The key, or the prefix when `prefix` is true (without the `*`).
    pub key: String,
    /// Whether the grant covers every key starting with `key`.
    pub prefix: bool,
}

impl KvGrant {
    /// Parses `read:key`, `write:prefix/*` or `read:*`.
    pub fn parse(grant: &str) -> Result<KvGrant, GrantError> {
        let Some((access, pattern)) = grant.split_once(':') else {
            return Err(malformed(
                "kv",
                grant,
                "write it as access:key or access:prefix/*, for example \"read:cache/*\"",
            ));
        };
        let access = match access {
            "read" => KvAccess::Read,
            "write" => KvAccess::Write,
            other => {
                return Err(malformed(
                    "kv",
                    grant,
                    format!("unknown access `{other}`; use read or write (lower case)"),
                ));
            }
        };
        if pattern.is_empty() {
            return Err(malformed(
                "kv",
                grant,
                "the key is empty; name a key or a prefix ending in `*`",
            ));
        }
        let (key, prefix) = match pattern.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (pattern, false),
        };
        if key.contains('*') {
            return Err(malformed(
                "kv",
                grant,
                "`*` may only end a prefix, as in \"read:cache/*\"",
            ));
        }
        Ok(KvGrant {
            access,
            key: key.to_owned(),
            prefix,
        })
    }

    /// Whether this grant covers `access` to `key`.
    pub fn covers(&self, access: KvAccess, key: &str) -> bool {
        self.access == access
            && if self.prefix {
                key.starts_with(&self.key)
            } else {
                key == self.key
            }
    }
}

impl fmt::Display for KvGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.prefix { "*" } else { "" };
        write!(f, "{}:{}{star}", self.access, self.key)
    }
}

impl TryFrom<String> for KvGrant {
    type Error = GrantError;
    fn try_from(text: String) -> Result<Self, GrantError> {
        KvGrant::parse(&text)
    }
}

impl From<KvGrant> for String {
    fn from(grant: KvGrant) -> String {
        grant.to_string()
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port used when a URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// An origin a function may send HTTP requests to: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OutboundGrant {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name (lower-cased) or IP address literal (IPv6 without brackets).
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
}

impl OutboundGrant {
    /// Parses `scheme://host[:port]`.
    pub fn parse(grant: &str) -> Result<OutboundGrant, GrantError> {
        let origin_only = "an outbound grant is an origin: scheme, host and optional port, as \
                           in \"https://api.example.com\" or \"http://127.0.0.1:8080\"";
        let Some((scheme, rest)) = grant.split_once("://") else {
            return Err(malformed("outbound", grant, origin_only));
        };
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(malformed(
                    "outbound",
                    grant,
                    format!("unsupported scheme `{other}`; use http or https"),
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(malformed(
                "outbound",
                grant,
                format!("{origin_only}; a grant covers a whole origin, so drop the path"),
            ));
        }
        if rest.contains('@') {
            return Err(malformed(
                "outbound",
                grant,
                "credentials do not belong in a grant; drop the `user@` part",
            ));
        }
        if rest.contains('*') {
            return Err(malformed(
                "outbound",
                grant,
                "wildcard hosts are not supported; name each host the function calls",
            ));
        }
        let (host, port) =
            split_host_port(rest).ok_or_else(|| malformed("outbound", grant, origin_only))?;
        let port = match port {
            None => scheme.default_port(),
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    malformed("outbound", grant, format!("`{port}` is not a port number"))
                })?,
        };
        let host = host.to_ascii_lowercase();
        let valid_name = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !host.starts_with(['-', '.']);
        if host.parse::<IpAddr>().is_err() && !valid_name {
            return Err(malformed(
                "outbound",
                grant,
                format!("`{host}` is not a host name or IP address"),
            ));
        }
        Ok(OutboundGrant { scheme, host, port })
    }

    /// Whether the grant names a loopback, private or link-local destination itself: an IP
    /// literal in one of those ranges, or `localhost`. Only such grants may reach them.
    pub fn names_internal_destination(&self) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => !crate::address::is_public(ip),
            Err(_) => self.host == "localhost" || self.host.ends_with(".localhost"),
        }
    }

    /// Whether this grant covers a request to `scheme://host:port`.
    pub fn covers(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.scheme == scheme && self.port == port && self.host.eq_ignore_ascii_case(host)
    }
}

/// Splits `host[:port]`, where an IPv6 host is written in brackets.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

impl fmt::Display for OutboundGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host: &dyn fmt::Display = if self.host.contains(':') {
            &format_args!("[{}]", self.host)
        } else {
            &self.host
        };
        write!(f, "{}://{host}", self.scheme.as_str())?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for OutboundGrant {
    type Error = GrantError;
    fn try_from(text: String) -> Result<Self, GrantError> {
        OutboundGrant::parse(&text)
    }
}

impl From<OutboundGrant> for String {
    fn from(grant: OutboundGrant) -> String {
        grant.to_string()
    }
}

/// The name of a secret, like an environment variable: `PAYMENT_KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,127}$", example = "PAYMENT_KEY"))]
pub struct SecretName(String);

impl SecretName {
    /// Checks a secret name: letters, digits and `_`, not starting with a digit, at most 128.
    pub fn parse(name: &str) -> Result<SecretName, GrantError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(malformed(
                "secrets",
                name,
                "a secret name is letters, digits and `_`, not starting with a digit, at most \
                 128 characters (for example PAYMENT_KEY)",
            ));
        }
        Ok(SecretName(name.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SecretName {
    type Error = GrantError;
    fn try_from(text: String) -> Result<Self, GrantError> {
        SecretName::parse(&text)
    }
}

impl From<SecretName> for String {
    fn from(name: SecretName) -> String {
        name.0
    }
}

/// Grants travel as the text written in `[function.policy]`; their schemas say so.
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::{ObjectBuilder, RefOr, Type, schema::Schema};

    macro_rules! grant_schema {
        ($ty:ty, $description:literal, $example:literal) => {
            impl utoipa::PartialSchema for $ty {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some($description))
                        .examples([$example])
                        .into()
                }
            }

            impl utoipa::ToSchema for $ty {}
        };
    }

    grant_schema!(
        super::SqlGrant,
        "`operation:table`: select, insert, update or delete on one table.",
        "select:orders"
    );
    grant_schema!(
        super::KvGrant,
        "`read:` or `write:` a key-value key, or a prefix ending in `*`.",
        "read:cache/*"
    );
    grant_schema!(
        super::OutboundGrant,
        "An origin outbound HTTP may reach: `https://host[:port]`.",
        "https://api.example.com"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_grants_parse_and_refuse_with_the_grant_named() {
        let g = SqlGrant::parse("select:Orders").unwrap();
        assert_eq!(
            (g.operation, g.table.as_str()),
            (SqlOperation::Select, "orders")
        );
        for bad in [
            "select",
            "read:orders",
            "SELECT:orders",
            "select:*",
            "select:",
            "select:sqlite_master",
            "select:1x",
            "select:a b",
        ] {
            let err = SqlGrant::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn kv_grants_cover_prefixes_and_exact_keys() {
        let prefix = KvGrant::parse("read:cache/*").unwrap();
        assert!(prefix.covers(KvAccess::Read, "cache/a"));
        assert!(!prefix.covers(KvAccess::Read, "cachex"));
        assert!(!prefix.covers(KvAccess::Write, "cache/a"));
        let exact = KvGrant::parse("write:counter").unwrap();
        assert!(exact.covers(KvAccess::Write, "counter"));
        assert!(!exact.covers(KvAccess::Write, "counter2"));
        assert!(
            KvGrant::parse("read:*")
                .unwrap()
                .covers(KvAccess::Read, "anything")
        );
        for bad in ["cache/*", "delete:x", "read:", "read:a*b"] {
            assert!(KvGrant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outbound_grants_are_origins() {
        let g = OutboundGrant::parse("https://API.example.com").unwrap();
        assert_eq!((g.host.as_str(), g.port), ("api.example.com", 443));
        assert_eq!(g.to_string(), "https://api.example.com");
        let local = OutboundGrant::parse("http://127.0.0.1:8080/").unwrap();
        assert!(local.names_internal_destination());
        assert!(!g.names_internal_destination());
        let v6 = OutboundGrant::parse("http://[::1]:9000").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "http://[::1]:9000");
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://u@x",
            "https://*.x.com",
            "https://x:0",
            "https://x:99999",
            "https://",
        ] {
            assert!(OutboundGrant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_names_look_like_variables() {
        assert!(SecretName::parse("PAYMENT_KEY").is_ok());
        assert!(SecretName::parse("1KEY").is_err());
        assert!(SecretName::parse("A-B").is_err());
    }
}
