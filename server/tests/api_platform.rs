//! Platform behaviour: health, OpenAPI, auth and tokens, errors and request ids, catalogs,
//! pagination, rate limiting, tenant isolation (R3), restarts, logs.

mod common;
use std::collections::{BTreeMap, BTreeSet};

use common::*;

// ---------------------------------------------------------------- health, openapi -----

async fn healthz_is_public_and_reports_the_version(backend: Backend) {
    let server = start(backend).await;
    let resp = server.client().without_token().get("/healthz").await;
    let body = expect_status(&resp, 200);
    assert_eq!(body["status"], "ok");
    assert!(body["version"].as_str().is_some_and(|v| !v.is_empty()), "{body}");
    let _: matrixhost_api::Health = serde_json::from_value(body).expect("a Health");
    assert!(request_id_header(&resp.1).is_some(), "no x-request-id on /healthz");
}
both_backends!(healthz_is_public_and_reports_the_version);

async fn openapi_document_is_the_committed_one(backend: Backend) {
    let server = start(backend).await;
    let resp = server.client().without_token().get("/openapi.json").await;
    let served = expect_status(&resp, 200);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("api/openapi.json")).unwrap();
    // The served document names this server's catalog: its plan tiers and its US regions.
    let schemas = &served["components"]["schemas"];
    assert_eq!(schemas["PlanTier"]["enum"], json!(["nickel", "silver", "gold", "platinum"]));
    let regions = schemas["RegionCode"]["enum"].as_array().unwrap();
    assert!(regions.contains(&json!("us-east-1")) && regions.contains(&json!("us-central-1")), "{regions:?}");
    let mut generic = served.clone();
    for name in ["PlanTier", "RegionCode"] {
        generic["components"]["schemas"][name].as_object_mut().unwrap().remove("enum");
    }
    assert!(generic == committed, "GET /openapi.json differs from api/openapi.json beyond the catalog");
    assert_eq!(generic, matrixhost_api::openapi::document());
}
both_backends!(openapi_document_is_the_committed_one);

// ---------------------------------------------------------------------- auth -----

async fn requests_without_a_valid_token_are_unauthorized(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let cases = [
        ("no token", c.without_token()),
        ("unknown token", c.with_token("mh_0000000000000000000000000000000000000000")),
        ("not a token", c.with_token("hello")),
        ("basic auth", c.without_token().header("Authorization", "Basic ZGV2OmRldg==")),
        ("empty bearer", c.without_token().header("Authorization", "Bearer ")),
    ];
    for (what, client) in cases {
        for path in ["/v1/organization", "/v1/regions", "/v1/billing-plans"] {
            let resp = client.get(path).await;
            assert_eq!(resp.0.as_u16(), 401, "{what} {path}: {}", resp.2);
            assert_api_error(&resp, 401, Some("unauthorized"), None);
        }
        let resp = client.post("/v1/billing-plans", &json!({ "plan": "silver" })).await;
        assert_api_error(&resp, 401, Some("unauthorized"), None);
    }
    assert_eq!(list_all(&c, "/v1/billing-plans").await.len(), 0);
}
both_backends!(requests_without_a_valid_token_are_unauthorized);

