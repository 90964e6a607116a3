//! The parts of the `runway` binary that its tests and the benchmark harness share with it:
//! how a guest build gets the Rust targets it needs. Everything else lives in the binary.

pub mod toolchain;
