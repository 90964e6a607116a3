//! Request extractors whose rejections are admin API errors: JSON with a stable code, like
//! every other admin answer, rather than axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;

/// The query string, parsed; a malformed one is `400 invalid_query`.
pub(crate) struct Query<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                format!("the query string is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// The path parameters, parsed; one that is not valid UTF-8 once decoded is
/// `400 invalid_path`.
pub(crate) struct Path<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            // A route whose handler asks for parameters its path does not have: our bug.
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError::internal(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_path",
                format!("the path is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// The whole request body, up to the admin API's body limit (`413 body_too_large` beyond).
pub(crate) struct Body(pub(crate) Bytes);

impl<S> FromRequest<S> for Body
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) => Err(body_error(rejection.status(), rejection.body_text())),
        }
    }
}

/// A body that could not be read: too large, or cut off.
pub(crate) fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError {
            status,
            code: "body_too_large",
            message: format!(
                "the request body is over the admin API's limit of {BODY_LIMIT} bytes"
            ),
        }
    } else {
        ApiError::bad_request(
            "invalid_body",
            format!("reading the request body failed: {text}"),
        )
    }
}

/// Largest request body the admin API reads (axum's default), artifact uploads aside: they
/// have the node's `--max-artifact-size`.
pub(crate) const BODY_LIMIT: usize = 2 << 20;
