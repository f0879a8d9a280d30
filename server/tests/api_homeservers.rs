//! `/v1/homeservers` (R1, R2, R5, R9, R20, R22), updates, deletion, concurrency, idempotency.

mod common;
use common::*;

const HS: &str = "/v1/homeservers";

/// A server with a billing plan on `tier`; returns (server, billing plan id).
async fn with_plan(backend: Backend, tier: &str) -> (TestServer, String) {
    let server = start(backend).await;
    let bp = create_billing_plan(&server.client(), tier).await;
    (server, id(&bp))
}

/// POSTs `homeserver_body` changed by `edit`, expects a 422 naming `field`; returns the message.
async fn refused(c: &Client, bp: &str, field: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut body = homeserver_body("chat", bp);
    edit(&mut body);
    let msg = assert_invalid(&c.post(HS, &body).await, field);
    assert_eq!(list_all(c, HS).await.len(), 0, "a refused create made a homeserver");
    msg
}

/// Like [`refused`], for a well-formed request the plan does not allow: 409 `plan_limit`.
async fn refused_by_plan(c: &Client, bp: &str, field: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut body = homeserver_body("chat", bp);
    edit(&mut body);
    let msg = assert_api_error(&c.post(HS, &body).await, 409, Some("plan_limit"), Some(field));
    assert_eq!(list_all(c, HS).await.len(), 0, "a refused create made a homeserver");
    msg
}

// R20 and the documented defaults.
async fn r20_homeserver_create_records_terms_and_defaults(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    let before = now();
    let resp = c.post(HS, &homeserver_body("chat", &bp)).await;
    let after = now();
    let hs = expect_status(&resp, 201);
    let _: matrixhost_api::Homeserver = serde_json::from_value(hs.clone()).expect("a Homeserver");
    assert_eq!(hs["name"], "chat");
    assert_eq!(hs["region"], "us-east-1");
    assert_eq!(hs["billing_plan_id"], bp.as_str());
    assert_eq!(hs["server_name"], format!("chat.dev.{PLATFORM_DOMAIN}"));
    assert_eq!(hs["status"], "provisioning", "no runtime: it stays provisioning");
    assert_eq!(hs["federation_enabled"], true);
    assert_eq!(hs["registration"], "invite_only");
    assert_eq!(hs["allowed_email_domains"], json!([]));
    assert_eq!(hs["guest_access"], false);
    assert_eq!(hs["encryption_by_default"], true);
    assert_eq!(hs["deletion_protection"], false);
    assert_eq!(hs["volume"], json!({ "size_gb": 10, "encrypted": true }));
    assert_eq!(hs["data_controller"], json!({ "entity_name": "Example Corp", "admin_email": "dpo@example.com" }));
    assert_eq!(hs["version"], 1);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"1\""));
    // R20: the terms version accepted, and when.
    assert!(hs["terms_version"].as_str().is_some_and(|v| !v.is_empty()), "{hs}");
    assert_between(timestamp(&hs["terms_accepted_at"]), before, after, 5);

    let got = expect_status(&c.get(&hs_path(&hs)).await, 200);
    assert_eq!(got["id"], hs["id"]);
    assert_eq!(got["terms_version"], hs["terms_version"]);
    assert_eq!(got["terms_accepted_at"], hs["terms_accepted_at"]);
    assert_eq!(got["server_name"], hs["server_name"]);
    assert_eq!(got["status"], "provisioning");
    let items = list_all(&c, HS).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], hs["id"]);
}
both_backends!(r20_homeserver_create_records_terms_and_defaults);

async fn homeserver_takes_an_explicit_server_name(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let mut body = homeserver_body("chat", &bp);
    body["server_name"] = json!("chat.example.com");
    let hs = create_homeserver_with(&server.client(), body).await;
    assert_eq!(hs["server_name"], "chat.example.com");
    let bad = {
        let bp2 = create_billing_plan(&server.client(), "silver").await;
        let mut body = homeserver_body("other", &id(&bp2));
        body["server_name"] = json!("Chat.Example.com:8448");
        server.client().post(HS, &body).await
    };
    assert_invalid(&bad, "server_name");
}
both_backends!(homeserver_takes_an_explicit_server_name);

