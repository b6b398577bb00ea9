//! Built-in accounts, for deployments without an identity provider: `POST /v1/users`
//! (register), `POST /v1/auth/token` (log in) and `PUT /v1/users/{username}/password`
//! (change it, or an admin's reset; either revokes the account's earlier tokens). Users
//! live in the replicated state machine; only an argon2 hash of a password enters the log.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use tally_api::v1::{Credentials, PasswordChange, PasswordChanged, TokenBody, UserBody};
use tally_raft::model::{Command, Response};

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use crate::auth::{shows_cluster_secret, unauthenticated, Identity, JwtAuth};
use crate::clock::format_ms;
use crate::ratelimit::ClientAddr;
use crate::{Access, App};

/// Password hashes computed at once on one node; more wait (up to the write timeout).
pub const PASSWORD_WORK_MAX: usize = 2;
const USERNAME_BYTES_MAX: usize = 64;
const PASSWORD_BYTES_MIN: usize = 8;
const PASSWORD_BYTES_MAX: usize = 256;

fn jwt(access: &Access) -> ApiResult<&JwtAuth> {
    access.jwt.as_ref().ok_or_else(|| ApiError::not_found("accounts exist only when the node runs with --auth jwt"))
}

fn check_credentials(credentials: &Credentials) -> ApiResult<()> {
    let name = &credentials.username;
    let name_ok = !name.is_empty()
        && name.len() <= USERNAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-@".contains(&b));
    if !name_ok {
        return Err(ApiError::invalid(format!("username must be 1 to {USERNAME_BYTES_MAX} of [A-Za-z0-9_.-@]")));
    }
    check_password(&credentials.password)
}

fn check_password(password: &str) -> ApiResult<()> {
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        return Err(ApiError::invalid(format!("password must be {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// An argon2id hash with a fresh random salt.
async fn hash_password(app: &App, password: String) -> ApiResult<String> {
    password_work(app, move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await?
    .map_err(|e| ApiError::internal(format!("cannot hash the password: {e}")))
}

async fn password_matches(app: &App, password: String, hash: String) -> ApiResult<bool> {
    password_work(app, move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
}

impl App {
    /// The account's password hash in this node's applied state.
    pub(crate) fn local_password_hash(&self, username: &str) -> Option<String> {
        self.node.sm.read().state.users.get(username).map(|user| user.password_hash.clone())
    }
}

/// The account's stored hash. An account made or changed through another node may not be
/// applied here yet, so a miss is asked again after a linearizable barrier.
async fn stored_hash(app: &App, username: &str) -> ApiResult<Option<String>> {
    if let Some(hash) = app.local_password_hash(username) {
        return Ok(Some(hash));
    }
    app.node.linearizable_barrier().await?;
    Ok(app.local_password_hash(username))
}

/// A hash no password is checked against for real: an unknown account's log-in verifies
/// against it, with the same parameters as every stored hash.
fn unknown_account_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        let hashed = Argon2::default().hash_password(b"no account has this password", &salt);
        hashed.map(|h| h.to_string()).unwrap_or_default()
    })
}

/// Runs argon2 off the async threads, a few at a time.
async fn password_work<T: Send + 'static>(app: &App, work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    let permit = tokio::time::timeout(app.node.write_timeout, app.access.password_work.acquire())
        .await
        .map_err(|_| ApiError::unavailable("too many logins at once; try again"))?
        .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
    let result = tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(e.to_string()));
    drop(permit);
    result
}

/// Register an account (with --auth jwt).
#[utoipa::path(post, path = "/v1/users", operation_id = "createUser", tag = "users", request_body = Credentials,
    responses((status = 201, body = UserBody), (status = 409, description = "USERNAME_TAKEN"),
              (status = 404, description = "auth is off (--auth none)")))]
pub async fn register(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiJson(credentials): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<UserBody>)> {
    let jwt = jwt(&app.access)?;
    check_credentials(&credentials)?;
    // An `--admin` name is an admin's the moment it exists: whoever registered it first
    // would hold the role. Only the operator, who holds the cluster secret, creates it.
    if jwt.admins.contains(&credentials.username) && !shows_cluster_secret(&app.access, &headers) {
        return Err(ApiError::forbidden(format!(
            "the username {} is reserved for an admin (--admin): the operator creates it with the cluster secret",
            credentials.username
        )));
    }
    let Credentials { username, password } = credentials;
    let password_hash = hash_password(&app, password).await?;
    let command = Command::CreateUser { username: username.clone(), password_hash };
    match app.node.propose(command).await?.response {
        Response::User(Ok(created_at_ms)) => {
            Ok((StatusCode::CREATED, Json(UserBody { username, created_at: format_ms(created_at_ms) })))
        }
        Response::User(Err(rejection)) => Err(ApiError::from_user_rejection(rejection, &username)),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// Log in: a bearer token for an account.
#[utoipa::path(post, path = "/v1/auth/token", operation_id = "createToken", tag = "users", request_body = Credentials,
    responses((status = 200, body = TokenBody), (status = 401, description = "UNAUTHENTICATED: wrong username or password")))]
