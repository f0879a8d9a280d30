//! Helpers for the tests of the HCL modules (`modules/`) and examples (`examples/quickstart`,
//! `examples/enterprise-onboarding`).
//!
//! Examples refer to the modules by relative path (`../../modules/homeserver`), so a test copies
//! `modules/` and the configuration under test into a fresh [`Terraform`] working dir with the
//! repository's layout and runs every command with `-chdir=<config>`:
//!
//! ```ignore
//! let p = Project::example(Terraform::new(&server), "quickstart");
//! p.init();
//! p.apply();
//! p.assert_no_changes();
//! ```
//!
//! A test root config for a module lives at `<work>/roots/<name>/main.tf` and calls the modules
//! as `../../modules/<module>`, like an example does.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::terraform::{TfOutput, Terraform};
use crate::workspace_root;

/// The modules under `modules/`.
pub const MODULES: &[&str] = &["us-regions", "encrypted-volume", "daily-backups", "homeserver"];
/// The examples this suite owns.
pub const EXAMPLES: &[&str] = &["quickstart", "enterprise-onboarding"];

/// Copies `src` to `dst` recursively, leaving out Terraform's working files (`.terraform/`,
/// state, lock file) that a developer may have next to the sources.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("creating {}: {e}", dst.display()));
    for entry in fs::read_dir(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display())) {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ".terraform" || name == ".terraform.lock.hcl" || name.ends_with(".tfstate") || name.ends_with(".tfstate.backup") || name == "terraform.tfvars" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &dst.join(&name));
        } else {
            fs::copy(&path, dst.join(&name)).unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
        }
    }
}

/// A configuration (example or test root) inside a working dir that also holds `modules/`.
pub struct Project {
    pub tf: Terraform,
    /// The configuration's directory, relative to the working dir.
    pub sub: PathBuf,
    /// Every command run, with its duration, for timing reports.
    log: Mutex<Vec<(String, Duration)>>,
}

impl Project {
    /// `examples/<name>` with `modules/`, copied from the repository.
    pub fn example(tf: Terraform, name: &str) -> Project {
        copy_tree(&workspace_root().join("modules"), &tf.dir().join("modules"));
        let sub = PathBuf::from("examples").join(name);
        copy_tree(&workspace_root().join(&sub), &tf.dir().join(&sub));
        Project { tf, sub, log: Mutex::default() }
    }

    /// `modules/<name>` itself as the root (for `validate`).
    pub fn module(tf: Terraform, name: &str) -> Project {
        copy_tree(&workspace_root().join("modules"), &tf.dir().join("modules"));
        Project { tf, sub: PathBuf::from("modules").join(name), log: Mutex::default() }
    }

    /// A test root config `roots/<name>/main.tf` (the `terraform {}` block plus `body`), with
    /// `modules/` next to it: call a module as `source = "../../modules/<module>"`.
    pub fn root(tf: Terraform, name: &str, body: &str) -> Project {
        copy_tree(&workspace_root().join("modules"), &tf.dir().join("modules"));
        let sub = PathBuf::from("roots").join(name);
        let p = Project { tf, sub, log: Mutex::default() };
        p.write_file("main.tf", &format!("{}\n{body}", crate::terraform::required_providers()));
        p
    }

    /// The configuration's directory.
    pub fn dir(&self) -> PathBuf {
        self.tf.dir().join(&self.sub)
    }

    pub fn write_file(&self, name: &str, content: &str) {
        fs::create_dir_all(self.dir()).expect("creating the config dir");
        fs::write(self.dir().join(name), content).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }

