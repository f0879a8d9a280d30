//! `/v1/homeservers/{id}/reserved-users` (R8, R10, R14).

mod common;
use common::*;

fn users_path(hs: &Value) -> String {
    format!("{}/reserved-users", hs_path(hs))
}

fn user_path(hs: &Value, user: &Value) -> String {
    format!("{}/{}", users_path(hs), id(user))
}

async fn reserved_user_create_normalises_and_reads_back(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let resp = c
        .post(
            &users_path(&hs),
            &json!({ "email": "Alice@Example.COM", "localpart": "alice", "display_name": "Alice Liddell", "admin": true }),
        )
        .await;
    let user = expect_status(&resp, 201);
    let _: matrixhost_api::ReservedUser = serde_json::from_value(user.clone()).expect("a ReservedUser");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["homeserver_id"], hs["id"]);
    assert_eq!(user["localpart"], "alice");
    assert_eq!(user["user_id"], format!("@alice:{}", hs["server_name"].as_str().unwrap()));
    assert_eq!(user["user_id"], format!("@alice:chat.dev.{PLATFORM_DOMAIN}"));
    assert_eq!(user["display_name"], "Alice Liddell");
    assert_eq!(user["admin"], true);
    assert_eq!(user["version"], 1);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"1\""));

    assert_eq!(expect_status(&c.get(&user_path(&hs, &user)).await, 200), user);
    assert_eq!(list_all(&c, &users_path(&hs)).await, vec![user.clone()]);

    // Without a localpart there is no Matrix account yet; admin defaults to false.
    let bob = create_reserved_user(&c, &hs, "bob@example.com").await;
    assert_eq!(bob["localpart"], Value::Null);
    assert_eq!(bob["user_id"], Value::Null);
    assert_eq!(bob["display_name"], Value::Null);
    assert_eq!(bob["admin"], false);
}
both_backends!(reserved_user_create_normalises_and_reads_back);

// R14
async fn r14_initial_password_is_never_returned_logged_or_stored(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let resp = c
        .post(&users_path(&hs), &json!({ "email": "carol@example.com", "localpart": "carol", "initial_password": PASSWORD }))
        .await;
    let user = expect_status(&resp, 201);
    assert!(user.get("initial_password").is_none(), "{user}");
    expect_status(&c.get(&user_path(&hs, &user)).await, 200);
    list_all(&c, &users_path(&hs)).await;
    expect_status(&c.put(&user_path(&hs, &user), &json!({ "admin": true })).await, 200);
    // The idempotent replay path must not bring it back either.
    let k = c.idempotency_key("pw-key");
    let body = json!({ "email": "dave@example.com", "initial_password": PASSWORD });
    expect_status(&k.post(&users_path(&hs), &body).await, 201);
    expect_status(&k.post(&users_path(&hs), &body).await, 201);

    for body in server.transcript() {
        assert!(!body.contains(PASSWORD), "a response contains the initial password: {body}");
    }
    assert!(!server.log().contains(PASSWORD), "the server log contains the initial password");
    assert!(
        !contains_bytes(&server.database_bytes(), PASSWORD),
        "the database holds the initial password in plaintext (R14)"
    );
}
both_backends!(r14_initial_password_is_never_returned_logged_or_stored);

async fn reserved_users_filter_by_email_case_insensitively(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let alice = create_reserved_user(&c, &hs, "alice@x.com").await;
    create_reserved_user(&c, &hs, "bob@x.com").await;
    let page = expect_status(&c.get(&format!("{}?email={}", users_path(&hs), query_escape("Alice@X.com"))).await, 200);
    assert_eq!(page["items"], json!([alice]), "{page}");
    let none = expect_status(&c.get(&format!("{}?email={}", users_path(&hs), query_escape("carol@x.com"))).await, 200);
    assert_eq!(none, json!({ "items": [], "next_page_token": null }));
    assert_eq!(list_all(&c, &users_path(&hs)).await.len(), 2);
}
both_backends!(reserved_users_filter_by_email_case_insensitively);