// R9
async fn r9_email_domains_are_normalised(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let mut body = homeserver_body("chat", &bp);
    body["registration"] = json!("email_domains");
    body["allowed_email_domains"] = json!(["Zeta.example.COM", "acme.com", "ACME.com"]);
    body["guest_access"] = json!(true);
    body["federation_enabled"] = json!(false);
    let hs = create_homeserver_with(&server.client(), body).await;
    assert_eq!(hs["registration"], "email_domains");
    assert_eq!(hs["allowed_email_domains"], json!(["acme.com", "zeta.example.com"]));
    assert_eq!(hs["guest_access"], true);
    assert_eq!(hs["federation_enabled"], false);
}
both_backends!(r9_email_domains_are_normalised);

async fn homeservers_filter_by_name(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let a = create_homeserver(&c, "alpha", "silver").await;
    create_homeserver(&c, "beta", "silver").await;
    let page = expect_status(&c.get(&format!("{HS}?name=alpha")).await, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["id"], a["id"]);
    let none = expect_status(&c.get(&format!("{HS}?name=gamma")).await, 200);
    assert_eq!(none, json!({ "items": [], "next_page_token": null }));
    assert_eq!(list_all(&c, HS).await.len(), 2);
}
both_backends!(homeservers_filter_by_name);

// R1
async fn r1_region_must_be_in_the_us(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let msg = refused(&server.client(), &bp, "region", |b| b["region"] = json!("eu-west-1")).await;
    assert!(msg.contains("R1"), "{msg}");
}
both_backends!(r1_region_must_be_in_the_us);

// R1
async fn r1_region_must_be_available_us(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    let mut body = homeserver_body("chat", &bp);
    body["region"] = json!("us-central-1");
    // A region the catalog lists but has not opened: a conflict with the catalog, not a bad field.
    let resp = c.post(HS, &body).await;
    let msg = assert_api_error(&resp, 409, Some("region_unavailable"), Some("region"));
    assert!(msg.contains("not available"), "{msg}");
    assert!(msg.contains("R1"), "{msg}");
    assert_eq!(list_all(&c, HS).await.len(), 0, "a refused create made a homeserver");
}
both_backends!(r1_region_must_be_available_us);

// R1
async fn r1_unknown_regions_are_refused(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    refused(&c, &bp, "region", |b| b["region"] = json!("mars-1")).await;
    let msg = refused(&c, &bp, "region", |b| b["region"] = json!("us-west-9")).await;
    assert!(msg.contains("R1"), "{msg}");
    refused(&c, &bp, "region", |b| b["region"] = json!("US-EAST-1")).await;
    // Every available US region works.
    for (i, region) in ["us-east-1", "us-east-2", "us-west-1", "us-west-2"].into_iter().enumerate() {
        let plan = create_billing_plan(&c, "silver").await;
        let mut body = homeserver_body(&format!("hs{i}"), &id(&plan));
        body["region"] = json!(region);
        assert_eq!(create_homeserver_with(&c, body).await["region"], region);
    }
}
both_backends!(r1_unknown_regions_are_refused);

// R2
async fn r2_unencrypted_volume_is_refused(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let msg = refused(&server.client(), &bp, "volume.encrypted", |b| b["volume"]["encrypted"] = json!(false)).await;
    assert!(msg.contains("R2"), "{msg}");
    // Omitted means encrypted.
    let mut body = homeserver_body("chat", &bp);
    body["volume"] = json!({ "size_gb": 5 });
    let hs = create_homeserver_with(&server.client(), body).await;
    assert_eq!(hs["volume"], json!({ "size_gb": 5, "encrypted": true }));
}
both_backends!(r2_unencrypted_volume_is_refused);