async fn organization_of_the_dev_token(backend: Backend) {
    let server = start(backend).await;
    let body = expect_status(&server.client().get("/v1/organization").await, 200);
    let _: matrixhost_api::Organization = serde_json::from_value(body.clone()).expect("an Organization");
    assert_eq!(body["name"], "dev");
    assert_eq!(body["email_verified"], true);
    assert!(body["id"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(body["email"].as_str().is_some_and(|v| v.contains('@')));
}
both_backends!(organization_of_the_dev_token);

/// The `token list` ids of `org` (the first column of each line).
async fn token_ids(server: &TestServer, org: &str) -> BTreeSet<String> {
    let out = server.cli_ok(&["token", "list", "--org", org]).await;
    out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

async fn tokens_are_shown_once_listed_without_secrets_and_revocable(backend: Backend) {
    let server = start(backend).await;
    let org = unique_name("acme");
    let first = server.create_token(&org).await;
    let ids_one = token_ids(&server, &org).await;
    assert_eq!(ids_one.len(), 1, "{ids_one:?}");
    // A second token for the same (existing) organization.
    let out = server.cli_ok(&["token", "create", "--org", &org]).await;
    let second = out.lines().map(str::trim).find(|l| l.starts_with("mh_")).expect("a token on stdout").to_owned();
    assert_ne!(first, second);
    let ids_two = token_ids(&server, &org).await;
    assert_eq!(ids_two.len(), 2, "{ids_two:?}");
    let second_id = ids_two.difference(&ids_one).next().unwrap().clone();

    let listing = server.cli_ok(&["token", "list", "--org", &org]).await;
    for secret in [&first, &second] {
        assert!(!listing.contains(secret.as_str()), "token list shows a secret:\n{listing}");
        assert!(!listing.contains(&secret["mh_".len()..]), "token list shows a secret:\n{listing}");
    }

    let c2 = server.client_with_token(&second);
    let me = expect_status(&c2.get("/v1/organization").await, 200);
    assert_eq!(me["name"], org.as_str());
    assert_eq!(me["email"], format!("{org}@example.com"));
    assert_eq!(me["email_verified"], true);

    server.cli_ok(&["token", "revoke", &second_id]).await;
    assert_api_error(&c2.get("/v1/organization").await, 401, Some("unauthorized"), None);
    assert_api_error(&c2.get("/v1/billing-plans").await, 401, Some("unauthorized"), None);
    // The other token of the organization, and the dev token, still work.
    expect_status(&server.client_with_token(&first).get("/v1/organization").await, 200);
    expect_status(&server.client().get("/v1/organization").await, 200);
    // Revoking twice, or an unknown id, fails.
    assert!(!server.cli(&["token", "revoke", &second_id]).await.status.success());
    assert!(!server.cli(&["token", "revoke", "tok_does_not_exist"]).await.status.success());
}
both_backends!(tokens_are_shown_once_listed_without_secrets_and_revocable);

async fn tokens_are_not_stored_in_plaintext(backend: Backend) {
    let server = start(backend).await;
    let token = server.create_token(&unique_name("acme")).await;
    expect_status(&server.client_with_token(&token).get("/v1/organization").await, 200);
    let db = server.database_bytes();
    for secret in [token.as_str(), &token["mh_".len()..], server.dev_token(), &server.dev_token()["mh_".len()..]] {
        assert!(!contains_bytes(&db, secret), "the database holds a token in plaintext");
    }
}
both_backends!(tokens_are_not_stored_in_plaintext);

async fn dev_token_file_is_private(backend: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let server = start(backend).await;
    let path = server.state_dir().join(DEV_TOKEN_FILE);
    let mode = std::fs::metadata(&path).expect("dev-token").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    assert!(server.dev_token().starts_with("mh_"), "dev token {:?}", server.dev_token());
}
both_backends!(dev_token_file_is_private);

// ------------------------------------------------------------ errors, request ids -----

async fn every_response_carries_a_request_id(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let responses = [
        c.get("/v1/regions").await,
        c.without_token().get("/healthz").await,
        c.without_token().get("/v1/regions").await,
        c.get("/v1/billing-plans/nope").await,
        c.post("/v1/billing-plans", &json!({ "plan": "silver" })).await,
        c.get("/v1/no-such-endpoint").await,
    ];
    for resp in &responses {
        let rid = request_id_header(&resp.1).unwrap_or_else(|| panic!("no x-request-id: {}", resp.2));
        assert!(!rid.is_empty() && rid.len() <= 64, "{rid}");
    }
    let ids: BTreeSet<_> = responses.iter().map(|r| request_id_header(&r.1).unwrap()).collect();
    assert_eq!(ids.len(), responses.len(), "request ids repeat: {ids:?}");
    // Errors: the body's request_id is the header's.
    assert_api_error(&responses[2], 401, Some("unauthorized"), None);
    assert_api_error(&responses[3], 404, Some("not_found"), None);
    assert_api_error(&responses[5], 404, None, None);
}
both_backends!(every_response_carries_a_request_id);

async fn client_request_ids_are_echoed_when_reasonable(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let ok = c.request_id("abc.DEF_123-x").get("/v1/regions").await;
    assert_eq!(request_id_header(&ok.1).as_deref(), Some("abc.DEF_123-x"));
    let err = c.request_id("client-err-7").get("/v1/billing-plans/nope").await;
    assert_api_error(&err, 404, Some("not_found"), None);
    assert_eq!(err.2["request_id"], "client-err-7");
    let max = "a".repeat(64);
    assert_eq!(request_id_header(&c.request_id(&max).get("/v1/regions").await.1), Some(max));

    let valid = |s: &str| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    for bad in ["has spaces in it", "semi;colon", "<script>", &"b".repeat(65)] {
        let resp = c.request_id(bad).get("/v1/regions").await;
        expect_status(&resp, 200);
        let got = request_id_header(&resp.1).expect("a request id");
        assert_ne!(got, bad, "an unreasonable request id was echoed");
        assert!(valid(&got), "generated request id {got:?}");
    }
}
both_backends!(client_request_ids_are_echoed_when_reasonable);

async fn unknown_routes_and_methods_get_api_errors(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    assert_api_error(&c.get("/v1/no-such-endpoint").await, 404, None, None);
    let resp = c.send_raw(Method::PATCH, "/v1/billing-plans", "application/json", b"{}").await;
    assert!(matches!(resp.0.as_u16(), 404 | 405), "{}", resp.2);
    assert_api_error(&resp, resp.0.as_u16(), None, None);
}
both_backends!(unknown_routes_and_methods_get_api_errors);

async fn test_clock_is_off_by_default(backend: Backend) {
    let server = start(backend).await;
    let resp = server.client().post("/v1/_test/clock", &json!({ "advance_seconds": 86400 })).await;
    assert!(resp.0.is_client_error(), "the test clock answered without --test-clock: {} {}", resp.0, resp.2);
    assert_api_error(&resp, resp.0.as_u16(), None, None);
}
both_backends!(test_clock_is_off_by_default);

// ------------------------------------------------------------------- catalogs -----

// R1
async fn r1_region_catalog_lists_us_regions_as_available(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let page = expect_status(&c.get("/v1/regions").await, 200);
    assert_eq!(page["next_page_token"], Value::Null);
    let regions: Vec<matrixhost_api::Region> = serde_json::from_value(page["items"].clone()).expect("regions");
    let by_code: BTreeMap<_, _> = regions.iter().map(|r| (r.code.as_str(), r)).collect();
    assert_eq!(by_code.len(), regions.len(), "duplicate region codes");
    let available: BTreeSet<_> = regions.iter().filter(|r| r.available).map(|r| r.code.as_str()).collect();
    assert_eq!(available, BTreeSet::from(["us-east-1", "us-east-2", "us-west-1", "us-west-2"]));
    for r in &regions {
        if r.available {
            assert_eq!(r.country, "US", "{r:?}");
        }
        assert!(!r.name.is_empty());
    }
    let central = by_code.get("us-central-1").expect("us-central-1 is listed");
    assert!(!central.available);
    assert_eq!(central.country, "US");
    let eu = by_code.get("eu-west-1").expect("eu-west-1 is listed");
    assert!(!eu.available);
    assert_eq!(eu.country, "IE");

    let one = expect_status(&c.get("/v1/regions/us-west-2").await, 200);
    assert_eq!(one, serde_json::to_value(by_code["us-west-2"]).unwrap());
    let eu_one = expect_status(&c.get("/v1/regions/eu-west-1").await, 200);
    assert_eq!(eu_one["available"], false);
    assert_api_error(&c.get("/v1/regions/mars-1").await, 404, Some("not_found"), None);
}
both_backends!(r1_region_catalog_lists_us_regions_as_available);

// R5, R22
async fn r5_plan_catalog_has_the_four_tiers(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let page = expect_status(&c.get("/v1/plans").await, 200);
    assert_eq!(page["next_page_token"], Value::Null);
    let plans: Vec<matrixhost_api::Plan> = serde_json::from_value(page["items"].clone()).expect("plans");
    let by_tier: BTreeMap<_, _> = plans.iter().map(|p| (p.tier.as_str(), p)).collect();
    assert_eq!(by_tier.len(), 4, "{page}");
    // (tier, MAU, storage GB, support tier, e2ee can be disabled)
    let expected = [
        ("nickel", 10, 10, "best_effort", false),
        ("silver", 50, 50, "prioritised", false),
        ("gold", 250, 200, "next_business_day", true),
        ("platinum", 1000, 1000, "next_business_day", true),
    ];
    for (tier, mau, storage, support, e2ee) in expected {
        let p = by_tier.get(tier).unwrap_or_else(|| panic!("no {tier} plan"));
        assert_eq!(p.mau, mau, "{tier} MAU");
        assert_eq!(p.limits.storage_gb, storage, "{tier} storage");
        assert_eq!(p.support_tier.as_str(), support, "{tier} support tier");
        assert_eq!(p.e2ee_can_be_disabled, e2ee, "{tier} e2ee");
        assert!(p.price_per_mau_cents > 0 && p.limits.cpu_millicores > 0 && p.limits.memory_mb > 0, "{p:?}");
        assert!(!p.name.is_empty());
        let one = expect_status(&c.get(&format!("/v1/plans/{tier}")).await, 200);
        assert_eq!(one, serde_json::to_value(p).unwrap());
    }
    assert_api_error(&c.get("/v1/plans/diamond").await, 404, Some("not_found"), None);
}
both_backends!(r5_plan_catalog_has_the_four_tiers);

// ------------------------------------------------------------------ pagination -----

/// Pages through `path` with `limit`, checking page sizes; returns the ids (or `key`s) in order.
async fn page_through(c: &Client, path: &str, limit: usize, key: &str) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let url = match &token {
            Some(t) => format!("{path}?limit={limit}&page_token={}", query_escape(t)),
            None => format!("{path}?limit={limit}"),
        };
        let page = expect_status(&c.get(&url).await, 200);
        pages += 1;
        assert!(pages <= 50, "too many pages");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit, "page larger than the limit: {page}");
        keys.extend(items.iter().map(|i| i[key].as_str().unwrap().to_owned()));
        match page["next_page_token"].as_str() {
            Some(t) => {
                assert_eq!(items.len(), limit, "a page before the last is short: {page}");
                token = Some(t.to_owned());
            }
            None => return (keys, pages),
        }
    }
}