    /// Runs `terraform -chdir=<config> <args>`.
    pub fn run(&self, args: &[&str]) -> TfOutput {
        let chdir = format!("-chdir={}", self.sub.display());
        let mut all = vec![chdir.as_str()];
        all.extend_from_slice(args);
        let mut out = self.tf.run(&all);
        out.args.remove(0);
        self.log.lock().unwrap().push((args.first().copied().unwrap_or("").to_owned(), out.elapsed));
        out
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> TfOutput {
        let out = self.run(args);
        assert!(out.success(), "terraform {args:?} in {} failed:\n{out}", self.sub.display());
        out
    }

    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> TfOutput {
        let out = self.run(args);
        assert!(!out.success(), "terraform {args:?} in {} succeeded but should have failed:\n{out}", self.sub.display());
        out
    }

    #[track_caller]
    pub fn init(&self) -> TfOutput {
        self.ok(&["init", "-input=false", "-no-color"])
    }

    #[track_caller]
    pub fn apply(&self, extra: &[&str]) -> TfOutput {
        let mut args = vec!["apply", "-auto-approve", "-input=false", "-no-color"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    #[track_caller]
    pub fn apply_fails(&self, extra: &[&str]) -> TfOutput {
        let mut args = vec!["apply", "-auto-approve", "-input=false", "-no-color"];
        args.extend_from_slice(extra);
        self.fails(&args)
    }

    #[track_caller]
    pub fn destroy(&self, extra: &[&str]) -> TfOutput {
        let mut args = vec!["destroy", "-auto-approve", "-input=false", "-no-color"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// `terraform plan -detailed-exitcode <extra>`: 0 no changes, 2 changes, 1 error.
    pub fn plan(&self, extra: &[&str]) -> TfOutput {
        let mut args = vec!["plan", "-detailed-exitcode", "-input=false", "-no-color"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    #[track_caller]
    pub fn assert_no_changes(&self, extra: &[&str]) -> TfOutput {
        let out = self.plan(extra);
        assert_eq!(out.code, 0, "expected an empty plan (-detailed-exitcode = 0) in {}:\n{out}", self.sub.display());
        out
    }

    #[track_caller]
    pub fn assert_changes(&self, extra: &[&str]) -> TfOutput {
        let out = self.plan(extra);
        assert_eq!(out.code, 2, "expected a plan with changes (-detailed-exitcode = 2) in {}:\n{out}", self.sub.display());
        out
    }

    #[track_caller]
    pub fn plan_fails(&self, extra: &[&str]) -> TfOutput {
        let out = self.plan(extra);
        assert_eq!(out.code, 1, "expected the plan to fail in {}:\n{out}", self.sub.display());
        out
    }

    /// The state file of the configuration, as JSON (`Null` when there is none).
    pub fn state(&self) -> Value {
        fs::read_to_string(self.dir().join("terraform.tfstate")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
    }

    /// The raw state file (to search it for secrets).
    pub fn state_text(&self) -> String {
        fs::read_to_string(self.dir().join("terraform.tfstate")).unwrap_or_default()
    }

    /// The root outputs (name -> value).
    pub fn outputs(&self) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(obj) = self.state()["outputs"].as_object() {
            for (k, v) in obj {
                m.insert(k.clone(), v["value"].clone());
            }
        }
        Value::Object(m)
    }

    /// Addresses of the managed resource instances in the state, e.g.
    /// `module.staff.matrixhost_reserved_user.this["it-ops"]`.
    pub fn resource_addresses(&self) -> Vec<String> {
        let state = self.state();
        let mut out = Vec::new();
        for r in state["resources"].as_array().into_iter().flatten() {
            if r["mode"] != "managed" {
                continue;
            }
            let prefix = r["module"].as_str().map(|m| format!("{m}.")).unwrap_or_default();
            for i in r["instances"].as_array().into_iter().flatten() {
                let key = match &i["index_key"] {
                    Value::String(s) => format!("[{s:?}]"),
                    Value::Number(n) => format!("[{n}]"),
                    _ => String::new(),
                };
                out.push(format!("{prefix}{}.{}{key}", r["type"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or("")));
            }
        }
        out.sort();
        out
    }

    /// The commands run so far (without `-chdir`) with their durations.
    pub fn timings(&self) -> Vec<(String, Duration)> {
        self.log.lock().unwrap().clone()
    }

    /// Prints the commands run and how long they took (shown with `--nocapture`).
    pub fn print_timings(&self, test: &str) {
        let t = self.timings();
        let total: Duration = t.iter().map(|(_, d)| *d).sum();
        let detail: Vec<String> = t.iter().map(|(c, d)| format!("{c} {:.1}s", d.as_secs_f64())).collect();
        eprintln!("[timing] {test} ({}): {} terraform commands, {:.1}s: {}", self.sub.display(), t.len(), total.as_secs_f64(), detail.join(", "));
    }
}

/// The names declared as `<kind> "<name>" {` in a file (e.g. variables or outputs).
pub fn declared(text: &str, kind: &str) -> Vec<String> {
    let prefix = format!("{kind} \"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The top-level `<kind> "<name>" { ... }` blocks of a file, with their bodies (a block ends at
/// the first line that is exactly `}`, as `terraform fmt` lays it out).
pub fn blocks(text: &str, kind: &str) -> Vec<(String, String)> {
    let prefix = format!("{kind} \"");
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some((name, body)) = current.as_mut() {
            if line == "}" {
                out.push((std::mem::take(name), std::mem::take(body)));
                current = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
        } else if let Some(rest) = line.strip_prefix(&prefix) {
            if let Some((name, _)) = rest.split_once('"') {
                current = Some((name.to_owned(), String::new()));
            }
        }
    }
    out
}

/// A password for a test account: 24 random-looking characters (never printed by the tests).
pub fn test_password() -> String {
    format!("pw-{}", crate::unique_name("x")).chars().chain("-Aa1".chars()).collect()
}
