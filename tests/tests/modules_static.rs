//! The HCL modules and examples, statically: `terraform fmt -check` and `terraform validate` (with
//! the provider from the project-local mirror) for every module and example, and the layout the
//! modules promise (terraform-aws-modules style: every variable described, typed and validated;
//! `versions.tf` with the provider's source address and Terraform >= 1.0; a README listing every
//! input and output). No server needed.

use std::fs;
use std::time::Instant;

use matrixhost_tests::modules::{blocks, declared, Project, EXAMPLES, MODULES};
use matrixhost_tests::terraform::{terraform_bin, Terraform, SOURCE};
use matrixhost_tests::workspace_root;

fn offline() -> Terraform {
    Terraform::with_credentials(None, None)
}

#[test]
fn fmt_check_passes_for_modules_and_examples() {
    let started = Instant::now();
    let tf = offline();
    let root = workspace_root();
    let mut dirs: Vec<_> = MODULES.iter().map(|m| root.join("modules").join(m)).collect();
    dirs.extend(EXAMPLES.iter().map(|e| root.join("examples").join(e)));
    for dir in &dirs {
        let d = dir.display().to_string();
        let out = tf.run(&["fmt", "-check", "-recursive", "-diff", "-no-color", &d]);
        assert!(out.success(), "terraform fmt -check {d}:\n{out}");
    }
    // The tfvars template too (fmt only takes *.tf / *.tfvars names).
    let example = root.join("examples/enterprise-onboarding/terraform.tfvars.example");
    tf.write_file("example.tfvars", &fs::read_to_string(&example).unwrap());
    let out = tf.run(&["fmt", "-check", "-diff", "-no-color", "example.tfvars"]);
    assert!(out.success(), "terraform fmt -check terraform.tfvars.example:\n{out}");
    eprintln!("[timing] fmt -check of {} dirs: {:.1}s", dirs.len() + 1, started.elapsed().as_secs_f64());
}

#[test]
fn validate_passes_for_every_module_and_example() {
    let started = Instant::now();
    let mut configs: Vec<Project> = MODULES.iter().map(|m| Project::module(offline(), m)).collect();
    configs.extend(EXAMPLES.iter().map(|e| Project::example(offline(), e)));
    for p in &configs {
        p.ok(&["init", "-backend=false", "-input=false", "-no-color"]);
        p.ok(&["validate", "-no-color"]).assert_contains("Success! The configuration is valid.");
    }
    eprintln!("[timing] init + validate of {} configs: {:.1}s", configs.len(), started.elapsed().as_secs_f64());
}

#[test]
fn modules_are_laid_out_like_terraform_aws_modules() {
    let root = workspace_root();
    for m in MODULES {
        let dir = root.join("modules").join(m);
        for f in ["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"] {
            assert!(dir.join(f).is_file(), "modules/{m}/{f} is missing");
        }
        let versions = fs::read_to_string(dir.join("versions.tf")).unwrap();
        assert!(versions.contains("required_version = \">= 1.0\""), "modules/{m}/versions.tf: required_version");
        assert!(versions.contains(&format!("source  = \"{SOURCE}\"")), "modules/{m}/versions.tf: provider source");

        // Every variable is described, typed and validated.
        let variables = fs::read_to_string(dir.join("variables.tf")).unwrap();
        let vars = blocks(&variables, "variable");
        assert!(!vars.is_empty(), "modules/{m} has no variables");
        for (name, body) in &vars {
            for needle in ["description = \"", "type ", "validation {", "error_message = \""] {
                assert!(body.contains(needle), "modules/{m}: variable `{name}` lacks `{needle}`");
            }
        }
        // Every output is described.
        let outputs = fs::read_to_string(dir.join("outputs.tf")).unwrap();
        let outs = blocks(&outputs, "output");
        assert!(!outs.is_empty(), "modules/{m} has no outputs");
        for (name, body) in &outs {
            assert!(body.contains("description = \""), "modules/{m}: output `{name}` lacks a description");
        }
        // The README lists every input and output, and has an example.
        let readme = fs::read_to_string(dir.join("README.md")).unwrap();
        for section in ["## Usage", "## Inputs", "## Outputs", "```hcl"] {
            assert!(readme.contains(section), "modules/{m}/README.md lacks `{section}`");
        }
        for name in declared(&variables, "variable").iter().chain(declared(&outputs, "output").iter()) {
            assert!(readme.contains(&format!("| `{name}` |")), "modules/{m}/README.md does not list `{name}`");
        }
    }
}

#[test]
fn examples_are_laid_out_as_an_iac_repository() {
    let root = workspace_root();
    for (example, files) in [
        ("quickstart", &["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"][..]),
        ("enterprise-onboarding", &["main.tf", "variables.tf", "outputs.tf", "versions.tf", "providers.tf", "terraform.tfvars.example", "README.md"][..]),
    ] {
        let dir = root.join("examples").join(example);
        for f in files {
            assert!(dir.join(f).is_file(), "examples/{example}/{f} is missing");
        }
        // No secrets in HCL: credentials come from MATRIXHOST_ENDPOINT / MATRIXHOST_TOKEN.
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tf") || name.ends_with(".example") {
                let sets_token = text.lines().any(|l| l.trim_start().starts_with("token") && l.contains('='));
                assert!(!sets_token, "examples/{example}/{name} sets a token");
                assert!(!text.contains("mh_"), "examples/{example}/{name} holds an API token");
            }
        }
    }
    assert!(root.join("docs/guides/getting-started.md").is_file());
    assert!(root.join("docs/guides/enterprise-onboarding.md").is_file());
    assert!(terraform_bin().exists());
}
