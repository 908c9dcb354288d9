//! Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
//! with the status an OpenAI client expects, and the mapping from the SDK's
//! [`ClientError`] (whose fault it is decides the status).

use crate::sdk::ClientError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// One API error: its HTTP status and OpenAI's error object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable, says what to change.
    pub message: String,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A stable machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            message,
            kind,
            param: None,
            code: Some(code),
        }
    }

    /// 403: a keyless API refuses a request a web page could have made.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            code,
            message.into(),
        )
    }

    /// 400: a field of the request is wrong.
    pub fn bad_field(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_value",
            message.into(),
        );
        e.param = Some(param.into());
        e
    }

    /// 400 with a specific code and no field.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// 401: a missing or unknown API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message.into(),
        )
    }

    /// 404: nobody on the network serves the model.
    pub fn model_not_found(model: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{model}` does not exist on this network: {}",
                detail.into()
            ),
        );
        e.param = Some("model".into());
        e
    }

    /// 500: this node failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message.into(),
        )
    }

    /// 502: the provider failed the job.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "provider_failed",
            message.into(),
        )
    }

    /// The JSON body (`{"error": {...}}`), also sent as an SSE event.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The SDK's error for `model`, sorted by whose fault it is.
    pub fn from_client(model: &str, e: ClientError) -> Self {
        use ClientError as C;
        let message = e.to_string();
        match e {
            C::NoProviders { .. } => Self::model_not_found(model, message),
            C::OverBudget { .. } => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_budget",
                "over_budget",
                message,
            ),
            C::Payment { .. } => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment_error",
                "payment_failed",
                message,
            ),
            C::NoQuotes { .. }
            | C::NoProvers { .. }
            | C::UntrustedProvers { .. }
            | C::NoPipeline { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "no_provider_available",
                message,
            ),
            C::Rejected { .. } => Self::bad_request("rejected_by_provider", message),
            C::BadOptions(_) => Self::bad_field("infernet", message),
            C::ProvidersFailed { .. }
            | C::Failed { .. }
            | C::ProofRejected { .. }
            | C::Verification(_) => Self::upstream(message),
            C::UnknownJob(_) | C::Store(_) | C::Network(_) | C::Corrupt { .. } | C::Worker(_) => {
                Self::internal(message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
