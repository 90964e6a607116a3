//! The admin API as a contract: its OpenAPI 3.1 document, generated from the router's
//! handlers (`#[utoipa::path]`) and the wire types (`ToSchema`), never written beside them.
//!
//! [`document`] builds it from the same route table the node serves (`admin::api`), so a
//! route cannot be served without being documented; the node serves it, without a token,
//! at `GET /v1/openapi.json`. What every guarded route shares (the bearer token, the
//! `?env=` parameter, the answers of the role check and of the extractors) is added here
//! once, from what each operation declares, rather than repeated on every handler.

use std::sync::{Arc, LazyLock};

use axum::response::IntoResponse;
use runway_access::Role;
use utoipa::OpenApi as _;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi, PathItem, Ref, RefOr, Required, ResponseBuilder, Type,
};
use utoipa_axum::router::OpenApiRouter;

use crate::Shared;
use crate::api::error::ErrorBody;

/// The name of the bearer-token security scheme in the document.
const BEARER: &str = "bearer";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Runway admin API",
        description = "Deploys, runs and accounts for the WebAssembly functions of one Runway \
            node. Every error is `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}` with a \
            stable `code`. Every operation but `/v1/health` and `/v1/openapi.json` needs \
            `Authorization: Bearer <token>` with the role its description names \
            (viewer < deployer < admin).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "node", description = "The node itself."),
        (name = "artifacts", description = "Components, their signatures and revocations."),
        (name = "functions", description = "Deploys, releases, invocations and logs."),
        (name = "jobs", description = "Asynchronous invocations and schedules."),
        (name = "cost", description = "Usage, cost, budgets and capacity."),
        (name = "policy", description = "Least privilege: the audit log, secrets and SQL."),
        (name = "access", description = "Tokens, API keys and the control-plane audit log."),
        (name = "environments", description = "Environments and their lifespans."),
    )
)]
struct Base;

/// The document's fixed part: description, tags, the error schema and the bearer scheme.
pub(crate) fn base() -> OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A control-plane token (`runway token create`, or the node's bootstrap \
                         admin token).",
                    ))
                    .build(),
            ),
        );
    doc
}

/// Marks every operation of a group as needing a token of `role` or above.
pub(crate) fn requires(
    role: Role,
    mut routes: OpenApiRouter<Arc<Shared>>,
) -> OpenApiRouter<Arc<Shared>> {
    for item in routes.get_openapi_mut().paths.paths.values_mut() {
        for operation in operations(item) {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            let needs = format!("Needs a token with role `{role}` or above.");
            operation.description = Some(match operation.description.take() {
                Some(text) if !text.is_empty() => format!("{text}\n\n{needs}"),
                _ => needs,
            });
        }
    }
    routes
}

/// The admin API's OpenAPI 3.1 document.
pub fn document() -> OpenApi {
    let mut doc = crate::api::api(|_, routes| routes).into_openapi();
    for (path, item) in doc.paths.paths.iter_mut() {
        for operation in operations(item) {
            shared_answers(path, operation);
        }
    }
    doc
}

/// The document as served, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_json()
        .expect("an OpenAPI document always serialises")
});