pub async fn token(
    State(app): State<Arc<App>>,
    connect: Option<Extension<ConnectInfo<ClientAddr>>>,
    ApiJson(credentials): ApiJson<Credentials>,
) -> ApiResult<Json<TokenBody>> {
    let jwt = jwt(&app.access)?;
    let addr = connect.and_then(|Extension(ConnectInfo(addr))| addr.0).map(|a| a.ip());
    app.limits.rate.check_login(&credentials.username, addr)?;
    let wrong = || unauthenticated("wrong username or password");
    let Some(mut hash) = stored_hash(&app, &credentials.username).await? else {
        // An unknown name costs what a known one does, so timing tells no names.
        let password = credentials.password.clone();
        password_work(&app, move || {
            let hash = unknown_account_hash();
            PasswordHash::new(hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await?;
        return Err(wrong());
    };
    if !password_matches(&app, credentials.password.clone(), hash.clone()).await? {
        // A password changed through another node may not be applied here yet; hashing
        // again only when the stored hash did change keeps wrong guesses at one hash each.
        app.node.linearizable_barrier().await?;
        match app.local_password_hash(&credentials.username) {
            Some(fresh)
                if fresh != hash && password_matches(&app, credentials.password.clone(), fresh.clone()).await? =>
            {
                hash = fresh;
            }
            _ => return Err(wrong()),
        }
    }
    let now_secs = u64::try_from(app.node.clock.now_ms() / 1000).unwrap_or(0);
    let access_token = jwt.issue(&credentials.username, &hash, now_secs).ok_or_else(|| {
        ApiError::not_found("this node verifies outside tokens only (--jwt-public-key); it has no --jwt-secret to sign")
    })?;
    Ok(Json(TokenBody { access_token, token_type: "Bearer".to_string(), expires_in: jwt.token_ttl.as_secs() }))
}

/// Change or reset a password.
///
/// Revokes the account's earlier tokens.
#[utoipa::path(put, path = "/v1/users/{username}/password", operation_id = "changePassword", tag = "users", request_body = PasswordChange,
    params(("username" = String, Path)),
    responses((status = 200, body = PasswordChanged),
              (status = 401, description = "UNAUTHENTICATED: no token, or a wrong current password"),
              (status = 403, description = "FORBIDDEN: another user's account, and the caller is no admin"),
              (status = 404, description = "NOT_FOUND: no such account")))]
pub async fn change_password(
    State(app): State<Arc<App>>,
    Path(username): Path<String>,
    Extension(identity): Extension<Identity>,
    ApiJson(change): ApiJson<PasswordChange>,
) -> ApiResult<Json<PasswordChanged>> {
    jwt(&app.access)?;
    let own = identity.subject() == Some(username.as_str());
    if !own {
        identity.require_admin().map_err(|_| ApiError::forbidden("only the account's user or an admin may do this"))?;
    }
    check_password(&change.new_password)?;
    let missing = || ApiError::not_found(format!("there is no account {username}"));
    let stored = stored_hash(&app, &username).await?.ok_or_else(missing)?;
    // A token alone must not be enough to take over an account: its user proves the
    // password too. An admin resetting a lost or compromised account cannot.
    let expected_hash = if own {
        let current = change.current_password.ok_or_else(|| ApiError::invalid("current_password is required"))?;
        // No stored password is longer than this, so a longer one costs no hashing.
        if current.len() > PASSWORD_BYTES_MAX || !password_matches(&app, current, stored.clone()).await? {
            return Err(unauthenticated("the current password is wrong"));
        }
        Some(stored)
    } else {
        None
    };
    let password_hash = hash_password(&app, change.new_password).await?;
    let command = Command::SetPassword { username: username.clone(), password_hash, expected_hash };
    match app.node.propose(command).await?.response {
        Response::User(Ok(changed_at_ms)) => {
            Ok(Json(PasswordChanged { username, changed_at: format_ms(changed_at_ms) }))
        }
        Response::User(Err(rejection)) => Err(ApiError::from_user_rejection(rejection, &username)),
        other => Err(ApiError::unexpected(&other)),
    }
}
