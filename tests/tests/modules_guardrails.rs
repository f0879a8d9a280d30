//! The modules' guardrails fail at `terraform plan`, before anything is created, each with its
//! rule's message: R1 (region `eu-west-1`, and a US region that is not available), R2 (encryption
//! off), R5 (a volume over the plan's limit), R4 (retention 7 without the override), R8 (more
//! reserved users than the plan's cap) and R22. Planning reads only data sources, so an API-only
//! `matrixhostd` (no homeservers run) is enough; the test also shows that `apply` stops at the
//! same point and that the API then holds nothing.

use std::time::Instant;

use matrixhost_tests::modules::Project;
use matrixhost_tests::terraform::{Terraform, TfOutput};
use matrixhost_tests::{expect_status, json, workspace_bin, Backend, TestServer};

/// One root config with every module, each input a variable so that one `-var` breaks one rule.
const ROOT: &str = r#"
variable "region" {
  type    = string
  default = null
}
variable "encrypted" {
  type    = bool
  default = true
}
variable "size_gb" {
  type    = number
  default = 5
}
variable "retention_days" {
  type    = number
  default = 30
}
variable "allow_nonstandard_retention" {
  type    = bool
  default = false
}
variable "hs_region" {
  type    = string
  default = "us-east-1"
}
variable "hs_volume_encrypted" {
  type    = bool
  default = true
}
variable "hs_retention_days" {
  type    = number
  default = 30
}
variable "plan" {
  type    = string
  default = "nickel"
}
variable "reserved_count" {
  type    = number
  default = 2
}
variable "additional_users" {
  type    = number
  default = 0
}
variable "encryption_by_default" {
  type    = bool
  default = true
}

module "region" {
  source = "../../modules/us-regions"
  region = var.region
}

module "volume" {
  source    = "../../modules/encrypted-volume"
  plan      = "silver"
  size_gb   = var.size_gb
  encrypted = var.encrypted
}

module "backups" {
  source                      = "../../modules/daily-backups"
  homeserver_id               = "hs_aaaaaaaaaaaaaaaaaaaa"
  retention_days              = var.retention_days
  allow_nonstandard_retention = var.allow_nonstandard_retention
}

module "homeserver" {
  source = "../../modules/homeserver"

  name             = "guarded"
  plan             = var.plan
  additional_users = var.additional_users
  region           = var.hs_region
  volume_size_gb   = 1
  volume_encrypted = var.hs_volume_encrypted

  email_domains = ["acme.example"]
  data_controller = {
    entity_name = "Acme Corp"
    admin_email = "privacy@acme.example"
  }
  encryption_by_default = var.encryption_by_default

  reserved_users = {
    for i in range(var.reserved_count) : "user${i}" => {
      email        = "user${i}@acme.example"
      display_name = null
      admin        = false
    }
  }

  backup_retention_days = var.hs_retention_days
  deletion_protection   = false
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
"#;

/// Asserts the plan failed because of a guardrail in `file` (a module's file, as Terraform
/// names it in the diagnostic) and says `message`.
#[track_caller]
fn refused(out: &TfOutput, file: &str, message: &str) {
    assert_eq!(out.code, 1, "expected the plan to fail:\n{out}");
    out.assert_says(message);
    assert!(out.all().contains(file), "expected the error to come from {file}:\n{out}");
    out.assert_lacks("will be created");
}

#[tokio::test]
async fn guardrails_fail_at_plan_time_with_their_message() {
    let started = Instant::now();
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).start().await;
    let api = server.client();
    let p = Project::root(Terraform::new(&server), "guardrails", ROOT);
    p.init();

    // The defaults pass every guardrail: the plan creates the homeserver module's resources.
    let ok = p.assert_changes(&[]);
    ok.assert_contains("module.homeserver.matrixhost_homeserver.this will be created")
        .assert_contains("module.homeserver.matrixhost_reserved_user.this[\"user1\"] will be created")
        .assert_contains("module.backups.matrixhost_backup_policy.this will be created");

    // R1: a region outside the US, refused by the variable's validation...
    let out = p.plan(&["-var", "region=eu-west-1"]);
    refused(&out, "modules/us-regions/variables.tf", "R1: homeservers are hosted only in US regions");
    out.assert_contains("Error: Invalid value for variable").assert_contains("region = var.region");
    let out = p.plan(&["-var", "hs_region=eu-west-1"]);
    refused(&out, "modules/homeserver/variables.tf", "R1: homeservers are hosted only in US regions");
    // ...and a US region the catalog lists as not available yet, refused with the catalog.
    let out = p.plan(&["-var", "region=us-central-1"]);
    refused(&out, "modules/us-regions/main.tf", "R1: region `us-central-1` (US Central (Iowa), opening later) is not available yet. Available US regions: us-east-1, us-east-2, us-west-1, us-west-2.");
    let out = p.plan(&["-var", "hs_region=us-central-1"]);
    refused(&out, "modules/us-regions/main.tf", "R1: region `us-central-1`");