async fn pagination_has_no_duplicates_or_omissions(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let mut created = BTreeSet::new();
    for tier in ["nickel", "silver", "gold", "platinum", "silver"] {
        created.insert(id(&create_billing_plan(&c, tier).await));
    }
    let (ids, pages) = page_through(&c, "/v1/billing-plans", 2, "id").await;
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), created, "duplicates or omissions");
    // Page sizes that divide evenly end cleanly too.
    let (ids5, pages5) = page_through(&c, "/v1/billing-plans", 5, "id").await;
    assert_eq!(ids5, ids, "the order is stable");
    assert!(pages5 <= 2);
    let (ids1, _) = page_through(&c, "/v1/billing-plans", 1, "id").await;
    assert_eq!(ids1, ids);

    let (codes, pages) = page_through(&c, "/v1/regions", 2, "code").await;
    assert_eq!(pages, 3);
    assert_eq!(codes.iter().collect::<BTreeSet<_>>().len(), 6, "{codes:?}");
    let (tiers, _) = page_through(&c, "/v1/plans", 3, "tier").await;
    assert_eq!(tiers.iter().collect::<BTreeSet<_>>().len(), 4, "{tiers:?}");
    // The default page holds everything here.
    let all = expect_status(&c.get("/v1/billing-plans").await, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    assert_eq!(all["next_page_token"], Value::Null);
}
both_backends!(pagination_has_no_duplicates_or_omissions);

