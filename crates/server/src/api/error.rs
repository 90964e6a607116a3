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
        let (status, code) = match &err {
            JobError::NoSuchJob(_) => (StatusCode::NOT_FOUND, "no_such_job"),
            JobError::NotDeadLettered { .. } => (StatusCode::CONFLICT, "not_dead_lettered"),
            JobError::NoQueueTrigger(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no_queue_trigger"),
            // The gateway answers 503; for the admin API it is a state of the function, not
            // a failure of the node.
            JobError::ArtifactRevoked(_) => (StatusCode::CONFLICT, "artifact_revoked"),
            JobError::FunctionExpired(_) => (StatusCode::GONE, "function_expired"),
            JobError::InvalidState(_) => (StatusCode::BAD_REQUEST, "invalid_state"),
            JobError::Missing(_) | JobError::Store(_) => {
                return match err {
                    JobError::Missing(err) => err.into(),
                    JobError::Store(err) => err.into(),
                    _ => unreachable!("matched above"),
                };
            }
        };
        ApiError {
            status,
            code,
            message: err.to_string(),
        }
    }
}

/// The 404 for an environment that does not exist.
pub(crate) fn no_such_environment(name: &str) -> ApiError {
    crate::environments::Missing::Environment(name.to_owned()).into()
}

impl From<crate::environments::Missing> for ApiError {
    fn from(err: crate::environments::Missing) -> ApiError {
        use crate::environments::Missing;
        let code = match &err {
            Missing::Environment(_) => "no_such_environment",
            Missing::Function { .. } => "no_such_function",
        };
        ApiError::not_found(code, err.to_string())
    }
}

impl From<crate::services::releases::ReleaseError> for ApiError {
    fn from(err: crate::services::releases::ReleaseError) -> ApiError {
        use crate::services::releases::ReleaseError;
        let (status, code) = match err {
            ReleaseError::Missing(err) => return err.into(),
            ReleaseError::Store(err) => return err.into(),
            ReleaseError::InFunction { function, source } => {
                let mut inner = ApiError::from(*source);
                inner.message = format!("function `{function}`: {}", inner.message);
                return inner;
            }
            ref err => match err {
                ReleaseError::ReleaseChanged { .. } => (StatusCode::CONFLICT, "release_changed"),
                ReleaseError::EmptyDeploy => (StatusCode::UNPROCESSABLE_ENTITY, "empty_deploy"),
                ReleaseError::InvalidConfiguration(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_configuration")
                }
                ReleaseError::ArtifactMissing { .. } => {
                    (StatusCode::BAD_REQUEST, "artifact_missing")
                }
                ReleaseError::DigestMismatch { .. } => (StatusCode::BAD_REQUEST, "digest_mismatch"),
                ReleaseError::InvalidArtifact(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_artifact")
                }
                ReleaseError::ArtifactAltered(_) => (StatusCode::CONFLICT, "artifact_altered"),
                ReleaseError::VettingFailed(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "vetting_failed")
                }
                ReleaseError::NoSuchRelease { .. } => (StatusCode::NOT_FOUND, "no_such_release"),
                ReleaseError::NoEarlierRelease { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "no_earlier_release")
                }
                ReleaseError::AlreadyServing { .. } => (StatusCode::CONFLICT, "already_serving"),
                ReleaseError::NothingToConfigure => {
                    (StatusCode::BAD_REQUEST, "nothing_to_configure")
                }
                ReleaseError::ForeignSource { .. } => (StatusCode::FORBIDDEN, "forbidden"),
                ReleaseError::SameEnvironment(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "same_environment")
                }
                ReleaseError::UntilInThePast(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "until_in_the_past")
                }
                ReleaseError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                ReleaseError::Missing(_)
                | ReleaseError::Store(_)
                | ReleaseError::InFunction { .. } => unreachable!("answered above"),
            },
        };
        ApiError {
            status,
            code,
            message: err.to_string(),
        }
    }
}

impl From<crate::services::environments::EnvironmentError> for ApiError {
    fn from(err: crate::services::environments::EnvironmentError) -> ApiError {
        use crate::services::environments::EnvironmentError;
        let (status, code) = match &err {
            EnvironmentError::Scoped { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            EnvironmentError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            EnvironmentError::InvalidTtl(_) => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            EnvironmentError::NothingToCopy => (StatusCode::BAD_REQUEST, "nothing_to_copy"),
            EnvironmentError::InvalidTrustedKeys(_) => {
                (StatusCode::BAD_REQUEST, "invalid_trusted_keys")
            }
            EnvironmentError::Exists(_) => (StatusCode::CONFLICT, "environment_exists"),
            EnvironmentError::VettingFailed(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "vetting_failed")
            }
            EnvironmentError::Home(_) => (StatusCode::CONFLICT, "home_environment"),
            EnvironmentError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            EnvironmentError::Missing(_) | EnvironmentError::Store(_) => {
                return match err {
                    EnvironmentError::Missing(err) => err.into(),
                    EnvironmentError::Store(err) => err.into(),
                    _ => unreachable!("matched above"),
                };
            }
        };
        ApiError {
            status,
            code,
            message: err.to_string(),
        }
    }
}

impl From<crate::services::artifacts::ArtifactError> for ApiError {
    fn from(err: crate::services::artifacts::ArtifactError) -> ApiError {
        use crate::services::artifacts::ArtifactError;
        let (status, code) = match &err {
            ArtifactError::InvalidSignature(_) => (StatusCode::BAD_REQUEST, "invalid_signature"),
            ArtifactError::SignatureDigestMismatch { .. } => {
                (StatusCode::BAD_REQUEST, "signature_digest_mismatch")
            }
            ArtifactError::ArtifactMissing(_) => (StatusCode::NOT_FOUND, "artifact_missing"),
            ArtifactError::Scoped { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ArtifactError::AlreadyRevoked(_) => (StatusCode::CONFLICT, "already_revoked"),
            ArtifactError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ArtifactError::Store(_) => {
                let ArtifactError::Store(err) = err else {
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
