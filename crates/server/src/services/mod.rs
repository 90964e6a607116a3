//! Domain services: what the admin API (and later the console) asks the node to do, with no
//! HTTP types. Each service has its own error type; `error.rs` maps them to status codes in
//! one place, and handlers only parse requests, call a service and shape the answer.
//!
//! The move is made one domain at a time: API keys, tokens and budgets so far.

pub(crate) mod api_keys;
pub(crate) mod budgets;
pub(crate) mod tokens;
