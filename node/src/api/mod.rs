//! The HTTP API of API.md. One file per resource; this one builds the router.

pub mod audit;
pub mod cluster;
pub mod error;
pub mod extract;
pub mod ops;
pub mod polls;
pub mod requests;
pub mod results;
pub mod users;
pub mod votes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use utoipa::OpenApi;

use crate::App;

/// Bodies of single requests.
const BODY_BYTES_MAX: usize = 64 * 1024;
/// Bodies of `votes:batch`.
const BATCH_BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The longest one vote of a batch can be as plain JSON (no escapes): every field at its
/// bound, with the names, quotes and punctuation.
const BATCH_VOTE_JSON_BYTES_MAX: usize = {
    use tally_raft::limits::*;
    ID_BYTES_MAX
        + ID_BYTES_MAX
        + VOTER_ID_BYTES_MAX
        + IDEMPOTENCY_KEY_BYTES_MAX
        + ATTRIBUTES_MAX * (2 * ATTRIBUTE_BYTES_MAX + 6)
        + 128
};

// A batch of the most votes, each at its largest, is not refused for its size: the limit
// that speaks is the vote count's, with its own clear error.
const _: () =
    assert!(tally_raft::limits::VOTES_PER_BATCH_REQUEST_MAX * BATCH_VOTE_JSON_BYTES_MAX + 64 <= BATCH_BODY_BYTES_MAX);

#[derive(OpenApi)]
#[openapi(
    info(title = "Tally", description = "A Raft-replicated voting cluster. Any node serves the whole API. \
        Errors are `{\"error\": {\"code\", \"message\"}}` with the codes of API.md."),
    modifiers(&DocConventions),
    tags((name = "polls", description = "Create, list and edit polls"),
        (name = "votes", description = "Cast votes, one or a batch, and ask how they ended"),
        (name = "results", description = "Counts, eventual or linearizable, and their stream"),
        (name = "audit", description = "The audit chain: the stream of recorded votes, and receipts"),
        (name = "users", description = "Built-in accounts and tokens (--auth jwt)"),
        (name = "cluster", description = "Membership and this node's view of the cluster")),
    paths(
        polls::create,
        polls::get,
        polls::list,
        polls::patch,
        votes::cast,
        votes::batch,
        votes::me,
        requests::status,
        results::get,
        results::stream,
        audit::audit,
        audit::receipt,
        users::register,
        users::token,
        users::change_password,
        cluster::status,
        cluster::init,
        cluster::add_member,
        cluster::remove_member,
        cluster::backup,
    )
)]
pub struct ApiDoc;

/// What every operation shares, added once rather than on each: the bearer scheme (optional,
/// since `--auth none` takes no token), and the error body on every error response.
struct DocConventions;