/// This document: the admin API's contract (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "node",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)),
)]
pub(crate) async fn serve() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// Every operation of a path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds the answers an operation shares with others: the role check's for guarded ones,
/// `?env=` where the environment comes from the query, and the extractors' rejections.
fn shared_answers(path: &str, operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    let has = |place: ParameterIn| {
        parameters
            .iter()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
    };
    let (has_query, has_path) = (has(ParameterIn::Query), has(ParameterIn::Path));
    let guarded = operation.security.is_some();
    if guarded && !path.starts_with("/v1/envs") {
        parameters.push(RefOr::T(
            ParameterBuilder::new()
                .name("env")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "The environment to act on; default the node's home environment.",
                ))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(Type::String)
                        .examples([runway_store::DEFAULT_ENVIRONMENT]),
                ))
                .build(),
        ));
    }
    if parameters.is_empty() {
        operation.parameters = None;
    }
    let body = operation.request_body.as_ref().map(|body| match body {
        RefOr::T(RequestBody { content, .. }) => content.contains_key("application/json"),
        RefOr::Ref(_) => true,
    });
    let mut add = |status: u16, why: &str| error_answer(operation, status, why);
    if guarded {
        add(
            401,
            "`missing_token`, `malformed_authorization`, `unknown_token`, `revoked_token`, \
             `expired_token`: no usable token.",
        );
        add(
            403,
            "`forbidden`: the token's role or environment scope does not allow this.",
        );
        add(
            429,
            "`too_many_refusals`: this client was refused 120 times a minute with the same \
             credential (or none); retry after `Retry-After` seconds with a valid token.",
        );
        if !path.starts_with("/v1/envs") {
            add(404, "`no_such_environment`: no environment named by `env`.");
        }
    }
    if has_query {
        add(400, "`invalid_query`: a query parameter is malformed.");
    }
    if has_path {
        add(400, "`invalid_path`: a path parameter is not valid UTF-8.");
    }
    match body {
        Some(true) => {
            add(
                422,
                "`invalid_request`: the body is not the JSON this operation takes.",
            );
            add(413, "`body_too_large`: the body is over 2 MiB.");
        }
        Some(false) => {
            add(400, "`invalid_body`: the body could not be read.");
            add(413, "`body_too_large`: the body is over the limit.");
        }
        None => {}
    }
}

