//! Who is calling: `--auth none` (anyone, voter from the body) or `--auth jwt` (a bearer
//! token on every request but the public ones; the voter is the token's `sub`, admins carry
//! `"role": "admin"`).
//!
//! Tokens are HS256 with `--jwt-secret` (the built-in accounts' tokens, or any issuer that
//! shares the secret) and RS256 or EdDSA with `--jwt-public-key` (an outside identity
//! provider). `exp` is required and enforced.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::{Access, App};

/// The caller of one request, set by [`authenticate`] on every request it lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `--auth none`: no identities; the body names the voter.
    Open,
    /// A route open to anyone while auth is on (health, the web page, log in).
    Anonymous,
    User {
        subject: String,
        admin: bool,
    },
}

impl Identity {
    /// Admin routes: open while auth is off, admins only while it is on.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Identity::Open | Identity::User { admin: true, .. } => Ok(()),
            Identity::User { .. } => Err(ApiError::forbidden("this needs an admin token")),
            Identity::Anonymous => Err(unauthenticated("this needs an admin token")),
        }
    }

    /// Whether this caller may manage a poll owned by `owner`.
    pub fn may_manage(&self, owner: Option<&str>) -> bool {
        match self {
            Identity::Open => true,
            Identity::User { admin: true, .. } => true,
            Identity::User { subject, .. } => owner == Some(subject.as_str()),
            Identity::Anonymous => false,
        }
    }

    /// The token's subject, when there is a token.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Identity::User { subject, .. } => Some(subject),
            _ => None,
        }
    }
}

/// Constant-time comparison, so a secret cannot be guessed byte by byte from timings.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether the request carries this node's cluster secret (`x-tally-cluster-secret`). A
/// node started without `--cluster-secret` has none to show, so nobody shows it.
pub(crate) fn shows_cluster_secret(access: &Access, headers: &header::HeaderMap) -> bool {
    let given = headers.get(tally_raft::rpc::SECRET_HEADER).map(|v| v.as_bytes());
    match (&access.cluster_secret, given) {
        (Some(expected), Some(given)) => same_secret(given, expected.as_bytes()),
        _ => false,
    }
}

/// Cluster management (`/v1/cluster/init`, `/v1/cluster/members`): an operator, whatever
/// the auth mode. That is whoever shows the cluster secret, or, with `--auth jwt`, an
/// admin's token. With `--auth none`, being on the network is not enough: a stranger who
/// could add a node would receive the log and the secret with it.
pub(crate) fn require_operator(app: &App, identity: &Identity, headers: &header::HeaderMap) -> Result<(), ApiError> {
    if shows_cluster_secret(&app.access, headers) {
        return Ok(());
    }
    if headers.contains_key(tally_raft::rpc::SECRET_HEADER) {
        app.metrics.peer_rejected.inc();
        return Err(unauthenticated("wrong cluster secret"));
    }
    match identity {
        Identity::User { admin: true, .. } => Ok(()),
        Identity::User { .. } => {
            Err(ApiError::forbidden("cluster management needs an admin token or the cluster secret"))
        }
        Identity::Open | Identity::Anonymous if app.access.cluster_secret.is_none() => Err(unauthenticated(
            "cluster management needs the cluster secret, and this node was started without --cluster-secret",
        )),
        Identity::Open | Identity::Anonymous => {
            Err(unauthenticated("cluster management needs the cluster secret (header x-tally-cluster-secret)"))
        }
    }
}

pub fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::unauthenticated(message)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Built-in accounts' tokens: [`password_fingerprint`] of the hash they were issued
    /// under. A password change makes it stale, which revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwh: Option<String>,
}

/// A token that passed the signature and expiry checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    /// The `pwh` claim, checked against the account by [`authenticate`].
    pub password_fingerprint: Option<String>,
}

