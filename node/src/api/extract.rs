//! Extractors whose rejections speak API.md's error shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// serde_json straight from the body; only a body that fails to decode goes through
    /// axum's `Json`, whose error names the path to the bad field (`votes[3].voter_id`).
    /// Tracking that path through every field of a good body cost a third of the decode
    /// (a 1,000-vote batch: about 500 ns a vote plain, 650 to 900 with the path).
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(request.headers()) {
            // axum's own answer, word for word.
            let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
            return Ok(Self(value));
        }
        let body = bytes::Bytes::from_request(request, state).await.map_err(JsonRejection::from)?;
        match serde_json::from_slice(&body) {
            Ok(value) => Ok(Self(value)),
            Err(_) => {
                let axum::Json(value) = axum::Json::<T>::from_bytes(&body)?;
                Ok(Self(value))
            }
        }
    }
}

/// axum's test for a JSON body (`application/json` or a `+json` type), which it does not
/// export: the same parse of the same header.
fn json_content_type(headers: &HeaderMap) -> bool {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    content_type.and_then(|value| value.parse::<mime::Mime>().ok()).is_some_and(|mime| {
        mime.type_() == "application" && (mime.subtype() == "json" || mime.suffix().is_some_and(|name| name == "json"))
    })
}

/// A raw body, for a route whose body is optional; over the limit it is a JSON 413.
pub struct ApiBytes(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match bytes::Bytes::from_request(request, state).await {
            Ok(body) => Ok(Self(body)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::payload_too_large())
            }
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Characters that no stored text may hold: control characters (NUL, ESC and the rest,
/// which a terminal obeys when `tally poll get` prints them) and the bidirectional
/// overrides and isolates that make text read other than it is stored. A description may
/// keep its line breaks and tabs.
pub fn has_unsafe_chars(text: &str, line_breaks_allowed: bool) -> bool {
    text.chars().any(|c| {
        let layout = line_breaks_allowed && matches!(c, '\n' | '\r' | '\t');
        (c.is_control() && !layout)
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Vote {
        voter_id: String,
        attributes: Option<std::collections::BTreeMap<String, String>>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Batch {
        votes: Vec<Vote>,
    }

    fn request(content_type: Option<&str>, body: &str) -> Request {
        let mut builder = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(Body::from(body.to_string())).unwrap()
    }

    /// The decode skips axum's `Json` for good bodies; every answer, good or bad, must
    /// still be the one `Json` gives.
    #[tokio::test]
    async fn bodies_decode_and_fail_exactly_as_axum_json_does() {
        let good = r#"{"votes": [{"voter_id": "a"}, {"voter_id": "b", "attributes": {"region": "north"}}]}"#;
        // Past axum's default body limit (2 MB): 413 either way.
        let too_large = format!(r#"{{"votes": [{}{{"voter_id": "a"}}]}}"#, r#"{"voter_id": "a"},"#.repeat(200_000));
        let bodies = [
            good,
            too_large.as_str(),
            r#"{"votes": [{"voter_id": "a"}, {"voter_id": 7}]}"#,
            r#"{"votes": [{"voter_id": "a"}"#,
            r#"{"votes": []} trailing"#,
            r#"{"votes": [{}]}"#,
            "",
            "null",
            r#"{"votes": [{"voter_id": "a", "voter_id": "b"}]}"#,
        ];
        let types = [
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("application/vnd.tally+json"),
            Some("Application/JSON"),
            Some("text/json"),
            Some("application/jsonx"),
            Some("json"),
            Some("application/x-www-form-urlencoded"),
            None,
        ];
        let mut decoded = 0;
        for content_type in types {
            for body in bodies {
                let ours = ApiJson::<Batch>::from_request(request(content_type, body), &()).await;
                let axums = axum::Json::<Batch>::from_request(request(content_type, body), &()).await;
                match (ours, axums) {
                    (Ok(ApiJson(ours)), Ok(axum::Json(axums))) => {
                        assert_eq!(ours, axums);
                        decoded += 1;
                    }
                    (Err(ours), Err(axums)) => {
                        let axums = ApiError::from(axums);
                        let answer = |e: &ApiError| (e.status, e.code, e.message.clone());
                        assert_eq!(answer(&ours), answer(&axums), "{content_type:?} {body:?}");
                    }
                    (ours, axums) => {
                        panic!("{content_type:?} {body:?}: {:?} against {:?}", ours.is_ok(), axums.is_ok())
                    }
                }
            }
        }
        assert_eq!(decoded, 4, "the good body under each JSON content type");
        let Err(error) = ApiJson::<Batch>::from_request(request(Some("application/json"), &too_large), &()).await
        else {
            panic!("a body past the limit was taken");
        };
        assert_eq!(error.code, "PAYLOAD_TOO_LARGE");
    }

    #[test]
    fn control_and_bidi_characters_are_unsafe_and_plain_text_is_not() {
        for bad in ["nul\0", "esc\u{1b}[31m", "bell\u{7}", "rtl\u{202E}txt", "iso\u{2066}x", "mark\u{200F}"] {
            assert!(has_unsafe_chars(bad, true), "{bad:?}");
        }
        assert!(has_unsafe_chars("two\nlines", false));
        assert!(!has_unsafe_chars("two\nlines\tand a tab", true));
        assert!(!has_unsafe_chars("Zoë, 東京, Ελλάδα, emoji 🗳", false));
    }
}
