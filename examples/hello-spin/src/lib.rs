//! Hello, written with Spin's SDK (`spin-sdk` HTTP handler): a component built for Fermyon
//! Spin runs on Runway unchanged. (spin-sdk 5 targets WASI 0.2; spin-sdk 7 moved to WASI
//! 0.3, which Runway does not serve yet.)

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_request: Request) -> anyhow::Result<impl IntoResponse> {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello from spin-sdk!\n")
        .build())
}
