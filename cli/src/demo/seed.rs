//! The demo's sample data: the admin account of a `--auth jwt` demo, and the sample poll
//! with a vote through each node (reused on a re-run over the same data).

use super::*;

/// Registers the admin account (a re-run finds it there) and logs in as it. An `--admin`
/// name is reserved: only the operator, with the cluster secret, may register it.
pub(super) async fn admin_token(client: &Client, jwt: &JwtSetup, secret: &str) -> anyhow::Result<String> {
    let body = json!({"username": ADMIN_USERNAME, "password": jwt.admin_password});
    let register = Request::post("/v1/users", body.clone()).header(crate::client::CLUSTER_SECRET_HEADER, secret);
    match retry_unavailable(|| client.send(&register)).await {
        Err(failure) if failure.code != "USERNAME_TAKEN" => return Err(failure.into()),
        _ => {}
    }
    let login = Request::post("/v1/auth/token", body);
    let reply = retry_unavailable(|| client.send(&login)).await.with_context(|| {
        format!("cannot log in as {ADMIN_USERNAME} with the password in {}", jwt.password_file.display())
    })?;
    match reply["access_token"].as_str() {
        Some(token) => Ok(token.to_string()),
        None => Err(Failure::failed("INVALID_RESPONSE", "the login reply has no access_token").into()),
    }
}

/// The sample poll a previous run on this data dir made, if the cluster still has it.
pub(super) async fn earlier_sample_poll(client: &Client, data_dir: &Path) -> Option<Value> {
    let poll_id = fs::read_to_string(data_dir.join(SAMPLE_POLL_FILE)).ok()?;
    let request = Request::get(crate::poll::poll_path(poll_id.trim()));
    retry_unavailable(|| client.send(&request)).await.ok()
}

/// Creates the sample poll through the first node (or finds the one an earlier run made),
/// then votes through each node in turn, to show that any node takes writes. The votes'
/// keys make a re-run replay them rather than add any.
pub(super) async fn seed(client: &Client, urls: &[String], jwt: bool, data_dir: &Path) -> anyhow::Result<Value> {
    let first = client.only(&urls[0]);
    let poll = match earlier_sample_poll(&first, data_dir).await {
        Some(poll) => poll,
        None => {
            let body = json!({"title": SAMPLE_TITLE, "options": SAMPLE_OPTIONS});
            let request = Request::post("/v1/polls", body);
            retry_unavailable(|| first.send(&request)).await?
        }
    };
    let Some(poll_id) = poll["poll_id"].as_str().map(str::to_string) else {
        let message = "the created sample poll has no poll_id";
        return Err(Failure::failed("INVALID_RESPONSE", message).into());
    };
    let remembered = data_dir.join(SAMPLE_POLL_FILE);
    fs::write(&remembered, &poll_id).with_context(|| format!("cannot write {}", remembered.display()))?;
    for (index, (voter, text)) in SAMPLE_VOTES.iter().enumerate() {
        let node = client.only(&urls[index % urls.len()]);
        let option_id = vote::find_option_id(&poll, text)?;
        // The key makes a retry after a lost reply safe: it cannot count twice.
        let key = format!("demo-{poll_id}-{voter}");
        if jwt {
            // With auth on, a single vote's voter is the token's subject (the admin here);
            // a trusted front end names its voters through votes:batch.
            let vote = json!({"option_id": option_id, "voter_id": voter, "idempotency_key": key});
            retry_unavailable(|| vote::cast_as_front_end(&node, &poll_id, vote.clone())).await?;
        } else {
            let body = vote::vote_body(&option_id, Some(voter), &[])?;
            retry_unavailable(|| vote::cast(&node, &poll_id, body.clone(), Some(&key))).await?;
        }
    }
    Ok(poll)
}

pub(super) async fn retry_unavailable<F, Fut>(mut attempt: F) -> Result<Value, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, Failure>>,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(failure) if failure.code == "UNAVAILABLE" && attempts < SEED_ATTEMPTS_MAX => {
                attempts += 1;
                sleep(SEED_RETRY_DELAY).await;
            }
            outcome => return outcome,
        }
    }
}
