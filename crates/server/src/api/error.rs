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
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        store_answer(&err)
    }
}

/// The answer for a failing store: 503 when the caller can retry (with the detail in the
/// node's log), 501 for what this backend does not do, 500 otherwise.
fn store_answer(err: &StoreError) -> ApiError {
    match err {
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

/// A service error's answer: a status and a stable code decided here, the error's own text
/// as the message; a store failure or a missing environment or function answers as those do.
trait Answer: std::fmt::Display {
    fn answer(&self) -> ApiError;
}

/// The answer of `err` with `status` and `code`.
fn said(err: &impl std::fmt::Display, status: StatusCode, code: &'static str) -> ApiError {
    ApiError {
        status,
        code,
        message: err.to_string(),
    }
}

/// `From<E> for ApiError` through [`Answer`], so handlers can use `?` on service results.
macro_rules! answered {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for ApiError {
            fn from(err: $error) -> ApiError {
                err.answer()
            }
        })*
    };
}

answered!(
    crate::environments::Missing,
    crate::services::api_keys::ApiKeyError,
    crate::services::artifacts::ArtifactError,
    crate::services::budgets::BudgetError,
    crate::services::environments::EnvironmentError,
    crate::services::jobs::JobError,
    crate::services::releases::ReleaseError,
    crate::services::tokens::TokenError,
);

/// The 404 for an environment that does not exist.
pub(crate) fn no_such_environment(name: &str) -> ApiError {
    crate::environments::Missing::Environment(name.to_owned()).into()
}

impl Answer for crate::environments::Missing {
    fn answer(&self) -> ApiError {
        use crate::environments::Missing;
        let code = match self {
            Missing::Environment(_) => "no_such_environment",
            Missing::Function { .. } => "no_such_function",
        };
        said(self, StatusCode::NOT_FOUND, code)
    }
}

impl Answer for crate::services::api_keys::ApiKeyError {
    fn answer(&self) -> ApiError {
        use crate::services::api_keys::ApiKeyError as E;
        let (status, code) = match self {
            E::InvalidTtl(_) => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            E::InvalidRate(_) => (StatusCode::BAD_REQUEST, "invalid_rate"),
            E::NoSuchKey(_) => (StatusCode::NOT_FOUND, "no_such_key"),
            E::NoSuchEnvironment(_) => (StatusCode::NOT_FOUND, "no_such_environment"),
            E::Store(err) => return store_answer(err),
        };
        said(self, status, code)
    }
}