    // R2: encryption off.
    let out = p.plan(&["-var", "encrypted=false"]);
    refused(&out, "modules/encrypted-volume/variables.tf", "R2: every customer-data volume is encrypted at rest; encrypted = false is not allowed.");
    let out = p.plan(&["-var", "hs_volume_encrypted=false"]);
    refused(&out, "modules/homeserver/variables.tf", "R2: every customer-data volume is encrypted at rest; volume_encrypted = false is not allowed.");

    // R5: a volume larger than the plan's storage limit (Silver: 50 GB), from the catalog.
    let out = p.plan(&["-var", "size_gb=60"]);
    refused(&out, "modules/encrypted-volume/main.tf", "R5: a 60 GB volume exceeds the storage limit of the silver plan (50 GB).");

    // R4: retention 7 without the override; with it, the plan goes through.
    let out = p.plan(&["-var", "retention_days=7"]);
    refused(&out, "modules/daily-backups/main.tf", "R4: backups are kept for 30 days (daily, rolling retention); retention_days = 7 is refused. Keep the default of 30, or set allow_nonstandard_retention = true to override it deliberately.");
    let out = p.plan(&["-var", "hs_retention_days=7"]);
    refused(&out, "modules/daily-backups/main.tf", "retention_days = 7 is refused");
    p.assert_changes(&["-var", "retention_days=7", "-var", "allow_nonstandard_retention=true"])
        .assert_contains("retention_days = 7");
    // Outside what the service accepts, even with the override.
    let out = p.plan(&["-var", "retention_days=400", "-var", "allow_nonstandard_retention=true"]);
    refused(&out, "modules/daily-backups/variables.tf", "R4: retention_days must be a whole number of days from 7 to 365");

    // R8: more reserved users than the plan's cap (Nickel: 10 MAU); Additional Users raise it.
    let out = p.plan(&["-var", "reserved_count=11"]);
    refused(&out, "modules/homeserver/main.tf", "R8: 11 reserved users exceed the MAU cap of 10 (nickel plan: 10 MAU + 0 additional users).");
    p.assert_changes(&["-var", "reserved_count=11", "-var", "additional_users=1"]);
    p.assert_changes(&["-var", "reserved_count=10"]);

    // R22: Nickel keeps end-to-end encryption on by default; Gold may turn it off.
    let out = p.plan(&["-var", "encryption_by_default=false"]);
    refused(&out, "modules/homeserver/main.tf", "R22: the nickel plan keeps end-to-end encryption on by default");
    p.assert_changes(&["-var", "encryption_by_default=false", "-var", "plan=gold"]);

    // `apply` stops at the same point: nothing reaches the API.
    let out = p.apply_fails(&["-var", "reserved_count=11"]);
    out.assert_says("R8: 11 reserved users exceed the MAU cap of 10");
    out.assert_lacks("Creating...");
    assert_eq!(expect_status(&api.get("/v1/billing-plans").await, 200)["items"], json!([]));
    assert_eq!(expect_status(&api.get("/v1/homeservers").await, 200)["items"], json!([]));
    assert!(p.resource_addresses().is_empty(), "nothing in the state: {:?}", p.resource_addresses());

    p.print_timings("guardrails_fail_at_plan_time_with_their_message");
    eprintln!("[timing] guardrails test: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn enterprise_example_refuses_a_region_outside_the_us_at_plan_time() {
    let server = TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite).start().await;
    let p = Project::example(Terraform::new(&server), "enterprise-onboarding");
    p.write_file("terraform.tfvars", &std::fs::read_to_string(p.dir().join("terraform.tfvars.example")).unwrap());
    p.init();
    p.assert_changes(&[]);
    let out = p.plan(&["-var", "region=eu-west-1"]);
    assert_eq!(out.code, 1, "{out}");
    out.assert_says("R1: homeservers are hosted only in US regions");
    let out = p.plan(&["-var", "staff_plan=nickel"]);
    assert_eq!(out.code, 1, "{out}");
    out.assert_says("R5: a 20 GB volume exceeds the storage limit of the nickel plan (10 GB).");
    p.print_timings("enterprise_example_refuses_a_region_outside_the_us_at_plan_time");
}
