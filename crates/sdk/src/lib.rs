//! The guest side of Runway's capabilities, for functions written in Rust.
//!
//! Each capability is the standard interface where one exists (`wasi:keyvalue`,
//! `wasi:config`) and `runway:platform/sql` where none does; this crate wraps them so a
//! handler needs a line or two. Every call is checked by the platform against the
//! function's `[function.policy]`: a refused call returns an error the handler can handle
//! (`sql::Error::Denied`, `kv::Error::AccessDenied`, `config::Error::Upstream`) and is
//! recorded in the node's audit log. Outbound HTTP is plain `wasi:http/outgoing-handler`:
//! use the `wasi` or `wstd` crates.
//!
//! ```ignore
//! let rows = runway_sdk::sql::query("SELECT total FROM orders WHERE id = ?", &[id.into()])?;
//! let cache = runway_sdk::kv::Store::open()?;
//! cache.set("cache/order/7", b"...")?;
//! let key = runway_sdk::config::get("PAYMENT_KEY")?;
//! ```

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "runway:platform/platform",
        generate_all,
    });
}

/// SQL on the environment's database (`runway:platform/sql`).
pub mod sql {
    pub use crate::bindings::runway::platform::sql::{Error, Rows, Value};
    use crate::bindings::runway::platform::sql as raw;

    /// Runs one statement with `?` parameters and returns its rows.
    pub fn query(statement: &str, params: &[Value]) -> Result<Rows, Error> {
        raw::query(statement, params)
    }

    /// Runs one statement with `?` parameters and returns how many rows it changed.
    pub fn execute(statement: &str, params: &[Value]) -> Result<u64, Error> {
        raw::execute(statement, params)
    }

    impl From<i64> for Value {
        fn from(value: i64) -> Value {
            Value::Integer(value)
        }
    }

    impl From<f64> for Value {
        fn from(value: f64) -> Value {
            Value::Real(value)
        }
    }

    impl From<&str> for Value {
        fn from(value: &str) -> Value {
            Value::Text(value.to_owned())
        }
    }

    impl From<String> for Value {
        fn from(value: String) -> Value {
            Value::Text(value)
        }
    }

    impl From<Vec<u8>> for Value {
        fn from(value: Vec<u8>) -> Value {
            Value::Blob(value)
        }
    }

    impl Value {
        /// The value as JSON text (blobs as arrays of numbers).
        pub fn to_json(&self) -> String {
            match self {
                Value::Null => "null".into(),
                Value::Integer(i) => i.to_string(),
                Value::Real(r) => r.to_string(),
                Value::Text(t) => crate::json_string(t),
                Value::Blob(b) => {
                    let items: Vec<String> = b.iter().map(u8::to_string).collect();
                    format!("[{}]", items.join(","))
                }
            }
        }
    }

    impl Rows {
        /// The rows as a JSON array of objects keyed by column name.
        pub fn to_json(&self) -> String {
            let rows: Vec<String> = self
                .rows
                .iter()
                .map(|row| {
                    let fields: Vec<String> = self
                        .columns
                        .iter()
                        .zip(row)
                        .map(|(column, value)| {
                            format!("{}:{}", crate::json_string(column), value.to_json())
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            format!("[{}]", rows.join(","))
        }
    }

}

/// Key-value storage (`wasi:keyvalue`): one store per environment.
pub mod kv {
    use crate::bindings::wasi::keyvalue::{atomics, store};
    pub use store::Error;

    /// The environment's key-value store.
    pub struct Store(store::Bucket);

    impl Store {
        /// Opens the environment's store.
        pub fn open() -> Result<Store, Error> {
            store::open("default").map(Store)
        }

        /// The value of `key`, if set.
        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.0.get(key)
        }

        /// The value of `key` as text, if set and UTF-8.
        pub fn get_string(&self, key: &str) -> Result<Option<String>, Error> {
            Ok(self.get(key)?.and_then(|bytes| String::from_utf8(bytes).ok()))
        }

        /// Sets `key`.
        pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
            self.0.set(key, value)
        }

        /// Removes `key`.
        pub fn delete(&self, key: &str) -> Result<(), Error> {
            self.0.delete(key)
        }

        /// Whether `key` is set.
        pub fn exists(&self, key: &str) -> Result<bool, Error> {
            self.0.exists(key)
        }

        /// Adds `delta` to the number at `key` and returns the new value.
        pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
            atomics::increment(&self.0, key, delta)
        }

        /// Every key this function may read.
        pub fn keys(&self) -> Result<Vec<String>, Error> {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = self.0.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => return Ok(keys),
                }
            }
        }
    }

}

/// Configuration and granted secrets (`wasi:config`).
pub mod config {
    use crate::bindings::wasi::config::store;
    pub use store::Error;

    /// A configuration value or granted secret.
    pub fn get(key: &str) -> Result<Option<String>, Error> {
        store::get(key)
    }

    /// Every configuration value and granted secret that is set.
    pub fn all() -> Result<Vec<(String, String)>, Error> {
        store::get_all()
    }

}

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