async fn reserved_user_update(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let user = create_reserved_user(&c, &hs, "alice@example.com").await;
    let resp = c.put(&user_path(&hs, &user), &json!({ "display_name": "Alice A.", "admin": true })).await;
    let v2 = expect_status(&resp, 200);
    assert_eq!(v2["display_name"], "Alice A.");
    assert_eq!(v2["admin"], true);
    assert_eq!(v2["version"], 2);
    assert_eq!(etag(&resp.1).as_deref(), Some("\"2\""));
    assert_eq!(v2["email"], user["email"]);
    assert_eq!(v2["created_at"], user["created_at"]);
    assert_eq!(expect_status(&c.get(&user_path(&hs, &user)).await, 200), v2);
    // PUT is the whole desired state: no display_name clears it.
    let v3 = expect_status(&c.put(&user_path(&hs, &user), &json!({ "admin": false })).await, 200);
    assert_eq!(v3["display_name"], Value::Null);
    assert_eq!(v3["admin"], false);
    assert_eq!(v3["version"], 3);
    // The email is not part of an update.
    assert_rejects_field(
        &c.put(&user_path(&hs, &user), &json!({ "admin": false, "email": "eve@example.com" })).await,
        "email",
    );
    assert_invalid(&c.put(&user_path(&hs, &user), &json!({ "admin": false, "display_name": "" })).await, "display_name");
    assert_eq!(expect_status(&c.get(&user_path(&hs, &user)).await, 200), v3);
}
both_backends!(reserved_user_update);

async fn reserved_user_email_is_unique_per_homeserver(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    create_reserved_user(&c, &hs, "alice@example.com").await;
    let resp = c.post(&users_path(&hs), &json!({ "email": "ALICE@example.com" })).await;
    assert_api_error(&resp, 409, None, None);
    assert_eq!(list_all(&c, &users_path(&hs)).await.len(), 1);
    // Another homeserver may reserve the same person.
    let other = create_homeserver(&c, "other", "silver").await;
    create_reserved_user(&c, &other, "alice@example.com").await;
}
both_backends!(reserved_user_email_is_unique_per_homeserver);

async fn reserved_user_input_is_validated(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let path = users_path(&hs);
    assert_invalid(&c.post(&path, &json!({ "email": "not-an-email" })).await, "email");
    assert_invalid(&c.post(&path, &json!({ "email": "alice@example.com", "localpart": "Alice" })).await, "localpart");
    assert_invalid(&c.post(&path, &json!({ "localpart": "alice" })).await, "email");
    assert_rejects_field(&c.post(&path, &json!({ "email": "alice@example.com", "colour": "red" })).await, "colour");
    let short = "Tiny-pw-9";
    let resp = c.post(&path, &json!({ "email": "alice@example.com", "initial_password": short })).await;
    let msg = assert_invalid(&resp, "initial_password");
    assert!(!msg.contains(short), "the message echoes the password: {msg}");
    assert!(!resp.2.to_string().contains(short), "the response echoes the password: {}", resp.2);
    assert!(!server.log().contains(short), "the server log contains the refused password");
    assert_eq!(list_all(&c, &path).await.len(), 0);
}
both_backends!(reserved_user_input_is_validated);

async fn reserved_users_of_unknown_homeserver_are_not_found(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let user = create_reserved_user(&c, &hs, "alice@example.com").await;
    let missing = format!("/v1/homeservers/{}/reserved-users", sibling_id(&id(&hs)));
    assert_api_error(&c.get(&missing).await, 404, Some("not_found"), None);
    assert_api_error(&c.post(&missing, &json!({ "email": "bob@example.com" })).await, 404, Some("not_found"), None);
    let missing_user = format!("{}/{}", users_path(&hs), sibling_id(&id(&user)));
    assert_api_error(&c.get(&missing_user).await, 404, Some("not_found"), None);
    assert_api_error(&c.put(&missing_user, &json!({ "admin": true })).await, 404, Some("not_found"), None);
    assert_api_error(&c.delete(&missing_user).await, 404, Some("not_found"), None);
}
both_backends!(reserved_users_of_unknown_homeserver_are_not_found);

