//! End-to-end tests: each starts the real `runway` binary on free loopback ports with its
//! own data folder, deploys real components and talks HTTP to it.

mod access;
mod bad_input;
mod cluster;
mod cost;
mod deploy;
mod environments;
mod kubernetes;
mod lifecycle;
mod limits;
mod metering;
mod policy;
mod releases;
mod reliability;
mod setup;
mod state;
mod support;
mod triggers;