/// 16 hex digits of SHA-256 over a stored password hash: enough to tell a changed password,
/// and it reveals nothing the salted argon2 hash does not.
pub fn password_fingerprint(password_hash: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(password_hash.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `--auth jwt`'s keys and settings.
pub struct JwtAuth {
    /// HS256: verifies the secret's tokens and signs the built-in accounts' tokens.
    secret: Option<(DecodingKey, EncodingKey)>,
    /// RS256 or EdDSA, from an outside identity provider.
    public_key: Option<(DecodingKey, Algorithm)>,
    /// Built-in accounts whose tokens say `"role": "admin"`.
    pub(crate) admins: BTreeSet<String>,
    pub token_ttl: Duration,
    /// The furthest `exp` accepted, from now.
    token_lifetime_max: Duration,
}

/// `--token-lifetime-max-secs` unless set: a day.
pub const TOKEN_LIFETIME_MAX_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// Clock difference tolerated between token issuers and this node.
const LEEWAY_SECS: u64 = 5;

/// Shortest `--jwt-secret` accepted: HS256 with a short secret can be brute-forced offline.
const SECRET_BYTES_MIN: usize = 32;

impl JwtAuth {
    pub fn new(
        secret: Option<&str>,
        public_key_pem: Option<&[u8]>,
        admins: BTreeSet<String>,
        token_ttl: Duration,
    ) -> Result<Self, String> {
        if secret.is_none() && public_key_pem.is_none() {
            return Err("--auth jwt needs --jwt-secret, --jwt-public-key or both".into());
        }
        let secret = match secret {
            Some(s) if s.len() < SECRET_BYTES_MIN => {
                return Err(format!("--jwt-secret must be at least {SECRET_BYTES_MIN} bytes"))
            }
            Some(s) => Some((DecodingKey::from_secret(s.as_bytes()), EncodingKey::from_secret(s.as_bytes()))),
            None => None,
        };
        let public_key = match public_key_pem {
            None => None,
            Some(pem) => Some(
                DecodingKey::from_rsa_pem(pem)
                    .map(|key| (key, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ed_pem(pem).map(|key| (key, Algorithm::EdDSA)))
                    .map_err(|_| "--jwt-public-key is neither an RSA nor an Ed25519 public key in PEM".to_string())?,
            ),
        };
        let token_lifetime_max = token_ttl.max(TOKEN_LIFETIME_MAX_DEFAULT);
        Ok(Self { secret, public_key, admins, token_ttl, token_lifetime_max })
    }

    /// Refuse tokens whose `exp` is further than `max` away, whoever signed them: a token
    /// that never expires cannot be revoked by waiting.
    pub fn with_token_lifetime_max(self, max: Duration) -> Result<Self, String> {
        if self.token_ttl > max {
            return Err("--token-ttl-secs must not exceed --token-lifetime-max-secs".into());
        }
        Ok(Self { token_lifetime_max: max, ..self })
    }

    /// Verifies a bearer token: signature, algorithm, `exp`.
    pub fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("the token is malformed"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.as_ref().map(|(decoding, _)| decoding),
            alg => self.public_key.as_ref().filter(|(_, expected)| *expected == alg).map(|(decoding, _)| decoding),
        };
        let key =
            key.ok_or_else(|| unauthenticated(format!("tokens signed with {:?} are not accepted", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => unauthenticated("the token has expired"),
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => unauthenticated("the token is not valid yet (nbf)"),
            _ => unauthenticated("the token is not valid"),
        })?;
        let claims = data.claims;
        let furthest = jsonwebtoken::get_current_timestamp() + self.token_lifetime_max.as_secs() + LEEWAY_SECS;
        if claims.exp > furthest {
            return Err(unauthenticated(
                "the token's exp is further away than this node accepts (--token-lifetime-max-secs)",
            ));
        }
        if claims.sub.is_empty() || claims.sub.len() > tally_raft::limits::VOTER_ID_BYTES_MAX {
            return Err(unauthenticated("the token's subject is empty or too long"));
        }
        let identity = Identity::User { admin: claims.role.as_deref() == Some("admin"), subject: claims.sub };
        Ok(Verified { identity, password_fingerprint: claims.pwh })
    }

    /// A token for a built-in account whose stored password hash is `password_hash`, if
    /// this node has the secret to sign one.
    pub fn issue(&self, username: &str, password_hash: &str, now_secs: u64) -> Option<String> {
        let (_, encoding) = self.secret.as_ref()?;
        let claims = Claims {
            sub: username.to_string(),
            exp: now_secs + self.token_ttl.as_secs(),
            iat: Some(now_secs),
            role: self.admins.contains(username).then(|| "admin".to_string()),
            pwh: Some(password_fingerprint(password_hash)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding).ok()
    }
}

/// Requests that need no token even with auth on.
fn is_public(method: &Method, path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics" | "/")
        || path.starts_with("/ui/")
        // Peer RPC carries the cluster secret instead.
        || path.starts_with("/raft/")
        || (method == Method::POST && matches!(path, "/v1/users" | "/v1/auth/token"))
}

/// Sets the request's [`Identity`], or answers 401 (or 429 for an address that keeps
/// sending refused tokens).
pub async fn authenticate(app: &App, mut request: Request) -> Result<Request, Response> {
    let identity = match &app.access.jwt {
        None => Identity::Open,
        Some(_) if is_public(request.method(), request.uri().path()) => Identity::Anonymous,
        Some(jwt) => {
            let bearer = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::to_string)
                .or_else(|| stream_token(&request));
            let bearer = bearer.as_deref();
            let checked = match bearer {
                None => Err(unauthenticated("this route needs Authorization: Bearer <token>")),
                Some(token) => match jwt.verify(token.trim()) {
                    Ok(verified) => check_not_revoked(app, verified).await,
                    Err(error) => Err(error),
                },
            };
            match checked {
                Ok(identity) => identity,
                // A refused token counts against its address's limit, or guessing tokens
                // would be the one thing the limit never slowed.
                Err(error) => {
                    let limited = crate::ratelimit::client_ip(&request).map(|ip| app.limits.rate.check_addr(ip));
                    if let Some(Err(over)) = limited {
                        return Err(over.into_response());
                    }
                    return Err(with_challenge(error));
                }
            }
        }
    };
    request.extensions_mut().insert(identity);
    Ok(request)
}

/// Fingerprints this node has found stale after a read index. A password hash has a fresh
/// salt, so a stale one never comes back: a revoked token that keeps coming is refused
/// from here, without asking the leader each time.
#[derive(Default)]
pub struct StaleFingerprints(std::sync::Mutex<std::collections::HashSet<(String, String)>>);

/// Past it, the memory starts over (the leader is asked again, and the answer kept again).
const STALE_FINGERPRINTS_MAX: usize = 10_000;

impl StaleFingerprints {
    fn contains(&self, subject: &str, fingerprint: &str) -> bool {
        let stale = self.0.lock().unwrap_or_else(|p| p.into_inner());
        stale.contains(&(subject.to_string(), fingerprint.to_string()))
    }

    fn insert(&self, subject: &str, fingerprint: &str) {
        let mut stale = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if stale.len() >= STALE_FINGERPRINTS_MAX {
            stale.clear();
        }
        stale.insert((subject.to_string(), fingerprint.to_string()));
    }
}

/// A built-in account's token holds only while the account's password is the one it was
/// issued under. A node that has not yet applied the account's creation or its latest
/// password change learns them through a linearizable barrier before refusing.
async fn check_not_revoked(app: &App, verified: Verified) -> Result<Identity, ApiError> {
    let (identity, fingerprint) = match verified {
        Verified { identity, password_fingerprint: Some(fingerprint) } => (identity, fingerprint),
        Verified { identity, password_fingerprint: None } => return Ok(identity),
    };
    let subject = identity.subject().unwrap_or_default();
    let current = |app: &App| app.local_password_hash(subject).map(|hash| password_fingerprint(&hash));
    if current(app).as_deref() == Some(fingerprint.as_str()) {
        return Ok(identity);
    }
    let revoked = || unauthenticated("the token was revoked: the account's password has changed since");
    if app.access.stale_fingerprints.contains(subject, &fingerprint) {
        return Err(revoked());
    }
    app.node.linearizable_barrier().await?;
    match current(app) {
        Some(now) if now == fingerprint => Ok(identity),
        Some(_) => {
            app.access.stale_fingerprints.insert(subject, &fingerprint);
            Err(revoked())
        }
        None => Err(unauthenticated("the token's account does not exist")),
    }
}

/// Browsers' EventSource cannot send headers, so the results stream alone also takes the
/// token as `?access_token=` (as RFC 6750 allows). Tokens in URLs can end up in proxy
/// logs; the node itself logs no query strings.
fn stream_token(request: &Request) -> Option<String> {
    if request.method() != Method::GET || !request.uri().path().ends_with("/results/stream") {
        return None;
    }
    let query = request.uri().query()?;
    // A JWT is URL-safe base64 and dots, which need no percent-decoding.
    query.split('&').find_map(|pair| pair.strip_prefix("access_token=")).map(str::to_string)
}

fn with_challenge(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn jwt() -> JwtAuth {
        JwtAuth::new(Some(SECRET), None, BTreeSet::from(["root".to_string()]), Duration::from_secs(60)).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_admin_role() {
        let auth = jwt();
        let token = auth.issue("alice", "stored-hash", now()).unwrap();
        assert_eq!(auth.verify(&token).unwrap().identity, Identity::User { subject: "alice".into(), admin: false });
        let verified = auth.verify(&token).unwrap();
        assert_eq!(verified.password_fingerprint, Some(password_fingerprint("stored-hash")));
        let root = auth.issue("root", "stored-hash", now()).unwrap();
        assert_eq!(auth.verify(&root).unwrap().identity, Identity::User { subject: "root".into(), admin: true });
    }

    #[test]
    fn not_yet_valid_and_never_expiring_tokens_are_refused() {
        let auth = jwt().with_token_lifetime_max(Duration::from_secs(3600)).unwrap();
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap()
        };
        let fine = sign(serde_json::json!({"sub": "alice", "exp": now() + 600, "nbf": now() - 10}));
        assert!(auth.verify(&fine).is_ok());
        let early = sign(serde_json::json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}));
        assert!(auth.verify(&early).is_err(), "nbf in the future was accepted");
        let forever = sign(serde_json::json!({"sub": "alice", "exp": u64::MAX}));
        assert!(auth.verify(&forever).is_err(), "an exp of 2^64-1 was accepted");
        let too_long = sign(serde_json::json!({"sub": "alice", "exp": now() + 7200}));
        assert!(auth.verify(&too_long).is_err(), "an exp past --token-lifetime-max-secs was accepted");
        assert!(jwt().with_token_lifetime_max(Duration::from_secs(30)).is_err(), "a ttl over the maximum");
    }

    #[test]
    fn a_changed_password_hash_has_another_fingerprint() {
        let first = password_fingerprint("$argon2id$v=19$m=19456,t=2,p=1$salt1$hash1");
        assert_eq!(first.len(), 16);
        assert_eq!(first, password_fingerprint("$argon2id$v=19$m=19456,t=2,p=1$salt1$hash1"));
        assert_ne!(first, password_fingerprint("$argon2id$v=19$m=19456,t=2,p=1$salt2$hash2"));
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let auth = jwt();
        let expired = auth.issue("alice", "stored-hash", now() - 3600).unwrap();
        assert_eq!(auth.verify(&expired).unwrap_err().message, "the token has expired");
        let other = JwtAuth::new(Some(&"x".repeat(32)), None, BTreeSet::new(), Duration::from_secs(60)).unwrap();
        let forged = other.issue("alice", "stored-hash", now()).unwrap();
        assert_eq!(auth.verify(&forged).unwrap_err().code, "UNAUTHENTICATED");
        assert_eq!(auth.verify("not.a.token").unwrap_err().code, "UNAUTHENTICATED");
        // A token without exp is refused even with a good signature.
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let eternal = jsonwebtoken::encode(&Header::default(), &NoExp { sub: "alice".into() }, &key).unwrap();
        assert!(auth.verify(&eternal).is_err());
    }

    /// An outside identity provider's RS256 key pair, made by openssl.
    fn rsa_pair() -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("rsa.pem"), dir.path().join("rsa.pub.pem"));
        let run = |args: &[&str]| assert!(std::process::Command::new("openssl").args(args).status().unwrap().success());
        run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", private.to_str().unwrap()]);
        run(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
        (std::fs::read(private).unwrap(), std::fs::read(public).unwrap())
    }

    #[test]
    fn rs256_tokens_of_the_configured_key_verify_and_others_do_not() {
        let (private, public) = rsa_pair();
        let auth = JwtAuth::new(None, Some(&public), BTreeSet::new(), Duration::from_secs(60)).unwrap();
        let claims = Claims { sub: "erin".into(), exp: now() + 60, iat: None, role: Some("admin".into()), pwh: None };
        let key = EncodingKey::from_rsa_pem(&private).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        assert_eq!(auth.verify(&token).unwrap().identity, Identity::User { subject: "erin".into(), admin: true });
        // Without a secret, HS256 tokens are refused rather than checked against nothing.
        let hs = JwtAuth::new(Some(SECRET), None, BTreeSet::new(), Duration::from_secs(60)).unwrap();
        let forged = hs.issue("erin", "stored-hash", now()).unwrap();
        assert_eq!(auth.verify(&forged).unwrap_err().code, "UNAUTHENTICATED");
        // And this node cannot sign tokens for built-in accounts.
        assert!(auth.issue("erin", "stored-hash", now()).is_none());
    }

    #[test]
    fn short_secrets_and_missing_keys_are_refused_at_start() {
        assert!(JwtAuth::new(Some("short"), None, BTreeSet::new(), Duration::from_secs(1)).is_err());
        assert!(JwtAuth::new(None, None, BTreeSet::new(), Duration::from_secs(1)).is_err());
        assert!(JwtAuth::new(None, Some(b"not pem"), BTreeSet::new(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn identities_manage_what_they_own() {
        let alice = Identity::User { subject: "alice".into(), admin: false };
        assert!(alice.may_manage(Some("alice")));
        assert!(!alice.may_manage(Some("bob")));
        assert!(!alice.may_manage(None));
        assert!(Identity::User { subject: "root".into(), admin: true }.may_manage(Some("bob")));
        assert!(alice.require_admin().is_err());
        assert!(Identity::Open.require_admin().is_ok());
    }
}
