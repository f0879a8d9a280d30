//! Acceptance: the data sources `matrixhost_regions`, `matrixhost_plans`,
//! `matrixhost_homeserver` (by name or id) and `matrixhost_backups`, read by the real Terraform.

use matrixhost_tests::runtime::create_homeserver;
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{json, workspace_bin, Backend, TestServer, Value};

#[tokio::test]
async fn data_sources_read_the_catalog_a_homeserver_and_its_backups() {
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).arg("--test-clock").start().await;
    let api = server.client();
    let hs = create_homeserver(&api, "silver", "staff", json!({"registration": "email_domains", "allowed_email_domains": ["corp.example"]})).await;
    let tf = Terraform::new(&server);
    tf.write_main(
        r#"
data "matrixhost_regions" "all" {}

data "matrixhost_regions" "available" {
  available_only = true
}

data "matrixhost_plans" "all" {}

data "matrixhost_homeserver" "by_name" {
  name = "staff"
}

data "matrixhost_homeserver" "by_id" {
  id = data.matrixhost_homeserver.by_name.id
}

data "matrixhost_backups" "staff" {
  homeserver_id = data.matrixhost_homeserver.by_id.id
}

output "all_regions" {
  value = data.matrixhost_regions.all.regions
}
output "available_regions" {
  value = data.matrixhost_regions.available.regions[*].code
}
output "plans" {
  value = { for p in data.matrixhost_plans.all.plans : p.tier => p }
}
output "by_name" {
  value = data.matrixhost_homeserver.by_name
}
output "by_id_name" {
  value = data.matrixhost_homeserver.by_id.name
}
output "backups" {
  value = data.matrixhost_backups.staff.backups
}
"#,
    );
    tf.init();
    tf.apply();
    let o = tf.outputs();

    // Regions: the whole catalog, and (R1) only US regions are available.
    let all = o["all_regions"].as_array().unwrap();
    assert_eq!(all.len(), 6, "{o}");
    let eu = all.iter().find(|r| r["code"] == "eu-west-1").expect("the catalog lists eu-west-1");
    assert_eq!((eu["country"].clone(), eu["available"].clone()), (json!("IE"), json!(false)));
    assert_eq!(o["available_regions"], json!(["us-east-1", "us-east-2", "us-west-1", "us-west-2"]));

    // Plans (R5, R10, R22).
    let silver = &o["plans"]["silver"];
    assert_eq!(silver["mau"], 50);
    assert_eq!(silver["price_per_mau_cents"], 400);
    assert_eq!(silver["limits"], json!({"cpu_millicores": 2000, "memory_mb": 2048, "storage_gb": 50}));
    assert_eq!(silver["support_tier"], "prioritised");
    assert_eq!(silver["e2ee_can_be_disabled"], false);
    assert_eq!(o["plans"]["gold"]["e2ee_can_be_disabled"], true);
    assert_eq!(o["plans"]["nickel"]["support_tier"], "best_effort");

    // The homeserver, by name and by id.
    let h = &o["by_name"];
    assert_eq!(h["id"], hs["id"]);
    assert_eq!(h["server_name"], hs["server_name"]);
    assert_eq!(h["region"], "us-east-1");
    assert_eq!(h["registration"], "email_domains");
    assert_eq!(h["allowed_email_domains"], json!(["corp.example"]));
    assert_eq!(h["volume"], json!({"size_gb": 1, "encrypted": true}));
    assert_eq!(h["data_controller"], json!({"entity_name": "Acme Corp", "admin_email": "dpo@acme.example"}));
    assert_eq!(h["status"], "provisioning");
    assert_eq!(h["terms_version"], "2026-01");
    assert_eq!(o["by_id_name"], "staff");
    // No backup has run yet on this homeserver.
    assert_eq!(o["backups"], json!([]));

    // Reading again changes nothing.
    tf.assert_no_changes();

    // Errors: a name that does not exist, both selectors, an unknown homeserver's backups.
    tf.write_main("data \"matrixhost_homeserver\" \"x\" {\n  name = \"nope\"\n}\n");
    tf.plan_fails().assert_contains("Error: Homeserver not found").assert_says("No homeserver with name `nope` exists");
    tf.write_main("data \"matrixhost_homeserver\" \"x\" {\n  name = \"staff\"\n  id = \"hs_x\"\n}\n");
    tf.plan_fails().assert_error_at("Invalid name", "name = \"staff\"").assert_says("give exactly one of `name` or `id`");
    tf.write_main("data \"matrixhost_homeserver\" \"x\" {}\n");
    tf.plan_fails().assert_contains("Error: Missing homeserver selector");
    tf.write_main("data \"matrixhost_backups\" \"x\" {\n  homeserver_id = \"hs_nope\"\n}\n");
    tf.plan_fails().assert_error_at("Homeserver not found", "homeserver_id = \"hs_nope\"");
    let _: Value = o;
    tf.print_timings("data_sources");
}
