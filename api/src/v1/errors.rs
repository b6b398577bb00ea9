//! The one error shape of API.md: `{"error": {"code", "message", …context}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Every error's body (API.md, "Errors").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// `code` is stable (API.md's table); some codes add context fields next to it, such as
/// the recorded `vote_id` and `option_id` of `ALREADY_VOTED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Fields that some codes add (`vote_id`, `poll_id`, …), beside `code` and `message`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
}

impl ErrorDetail {
    /// A context field as text, e.g. the `vote_id` of `ALREADY_VOTED`.
    pub fn context_str(&self, key: &str) -> Option<&str> {
        self.context.get(key)?.as_str()
    }
}
