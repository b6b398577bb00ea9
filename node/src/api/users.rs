//! Built-in accounts, for deployments without an identity provider: `POST /v1/users`
//! (register) and `POST /v1/auth/token` (log in). Users live in the replicated state
//! machine; only an argon2 hash of the password ever enters the log.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tally_raft::model::{Command, Response};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use crate::auth::{unauthenticated, JwtAuth};
use crate::clock::format_ms;
use crate::App;

/// Password hashes computed at once on one node; more wait (up to the write timeout).
pub const PASSWORD_WORK_MAX: usize = 2;
const USERNAME_BYTES_MAX: usize = 64;
const PASSWORD_BYTES_MIN: usize = 8;
const PASSWORD_BYTES_MAX: usize = 256;

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

// Never print a password, not even in a debug log.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub username: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

fn jwt(app: &App) -> ApiResult<&JwtAuth> {
    app.auth.as_ref().ok_or_else(|| ApiError::not_found("accounts exist only when the node runs with --auth jwt"))
}

fn check_credentials(credentials: &Credentials) -> ApiResult<()> {
    let name = &credentials.username;
    let name_ok = !name.is_empty()
        && name.len() <= USERNAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-@".contains(&b));
    if !name_ok {
        return Err(ApiError::invalid(format!("username must be 1 to {USERNAME_BYTES_MAX} of [A-Za-z0-9_.-@]")));
    }
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&credentials.password.len()) {
        return Err(ApiError::invalid(format!("password must be {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// Runs argon2 off the async threads, a few at a time.
async fn password_work<T: Send + 'static>(app: &App, work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    let permit = tokio::time::timeout(app.node.write_timeout, app.password_work.acquire())
        .await
        .map_err(|_| ApiError::unavailable("too many logins at once; try again"))?
        .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
    let result = tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(e.to_string()));
    drop(permit);
    result
}

#[utoipa::path(post, path = "/v1/users", request_body = Credentials,
    responses((status = 201, body = UserBody), (status = 409, description = "USERNAME_TAKEN"),
              (status = 404, description = "auth is off (--auth none)")))]
pub async fn register(
    State(app): State<Arc<App>>,
    ApiJson(credentials): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<UserBody>)> {
    jwt(&app)?;
    check_credentials(&credentials)?;
    let Credentials { username, password } = credentials;
    let password_hash = password_work(&app, move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await?
    .map_err(|e| ApiError::internal(format!("cannot hash the password: {e}")))?;
    let command = Command::CreateUser { username: username.clone(), password_hash };
    match app.node.propose(command).await?.response {
        Response::User(Ok(created_at_ms)) => {
            Ok((StatusCode::CREATED, Json(UserBody { username, created_at: format_ms(created_at_ms) })))
        }
        Response::User(Err(())) => {
            Err(ApiError::new(StatusCode::CONFLICT, "USERNAME_TAKEN", format!("the username {username} is taken")))
        }
        other => Err(ApiError::internal(format!("unexpected state machine answer {other:?}"))),
    }
}

#[utoipa::path(post, path = "/v1/auth/token", request_body = Credentials,
    responses((status = 200, body = TokenBody), (status = 401, description = "UNAUTHENTICATED: wrong username or password")))]
pub async fn token(
    State(app): State<Arc<App>>,
    ApiJson(credentials): ApiJson<Credentials>,
) -> ApiResult<Json<TokenBody>> {
    let jwt = jwt(&app)?;
    let stored = |app: &App| app.node.sm.read().state.users.get(&credentials.username).map(|u| u.password_hash.clone());
    // An account made through another node may not be applied here yet.
    let hash = match stored(&app) {
        Some(hash) => Some(hash),
        None => {
            app.node.linearizable_barrier().await?;
            stored(&app)
        }
    };
    let wrong = || unauthenticated("wrong username or password");
    let hash = hash.ok_or_else(wrong)?;
    let password = credentials.password.clone();
    let matches = password_work(&app, move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await?;
    if !matches {
        return Err(wrong());
    }
    let now_secs = u64::try_from(app.node.clock.now_ms() / 1000).unwrap_or(0);
    let access_token = jwt.issue(&credentials.username, now_secs).ok_or_else(|| {
        ApiError::not_found("this node verifies outside tokens only (--jwt-public-key); it has no --jwt-secret to sign")
    })?;
    Ok(Json(TokenBody { access_token, token_type: "Bearer", expires_in: jwt.token_ttl.as_secs() }))
}
