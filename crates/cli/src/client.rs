//! The admin API client shared by every command.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::blocking::{Client, RequestBuilder, Response};
use runway_server::ErrorBody;
use serde::de::DeserializeOwned;

/// Where the admin API is, from `--server` or `RUNWAY_SERVER`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Admin API of the node to talk to.
    #[arg(long, env = "RUNWAY_SERVER", default_value = "http://127.0.0.1:8081")]
    pub server: String,
    /// Control-plane token (the node printed its bootstrap admin token on first start).
    #[arg(long, env = "RUNWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Environment to act on (default: the node's home environment, `prod`).
    #[arg(long, env = "RUNWAY_ENV")]
    pub env: Option<String>,
}

/// A client of one node's admin API.
pub struct AdminClient {
    base: String,
    http: Client,
    env: Option<String>,
}

impl AdminClient {
    /// A client whose every request is for `--env` (when given).
    pub fn new(args: &ServerArgs) -> anyhow::Result<AdminClient> {
        let mut client = AdminClient::with_token(&args.server, args.token.as_deref())?;
        client.env = args.env.clone();
        Ok(client)
    }

    /// The same client for another environment.
    pub fn for_env(mut self, env: Option<String>) -> AdminClient {
        self.env = env;
        self
    }

    pub fn with_token(server: &str, token: Option<&str>) -> anyhow::Result<AdminClient> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow!("the token contains characters not allowed in a header"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = Client::builder()
            .timeout(Duration::from_secs(15 * 60))
            .default_headers(headers)
            .build()
            .context("while creating the HTTP client")?;
        Ok(AdminClient {
            base: server.trim_end_matches('/').to_owned(),
            http,
            env: None,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Names the client's environment on a request, when it has one.
    fn scoped(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.env {
            Some(env) => request.query(&[("env", env)]),
            None => request,
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.scoped(self.http.get(self.url(path)))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.scoped(self.http.post(self.url(path)))
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.scoped(self.http.put(self.url(path)))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.scoped(self.http.delete(self.url(path)))
    }

    pub fn head(&self, path: &str) -> RequestBuilder {
        self.scoped(self.http.head(self.url(path)))
    }

    /// Sends a request and returns the raw response, turning transport failures into
    /// an error that says how to reach a node.
    pub fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().map_err(|err| {
            if err.is_connect() {
                anyhow!(
                    "cannot reach the Runway admin API at {}: start a node with `runway serve` \
                     (or `runway up`), or point --server / RUNWAY_SERVER at one",
                    self.base
                )
            } else {
                anyhow!(
                    "request to the Runway admin API at {} failed: {err}",
                    self.base
                )
            }
        })
    }

    /// Sends a request and decodes a successful JSON answer, or reports the API's error.
    pub fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request)?;
        decode(response)
    }
}

/// Decodes a JSON success, or turns an API error body into an error message.
pub fn decode<T: DeserializeOwned>(response: Response) -> anyhow::Result<T> {
    let status = response.status();
    let text = response
        .text()
        .context("while reading the admin API's answer")?;
    if status.is_success() {
        return serde_json::from_str(&text)
            .with_context(|| format!("the admin API answered with unexpected JSON: {text}"));
    }
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => bail!(
            "{} [{} {}]",
            body.error.message,
            status.as_u16(),
            body.error.code
        ),
        Err(_) => bail!("the admin API answered {status}: {text}"),
    }
}
