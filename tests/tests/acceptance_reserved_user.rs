//! Acceptance: `matrixhost_reserved_user` driven by the real Terraform (R8). The homeserver is
//! made through the API on a matrixhostd without the runtime: reserved users are records of the
//! control plane (the runtime turns them into accounts; `acceptance_homeserver` covers that).

use matrixhost_tests::runtime::create_homeserver;
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{expect_status, json, workspace_bin, Backend, TestServer};

async fn server() -> TestServer {
    TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).arg("--test-clock").start().await
}

fn user_hcl(hs: &str, body: &str) -> String {
    format!("resource \"matrixhost_reserved_user\" \"alice\" {{\n  homeserver_id = \"{hs}\"\n{body}\n}}\n")
}

#[tokio::test]
async fn reserved_user_lifecycle_create_update_replace_drift_import_destroy() {
    let server = server().await;
    let api = server.client();
    let hs = create_homeserver(&api, "silver", "staff", json!({})).await;
    let hs_id = hs["id"].as_str().unwrap().to_owned();
    let server_name = hs["server_name"].as_str().unwrap().to_owned();
    let tf = Terraform::new(&server);

    // Create. The email is spelled in mixed case; the server keeps it in lower case.
    let password = "correct horse battery staple";
    tf.write_main(&user_hcl(
        &hs_id,
        &format!("  email = \"Alice@Corp.Example\"\n  localpart = \"alice\"\n  display_name = \"Alice\"\n  initial_password = \"{password}\""),
    ));
    tf.init();
    let out = tf.apply();
    out.assert_lacks(password);
    let v = tf.values("matrixhost_reserved_user.alice");
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ru_"), "{v}");
    assert_eq!(v["email"], "Alice@Corp.Example");
    assert_eq!(v["admin"], false);
    assert_eq!(v["user_id"], format!("@alice:{server_name}"));
    let remote = expect_status(&api.get(&format!("/v1/homeservers/{hs_id}/reserved-users/{id}")).await, 200);
    assert_eq!(remote["email"], "alice@corp.example");
    assert!(!remote.to_string().contains(password), "the password is write-only");

    // No diff from the email's case, and none from changing only its case.
    tf.assert_no_changes();
    tf.write_main(&user_hcl(
        &hs_id,
        &format!("  email = \"ALICE@corp.example\"\n  localpart = \"alice\"\n  display_name = \"Alice\"\n  initial_password = \"{password}\""),
    ));
    tf.assert_no_changes();

    // Update in place.
    tf.write_main(&user_hcl(
        &hs_id,
        &format!("  email = \"alice@corp.example\"\n  localpart = \"alice\"\n  display_name = \"Alice Admin\"\n  admin = true\n  initial_password = \"{password}\""),
    ));
    tf.assert_changes().assert_contains("updated in-place").assert_lacks("forces replacement");
    tf.apply();
    assert_eq!(tf.values("matrixhost_reserved_user.alice")["id"], id.as_str());
    let remote = expect_status(&api.get(&format!("/v1/homeservers/{hs_id}/reserved-users/{id}")).await, 200);
    assert_eq!((remote["display_name"].clone(), remote["admin"].clone()), (json!("Alice Admin"), json!(true)));
    tf.assert_no_changes();

    // Forced replacement: a new localpart is a new account.
    tf.write_main(&user_hcl(&hs_id, "  email = \"alice@corp.example\"\n  localpart = \"alice.smith\"\n  display_name = \"Alice Admin\"\n  admin = true"));
    tf.assert_changes().assert_contains("must be replaced").assert_contains("forces replacement");
    tf.apply();
    let v = tf.values("matrixhost_reserved_user.alice");
    assert_ne!(v["id"], id.as_str());
    assert_eq!(v["user_id"], format!("@alice.smith:{server_name}"));
    assert_eq!(api.get(&format!("/v1/homeservers/{hs_id}/reserved-users/{id}")).await.0.as_u16(), 404);
    let id = v["id"].as_str().unwrap().to_owned();
    tf.assert_no_changes();

    // Drift, changed out of band.
    expect_status(
        &api.put(&format!("/v1/homeservers/{hs_id}/reserved-users/{id}"), &json!({"display_name": "Mallory", "admin": false})).await,
        200,
    );
    tf.assert_changes().assert_contains("~ display_name").assert_says("\"Mallory\" -> \"Alice Admin\"");
    tf.apply();
    tf.assert_no_changes();

    // Drift, deleted out of band: planned again, never an error.
    expect_status(&api.delete(&format!("/v1/homeservers/{hs_id}/reserved-users/{id}")).await, 204);
    tf.assert_changes().assert_contains("will be created");
    tf.apply();
    tf.assert_no_changes();

    // Import as <homeserver_id>/<email> (in any case), then nothing to do.
    tf.state_rm("matrixhost_reserved_user.alice");
    tf.import("matrixhost_reserved_user.alice", &format!("{hs_id}/ALICE@Corp.Example"));
    tf.assert_no_changes();
    let probe = format!("  homeserver_id = \"{hs_id}\"\n  email = \"nobody@corp.example\"");
    tf.import_fails("matrixhost_reserved_user", &probe, "no-slash").assert_contains("<homeserver_id>/<email>");
    tf.import_fails("matrixhost_reserved_user", &probe, &format!("{hs_id}/nobody@corp.example"))
        .assert_contains("Error: Cannot import reserved user")
        .assert_says("No reserved user");

    // Destroy: the API lists nothing.
    tf.destroy();
    let list = expect_status(&api.get(&format!("/v1/homeservers/{hs_id}/reserved-users")).await, 200);
    assert_eq!(list["items"], json!([]));
    tf.print_timings("reserved_user_lifecycle");
}

