//! Each module applied through a small test root config against a real `matrixhostd` running
//! real Synapse homeservers, then a no-op plan (`-detailed-exitcode` = 0), then destroy:
//!
//! * `building-blocks`: `us-regions` and `encrypted-volume` feeding a plain
//!   `matrixhost_homeserver`, backed up by `daily-backups` (with an in-place update of the
//!   window);
//! * `homeserver-module`: the `homeserver` composition with reserved users, whose admin then
//!   accepts the emailed invitation and logs in through the Matrix client API.
//!
//! One server for the file; the two configurations run side by side.

use std::time::Instant;

use matrixhost_tests::console::accept_invitation;
use matrixhost_tests::modules::{test_password, Project};
use matrixhost_tests::runtime::{runtime_available, Matrix, RuntimeServer};
use matrixhost_tests::terraform::Terraform;
use matrixhost_tests::{expect_status, json, Client, Value};

const BUILDING_BLOCKS: &str = r#"
variable "window_start" {
  type    = string
  default = "04:30"
}

module "region" {
  source = "../../modules/us-regions"
  region = "us-west-2"
}

module "volume" {
  source  = "../../modules/encrypted-volume"
  plan    = "silver"
  size_gb = 2
}

resource "matrixhost_billing_plan" "bp" {
  plan = "silver"
}

resource "matrixhost_homeserver" "hs" {
  name            = "blocks"
  region          = module.region.region
  billing_plan_id = matrixhost_billing_plan.bp.id

  volume {
    size_gb   = module.volume.volume.size_gb
    encrypted = module.volume.volume.encrypted
  }

  data_controller {
    entity_name = "Blocks Inc"
    admin_email = "privacy@blocks.example"
  }
}

module "backups" {
  source        = "../../modules/daily-backups"
  homeserver_id = matrixhost_homeserver.hs.id
  window_start  = var.window_start
}

output "region" {
  value = module.region.region
}
output "available_regions" {
  value = module.region.available_regions
}
output "volume" {
  value = module.volume.volume
}
output "storage_limit_gb" {
  value = module.volume.storage_limit_gb
}
output "homeserver_id" {
  value = matrixhost_homeserver.hs.id
}
output "backup_policy" {
  value = module.backups.policy
}
"#;

const HOMESERVER_MODULE: &str = r#"
variable "deletion_protection" {
  type    = bool
  default = true
}

module "corp" {
  source = "../../modules/homeserver"

  name           = "corp"
  plan           = "silver"
  volume_size_gb = 2

  email_domains = ["Corp.Example", "corp-labs.example"]
  data_controller = {
    entity_name = "Corp Example LLC"
    admin_email = "Privacy@Corp.Example"
  }

  reserved_users = {
    "it-admin" = {
      email        = "it-admin@corp.example"
      display_name = "Corp IT"
      admin        = true
    }
    "ceo" = {
      email        = "ceo@corp.example"
      display_name = "The CEO"
      admin        = false
    }
  }

  backup_window_start = "01:15"
  deletion_protection = var.deletion_protection
}

output "homeserver_id" {
  value = module.corp.homeserver_id
}
output "client_url" {
  value = module.corp.client_url
}
output "server_name" {
  value = module.corp.server_name
}
output "privacy_notice_url" {
  value = module.corp.privacy_notice_url
}
output "reserved_user_ids" {
  value = module.corp.reserved_user_ids
}
output "backup_policy" {
  value = module.corp.backup_policy
}
output "mau_cap" {
  value = module.corp.mau_cap
}
output "region" {
  value = module.corp.region
}
"#;

/// Logs in as `user` with `password`: at the first attempt, since the apply returned only once
/// the account was in effect.
pub async fn login_now(client_url: &str, user: &str, password: &str) -> Value {
    let (status, body) = Matrix::new(client_url).login(user, password).await;
    assert_eq!(status, 200, "login as {user} at {client_url} right after the apply: {body}");
    body
}

fn building_blocks(rt: &tokio::runtime::Runtime, server: &RuntimeServer, api: &Client) {
    let p = Project::root(Terraform::new(server), "building-blocks", BUILDING_BLOCKS);
    p.init();
    p.apply(&[]).assert_contains("module.backups.matrixhost_backup_policy.this: Creation complete");
    let o = p.outputs();
    assert_eq!(o["region"], "us-west-2", "R1: {o}");
    assert_eq!(o["available_regions"], json!(["us-east-1", "us-east-2", "us-west-1", "us-west-2"]));
    assert_eq!(o["volume"], json!({"size_gb": 2, "encrypted": true}), "R2");
    assert_eq!(o["storage_limit_gb"], 50);
    let policy = &o["backup_policy"];
    assert_eq!(policy["schedule"], "daily", "R4: {policy}");
    assert_eq!(policy["retention_days"], 30, "R4: {policy}");
    assert_eq!(policy["window_start"], "04:30");
    assert_eq!(policy["encrypted"], true);

    let id = o["homeserver_id"].as_str().unwrap().to_owned();
    let hs = rt.block_on(api.get(&format!("/v1/homeservers/{id}")));
    let hs = expect_status(&hs, 200);
    assert_eq!(hs["status"], "running", "{hs}");
    assert_eq!(hs["region"], "us-west-2");
    assert_eq!(hs["volume"], json!({"size_gb": 2, "encrypted": true}));
    let remote = rt.block_on(api.get(&format!("/v1/homeservers/{id}/backup-policy")));
    let remote = expect_status(&remote, 200);
    assert_eq!((remote["schedule"].clone(), remote["retention_days"].clone()), (json!("daily"), json!(30)), "{remote}");

    p.assert_no_changes(&[]);

    // An in-place update through the module, then nothing left to do.
    let out = p.assert_changes(&["-var", "window_start=05:45"]);
    out.assert_contains("~ window_start").assert_says("\"04:30\" -> \"05:45\"").assert_contains("0 to add, 1 to change, 0 to destroy");
    p.apply(&["-var", "window_start=05:45"]);
    p.assert_no_changes(&["-var", "window_start=05:45"]);
    let remote = rt.block_on(api.get(&format!("/v1/homeservers/{id}/backup-policy")));
    assert_eq!(expect_status(&remote, 200)["window_start"], "05:45");

    p.destroy(&["-var", "window_start=05:45"]);
    assert_eq!(rt.block_on(api.get(&format!("/v1/homeservers/{id}"))).0.as_u16(), 404, "the homeserver is gone");
    assert!(p.resource_addresses().is_empty(), "{:?}", p.resource_addresses());
    p.print_timings("modules_apply::building_blocks");
}

