//! Extractors whose rejections speak API.md's error shape.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
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
    use super::has_unsafe_chars;

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
