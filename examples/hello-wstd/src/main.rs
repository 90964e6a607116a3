//! Hello, written with `wstd` (async std for WASI 0.2): the same function as `hello`,
//! showing that components from this toolchain, which import `wasi:cli` besides the proxy
//! world, deploy and run unmodified.

use wstd::http::{Body, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, wstd::http::Error> {
    Ok(Response::new("Hello from wstd!\n".into()))
}