// R5
async fn r5_volume_must_fit_the_plans_storage(backend: Backend) {
    let (server, bp) = with_plan(backend, "nickel").await;
    let c = server.client();
    refused_by_plan(&c, &bp, "volume.size_gb", |b| b["volume"]["size_gb"] = json!(11)).await;
    refused(&c, &bp, "volume.size_gb", |b| b["volume"]["size_gb"] = json!(0)).await;
    refused(&c, &bp, "volume.size_gb", |b| b["volume"]["size_gb"] = json!(-5)).await;
    // Exactly the limit is fine.
    let hs = create_homeserver_with(&c, homeserver_body("chat", &bp)).await;
    assert_eq!(hs["volume"]["size_gb"], 10);
}
both_backends!(r5_volume_must_fit_the_plans_storage);

// R9
async fn r9_email_domain_registration_needs_domains(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    let msg = refused(&c, &bp, "allowed_email_domains", |b| b["registration"] = json!("email_domains")).await;
    assert!(msg.contains("R9"), "{msg}");
    let msg = refused(&c, &bp, "allowed_email_domains", |b| {
        b["registration"] = json!("email_domains");
        b["allowed_email_domains"] = json!([]);
    })
    .await;
    assert!(msg.contains("R9"), "{msg}");
    refused(&c, &bp, "registration", |b| b["registration"] = json!("closed")).await;
}
both_backends!(r9_email_domain_registration_needs_domains);

// R22
async fn r22_nickel_keeps_e2ee_on(backend: Backend) {
    let (server, bp) = with_plan(backend, "nickel").await;
    let msg = refused_by_plan(&server.client(), &bp, "encryption_by_default", |b| b["encryption_by_default"] = json!(false)).await;
    assert!(msg.contains("R22"), "{msg}");
}
both_backends!(r22_nickel_keeps_e2ee_on);

// R22
async fn r22_gold_may_turn_e2ee_off(backend: Backend) {
    let (server, bp) = with_plan(backend, "gold").await;
    let mut body = homeserver_body("chat", &bp);
    body["encryption_by_default"] = json!(false);
    let hs = create_homeserver_with(&server.client(), body).await;
    assert_eq!(hs["encryption_by_default"], false);
}
both_backends!(r22_gold_may_turn_e2ee_off);

async fn homeserver_name_must_be_a_dns_label(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    refused(&c, &bp, "name", |b| b["name"] = json!("Bad_Name")).await;
    refused(&c, &bp, "name", |b| b["name"] = json!("-chat")).await;
    refused(&c, &bp, "name", |b| b["name"] = json!("")).await;
}
both_backends!(homeserver_name_must_be_a_dns_label);

async fn homeserver_name_is_unique_in_the_organization(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    create_homeserver(&c, "chat", "silver").await;
    let bp2 = create_billing_plan(&c, "silver").await;
    let resp = c.post(HS, &homeserver_body("chat", &id(&bp2))).await;
    assert_api_error(&resp, 409, Some("conflict"), None);
    assert_eq!(list_all(&c, HS).await.len(), 1);
}
both_backends!(homeserver_name_is_unique_in_the_organization);

async fn homeserver_needs_an_existing_billing_plan(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    // A billing plan that does not exist (here) is not found, and the answer names the field.
    for missing in [sibling_id(&bp), "no-such-plan".to_owned()] {
        let resp = c.post(HS, &homeserver_body("chat", &missing)).await;
        assert_api_error(&resp, 404, Some("not_found"), Some("billing_plan_id"));
    }
    assert_eq!(list_all(&c, HS).await.len(), 0, "a refused create made a homeserver");
}
both_backends!(homeserver_needs_an_existing_billing_plan);