// R8
async fn r8_reserved_users_fit_inside_the_mau_cap(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "nickel").await;
    let mut users = Vec::new();
    for i in 1..=10 {
        users.push(create_reserved_user(&c, &hs, &format!("user{i}@example.com")).await);
    }
    let resp = c.post(&users_path(&hs), &json!({ "email": "user11@example.com" })).await;
    let msg = assert_api_error(&resp, 409, Some("mau_cap_exceeded"), None);
    assert!(msg.contains("R8"), "{msg}");
    assert!(msg.contains("11"), "{msg}");
    assert!(msg.contains("10"), "{msg}");
    assert_eq!(list_all(&c, &users_path(&hs)).await.len(), 10);

    // Deleting one frees its slot.
    let resp = c.delete(&user_path(&hs, &users[0])).await;
    assert_eq!(resp.0.as_u16(), 204, "{}", resp.2);
    assert_api_error(&c.get(&user_path(&hs, &users[0])).await, 404, Some("not_found"), None);
    create_reserved_user(&c, &hs, "user11@example.com").await;
    assert_eq!(list_all(&c, &users_path(&hs)).await.len(), 10);
}
both_backends!(r8_reserved_users_fit_inside_the_mau_cap);

// R8, R10
async fn r10_additional_users_make_room_for_reserved_users(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let bp = create_billing_plan_with(&c, json!({ "plan": "nickel", "additional_users": 2 })).await;
    let hs = create_homeserver_with(&c, homeserver_body("chat", &id(&bp))).await;
    for i in 1..=12 {
        create_reserved_user(&c, &hs, &format!("user{i}@example.com")).await;
    }
    let resp = c.post(&users_path(&hs), &json!({ "email": "user13@example.com" })).await;
    let msg = assert_api_error(&resp, 409, Some("mau_cap_exceeded"), None);
    assert!(msg.contains("R8") && msg.contains("13") && msg.contains("12"), "{msg}");
    assert_eq!(list_all(&c, &users_path(&hs)).await.len(), 12);
}
both_backends!(r10_additional_users_make_room_for_reserved_users);

async fn reserved_user_if_match_rejects_stale_versions(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let user = create_reserved_user(&c, &hs, "alice@example.com").await;
    let path = user_path(&hs, &user);
    let v2 = expect_status(&c.if_version(1).put(&path, &json!({ "admin": true })).await, 200);
    assert_api_error(&c.if_version(1).put(&path, &json!({ "admin": false })).await, 409, Some("version_conflict"), None);
    assert_api_error(&c.if_version(1).delete(&path).await, 409, Some("version_conflict"), None);
    assert_eq!(expect_status(&c.get(&path).await, 200), v2);
    assert_eq!(c.if_version(2).delete(&path).await.0.as_u16(), 204);
}
both_backends!(reserved_user_if_match_rejects_stale_versions);

async fn reserved_user_idempotent_create(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "silver").await;
    let k = c.idempotency_key("ru-1");
    let body = json!({ "email": "alice@example.com", "localpart": "alice" });
    let first = k.post(&users_path(&hs), &body).await;
    let created = expect_status(&first, 201);
    let retry = k.post(&users_path(&hs), &body).await;
    assert_eq!((retry.0, &retry.2), (first.0, &created), "the retry replays the first response");
    assert_eq!(list_all(&c, &users_path(&hs)).await.len(), 1);
    let resp = k.post(&users_path(&hs), &json!({ "email": "bob@example.com" })).await;
    assert_api_error(&resp, 409, Some("idempotency_key_reused"), None);
}
both_backends!(reserved_user_idempotent_create);

// R8
async fn r8_cap_holds_under_concurrent_creates(backend: Backend) {
    let server = start(backend).await;
    let c = server.client();
    let hs = create_homeserver(&c, "chat", "nickel").await;
    for i in 1..=8 {
        create_reserved_user(&c, &hs, &format!("user{i}@example.com")).await;
    }
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (c, path) = (c.clone(), users_path(&hs));
        set.spawn(async move { c.post(&path, &json!({ "email": format!("racer{i}@example.com") })).await });
    }
    let mut created = 0;
    while let Some(resp) = set.join_next().await {
        let resp = resp.expect("task");
        match resp.0.as_u16() {
            201 => created += 1,
            status => {
                assert_api_error(&resp, status, None, None);
                assert!(matches!(status, 409 | 422), "unexpected {status}: {}", resp.2);
            }
        }
    }
    assert_eq!(created, 2, "the cap of 10 had 2 free slots");
    assert_eq!(list_all(&c, &users_path(&hs)).await.len(), 10, "R8: more reserved users than the cap");
}
both_backends!(r8_cap_holds_under_concurrent_creates);