async fn pagination_parameters_are_validated(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    for path in ["/v1/billing-plans", "/v1/regions", "/v1/homeservers"] {
        assert_invalid(&c.get(&format!("{path}?limit=0")).await, "limit");
        assert_invalid(&c.get(&format!("{path}?limit=101")).await, "limit");
        assert_rejects_field(&c.get(&format!("{path}?limit=abc")).await, "limit");
        expect_status(&c.get(&format!("{path}?limit=100")).await, 200);
        expect_status(&c.get(&format!("{path}?limit=1")).await, 200);
        // A token of the documented shape is a place to continue from; anything else is refused.
        expect_status(&c.get(&format!("{path}?page_token=garbage-token")).await, 200);
        let resp = c.get(&format!("{path}?page_token=..%2F..%2Fetc")).await;
        assert!(matches!(resp.0.as_u16(), 400 | 422), "{path}: {}", resp.2);
        assert_api_error(&resp, resp.0.as_u16(), None, Some("page_token"));
    }
}
both_backends!(pagination_parameters_are_validated);

// ----------------------------------------------------------------- rate limit -----

async fn rate_limit_answers_429_with_retry_after(backend: Backend) {
    let server = builder(backend).args(["--rate-limit-per-second", "1", "--rate-limit-burst", "3"]).start().await;
    let c = server.client();
    let mut limited = Vec::new();
    let mut ok = 0;
    for _ in 0..10 {
        let resp = c.get("/v1/regions").await;
        match resp.0.as_u16() {
            200 => ok += 1,
            429 => limited.push(resp),
            other => panic!("unexpected status {other}: {}", resp.2),
        }
    }
    assert!(ok >= 1, "no request got through");
    assert!(!limited.is_empty(), "10 quick requests with a burst of 3 were never limited");
    for resp in &limited {
        assert_api_error(resp, 429, Some("rate_limited"), None);
        let retry_after = resp.1.get("retry-after").and_then(|v| v.to_str().ok()).expect("a Retry-After header");
        let secs: u64 = retry_after.parse().unwrap_or_else(|_| panic!("Retry-After {retry_after:?} is not whole seconds"));
        assert!(secs >= 1, "Retry-After {secs}");
    }
}
both_backends!(rate_limit_answers_429_with_retry_after);

