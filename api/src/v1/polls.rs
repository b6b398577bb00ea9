//! `/v1/polls`: create, get, list, patch (close).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatePollRequest {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Option texts, or objects `{"text": "…"}`.
    pub options: Vec<OptionInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SettingsInput>,
}

impl CreatePollRequest {
    /// A poll of `options` (texts, in display order), the server's defaults for the rest.
    pub fn new<S: Into<String>>(title: impl Into<String>, options: impl IntoIterator<Item = S>) -> Self {
        CreatePollRequest {
            title: title.into(),
            description: None,
            options: options.into_iter().map(|text| OptionInput::Text(text.into())).collect(),
            start_time: None,
            end_time: None,
            settings: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OptionInput {
    Text(String),
    Object { text: String },
}

impl OptionInput {
    pub fn text(&self) -> &str {
        match self {
            OptionInput::Text(text) | OptionInput::Object { text } => text,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SettingsInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_results_during_voting: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_vote_change: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdowns: Option<Vec<String>>,
}

/// Where a poll is in its life, by the answering node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PollStatus {
    Scheduled,
    Active,
    Closed,
}

impl PollStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PollStatus::Scheduled => "scheduled",
            PollStatus::Active => "active",
            PollStatus::Closed => "closed",
        }
    }
}

impl std::fmt::Display for PollStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PollBody {
    pub poll_id: String,
    pub title: String,
    pub description: Option<String>,
    /// `scheduled`, `active` or `closed`, by the answering node's clock.
    #[schema(value_type = String)]
    pub status: PollStatus,
    pub options: Vec<OptionBody>,
    pub start_time: String,
    pub end_time: Option<String>,
    pub settings: SettingsBody,
    pub created_at: String,
    pub owner: Option<String>,
    /// In poll lists: the votes recorded on the answering node, unless the results are
    /// hidden now (a count of votes is a result too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_votes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OptionBody {
    pub option_id: String,
    pub text: String,
    pub display_order: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SettingsBody {
    pub show_results_during_voting: bool,
    pub allow_vote_change: bool,
    pub breakdowns: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `scheduled`, `active` or `closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub status: Option<PollStatus>,
    /// At most 200; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PollList {
    pub polls: Vec<PollBody>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPollRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Only `"closed"`: a closed poll never reopens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}
