//! A WASI command, not an HTTP function: it exports `wasi:cli/run` instead of
//! `wasi:http/incoming-handler`. Runway refuses to deploy it, and the tests check that the
//! refusal says why.
fn main() {
    println!("I am a command-line program");
}