// ------------------------------------------------------------ tenant isolation -----

/// (status, code, message with `id` replaced) of a response.
fn outcome(resp: &Resp, id: &str) -> (u16, String, String) {
    let code = resp.2["code"].as_str().unwrap_or("").to_owned();
    let msg = resp.2["message"].as_str().unwrap_or("").replace(id, "<id>");
    (resp.0.as_u16(), code, msg)
}

// R3
async fn r3_tenants_never_see_each_others_resources(backend: Backend) {
    let server = start(backend).await;
    let a = server.client();
    let b = server.client_with_token(&server.create_token(&unique_name("tenantb")).await);

    let hs = create_homeserver(&a, "chat", "silver").await;
    let hs_id = id(&hs);
    let bp_id = hs["billing_plan_id"].as_str().unwrap().to_owned();
    let spare_bp = create_billing_plan(&a, "gold").await;
    let user = create_reserved_user(&a, &hs, "alice@example.com").await;
    let user_id = id(&user);
    expect_status(&a.post(&format!("/v1/homeservers/{hs_id}/backup-policy"), &json!({})).await, 201);

    let a_paths = [
        format!("/v1/billing-plans/{bp_id}"),
        format!("/v1/billing-plans/{}", id(&spare_bp)),
        format!("/v1/homeservers/{hs_id}"),
        format!("/v1/homeservers/{hs_id}/reserved-users"),
        format!("/v1/homeservers/{hs_id}/reserved-users/{user_id}"),
        format!("/v1/homeservers/{hs_id}/backup-policy"),
    ];
    let mut snapshot = Vec::new();
    for p in &a_paths {
        snapshot.push(expect_status(&a.get(p).await, 200));
    }

    // Each of A's resources, next to the same path with an id that does not exist:
    // (A's path, the missing path, the id that differs, the missing id, a PUT body).
    let (fake_hs, fake_bp, fake_user) = (sibling_id(&hs_id), sibling_id(&bp_id), sibling_id(&user_id));
    let cases: Vec<(String, String, &str, &str, Option<Value>)> = vec![
        (format!("/v1/billing-plans/{bp_id}"), format!("/v1/billing-plans/{fake_bp}"), &bp_id, &fake_bp, Some(json!({ "plan": "gold" }))),
        (format!("/v1/homeservers/{hs_id}"), format!("/v1/homeservers/{fake_hs}"), &hs_id, &fake_hs, Some(settings_of(&hs))),
        (
            format!("/v1/homeservers/{hs_id}/reserved-users/{user_id}"),
            format!("/v1/homeservers/{hs_id}/reserved-users/{fake_user}"),
            &user_id,
            &fake_user,
            Some(json!({ "admin": true })),
        ),
        (
            format!("/v1/homeservers/{hs_id}/reserved-users/{user_id}"),
            format!("/v1/homeservers/{fake_hs}/reserved-users/{user_id}"),
            &hs_id,
            &fake_hs,
            Some(json!({ "admin": true })),
        ),
        (format!("/v1/homeservers/{hs_id}/backup-policy"), format!("/v1/homeservers/{fake_hs}/backup-policy"), &hs_id, &fake_hs, Some(json!({}))),
        (format!("/v1/homeservers/{hs_id}/reserved-users"), format!("/v1/homeservers/{fake_hs}/reserved-users"), &hs_id, &fake_hs, None),
        (format!("/v1/homeservers/{hs_id}/backups"), format!("/v1/homeservers/{fake_hs}/backups"), &hs_id, &fake_hs, None),
    ];
    for (real, fake, real_id, fake_id, put_body) in &cases {
        let get_real = b.get(real).await;
        assert_api_error(&get_real, 404, Some("not_found"), None);
        assert_eq!(outcome(&get_real, real_id), outcome(&b.get(fake).await, fake_id), "GET {real} vs {fake}");
        if let Some(body) = put_body {
            let put_real = b.put(real, body).await;
            assert_api_error(&put_real, 404, Some("not_found"), None);
            assert_eq!(outcome(&put_real, real_id), outcome(&b.put(fake, body).await, fake_id), "PUT {real}");
            let del_real = b.delete(real).await;
            assert_api_error(&del_real, 404, Some("not_found"), None);
            assert_eq!(outcome(&del_real, real_id), outcome(&b.delete(fake).await, fake_id), "DELETE {real}");
        }
    }
    // Creating under A's homeserver.
    for sub in ["reserved-users", "backup-policy"] {
        let body = if sub == "reserved-users" { json!({ "email": "mallory@example.com" }) } else { json!({}) };
        let real = b.post(&format!("/v1/homeservers/{hs_id}/{sub}"), &body).await;
        assert_api_error(&real, 404, Some("not_found"), None);
        let fake = b.post(&format!("/v1/homeservers/{fake_hs}/{sub}"), &body).await;
        assert_eq!(outcome(&real, &hs_id), outcome(&fake, &fake_hs), "POST {sub}");
    }
    // Using A's billing plan.
    let real = b.post("/v1/homeservers", &homeserver_body("stolen", &id(&spare_bp))).await;
    assert_api_error(&real, 404, Some("not_found"), Some("billing_plan_id"));
    let fake = b.post("/v1/homeservers", &homeserver_body("stolen", &sibling_id(&id(&spare_bp)))).await;
    assert_eq!(outcome(&real, &id(&spare_bp)), outcome(&fake, &sibling_id(&id(&spare_bp))));

    // B's lists are empty; a name filter finds nothing of A's.
    assert_eq!(list_all(&b, "/v1/billing-plans").await.len(), 0);
    assert_eq!(list_all(&b, "/v1/homeservers").await.len(), 0);
    assert_eq!(list_all(&b, "/v1/homeservers?name=chat").await.len(), 0);

    // Nothing of A's changed.
    for (p, was) in a_paths.iter().zip(&snapshot) {
        assert_eq!(&expect_status(&a.get(p).await, 200), was, "{p} changed");
    }

    // B has its own namespace: the same homeserver name is free there.
    let theirs = create_homeserver(&b, "chat", "silver").await;
    assert_ne!(theirs["server_name"], hs["server_name"]);
    assert_eq!(list_all(&b, "/v1/homeservers").await.len(), 1);
    assert_eq!(list_all(&a, "/v1/homeservers").await.len(), 1);
    assert_eq!(list_all(&a, "/v1/billing-plans").await.len(), 2);
}
both_backends!(r3_tenants_never_see_each_others_resources);

