//! `--auth jwt` on three real nodes: built-in accounts replicated through the log, tokens
//! from another node, the voter taken from the token, owner/admin rules, hidden results,
//! admin-only routes, expired tokens, and an outside identity provider's EdDSA token.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, Cluster};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

struct Client<'a> {
    cluster: &'a Cluster,
}

impl Client<'_> {
    async fn call(
        &self,
        node: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.cluster.url(node));
        let mut request = self.cluster.http.request(method.parse().unwrap(), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn register_and_login(&self, node: usize, username: &str) -> String {
        let credentials = json!({"username": username, "password": format!("{username}-password")});
        let (status, body) = self.call(node, "POST", "/v1/users", None, Some(credentials.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // Log in through the next node: the account is replicated, not local.
        let (status, body) = self.call((node + 1) % 3, "POST", "/v1/auth/token", None, Some(credentials)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"].as_str().expect("a token").to_string()
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// An Ed25519 key pair from openssl, as an outside identity provider would hold it.
fn ed25519_pair(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let private = dir.join("idp.pem");
    let public = dir.join("idp.pub.pem");
    let run = |args: &[&str]| {
        let status = Command::new("openssl").args(args).status().expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&["genpkey", "-algorithm", "ed25519", "-out", private.to_str().unwrap()]);
    run(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    (public, std::fs::read(private).unwrap())
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_mode_end_to_end() {
    let keys = tempfile::tempdir().unwrap();
    let (public_pem, private_pem) = ed25519_pair(keys.path());
    let args = ["--auth", "jwt", "--jwt-secret", SECRET, "--admin", "root", "--jwt-public-key"];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(public_pem.to_str().unwrap().to_string());
    let cluster = Cluster::start_with(3, args).await;
    let api = Client { cluster: &cluster };

    // Anonymous callers get the public routes only.
    let (status, body) = api.call(0, "GET", "/v1/polls", None, None).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
    assert_eq!(api.call(0, "GET", "/health", None, None).await.0, StatusCode::OK);
    assert_eq!(api.call(0, "GET", "/", None, None).await.0, StatusCode::OK);
    let (status, _) = api.call(1, "GET", "/v1/cluster/status", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let alice = api.register_and_login(0, "alice").await;
    let bob = api.register_and_login(1, "bob").await;
    let carol = api.register_and_login(2, "carol").await;
    // `--admin root` reserves the name: a stranger cannot register it and become admin,
    // on any node; the operator can, with the cluster secret.
    let root_credentials = json!({"username": "root", "password": "root-password"});
    for node in 0..3 {
        let (status, body) = api.call(node, "POST", "/v1/users", None, Some(root_credentials.clone())).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{body}");
    }
    let url = format!("{}/v1/users", cluster.url(0));
    let wrong = cluster.http.post(&url).header("x-tally-cluster-secret", "guess").json(&root_credentials);
    assert_eq!(wrong.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let operator = cluster.http.post(&url).header("x-tally-cluster-secret", cluster.secret()).json(&root_credentials);
    assert_eq!(operator.send().await.unwrap().status(), StatusCode::CREATED);
    let (status, body) = api.call(1, "POST", "/v1/auth/token", None, Some(root_credentials)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let root = body["access_token"].as_str().expect("a token").to_string();
    let taken = json!({"username": "alice", "password": "another-password"});
    let (status, body) = api.call(2, "POST", "/v1/users", None, Some(taken)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "USERNAME_TAKEN"));
    let wrong = json!({"username": "alice", "password": "not-her-password"});
    assert_eq!(api.call(1, "POST", "/v1/auth/token", None, Some(wrong)).await.0, StatusCode::UNAUTHORIZED);

    // alice owns a poll whose results stay hidden while it runs.
    let poll = json!({"title": "board", "options": ["yes", "no"], "settings": {"show_results_during_voting": false}});
    let (status, created) = api.call(0, "POST", "/v1/polls", Some(&alice), Some(poll)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["owner"], "alice");
    let id = created["poll_id"].as_str().unwrap().to_string();
    let votes = format!("/v1/polls/{id}/votes");

    // The voter is the token's subject; naming someone else is refused.
    let (status, body) =
        api.call(1, "POST", &votes, Some(&bob), Some(json!({"option_id": "o1", "voter_id": "alice"}))).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, body) = api.call(1, "POST", &votes, Some(&bob), Some(json!({"option_id": "o1"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A receipt tells how its voter voted only to that voter, the owner and admins while
    // results are hidden; `/metrics`, open to anyone, leaves the poll out.
    let receipt = format!("/v1/polls/{id}/receipts/{}", body["vote_id"].as_str().expect("a vote id"));
    for (who, token, shown) in [("bob", &bob, true), ("alice", &alice, true), ("carol", &carol, false)] {
        let (status, check) = api.call(2, "GET", &receipt, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{check}");
        let expected = if shown { json!("o1") } else { Value::Null };
        assert_eq!(check["option_id"], expected, "{who} reading bob's receipt: {check}");
    }
    for node in 0..3 {
        let (_, metrics) = api.call(node, "GET", "/metrics", None, None).await;
        let text = metrics.as_str().expect("metrics text");
        assert!(!text.contains(&id), "node {node}'s /metrics shows the hidden poll");
    }
    let (_, me) = api.call(2, "GET", &format!("{votes}/me"), Some(&bob), None).await;
    assert_eq!(me["has_voted"], true, "{me}");

    // Hidden results: the owner and bob (who voted) see them, carol does not.
    let results = format!("/v1/polls/{id}/results?consistency=linearizable");
    assert_eq!(api.call(0, "GET", &results, Some(&alice), None).await.0, StatusCode::OK);
    let (status, body) = api.call(2, "GET", &results, Some(&bob), None).await;
    assert_eq!((status, body["total_votes"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    assert_eq!(api.call(2, "GET", &results, Some(&carol), None).await.0, StatusCode::FORBIDDEN);

    // Only the owner or an admin changes the poll or reads its audit stream.
    let path = format!("/v1/polls/{id}");
    let (status, _) = api.call(0, "PATCH", &path, Some(&bob), Some(json!({"title": "mine now"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api.call(0, "PATCH", &path, Some(&alice), Some(json!({"title": "board 2026"}))).await;
    assert_eq!((status, body["title"].as_str()), (StatusCode::OK, Some("board 2026")));
    assert_eq!(api.call(1, "GET", &format!("{path}/audit"), Some(&bob), None).await.0, StatusCode::FORBIDDEN);
    let (status, audit) = api.call(1, "GET", &format!("{path}/audit"), Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audit["voter_id"], "bob", "{audit}");

    // Bulk ingestion and membership are for admins.
    let batch = json!({"votes": [{"option_id": "o2", "voter_id": "paper-ballot-1"}]});
    let batch_path = format!("{path}/votes:batch");
    assert_eq!(api.call(0, "POST", &batch_path, Some(&bob), Some(batch.clone())).await.0, StatusCode::FORBIDDEN);
    let (status, body) = api.call(0, "POST", &batch_path, Some(&root), Some(batch)).await;
    assert_eq!((status, body["results"][0]["status"].as_str()), (StatusCode::OK, Some("recorded")), "{body}");
    let member = json!({"node_id": 9, "addr": "127.0.0.1:1"});
    assert_eq!(api.call(0, "POST", "/v1/cluster/members", Some(&alice), Some(member)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.call(0, "GET", "/v1/cluster/status", Some(&carol), None).await.0, StatusCode::OK);

    // exp is enforced.
    let expired = json!({"sub": "alice", "exp": now_secs() - 600});
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let expired = jsonwebtoken::encode(&Header::default(), &expired, &key).unwrap();
    let (status, body) = api.call(0, "GET", "/v1/polls", Some(&expired), None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("the token has expired")));

    // An outside identity provider's EdDSA token, with the admin role, is accepted.
    let claims = json!({"sub": "dave@idp", "exp": now_secs() + 600, "role": "admin"});
    let idp = EncodingKey::from_ed_pem(&private_pem).unwrap();
    let dave = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &idp).unwrap();
    let (status, body) = api.call(2, "PATCH", &path, Some(&dave), Some(json!({"status": "closed"}))).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("closed")), "{body}");
    // Closed: the results are public to any signed-in user.
    let (status, body) = api.call(2, "GET", &results, Some(&carol), None).await;
    assert_eq!((status, body["total_votes"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
    // A token signed with a key the cluster does not trust is not.
    let (_, stranger_pem) = ed25519_pair(keys.path());
    let stranger = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(&stranger_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(api.call(2, "GET", "/v1/polls", Some(&stranger), None).await.0, StatusCode::UNAUTHORIZED);

    // Passwords: users change their own (proving the current one), an admin resets
    // anyone's, nobody else may; a change revokes the account's earlier tokens everywhere.
    let change = |current: Option<&str>, new: &str| Some(json!({"current_password": current, "new_password": new}));
    let carols = "/v1/users/carol/password";
    let (status, body) = api.call(0, "PUT", carols, Some(&bob), change(None, "bob-owns-carol")).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, body) = api.call(0, "PUT", carols, Some(&carol), change(None, "carol-new-password")).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    let (status, body) =
        api.call(0, "PUT", carols, Some(&carol), change(Some("wrong-guess"), "carol-new-password")).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
    assert_eq!(
        api.call(2, "GET", "/v1/polls", Some(&carol), None).await.0,
        StatusCode::OK,
        "a failed change revokes nothing"
    );
    let (status, body) =
        api.call(0, "PUT", carols, Some(&carol), change(Some("carol-password"), "carol-new-password")).await;
    assert_eq!((status, body["username"].as_str()), (StatusCode::OK, Some("carol")), "{body}");
    // At once on the node that changed it; on the others as soon as they apply the change.
    for node in 0..3 {
        let refused = eventually(Duration::from_secs(10), || async {
            let (status, body) = api.call(node, "GET", "/v1/polls", Some(&carol), None).await;
            (status == StatusCode::UNAUTHORIZED).then_some(body)
        })
        .await;
        let body = refused.unwrap_or_else(|| panic!("node {node} still takes carol's old token"));
        assert_eq!(code(&body), "UNAUTHENTICATED");
        assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    }
    // Every node has refused the old token, so every node has applied the change.
    let login = |password: &str| Some(json!({"username": "carol", "password": password}));
    assert_eq!(api.call(1, "POST", "/v1/auth/token", None, login("carol-password")).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = api.call(2, "POST", "/v1/auth/token", None, login("carol-new-password")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let carol = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(api.call(1, "GET", "/v1/polls", Some(&carol), None).await.0, StatusCode::OK);
    // An admin resets a lost or compromised account without its password.
    let (status, body) = api.call(1, "PUT", "/v1/users/bob/password", Some(&root), change(None, "reset-by-root")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Node 2 refuses bob's token once it applies the reset (revocation is per node).
    let refused = eventually(Duration::from_secs(10), || async {
        (api.call(2, "GET", "/v1/polls", Some(&bob), None).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "node 2 still takes bob's token after the reset");
    let (status, body) =
        api.call(0, "PUT", "/v1/users/nobody/password", Some(&root), change(None, "whatever-pass")).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    // An outside provider's tokens carry no password fingerprint and are not affected.
    assert_eq!(api.call(0, "GET", "/v1/polls", Some(&dave), None).await.0, StatusCode::OK);
}

/// Over a limit: 429 RATE_LIMITED with Retry-After; health and cluster routes never are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_per_voter_and_per_address() {
    let args = [
        "--rate-limit-voter-per-sec",
        "1",
        "--rate-limit-voter-burst",
        "2",
        "--rate-limit-addr-per-sec",
        "5",
        "--rate-limit-addr-burst",
        "20",
    ];
    let cluster = Cluster::start_with(1, args.iter().map(|s| s.to_string()).collect()).await;
    let api = Client { cluster: &cluster };
    let mut polls = Vec::new();
    for n in 0..5 {
        let (status, poll) = api
            .call(0, "POST", "/v1/polls", None, Some(json!({"title": format!("p{n}"), "options": ["a", "b"]})))
            .await;
        assert!(status == StatusCode::CREATED || status == StatusCode::TOO_MANY_REQUESTS, "{poll}");
        if status == StatusCode::CREATED {
            polls.push(poll["poll_id"].as_str().unwrap().to_string());
        }
    }
    // One voter, one vote on each poll as fast as possible: five votes need four seconds
    // at one a second with a burst of two, so some are refused however slow this machine.
    let mut limited = 0;
    for poll in &polls {
        let url = format!("{}/v1/polls/{poll}/votes", cluster.url(0));
        let response =
            cluster.http.post(url).json(&json!({"voter_id": "eager", "option_id": "o1"})).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry_after >= 1);
            let body: Value = response.json().await.unwrap();
            assert_eq!(code(&body), "RATE_LIMITED");
            limited += 1;
        } else {
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    assert!(polls.len() < 3 || limited > 0, "{} votes of one voter in a burst, none limited", polls.len());
    // A retry of a recorded vote (same key) gets its original answer even while its voter
    // is over the limit: the limiter must not hide whether the vote counted.
    let vote = |poll: &str, key: Option<&str>| {
        let url = format!("{}/v1/polls/{poll}/votes", cluster.url(0));
        let request = cluster.http.post(url).json(&json!({"voter_id": "patient", "option_id": "o2"}));
        match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        }
        .send()
    };
    assert_eq!(vote(&polls[0], Some("patient-1")).await.unwrap().status(), StatusCode::OK);
    let mut over_the_limit = false;
    for poll in &polls[1..] {
        if vote(poll, None).await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            over_the_limit = true;
            let retry = vote(&polls[0], Some("patient-1")).await.unwrap();
            assert_eq!(retry.status(), StatusCode::OK, "a retry was limited");
            assert_eq!(retry.json::<Value>().await.unwrap()["replayed"], true);
            break;
        }
    }
    // One vote a second with a burst of two: four quick ones after the first go over.
    assert!(polls.len() < 4 || over_the_limit, "patient never went over the limit");
    // Forty reads from one address at five a second with a burst of twenty.
    let mut refused = 0;
    for _ in 0..40 {
        if api.call(0, "GET", "/v1/polls", None, None).await.0 == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(refused > 0, "no read was limited");
    for path in ["/health", "/v1/cluster/status"] {
        assert_eq!(api.call(0, "GET", path, None, None).await.0, StatusCode::OK, "{path} is never limited");
    }
}