async fn one_homeserver_per_billing_plan(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    let first = create_homeserver_with(&c, homeserver_body("first", &bp)).await;
    let resp = c.post(HS, &homeserver_body("second", &bp)).await;
    let msg = assert_api_error(&resp, 409, None, None);
    assert!(msg.contains("first"), "the message should name the homeserver using the plan: {msg}");
    let items = list_all(&c, HS).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], first["id"]);
}
both_backends!(one_homeserver_per_billing_plan);

async fn malformed_and_unknown_input_is_refused(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    let resp = c.send_raw(Method::POST, HS, "application/json", b"{\"name\": \"chat\",").await;
    assert_api_error(&resp, 400, Some("invalid_json"), None);
    let resp = c.send_raw(Method::POST, HS, "application/json", b"not json at all").await;
    assert_api_error(&resp, 400, Some("invalid_json"), None);

    let mut body = homeserver_body("chat", &bp);
    body["colour"] = json!("red");
    assert_rejects_field(&c.post(HS, &body).await, "colour");
    let mut body = homeserver_body("chat", &bp);
    body["volume"]["colour"] = json!("red");
    assert_rejects_field(&c.post(HS, &body).await, "colour");

    let mut body = homeserver_body("chat", &bp);
    body.as_object_mut().unwrap().remove("region");
    assert_invalid(&c.post(HS, &body).await, "region");
    let mut body = homeserver_body("chat", &bp);
    body["federation_enabled"] = json!("yes");
    assert_rejects_field(&c.post(HS, &body).await, "federation_enabled");
    assert_eq!(list_all(&c, HS).await.len(), 0);
}
both_backends!(malformed_and_unknown_input_is_refused);

// ------------------------------------------------------------------------- updates -----

// R9, R2
async fn homeserver_update_changes_settings(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "gold").await;
    let settings = json!({
        "federation_enabled": false,
        "registration": "email_domains",
        "allowed_email_domains": ["B.example.com", "a.example.com"],
        "guest_access": true,
        "encryption_by_default": false,
        "deletion_protection": true,
        "volume": { "size_gb": 20, "encrypted": true },
        "data_controller": { "entity_name": "Example Holdings LLC", "admin_email": "Privacy@Example.com" }
    });
    let resp = c.put(&hs_path(&hs), &settings).await;
    let v2 = expect_status(&resp, 200);
    assert_eq!(v2["version"], 2);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"2\""));
    assert_eq!(v2["federation_enabled"], false);
    assert_eq!(v2["registration"], "email_domains");
    assert_eq!(v2["allowed_email_domains"], json!(["a.example.com", "b.example.com"]));
    assert_eq!(v2["guest_access"], true);
    assert_eq!(v2["encryption_by_default"], false);
    assert_eq!(v2["deletion_protection"], true);
    assert_eq!(v2["volume"], json!({ "size_gb": 20, "encrypted": true }));
    assert_eq!(v2["data_controller"]["admin_email"], "privacy@example.com");
    // What cannot change, did not.
    for key in ["id", "name", "server_name", "region", "billing_plan_id", "terms_version", "terms_accepted_at", "created_at"] {
        assert_eq!(v2[key], hs[key], "{key} changed");
    }
    let got = expect_status(&c.get(&hs_path(&hs)).await, 200);
    assert_eq!(got["version"], 2);
    assert_eq!(got["allowed_email_domains"], v2["allowed_email_domains"]);

    // Version goes up by one per update.
    let mut again = settings_of(&v2);
    again["guest_access"] = json!(false);
    let v3 = expect_status(&c.put(&hs_path(&hs), &again).await, 200);
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["guest_access"], false);
}
both_backends!(homeserver_update_changes_settings);

async fn homeserver_update_cannot_rename(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let mut body = settings_of(&hs);
    body["name"] = json!("renamed");
    assert_rejects_field(&c.put(&hs_path(&hs), &body).await, "name");
    let mut body = settings_of(&hs);
    body["region"] = json!("us-west-2");
    assert_rejects_field(&c.put(&hs_path(&hs), &body).await, "region");
    let got = expect_status(&c.get(&hs_path(&hs)).await, 200);
    assert_eq!(got["name"], "chat");
    assert_eq!(got["version"], 1);
}
both_backends!(homeserver_update_cannot_rename);

