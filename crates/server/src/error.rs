//! The admin API's one error type: JSON `{"error": {"code": "...", "message": "..."}}`.
//!
//! 4xx errors carry the caller's mistake in full; 5xx errors carry a generic message while
//! the detail is logged once on the node.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use runway_store::StoreError;
use serde::{Deserialize, Serialize};

/// An admin API failure with a stable code.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

/// The JSON body of an error response.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error response.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    pub(crate) fn bad_request(code: &'static str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message,
        }
    }

    pub(crate) fn unprocessable(code: &'static str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
        }
    }

    pub(crate) fn invalid_artifact(message: String) -> ApiError {
        ApiError::unprocessable("invalid_artifact", message)
    }

    pub(crate) fn not_found(code: &'static str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message,
        }
    }

    pub(crate) fn internal(message: String) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message,
        }
    }

    /// Prefixes the message with the function it concerns.
    pub(crate) fn for_function(mut self, function: &str) -> ApiError {
        self.message = format!("function `{function}`: {}", self.message);
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            // The caller can retry: say so, with the detail in the node's log.
            StoreError::Unavailable { .. } => {
                tracing::warn!(error = %err, "the store is unreachable");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "store_unavailable",
                    message: "the node cannot reach its store right now; retry shortly".into(),
                }
            }
            StoreError::Unsupported { .. } => ApiError {
                status: StatusCode::NOT_IMPLEMENTED,
                code: "unsupported_by_store",
                message: err.to_string(),
            },
            err => ApiError::internal(err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            tracing::error!(code = self.code, error = %self.message, "admin API request failed");
            "the node failed to complete this request; the reason is in the node's log".to_owned()
        } else {
            self.message
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::services::api_keys::ApiKeyError> for ApiError {
    fn from(err: crate::services::api_keys::ApiKeyError) -> ApiError {
        use crate::services::api_keys::ApiKeyError;
        match err {
            ApiKeyError::InvalidTtl(message) => ApiError::bad_request("invalid_ttl", message),
            ApiKeyError::InvalidRate(message) => ApiError::bad_request("invalid_rate", message),
            err @ ApiKeyError::NoSuchKey(_) => ApiError::not_found("no_such_key", err.to_string()),
            err @ ApiKeyError::NoSuchEnvironment(_) => {
                ApiError::not_found("no_such_environment", err.to_string())
            }
            ApiKeyError::Store(err) => err.into(),
        }
    }
}

impl From<crate::services::tokens::TokenError> for ApiError {
    fn from(err: crate::services::tokens::TokenError) -> ApiError {
        use crate::services::tokens::TokenError;
        let (status, code) = match &err {
            TokenError::InvalidTtl(_) => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            TokenError::ForeignScope { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            TokenError::NoSuchEnvironment(_) => (StatusCode::NOT_FOUND, "no_such_environment"),
            TokenError::NoSuchToken(_) => (StatusCode::NOT_FOUND, "no_such_token"),
            TokenError::AlreadyRevoked(_) => (StatusCode::CONFLICT, "already_revoked"),
            TokenError::LastAdminToken(_) => (StatusCode::CONFLICT, "last_admin_token"),
            TokenError::Store(_) => {
                let TokenError::Store(err) = err else {
                    unreachable!("matched above")
                };
                return err.into();
            }
        };
        ApiError {
            status,
            code,
            message: err.to_string(),
        }
    }
}

impl From<crate::services::budgets::BudgetError> for ApiError {
    fn from(err: crate::services::budgets::BudgetError) -> ApiError {
        use crate::services::budgets::BudgetError;
        let (status, code) = match &err {
            BudgetError::MissingScope(_) => (StatusCode::BAD_REQUEST, "missing_scope"),
            BudgetError::OwnerNeedsEveryEnvironment | BudgetError::OutsideScope { .. } => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            BudgetError::NoSuchFunction { .. } => (StatusCode::NOT_FOUND, "no_such_function"),
            BudgetError::NoSuchBudget(_) => (StatusCode::NOT_FOUND, "no_such_budget"),
            BudgetError::Store(_) => {
                let BudgetError::Store(err) = err else {
                    unreachable!("matched above")
                };
                return err.into();
            }
        };
        ApiError {
            status,
            code,
            message: err.to_string(),
        }
    }
}

impl From<crate::services::jobs::JobError> for ApiError {
    fn from(err: crate::services::jobs::JobError) -> ApiError {
        use crate::services::jobs::JobError;
        match err {
            err @ JobError::NoSuchJob(_) => ApiError::not_found("no_such_job", err.to_string()),
            err @ JobError::NotDeadLettered { .. } => ApiError {
                status: StatusCode::CONFLICT,
                code: "not_dead_lettered",
                message: err.to_string(),
            },
            JobError::Store(err) => err.into(),
        }
    }
}
