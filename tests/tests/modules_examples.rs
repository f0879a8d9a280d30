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

use std::time::{Duration, Instant};

use matrixhost_tests::modules::{test_password, Project};
use matrixhost_tests::runtime::{runtime_available, Matrix, RuntimeServer};
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{expect_status, json, Client, Value};

async fn login_eventually(client_url: &str, user: &str, password: &str) -> Value {
    let matrix = Matrix::new(client_url);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = matrix.login(user, password).await;
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "login as {user} at {client_url} still fails: {status} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn quickstart(rt: &tokio::runtime::Runtime, server: &RuntimeServer, api: &Client) {
    let password = test_password();
    let tf = Terraform::new(server).env("TF_VAR_admin_password", Some(&password));
    let p = Project::example(tf, "quickstart");
    p.init();
    let out = p.apply(&[]);
    out.assert_contains("Apply complete! Resources: 3 added, 0 changed, 0 destroyed.");
    assert!(!out.all().contains(&password), "the password was printed:\n{out}");
    let o = p.outputs();
    let server_name = "quickstart.dev.matrixhost.localhost";
    assert_eq!(o["server_name"], server_name);
    assert_eq!(o["admin_user_id"], format!("@admin:{server_name}"));
    let client_url = o["client_url"].as_str().expect("client_url").to_owned();
    assert!(client_url.starts_with("http://127.0.0.1:"), "{o}");
    assert!(o["privacy_notice_url"].as_str().is_some_and(|u| !u.is_empty()), "{o}");
    p.assert_no_changes(&[]);

    // What the README says: log in as `admin` with the password.
    let login = rt.block_on(login_eventually(&client_url, "admin", &password));
    assert_eq!(login["user_id"], format!("@admin:{server_name}"));
    assert!(login["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    p.assert_no_changes(&[]);

    p.destroy(&[]).assert_contains("Destroy complete! Resources: 3 destroyed.");
    let id = rt.block_on(api.get("/v1/homeservers?name=quickstart"));
    assert_eq!(expect_status(&id, 200)["items"], json!([]));
    p.print_timings("modules_examples::quickstart");
}

fn enterprise(rt: &tokio::runtime::Runtime, server: &RuntimeServer, api: &Client) {
    let it_password = test_password();
    let ceo_password = test_password();
    let passwords = format!("{{\"it-ops\" = \"{it_password}\", \"jane.doe\" = \"{ceo_password}\"}}");
    let tf = Terraform::new(server).env("TF_VAR_reserved_user_passwords", Some(&passwords));
    let p = Project::example(tf, "enterprise-onboarding");
    // The customer's step: copy the template.
    p.write_file("terraform.tfvars", &std::fs::read_to_string(p.dir().join("terraform.tfvars.example")).unwrap());
    p.init();
    let out = p.apply(&[]);
    out.assert_contains("Apply complete! Resources: 12 added, 0 changed, 0 destroyed.");
    assert!(!out.all().contains(&it_password) && !out.all().contains(&ceo_password), "a password was printed:\n{out}");

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

    // IT logs in on the staff homeserver.
    let client_url = staff["client_url"].as_str().unwrap().to_owned();
    let login = rt.block_on(login_eventually(&client_url, "it-ops", &it_password));
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