// --------------------------------------------------------------------- restart -----

async fn restart_loses_nothing(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let other_token = server.create_token(&unique_name("other")).await;
    let bp = create_billing_plan_with(&c, json!({ "plan": "gold", "additional_users": 3, "payment_method_id": "pm_123abc" })).await;
    let mut body = homeserver_body("chat", &id(&bp));
    body["registration"] = json!("email_domains");
    body["allowed_email_domains"] = json!(["example.com"]);
    body["deletion_protection"] = json!(true);
    let hs = create_homeserver_with(&c, body).await;
    let user = expect_status(
        &c.post(
            &format!("{}/reserved-users", hs_path(&hs)),
            &json!({ "email": "alice@example.com", "localpart": "alice", "display_name": "Alice", "admin": true, "initial_password": PASSWORD }),
        )
        .await,
        201,
    );
    expect_status(&c.post(&format!("{}/backup-policy", hs_path(&hs)), &json!({ "window_start": "04:30", "retention_days": 45 })).await, 201);
    // A pending downgrade is state too.
    expect_status(&c.put(&format!("/v1/billing-plans/{}", id(&bp)), &json!({ "plan": "silver", "additional_users": 3, "payment_method_id": "pm_123abc" })).await, 200);
    let key_body = json!({ "plan": "nickel" });
    let keyed = expect_status(&c.idempotency_key("before-restart").post("/v1/billing-plans", &key_body).await, 201);

    let paths = [
        "/v1/organization".to_owned(),
        "/v1/billing-plans".to_owned(),
        format!("/v1/billing-plans/{}", id(&bp)),
        "/v1/homeservers".to_owned(),
        hs_path(&hs),
        format!("{}/reserved-users", hs_path(&hs)),
        format!("{}/reserved-users/{}", hs_path(&hs), id(&user)),
        format!("{}/backup-policy", hs_path(&hs)),
        format!("{}/backups", hs_path(&hs)),
    ];
    let mut before = Vec::new();
    for p in &paths {
        before.push(expect_status(&c.get(p).await, 200));
    }

    let server = server.restart().await;
    let c = server.client();
    for (p, was) in paths.iter().zip(&before) {
        let now = expect_status(&c.get(p).await, 200);
        assert_eq!(&now, was, "{p} changed across the restart");
    }
    // Tokens survive; idempotency keys too.
    expect_status(&server.client_with_token(&other_token).get("/v1/organization").await, 200);
    let replay = c.idempotency_key("before-restart").post("/v1/billing-plans", &key_body).await;
    assert_eq!(expect_status(&replay, 201), keyed, "an idempotent retry after a restart created something new");
    assert_eq!(list_all(&c, "/v1/billing-plans").await.len(), 2);
    // And the server still writes.
    let mut settings = settings_of(&hs);
    settings["guest_access"] = json!(true);
    assert_eq!(expect_status(&c.if_version(1).put(&hs_path(&hs), &settings).await, 200)["version"], 2);
}
both_backends!(restart_loses_nothing);