fn homeserver_module(rt: &tokio::runtime::Runtime, server: &RuntimeServer, api: &Client) {
    let p = Project::root(Terraform::new(server), "homeserver-module", HOMESERVER_MODULE);
    p.init();
    let out = p.apply(&[]);
    out.assert_contains("module.corp.matrixhost_homeserver.this: Creation complete")
        .assert_contains("module.corp.matrixhost_reserved_user.this[\"it-admin\"]: Creation complete")
        .assert_contains("module.corp.module.backups.matrixhost_backup_policy.this: Creation complete")
        .assert_lacks("Warning");

    let o = p.outputs();
    let server_name = "corp.dev.matrixhost.localhost";
    assert_eq!(o["server_name"], server_name);
    assert_eq!(o["region"], "us-east-1", "R1: the module's default region");
    assert!(o["client_url"].as_str().is_some_and(|u| u.starts_with("http://127.0.0.1:")), "{o}");
    assert!(o["privacy_notice_url"].as_str().is_some_and(|u| !u.is_empty()), "R19: {o}");
    assert_eq!(o["reserved_user_ids"], json!({"ceo": format!("@ceo:{server_name}"), "it-admin": format!("@it-admin:{server_name}")}), "R8");
    assert_eq!(o["mau_cap"], 50);
    let policy = &o["backup_policy"];
    assert_eq!((policy["schedule"].clone(), policy["retention_days"].clone(), policy["window_start"].clone()), (json!("daily"), json!(30), json!("01:15")), "R4: {policy}");

    let id = o["homeserver_id"].as_str().unwrap().to_owned();
    let hs = expect_status(&rt.block_on(api.get(&format!("/v1/homeservers/{id}"))), 200);
    assert_eq!(hs["registration"], "email_domains", "R9: {hs}");
    assert_eq!(hs["allowed_email_domains"], json!(["corp-labs.example", "corp.example"]), "R9");
    assert_eq!(hs["guest_access"], false);
    assert_eq!(hs["deletion_protection"], true, "on by default");
    assert_eq!(hs["volume"]["encrypted"], true, "R2");
    assert_eq!(hs["data_controller"], json!({"entity_name": "Corp Example LLC", "admin_email": "privacy@corp.example"}), "R19");
    let reserved = expect_status(&rt.block_on(api.get(&format!("/v1/homeservers/{id}/reserved-users"))), 200);
    assert_eq!(reserved["items"].as_array().map(Vec::len), Some(2), "{reserved}");

    // No perpetual diff from the server's normalisation (domain and email case, order).
    p.assert_no_changes(&[]);

    // The reserved admin, invited by email, chooses a password and logs in through the Matrix
    // client API. No password passed through Terraform or its state.
    let admin_password = test_password();
    rt.block_on(accept_invitation(server, "it-admin@corp.example", server_name, &admin_password));
    let state = std::fs::read_to_string(p.tf.dir().join(&p.sub).join("terraform.tfstate")).unwrap();
    assert!(!state.contains(&admin_password) && !state.contains("initial_password\": \""), "no password in the state");
    let client_url = o["client_url"].as_str().unwrap().to_owned();
    let login = rt.block_on(login_now(&client_url, "it-admin", &admin_password));
    assert_eq!(login["user_id"], format!("@it-admin:{server_name}"));
    p.assert_no_changes(&[]);

    // Deletion protection is on by default: turn it off, then destroy.
    p.apply(&["-var", "deletion_protection=false"]);
    p.destroy(&["-var", "deletion_protection=false"]);
    assert_eq!(rt.block_on(api.get(&format!("/v1/homeservers/{id}"))).0.as_u16(), 404, "the homeserver is gone");
    assert!(p.resource_addresses().is_empty(), "{:?}", p.resource_addresses());
    p.print_timings("modules_apply::homeserver_module");
}

#[test]
fn modules_apply_then_plan_nothing_then_destroy() {
    if !runtime_available("modules_apply_then_plan_nothing_then_destroy") {
        return;
    }
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(RuntimeServer::start(&[]));
    let api = server.client();
    std::thread::scope(|s| {
        let a = s.spawn(|| building_blocks(&rt, &server, &api));
        let b = s.spawn(|| homeserver_module(&rt, &server, &api));
        let (a, b) = (a.join(), b.join());
        if let Err(e) = a {
            std::panic::resume_unwind(e);
        }
        if let Err(e) = b {
            std::panic::resume_unwind(e);
        }
    });
    // Nothing is left behind.
    assert_eq!(expect_status(&rt.block_on(api.get("/v1/homeservers")), 200)["items"], json!([]));
    assert_eq!(expect_status(&rt.block_on(api.get("/v1/billing-plans")), 200)["items"], json!([]));
    eprintln!("[timing] modules_apply_then_plan_nothing_then_destroy: {:.1}s", started.elapsed().as_secs_f64());
    drop(server);
}
