//! The examples, applied as a customer would against a real `matrixhostd` running real Synapse
//! homeservers, then a no-op plan (`-detailed-exitcode` = 0), then destroy:
//!
//! * `examples/quickstart`: the smallest working homeserver; its admin logs in through Matrix.
//! * `examples/enterprise-onboarding` with its `terraform.tfvars.example`: staff and partners
//!   homeservers on different plans with reserved executives and IT, email-domain whitelists and
//!   daily backups. Destroy first fails on deletion protection, with a clear error; after turning
//!   it off (an apply) it succeeds.
//!
//! One server for the file; the two examples run side by side.

use std::time::Instant;

use matrixhost_tests::console::accept_invitation;
use matrixhost_tests::modules::{test_password, Project};
use matrixhost_tests::runtime::{runtime_available, Matrix, RuntimeServer};
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{expect_status, json, Client, Value};

/// The apply returned only once the account was in effect: the first login works.
async fn login_now(client_url: &str, user: &str, password: &str) -> Value {
    let (status, body) = Matrix::new(client_url).login(user, password).await;
    assert_eq!(status, 200, "login as {user} at {client_url} right after the apply: {body}");
    body
}

/// No password in a state file of the example.
fn assert_no_password_in_state(p: &Project, password: &str) {
    let state = std::fs::read_to_string(p.dir().join("terraform.tfstate")).unwrap();
    assert!(!state.contains(password) && !state.contains("initial_password\": \""), "a password is in the state");
}