// ------------------------------------------------------------------------ logs -----

async fn logs_carry_request_ids_and_no_secrets(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let org_token = server.create_token(&unique_name("logs")).await;
    expect_status(&c.request_id("test-req-123").get("/v1/regions").await, 200);
    assert_api_error(&c.request_id("test-req-404").get("/v1/billing-plans/nope").await, 404, None, None);
    assert_api_error(&c.without_token().request_id("test-req-401").get("/v1/regions").await, 401, None, None);
    let hs = create_homeserver(&server.client_with_token(&org_token), "chat", "silver").await;
    let users = format!("{}/reserved-users", hs_path(&hs));
    expect_status(
        &server
            .client_with_token(&org_token)
            .request_id("test-req-201")
            .post(&users, &json!({ "email": "alice@example.com", "localpart": "alice", "initial_password": PASSWORD }))
            .await,
        201,
    );
    assert_invalid(&server.client_with_token(&org_token).post("/v1/homeservers", &json!({ "name": "Bad_Name" })).await, "name");

    // The request's log line may be written just after the response: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let log = loop {
        let log = strip_ansi(&server.log());
        if log.contains("test-req-201") || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for rid in ["test-req-123", "test-req-404", "test-req-401", "test-req-201"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("request_id={rid}")) || (l.contains("request_id") && l.contains(rid))),
            "no log line carries request id {rid}:\n{log}"
        );
    }
    // Lines written while handling a request (they name its path) carry its request id.
    let request_lines: Vec<&str> =
        log.lines().filter(|l| l.contains("/v1/") || l.contains("/healthz") || l.contains("/openapi.json")).collect();
    assert!(!request_lines.is_empty(), "the log has no request lines:\n{log}");
    for line in &request_lines {
        assert!(line.contains("request_id="), "a request log line without request_id=: {line}");
    }
    for (what, secret) in [("the dev token", server.dev_token()), ("an org token", org_token.as_str()), ("an initial password", PASSWORD)] {
        assert!(!log.contains(secret), "the log contains {what}");
    }
}
both_backends!(logs_carry_request_ids_and_no_secrets);

// ------------------------------------------------------ router and document -----

/// The router and the served OpenAPI document agree: every documented operation is routed (it
/// may answer 404 for a made-up id, never 405), and every other method on a documented path is
/// 405. (schemathesis, in scripts/contract.sh, checks the answers against the document.)
async fn the_router_serves_exactly_the_documented_operations(backend: Backend) {
    let server = builder(backend).args(["--rate-limit-per-second", "10000", "--rate-limit-burst", "10000"]).start().await;
    let c = server.client();
    let doc = expect_status(&c.get("/openapi.json").await, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    for (path, item) in paths {
        let concrete: String = path.split('/').map(|seg| if seg.starts_with('{') { "made-up-1" } else { seg }).collect::<Vec<_>>().join("/");
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let documented = item.get(method.as_str().to_ascii_lowercase()).is_some();
            let resp = c.send_raw(method.clone(), &concrete, "application/json", b"{}").await;
            let status = resp.0.as_u16();
            if documented {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
            } else {
                assert_eq!(status, 405, "{method} {path} is routed ({status}) but not documented");
            }
        }
    }
}
both_backends!(the_router_serves_exactly_the_documented_operations);