async fn homeserver_volumes_only_grow(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "gold").await;
    let mut body = settings_of(&hs);
    body["volume"]["size_gb"] = json!(30);
    expect_status(&c.put(&hs_path(&hs), &body).await, 200);
    body["volume"]["size_gb"] = json!(15);
    assert_api_error(&c.put(&hs_path(&hs), &body).await, 409, Some("volume_shrink"), Some("volume.size_gb"));
    let got = expect_status(&c.get(&hs_path(&hs)).await, 200);
    assert_eq!(got["volume"]["size_gb"], 30);
    assert_eq!(got["version"], 2);
}
both_backends!(homeserver_volumes_only_grow);

// R2, R5, R9, R22 on update.
async fn homeserver_update_applies_the_rules(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "nickel").await;
    let path = hs_path(&hs);
    let mut body = settings_of(&hs);
    body["volume"]["encrypted"] = json!(false);
    assert!(assert_invalid(&c.put(&path, &body).await, "volume.encrypted").contains("R2"));
    let mut body = settings_of(&hs);
    body["volume"]["size_gb"] = json!(11);
    assert_api_error(&c.put(&path, &body).await, 409, Some("plan_limit"), Some("volume.size_gb"));
    let mut body = settings_of(&hs);
    body["encryption_by_default"] = json!(false);
    assert!(assert_api_error(&c.put(&path, &body).await, 409, Some("plan_limit"), Some("encryption_by_default")).contains("R22"));
    let mut body = settings_of(&hs);
    body["registration"] = json!("email_domains");
    assert!(assert_invalid(&c.put(&path, &body).await, "allowed_email_domains").contains("R9"));
    let got = expect_status(&c.get(&path).await, 200);
    assert_eq!(got["version"], 1, "refused updates change nothing");
}
both_backends!(homeserver_update_applies_the_rules);

// ------------------------------------------------------------------------ deletion -----

async fn deletion_protection_blocks_delete(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    let mut body = homeserver_body("chat", &bp);
    body["deletion_protection"] = json!(true);
    let hs = create_homeserver_with(&c, body).await;
    let path = hs_path(&hs);
    let user = create_reserved_user(&c, &hs, "alice@example.com").await;
    let user_path = format!("{path}/reserved-users/{}", id(&user));
    expect_status(&c.post(&format!("{path}/backup-policy"), &json!({})).await, 201);

    assert_api_error(&c.delete(&path).await, 409, Some("deletion_protected"), None);
    expect_status(&c.get(&path).await, 200);
    expect_status(&c.get(&user_path).await, 200);

    let mut settings = settings_of(&hs);
    settings["deletion_protection"] = json!(false);
    expect_status(&c.put(&path, &settings).await, 200);
    let resp = c.delete(&path).await;
    assert_eq!(resp.0.as_u16(), 204, "{}", resp.2);
    assert_api_error(&c.get(&path).await, 404, Some("not_found"), None);
    assert_api_error(&c.get(&user_path).await, 404, Some("not_found"), None);
    assert_api_error(&c.get(&format!("{path}/backup-policy")).await, 404, Some("not_found"), None);
    assert_api_error(&c.get(&format!("{path}/reserved-users")).await, 404, Some("not_found"), None);
    assert_eq!(list_all(&c, HS).await.len(), 0);

    // The billing plan is free again: it can take a new homeserver of the same name.
    let again = create_homeserver_with(&c, homeserver_body("chat", &bp)).await;
    assert_ne!(again["id"], hs["id"]);
    assert_eq!(list_all(&c, &format!("{}/reserved-users", hs_path(&again))).await.len(), 0);
}
both_backends!(deletion_protection_blocks_delete);

// ------------------------------------------------------------- concurrency, idempotency -----