/// Adds `why` to the operation's answer with `status` (an error body), creating it if needed.
fn error_answer(operation: &mut Operation, status: u16, why: &str) {
    let answers = &mut operation.responses.responses;
    match answers.get_mut(&status.to_string()) {
        Some(RefOr::T(answer)) => {
            if !answer.description.contains(why) {
                answer.description = format!("{}\n\n{why}", answer.description);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            answers.insert(
                status.to_string(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(why)
                        .content("application/json", error_content())
                        .build(),
                ),
            );
        }
    }
}

/// The error body: `{"error": {"code", "message"}}`.
fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::document;
    use crate::{Node, NodeConfig};

    const TOKEN: &str = "openapi-test-token-0123456789abcdef0123456789";

    /// The document as JSON, as a client reads it.
    fn json() -> Value {
        serde_json::from_str(&document().to_json().unwrap()).unwrap()
    }

    /// `(method, path)` of every documented operation.
    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                all.insert((method.to_uppercase(), path.clone()));
            }
        }
        all
    }

    fn refs<'v>(value: &'v Value, found: &mut Vec<&'v str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_self_consistent() {
        let doc = json();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(schemas.contains_key(name), "{target} is not defined");
        }
        let mut ids = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap().to_owned();
                if let Some(other) = ids.insert(id.clone(), format!("{method} {path}")) {
                    panic!("operationId {id} names both {other} and {method} {path}");
                }
                let declared: BTreeSet<&str> = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let in_path: BTreeSet<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                assert_eq!(declared, in_path, "{method} {path}: path parameters");
                let responses = operation["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path}: no success answer"
                );
                let public = matches!(
                    path.as_str(),
                    "/v1/health" | "/v1/openapi.json" | "/livez" | "/readyz"
                );
                assert_eq!(
                    operation.get("security").is_none(),
                    public,
                    "{method} {path}: only health, the probes and this document need no token"
                );
                if !public {
                    for status in ["401", "403", "429"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                }
                for (status, answer) in responses {
                    if status.starts_with('4') && method != "head" {
                        assert_eq!(
                            answer["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path}: {status} is not the error body"
                        );
                    }
                }
            }
        }
    }

    /// The paths the router serves, read from its `Debug` output (axum has no other way to
    /// list them); if that output changes shape, this finds nothing and fails.
    fn served_paths(router: &axum::Router) -> BTreeSet<String> {
        let text = format!("{router:?}");
        // The fallback router that follows holds `/` and a catch-all of its own.
        let (routes, _fallback) = text
            .split_once("fallback_router")
            .expect("a router's Debug output names its fallback router");
        routes
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with('/'))
            .map(str::to_owned)
            .collect()
    }

    async fn start() -> (tempfile::TempDir, Node) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path().to_owned());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_listen = "127.0.0.1:0".parse().unwrap();
        config.bootstrap_token = Some(TOKEN.to_owned());
        let node = Node::start(config).await.unwrap();
        (dir, node)
    }

    /// A concrete URL for a documented path.
    fn url(node: &Node, path: &str) -> String {
        let path = path
            .replace(
                "{digest}",
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            )
            .replace(['{', '}'], "");
        format!("http://{}{path}", node.admin_addr())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_route_is_documented_and_every_documented_route_is_served() {
        let (_dir, node) = start().await;
        let doc = json();
        let documented = operations(&doc);
        let paths: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
        let router = crate::api::router(node.shared.clone());
        assert_eq!(
            served_paths(&router),
            paths,
            "served paths against documented paths"
        );
        let client = reqwest::Client::new();
        for path in &paths {
            for method in ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"] {
                let listed = documented.contains(&(method.to_owned(), path.clone()))
                    // axum answers HEAD wherever it answers GET.
                    || (method == "HEAD" && documented.contains(&("GET".into(), path.clone())));
                // No token: a served route reaches the role check (401) or needs none.
                let answer = client
                    .request(method.parse().unwrap(), url(&node, path))
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                if listed {
                    assert!(
                        status == 401 || (200..300).contains(&status),
                        "{method} {path} is documented but answers {status}"
                    );
                } else {
                    assert_eq!(status, 405, "{method} {path} is served but not documented");
                    if method != "HEAD" {
                        let body: Value = answer.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "method_not_allowed");
                    }
                }
            }
        }
        node.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_admin_error_is_the_json_error_body() {
        let (_dir, node) = start().await;
        let client = reqwest::Client::new();
        let base = format!("http://{}", node.admin_addr());
        let cases = [
            ("GET", "/v1/nothing-here", "", 404, "no_such_endpoint"),
            ("GET", "/nothing-at-all", "", 404, "no_such_endpoint"),
            ("DELETE", "/v1/functions", "", 405, "method_not_allowed"),
            ("GET", "/v1/jobs?limit=many", "", 400, "invalid_query"),
            (
                "GET",
                "/v1/cost/breakdown?by=colour",
                "",
                400,
                "invalid_query",
            ),
            ("GET", "/v1/audit?unknown=1", "", 400, "invalid_query"),
            ("GET", "/v1/functions/%FF", "", 400, "invalid_path"),
            ("POST", "/v1/deploy", "{", 422, "invalid_request"),
            (
                "GET",
                "/v1/functions?env=nowhere",
                "",
                404,
                "no_such_environment",
            ),
        ];
        for (method, path, body, status, code) in cases {
            let answer = client
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), status, "{method} {path}");
            let body: Value = answer.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        }
        let too_large = client
            .put(format!("{base}/v1/secrets/BIG"))
            .bearer_auth(TOKEN)
            .body(vec![b'x'; crate::api::extract::BODY_LIMIT + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(too_large.status().as_u16(), 413);
        let body: Value = too_large.json().await.unwrap();
        assert_eq!(body["error"]["code"], "body_too_large");
        node.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_node_serves_the_document_without_a_token() {
        let (_dir, node) = start().await;
        let answer = reqwest::get(format!("http://{}/v1/openapi.json", node.admin_addr()))
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.headers()["content-type"], "application/json");
        let served: Value = answer.json().await.unwrap();
        assert_eq!(served, json());
        node.shutdown().await;
    }
}