#[tokio::test]
async fn reserved_user_bad_inputs_and_the_r8_cap() {
    let server = server().await;
    let api = server.client();
    let hs = create_homeserver(&api, "nickel", "small", json!({})).await;
    let hs_id = hs["id"].as_str().unwrap().to_owned();
    let tf = Terraform::new(&server);

    tf.write_main(&user_hcl(&hs_id, "  email = \"alice(at)corp.example\"\n  localpart = \"Alice\"\n  display_name = \"\"\n  initial_password = \"hunter2\""));
    tf.init();
    let out = tf.plan_fails();
    out.assert_error_at("Invalid email", "email = \"alice(at)corp.example\"")
        .assert_says("is not a valid email address")
        .assert_error_at("Invalid localpart", "localpart = \"Alice\"")
        .assert_says("is not a valid Matrix localpart")
        .assert_error_at("Invalid display_name", "display_name = \"\"")
        .assert_error_at("Invalid initial_password", "initial_password = \"hunter2\"")
        .assert_says("must be 12-1024 characters");
    // The password is only in the source snippet Terraform quotes, never in a message.
    let text = out.all();
    let messages: Vec<&str> = text.lines().filter(|l| l.contains("hunter2")).collect();
    assert!(messages.iter().all(|l| l.contains("initial_password =")), "{out}");

    // R8: reserved users hold slots inside the cap: nickel's 10 fit, the 11th fails at apply
    // with the server's message.
    tf.write_main(&format!(
        "resource \"matrixhost_reserved_user\" \"u\" {{\n  count = 11\n  homeserver_id = \"{hs_id}\"\n  email = \"user${{count.index}}@corp.example\"\n}}\n"
    ));
    tf.apply_fails().assert_contains("Error: Cannot create reserved user").assert_says("R8: 11 reserved users would exceed the MAU cap of 10");
    let list = expect_status(&api.get(&format!("/v1/homeservers/{hs_id}/reserved-users")).await, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(10), "exactly the cap");
    tf.destroy();
    let list = expect_status(&api.get(&format!("/v1/homeservers/{hs_id}/reserved-users")).await, 200);
    assert_eq!(list["items"], json!([]));
}

/// No secret reaches the Terraform state: a reserved user without `initial_password` is
/// invited by email (the link never passes through Terraform), and `initial_password` is
/// deprecated with a warning.
#[tokio::test]
async fn the_state_holds_no_secret_and_initial_password_is_deprecated() {
    let server = server().await;
    let api = server.client();
    let hs = create_homeserver(&api, "silver", "nosecrets", json!({})).await;
    let hs_id = hs["id"].as_str().unwrap().to_owned();
    let tf = Terraform::new(&server);
    tf.write_main(&user_hcl(&hs_id, "  email = \"erin@corp.example\"\n  localpart = \"erin\""));
    tf.init();
    let out = tf.apply();
    out.assert_lacks("Deprecated attribute");
    let invite = matrixhost_tests::mail::wait_for_mail(&server.state_dir().join("api/maildir"), "erin@corp.example", "Your Matrix account on", 0).await;
    let link_token = matrixhost_tests::mail::token_of(&matrixhost_tests::mail::link_to(&invite.text, "/console/invite"));
    tf.assert_no_changes();

    let state = std::fs::read_to_string(tf.dir().join("terraform.tfstate")).expect("the state file");
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let attrs = &v["resources"][0]["instances"][0]["attributes"];
    assert_eq!(attrs["initial_password"], serde_json::Value::Null, "{attrs}");
    for secret in [server.dev_token(), &server.dev_token()[3..], link_token.as_str()] {
        assert!(!state.contains(secret), "a secret is in the Terraform state");
    }

    // The deprecated way still works, with a warning that says why.
    tf.write_main(&format!(
        "{}\n{}",
        user_hcl(&hs_id, "  email = \"erin@corp.example\"\n  localpart = \"erin\""),
        "resource \"matrixhost_reserved_user\" \"frank\" {\n  homeserver_id = \"".to_owned() + &hs_id + "\"\n  email = \"frank@corp.example\"\n  initial_password = \"a long enough password 1\"\n}\n"
    ));
    let out = tf.apply();
    out.assert_contains("Deprecated attribute: initial_password").assert_contains("invited by email");
}
