//! The JSON bodies of API.md's `/v1` routes, as one set of types for the node that writes
//! them, the `tally` client and the simulator that read them, and the OpenAPI document.
//!
//! A type here is the contract: a field renamed or retyped breaks clients. Add optional
//! fields; never repurpose one. Fields that are enums here were strings in the first
//! OpenAPI document, and stay strings in it (`value_type = String`), so that clients
//! generated from it keep their signatures; the values are the same words. How a node fills a body lives next to its handler
//! (`node/src/api/`), not here, so this crate stays free of the server's engine.

pub mod audit;
pub mod cluster;
pub mod errors;
pub mod ops;
pub mod polls;
pub mod requests;
pub mod results;
pub mod users;
pub mod votes;

pub use audit::{AuditLine, AuditQuery, Heartbeat, ReceiptCheck};
pub use cluster::{
    AddMemberRequest, InitRequest, Initialized, MemberAdded, MemberBody, MemberRemoved, MemberRole, NodeRole,
    StatusBody,
};
pub use errors::{ErrorBody, ErrorDetail};
pub use ops::{HealthBody, ReadyBody};
pub use polls::{
    CreatePollRequest, ListQuery, OptionBody, OptionInput, PatchPollRequest, PollBody, PollList, PollStatus,
    SettingsBody, SettingsInput,
};
pub use requests::{RequestState, RequestStatus};
pub use results::{Breakdown, Consistency, OptionResult, ResultsBody, ResultsQuery};
pub use users::{Credentials, PasswordChange, PasswordChanged, TokenBody, UserBody};
pub use votes::{
    AcceptedBody, BatchBody, BatchRequest, BatchResult, BatchVote, MeBody, MeQuery, ReceiptBody, VoteBody, VoteRequest,
    VoteStatus,
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vote() -> VoteBody {
        VoteBody {
            status: VoteStatus::Recorded,
            vote_id: "v1.0".into(),
            poll_id: "p1".into(),
            option_id: "o2".into(),
            recorded_at: "2026-04-05T12:00:00.000Z".into(),
            log_index: 7,
            replayed: false,
            receipt: ReceiptBody { vote_id: "v1.0".into(), position: 1, chain_hash: "ab".into() },
        }
    }

    #[test]
    fn a_vote_reply_is_api_md_s_json_and_reads_back() {
        let written = serde_json::to_value(vote()).unwrap();
        assert_eq!(
            written,
            json!({"status": "recorded", "vote_id": "v1.0", "poll_id": "p1", "option_id": "o2",
                   "recorded_at": "2026-04-05T12:00:00.000Z", "log_index": 7,
                   "receipt": {"vote_id": "v1.0", "position": 1, "chain_hash": "ab"}}),
            "`replayed` appears only when true"
        );
        assert_eq!(serde_json::from_value::<VoteBody>(written).unwrap(), vote());
        let replayed = VoteBody { status: VoteStatus::Changed, replayed: true, ..vote() };
        let written = serde_json::to_value(&replayed).unwrap();
        assert_eq!((written["status"].clone(), written["replayed"].clone()), (json!("changed"), json!(true)));
    }

    #[test]
    fn error_context_sits_beside_code_and_message() {
        let text = r#"{"error":{"code":"ALREADY_VOTED","message":"voter v has already voted","vote_id":"v1.0","option_id":"o1"}}"#;
        let body: ErrorBody = serde_json::from_str(text).unwrap();
        assert_eq!(body.error.code, "ALREADY_VOTED");
        assert_eq!(body.error.context_str("vote_id"), Some("v1.0"));
        assert_eq!(body.error.context_str("option_id"), Some("o1"));
        assert_eq!(body.error.context_str("code"), None, "code is a field, not context");
        assert_eq!(serde_json::to_value(&body).unwrap(), serde_json::from_str::<serde_json::Value>(text).unwrap());
    }

    #[test]
    fn a_batch_reply_holds_votes_and_errors_in_order() {
        let reply = json!({"results": [
            serde_json::to_value(vote()).unwrap(),
            {"error": {"code": "INVALID_OPTION", "message": "no such option"}},
        ]});
        let body: BatchBody = serde_json::from_value(reply.clone()).unwrap();
        assert_eq!(body.results[0], BatchResult::Vote(vote()));
        let error = body.results[1].clone().into_result().unwrap_err();
        assert_eq!(error.error.code, "INVALID_OPTION");
        assert_eq!(serde_json::to_value(&body).unwrap(), reply);
    }

    #[test]
    fn request_bodies_leave_out_what_was_not_given() {
        let poll = CreatePollRequest::new("Best?", ["Go", "Rust"]);
        assert_eq!(serde_json::to_value(&poll).unwrap(), json!({"title": "Best?", "options": ["Go", "Rust"]}));
        let vote = VoteRequest { option_id: "o1".into(), voter_id: None, attributes: None };
        assert_eq!(serde_json::to_value(&vote).unwrap(), json!({"option_id": "o1"}));
        let options: CreatePollRequest =
            serde_json::from_value(json!({"title": "t", "options": ["a", {"text": "b"}]})).unwrap();
        let texts: Vec<&str> = options.options.iter().map(OptionInput::text).collect();
        assert_eq!(texts, ["a", "b"]);
    }

    #[test]
    fn consistency_parses_its_two_names_only() {
        assert_eq!(serde_json::from_value::<Consistency>(json!("eventual")).unwrap(), Consistency::Eventual);
        assert_eq!(serde_json::from_value::<Consistency>(json!("linearizable")).unwrap(), Consistency::Linearizable);
        let strong = serde_json::from_value::<Consistency>(json!("strong")).unwrap_err().to_string();
        assert!(strong.contains("eventual") && strong.contains("linearizable"), "{strong}");
        assert_eq!(serde_json::to_value(Consistency::Linearizable).unwrap(), json!("linearizable"));
    }

    #[test]
    fn a_patch_with_an_unknown_field_is_refused() {
        assert!(serde_json::from_value::<PatchPollRequest>(json!({"status": "closed", "owner": "x"})).is_err());
    }
}