impl utoipa::Modify for DocConventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").description(Some(
            "With `--auth jwt`: a token from `POST /v1/auth/token`. With `--auth none`, no token is needed.",
        ));
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer.build()));
        let secret = ApiKeyValue::with_description(
            tally_raft::rpc::SECRET_HEADER,
            "The cluster secret (--cluster-secret), for membership changes in every auth mode",
        );
        components.add_security_scheme("clusterSecret", SecurityScheme::ApiKey(ApiKey::Header(secret)));
        let none = Vec::<String>::new;
        doc.security = Some(vec![SecurityRequirement::default(), SecurityRequirement::new("bearer", none())]);
        let error = || ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        for item in doc.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let id = operation.operation_id.as_deref();
                let public = matches!(id, Some("createUser" | "createToken"));
                // Cluster management needs the secret or an admin token even with --auth none.
                let operator = matches!(id, Some("initCluster" | "addMember" | "removeMember"));
                if operator {
                    operation.security = Some(vec![
                        SecurityRequirement::new("clusterSecret", none()),
                        SecurityRequirement::new("bearer", none()),
                    ]);
                }
                let why = match operator {
                    true => "UNAUTHENTICATED: neither the cluster secret nor an admin token",
                    false => "UNAUTHENTICATED: with --auth jwt, no valid bearer token",
                };
                let responses = &mut operation.responses.responses;
                if !public && !responses.contains_key("401") {
                    let unauthenticated = ResponseBuilder::new().description(why).content("application/json", error());
                    responses.insert("401".to_string(), unauthenticated.build().into());
                }
                for (status, response) in responses.iter_mut() {
                    let utoipa::openapi::RefOr::T(response) = response else { continue };
                    if status.as_str() >= "400" && response.content.is_empty() {
                        response.content.insert("application/json".to_string(), error());
                    }
                }
            }
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    let batch = Router::new()
        .route("/v1/polls/{poll_id}/votes:batch", post(votes::batch))
        .layer(DefaultBodyLimit::max(BATCH_BODY_BYTES_MAX));
    Router::new()
        .route("/v1/polls", post(polls::create).get(polls::list))
        .route("/v1/polls/{poll_id}", get(polls::get).patch(polls::patch))
        .route("/v1/polls/{poll_id}/votes", post(votes::cast))
        .route("/v1/polls/{poll_id}/votes/me", get(votes::me))
        .route("/v1/polls/{poll_id}/votes/requests/{request_id}", get(requests::status))
        .route("/v1/polls/{poll_id}/results", get(results::get))
        .route("/v1/polls/{poll_id}/results/stream", get(results::stream))
        .route("/v1/polls/{poll_id}/audit", get(audit::audit))
        .route("/v1/polls/{poll_id}/receipts/{vote_id}", get(audit::receipt))
        .route("/v1/users", post(users::register))
        .route("/v1/auth/token", post(users::token))
        .route("/v1/users/{username}/password", put(users::change_password))
        .route("/v1/cluster/status", get(cluster::status))
        .route("/v1/cluster/init", post(cluster::init))
        .route("/v1/cluster/backup", get(cluster::backup))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{node_id}", delete(cluster::remove_member))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/", get(crate::web::index))
        .route("/ui/app.js", get(crate::web::script))
        .route("/ui/style.css", get(crate::web::style))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .merge(batch)
        .merge(crate::peer::router(app.clone()))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(app.clone(), front_door))
        .with_state(app)
}

/// Every request's way in, as one middleware rather than four: each `from_fn` layer
/// clones the services inside it and boxes a future per request, and one layer instead of
/// four took about a tenth off a `/health` request's CPU (BENCHMARKS.md, session 23). In
/// order: timed and counted, authenticated, held to its address's limit, checked against
/// this node's storage.
async fn front_door(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = match crate::auth::authenticate(&app, request).await {
        Err(refused) => refused,
        Ok(request) => match crate::ratelimit::per_address(&app, &request) {
            Err(limited) => limited.into_response(),
            Ok(()) => storage_guard(&app, request, next).await,
        },
    };
    let route = route.as_deref().unwrap_or("unmatched");
    app.metrics.observe_http(method.as_str(), route, response.status().as_u16(), started.elapsed());
    response
}

/// What this node's storage allows, decided before any handler runs: a node whose
/// storage failed refuses every write at once (503: this attempt was not taken) and marks
/// every read `Tally-Stale: storage-failed`, as it no longer applies anything. It does not
/// touch the state: a wedged store may hold its lock. (Votes during a member's low-disk
/// alarm are refused where they would be proposed, `source::RaftSubmitter`, so that
/// retries of decided votes are still answered.)
async fn storage_guard(app: &App, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    if let Some(reason) = app.node.failure() {
        let write = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        // Issuing a token reads the state and writes nothing.
        if write && path != "/v1/auth/token" {
            return error::ApiError::storage_failed(&reason).into_response();
        }
        let mut response = next.run(request).await;
        response.headers_mut().insert(STALE_HEADER, HeaderValue::from_static("storage-failed"));
        return response;
    }
    next.run(request).await
}

/// Set on every `/v1` answer of a node whose storage failed: what it reads stopped moving.
pub const STALE_HEADER: &str = "tally-stale";