async fn homeserver_if_match_rejects_stale_versions(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let path = hs_path(&hs);
    let mut body = settings_of(&hs);
    body["guest_access"] = json!(true);
    let v2 = expect_status(&c.if_version(1).put(&path, &body).await, 200);
    body["guest_access"] = json!(false);
    assert_api_error(&c.if_version(1).put(&path, &body).await, 409, Some("version_conflict"), None);
    assert_api_error(&c.if_version(1).delete(&path).await, 409, Some("version_conflict"), None);
    let got = expect_status(&c.get(&path).await, 200);
    assert_eq!(got["guest_access"], true);
    assert_eq!(got["version"], v2["version"]);
    let v3 = expect_status(&c.if_version(2).put(&path, &body).await, 200);
    assert_eq!(v3["version"], 3);
    assert_eq!(c.if_version(3).delete(&path).await.0.as_u16(), 204);
}
both_backends!(homeserver_if_match_rejects_stale_versions);

async fn homeserver_idempotent_create(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client().idempotency_key("hs-create-1");
    let body = homeserver_body("chat", &bp);
    let first = c.post(HS, &body).await;
    let created = expect_status(&first, 201);
    let retry = c.post(HS, &body).await;
    assert_eq!(retry.0, first.0);
    assert_eq!(retry.2, created);
    assert_eq!(list_all(&server.client(), HS).await.len(), 1);
    let mut other = body.clone();
    other["name"] = json!("other");
    assert_api_error(&c.post(HS, &other).await, 409, Some("idempotency_key_reused"), None);
    assert_eq!(list_all(&server.client(), HS).await.len(), 1);
}
both_backends!(homeserver_idempotent_create);

async fn homeserver_idempotent_concurrent_retries(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client().idempotency_key("hs-concurrent");
    let body = homeserver_body("chat", &bp);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (c, body) = (c.clone(), body.clone());
        set.spawn(async move { c.post(HS, &body).await });
    }
    let mut ids = Vec::new();
    while let Some(resp) = set.join_next().await {
        let resp = resp.expect("task");
        match resp.0.as_u16() {
            201 => ids.push(id(&resp.2)),
            // A retry that races the first request may be told to retry later.
            409 => {
                assert_api_error(&resp, 409, None, None);
            }
            other => panic!("unexpected status {other}: {}", resp.2),
        }
    }
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    assert_eq!(list_all(&server.client(), HS).await.len(), 1);
}
both_backends!(homeserver_idempotent_concurrent_retries);

async fn one_homeserver_per_billing_plan_under_concurrent_creates(backend: Backend) {
    let (server, bp) = with_plan(backend, "silver").await;
    let c = server.client();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..5 {
        let (c, body) = (c.clone(), homeserver_body(&format!("racer{i}"), &bp));
        set.spawn(async move { c.post(HS, &body).await });
    }
    let mut created = 0;
    while let Some(resp) = set.join_next().await {
        let resp = resp.expect("task");
        match resp.0.as_u16() {
            201 => created += 1,
            _ => {
                assert_api_error(&resp, 409, None, None);
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(list_all(&c, HS).await.len(), 1, "two homeservers share a billing plan");
}
both_backends!(one_homeserver_per_billing_plan_under_concurrent_creates);

async fn homeserver_names_stay_unique_under_concurrent_creates(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(homeserver_body("chat", &id(&create_billing_plan(&c, "silver").await)));
    }
    let mut set = tokio::task::JoinSet::new();
    for body in bodies {
        let c = c.clone();
        set.spawn(async move { c.post(HS, &body).await });
    }
    let mut created = 0;
    while let Some(resp) = set.join_next().await {
        let resp = resp.expect("task");
        match resp.0.as_u16() {
            201 => created += 1,
            _ => {
                assert_api_error(&resp, 409, Some("conflict"), None);
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(list_all(&c, HS).await.len(), 1, "two homeservers share a name");
}
both_backends!(homeserver_names_stay_unique_under_concurrent_creates);