impl Answer for crate::services::tokens::TokenError {
    fn answer(&self) -> ApiError {
        use crate::services::tokens::TokenError as E;
        let (status, code) = match self {
            E::InvalidTtl(_) => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            E::ForeignScope { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            E::NoSuchEnvironment(_) => (StatusCode::NOT_FOUND, "no_such_environment"),
            E::NoSuchToken(_) => (StatusCode::NOT_FOUND, "no_such_token"),
            E::AlreadyRevoked(_) => (StatusCode::CONFLICT, "already_revoked"),
            E::LastAdminToken(_) => (StatusCode::CONFLICT, "last_admin_token"),
            E::Store(err) => return store_answer(err),
        };
        said(self, status, code)
    }
}

impl Answer for crate::services::budgets::BudgetError {
    fn answer(&self) -> ApiError {
        use crate::services::budgets::BudgetError as E;
        let (status, code) = match self {
            E::MissingScope(_) => (StatusCode::BAD_REQUEST, "missing_scope"),
            E::OwnerNeedsEveryEnvironment | E::OutsideScope { .. } => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            E::NoSuchFunction { .. } => (StatusCode::NOT_FOUND, "no_such_function"),
            E::NoSuchBudget(_) => (StatusCode::NOT_FOUND, "no_such_budget"),
            E::Store(err) => return store_answer(err),
        };
        said(self, status, code)
    }
}

impl Answer for crate::services::jobs::JobError {
    fn answer(&self) -> ApiError {
        use crate::services::jobs::JobError as E;
        let (status, code) = match self {
            E::NoSuchJob(_) => (StatusCode::NOT_FOUND, "no_such_job"),
            E::NotDeadLettered { .. } => (StatusCode::CONFLICT, "not_dead_lettered"),
            E::NoQueueTrigger(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no_queue_trigger"),
            // The gateway answers 503; for the admin API it is a state of the function, not
            // a failure of the node.
            E::ArtifactRevoked(_) => (StatusCode::CONFLICT, "artifact_revoked"),
            E::FunctionExpired(_) => (StatusCode::GONE, "function_expired"),
            E::InvalidState(_) => (StatusCode::BAD_REQUEST, "invalid_state"),
            E::Missing(err) => return err.answer(),
            E::Store(err) => return store_answer(err),
        };
        said(self, status, code)
    }
}

impl Answer for crate::services::releases::ReleaseError {
    fn answer(&self) -> ApiError {
        use crate::services::releases::ReleaseError as E;
        let (status, code) = match self {
            E::ReleaseChanged { .. } => (StatusCode::CONFLICT, "release_changed"),
            E::EmptyDeploy => (StatusCode::UNPROCESSABLE_ENTITY, "empty_deploy"),
            E::InvalidConfiguration(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_configuration")
            }
            E::ArtifactMissing { .. } => (StatusCode::BAD_REQUEST, "artifact_missing"),
            E::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, "digest_mismatch"),
            E::InvalidArtifact(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_artifact"),
            E::ArtifactAltered(_) => (StatusCode::CONFLICT, "artifact_altered"),
            E::VettingFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "vetting_failed"),
            E::NoSuchRelease { .. } => (StatusCode::NOT_FOUND, "no_such_release"),
            E::NoEarlierRelease { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "no_earlier_release"),
            E::AlreadyServing { .. } => (StatusCode::CONFLICT, "already_serving"),
            E::NothingToConfigure => (StatusCode::BAD_REQUEST, "nothing_to_configure"),
            E::ForeignSource { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            E::SameEnvironment(_) => (StatusCode::UNPROCESSABLE_ENTITY, "same_environment"),
            E::UntilInThePast(_) => (StatusCode::UNPROCESSABLE_ENTITY, "until_in_the_past"),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            E::InFunction { function, source } => {
                let mut inner = source.answer();
                inner.message = format!("function `{function}`: {}", inner.message);
                return inner;
            }
            E::Missing(err) => return err.answer(),
            E::Store(err) => return store_answer(err),
        };
        said(self, status, code)
    }
}

impl Answer for crate::services::environments::EnvironmentError {
    fn answer(&self) -> ApiError {
        use crate::services::environments::EnvironmentError as E;
        let (status, code) = match self {
            E::Scoped { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            E::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            E::InvalidTtl(_) => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            E::NothingToCopy => (StatusCode::BAD_REQUEST, "nothing_to_copy"),
            E::InvalidTrustedKeys(_) => (StatusCode::BAD_REQUEST, "invalid_trusted_keys"),
            E::Exists(_) => (StatusCode::CONFLICT, "environment_exists"),
            E::VettingFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "vetting_failed"),
            E::Home(_) => (StatusCode::CONFLICT, "home_environment"),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            E::Missing(err) => return err.answer(),
            E::Store(err) => return store_answer(err),
        };
        said(self, status, code)
    }
}

impl Answer for crate::services::artifacts::ArtifactError {
    fn answer(&self) -> ApiError {
        use crate::services::artifacts::ArtifactError as E;
        let (status, code) = match self {
            E::InvalidSignature(_) => (StatusCode::BAD_REQUEST, "invalid_signature"),
            E::SignatureDigestMismatch { .. } => {
                (StatusCode::BAD_REQUEST, "signature_digest_mismatch")
            }
            E::ArtifactMissing(_) => (StatusCode::NOT_FOUND, "artifact_missing"),
            E::Scoped { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            E::AlreadyRevoked(_) => (StatusCode::CONFLICT, "already_revoked"),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            E::Store(err) => return store_answer(err),
        };
        said(self, status, code)
    }
}

#[cfg(test)]
mod tests {
    use runway_store::Digest;

    use super::*;
    use crate::environments::Missing;
    use crate::services::environments::EnvironmentError;
    use crate::services::jobs::JobError;
    use crate::services::releases::ReleaseError;

    fn answer(err: impl Into<ApiError>) -> (u16, &'static str, String) {
        let err = err.into();
        (err.status.as_u16(), err.code, err.message)
    }

    #[test]
    fn each_service_error_has_one_status_and_code() {
        let missing = Missing::Function {
            function: "hello".into(),
            environment: "dev".into(),
        };
        assert_eq!(answer(missing.clone()).0, 404);
        assert_eq!(answer(missing).1, "no_such_function");
        let (status, code, message) = answer(
            ReleaseError::InvalidArtifact("artifact 1a2b: not a component".into())
                .in_function("hello"),
        );
        assert_eq!((status, code), (422, "invalid_artifact"));
        assert_eq!(message, "function `hello`: artifact 1a2b: not a component");
        let (status, code, _) = answer(ReleaseError::ArtifactMissing {
            function: "hello".into(),
            digest: Digest::of(b"x"),
        });
        assert_eq!((status, code), (400, "artifact_missing"));
        assert_eq!(
            answer(ReleaseError::Missing(Missing::Environment("dev".into()))).1,
            "no_such_environment"
        );
        assert_eq!(
            answer(ReleaseError::AlreadyServing {
                function: "hello".into(),
                release: 2
            })
            .0,
            409
        );
        assert_eq!(
            answer(EnvironmentError::Home("prod".into())).1,
            "home_environment"
        );
        assert_eq!(answer(JobError::FunctionExpired("gone".into())).0, 410);
        assert_eq!(answer(JobError::ArtifactRevoked("revoked".into())).0, 409);
    }

    #[test]
    fn a_failing_store_is_a_retryable_503_and_a_node_failure_a_500() {
        let unavailable = StoreError::Unavailable {
            action: "read releases",
            source: "connection refused".into(),
        };
        let (status, code, _) = answer(ReleaseError::Store(unavailable));
        assert_eq!((status, code), (503, "store_unavailable"));
        let internal = answer(ReleaseError::Internal("cache dir unwritable".into()));
        assert_eq!((internal.0, internal.1), (500, "internal"));
    }
}