fn quickstart(rt: &tokio::runtime::Runtime, server: &RuntimeServer, api: &Client) {
    let p = Project::example(Terraform::new(server), "quickstart");
    p.init();
    let out = p.apply(&[]);
    out.assert_contains("Apply complete! Resources: 3 added, 0 changed, 0 destroyed.").assert_lacks("Warning");
    let o = p.outputs();
    let server_name = "quickstart.dev.matrixhost.localhost";
    assert_eq!(o["server_name"], server_name);
    assert_eq!(o["admin_user_id"], format!("@admin:{server_name}"));
    let client_url = o["client_url"].as_str().expect("client_url").to_owned();
    assert!(client_url.starts_with("http://127.0.0.1:"), "{o}");
    assert!(o["privacy_notice_url"].as_str().is_some_and(|u| !u.is_empty()), "{o}");
    p.assert_no_changes(&[]);

    // What the README says: the admin accepts the emailed invitation, then logs in as `admin`.
    let password = test_password();
    rt.block_on(accept_invitation(server, "admin@example.com", server_name, &password));
    assert_no_password_in_state(&p, &password);
    let login = rt.block_on(login_now(&client_url, "admin", &password));
    assert_eq!(login["user_id"], format!("@admin:{server_name}"));
    assert!(login["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    p.assert_no_changes(&[]);

    p.destroy(&[]).assert_contains("Destroy complete! Resources: 3 destroyed.");
    let id = rt.block_on(api.get("/v1/homeservers?name=quickstart"));
    assert_eq!(expect_status(&id, 200)["items"], json!([]));
    p.print_timings("modules_examples::quickstart");
}

fn enterprise(rt: &tokio::runtime::Runtime, server: &RuntimeServer, api: &Client) {
    let p = Project::example(Terraform::new(server), "enterprise-onboarding");
    // The customer's step: copy the template.
    p.write_file("terraform.tfvars", &std::fs::read_to_string(p.dir().join("terraform.tfvars.example")).unwrap());
    p.init();
    let out = p.apply(&[]);
    out.assert_contains("Apply complete! Resources: 12 added, 0 changed, 0 destroyed.").assert_lacks("Warning");

    let o = p.outputs();
    let (staff, partners) = (&o["staff"], &o["partners"]);
    assert_eq!(staff["server_name"], "chat.acme.example");
    assert_eq!(partners["server_name"], "partners.acme.example");
    assert_eq!(
        staff["reserved_user_ids"],
        json!({
            "it-ops": "@it-ops:chat.acme.example",
            "jane.doe": "@jane.doe:chat.acme.example",
            "raj.patel": "@raj.patel:chat.acme.example",
            "sam.lee": "@sam.lee:chat.acme.example",
        }),
        "R8: executives and IT on staff"
    );
    assert_eq!(partners["reserved_user_ids"], json!({"it-ops": "@it-ops:partners.acme.example", "sam.lee": "@sam.lee:partners.acme.example"}), "R8: IT on partners");
    for hs in [staff, partners] {
        assert_eq!(hs["backup_policy"]["schedule"], "daily", "R4");
        assert_eq!(hs["backup_policy"]["retention_days"], 30, "R4");
        assert_eq!(hs["backup_policy"]["window_start"], "02:00");
        assert!(hs["privacy_notice_url"].as_str().is_some_and(|u| !u.is_empty()), "R19: {hs}");
    }

    // What the API holds: two plans, two homeservers with their whitelists and protection.
    let list = expect_status(&rt.block_on(api.get("/v1/homeservers")), 200);
    let mut by_name = std::collections::BTreeMap::new();
    for hs in list["items"].as_array().unwrap() {
        by_name.insert(hs["name"].as_str().unwrap().to_owned(), hs.clone());
    }
    let (s, pt) = (&by_name["acme-staff"], &by_name["acme-partners"]);
    assert_eq!(s["allowed_email_domains"], json!(["acme-labs.example", "acme.example"]), "R9");
    assert_eq!(pt["allowed_email_domains"], json!(["globex.example", "initech.example"]), "R9");
    assert_eq!(pt["federation_enabled"], false);
    for hs in [s, pt] {
        assert_eq!(hs["registration"], "email_domains");
        assert_eq!(hs["region"], "us-east-1", "R1");
        assert_eq!(hs["volume"]["encrypted"], true, "R2");
        assert_eq!(hs["deletion_protection"], true);
        assert_eq!(hs["data_controller"], json!({"entity_name": "Acme Corp", "admin_email": "privacy@acme.example"}), "R19");
    }
    let plans = expect_status(&rt.block_on(api.get("/v1/billing-plans")), 200);
    let ours = [s["billing_plan_id"].clone(), pt["billing_plan_id"].clone()];
    let mut tiers: Vec<String> =
        plans["items"].as_array().unwrap().iter().filter(|b| ours.contains(&b["id"])).map(|b| b["plan"].as_str().unwrap().to_owned()).collect();
    tiers.sort();
    assert_eq!(tiers, ["gold", "silver"], "different plans");

    p.assert_no_changes(&[]);

    // IT accepts the invitation to the staff homeserver and logs in there.
    let it_password = test_password();
    rt.block_on(accept_invitation(server, "it-ops@acme.example", "chat.acme.example", &it_password));
    assert_no_password_in_state(&p, &it_password);
    let client_url = staff["client_url"].as_str().unwrap().to_owned();
    let login = rt.block_on(login_now(&client_url, "it-ops", &it_password));
    assert_eq!(login["user_id"], "@it-ops:chat.acme.example");
    p.assert_no_changes(&[]);

    // Destroy with deletion protection on fails clearly; the homeservers stay.
    let out = p.fails(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    out.assert_contains("Error: Homeserver `acme-staff` is protected from deletion")
        .assert_contains("Error: Homeserver `acme-partners` is protected from deletion")
        .assert_says("Set `deletion_protection = false` and apply before destroying");
    // The quickstart runs beside this example on the same server, so count by name.
    let list = expect_status(&rt.block_on(api.get("/v1/homeservers")), 200);
    let enterprise = list["items"].as_array().unwrap().iter().filter(|h| h["name"].as_str().is_some_and(|n| n.starts_with("acme-"))).count();
    assert_eq!(enterprise, 2, "both homeservers are still there: {list}");

    // Terraform 1.0 does not plan destroys with the provider, so the failed destroy had already
    // removed what depends on the homeservers (6 reservations, 2 backup policies). Turning
    // protection off with an apply restores them; then destroy succeeds.
    let out = p.apply(&["-var", "deletion_protection=false"]);
    out.assert_says("deletion_protection = true -> false").assert_contains("Plan: 8 to add, 2 to change, 0 to destroy.");
    p.assert_no_changes(&["-var", "deletion_protection=false"]);
    p.destroy(&["-var", "deletion_protection=false"]).assert_contains("Destroy complete! Resources: 12 destroyed.");
    assert!(p.resource_addresses().is_empty(), "{:?}", p.resource_addresses());
    p.print_timings("modules_examples::enterprise");
}

#[test]
fn examples_apply_then_plan_nothing_then_destroy() {
    if !runtime_available("examples_apply_then_plan_nothing_then_destroy") {
        return;
    }
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(RuntimeServer::start(&[]));
    let api = server.client();
    std::thread::scope(|s| {
        let a = s.spawn(|| quickstart(&rt, &server, &api));
        let b = s.spawn(|| enterprise(&rt, &server, &api));
        let (a, b) = (a.join(), b.join());
        if let Err(e) = a {
            std::panic::resume_unwind(e);
        }
        if let Err(e) = b {
            std::panic::resume_unwind(e);
        }
    });
    assert_eq!(expect_status(&rt.block_on(api.get("/v1/homeservers")), 200)["items"], json!([]));
    assert_eq!(expect_status(&rt.block_on(api.get("/v1/billing-plans")), 200)["items"], json!([]));
    eprintln!("[timing] examples_apply_then_plan_nothing_then_destroy: {:.1}s", started.elapsed().as_secs_f64());
    drop(server);
}
