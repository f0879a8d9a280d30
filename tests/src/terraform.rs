//! Helpers for the Terraform acceptance tests: build the provider, install it into a
//! project-local filesystem mirror (in a temp dir), write a CLI config that uses only that
//! mirror for `terraform.local/*/*`, and run the real `terraform` (1.0.3, from `.tools/`) in a
//! working directory of its own.
//!
//! ```ignore
//! let server = TestServer::start(&workspace_bin("matrixhostd"), Backend::Sqlite).await;
//! let tf = Terraform::new(&server);
//! tf.write_main(r#"resource "matrixhost_billing_plan" "bp" { plan = "silver" }"#);
//! tf.init();
//! tf.apply();
//! tf.assert_no_changes();
//! ```
//!
//! Every command runs with `TF_CLI_CONFIG_FILE` pointing at the generated config,
//! `CHECKPOINT_DISABLE=1`, `-input=false` and `-no-color`; the provider gets the server's
//! endpoint and token through `MATRIXHOST_ENDPOINT` / `MATRIXHOST_TOKEN`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::TestServer;

/// The provider's source address in configurations.
pub const SOURCE: &str = "terraform.local/matrixhost/matrixhost";
/// The version the provider is installed as (the workspace version).
pub const PROVIDER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `terraform {}` block every test configuration starts with.
pub fn required_providers() -> String {
    format!("terraform {{\n  required_providers {{\n    matrixhost = {{\n      source = \"{SOURCE}\"\n    }}\n  }}\n}}\n")
}


/// Selects another Terraform for the acceptance tests (`scripts/test.sh` sets it to the
/// machine's own `terraform`, when it has one, for a second pass).
pub const TERRAFORM_BIN_ENV: &str = "MATRIXHOST_TERRAFORM_BIN";

/// The Terraform binary: `$MATRIXHOST_TERRAFORM_BIN`, else the project's Terraform 1.0.3 at
/// `$MATRIXHOST_TOOLS_DIR/bin/terraform` or `<workspace>/.tools/bin/terraform` (installed by
/// `scripts/setup.sh`).
pub fn terraform_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(TERRAFORM_BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.exists(), "{TERRAFORM_BIN_ENV}={} does not exist", bin.display());
        return bin;
    }
    let tools = crate::tools_dir();
    let bin = tools.join("bin/terraform");
    assert!(bin.exists(), "{} does not exist: run scripts/setup.sh (it installs Terraform 1.0.3)", bin.display());
    bin
}

/// Builds the provider in another cargo profile than the other binaries (the benchmark uses
/// `provider-release`, the profile it ships in).
pub const PROVIDER_PROFILE_ENV: &str = "MATRIXHOST_PROVIDER_PROFILE";

/// The provider binary, built with the rest of the workspace, or in `$MATRIXHOST_PROVIDER_PROFILE`
/// (built by the caller, e.g. `scripts/bench.sh`).
pub fn provider_bin() -> PathBuf {
    match std::env::var(PROVIDER_PROFILE_ENV).ok().filter(|p| !p.is_empty()) {
        Some(profile) => {
            let path = crate::target_dir().join(&profile).join("terraform-provider-matrixhost");
            assert!(path.exists(), "{} does not exist: cargo build --profile {profile} -p terraform-provider-matrixhost", path.display());
            path
        }
        None => crate::workspace_bin("terraform-provider-matrixhost"),
    }
}

/// A filesystem mirror holding the freshly built provider, and the CLI config that uses it.
pub struct Mirror {
    dir: TempDir,
}

impl Mirror {
    /// Installs the provider as `<dir>/terraform.local/matrixhost/matrixhost/<ver>/linux_amd64/
    /// terraform-provider-matrixhost_v<ver>` and writes `<dir>/terraform.rc`.
    pub fn new() -> Mirror {
        let dir = tempfile::Builder::new().prefix("tf-mirror.").tempdir().expect("creating the mirror dir");
        let platform = dir.path().join(format!("{SOURCE}/{PROVIDER_VERSION}/linux_amd64"));
        fs::create_dir_all(&platform).expect("creating the mirror layout");
        let target = platform.join(format!("terraform-provider-matrixhost_v{PROVIDER_VERSION}"));
        fs::copy(provider_bin(), &target).expect("copying the provider into the mirror");
        let mirror = dir.path().display().to_string();
        let config = format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{mirror}\"\n    include = [\"terraform.local/*/*\"]\n  }}\n  direct {{\n    exclude = [\"terraform.local/*/*\"]\n  }}\n}}\n"
        );
        fs::write(dir.path().join("terraform.rc"), config).expect("writing the CLI config");
        Mirror { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cli_config(&self) -> PathBuf {
        self.dir.path().join("terraform.rc")
    }
}

impl Default for Mirror {
    fn default() -> Self {
        Self::new()
    }
}

/// What a terraform command did.
#[derive(Clone)]
pub struct TfOutput {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl TfOutput {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics unless the output contains `needle`.
    #[track_caller]
    pub fn assert_contains(&self, needle: &str) -> &Self {
        assert!(self.all().contains(needle), "expected `{needle}` in the output of terraform {:?}:\n{self}", self.args);
        self
    }

    /// Panics if the output contains `needle`.
    #[track_caller]
    pub fn assert_lacks(&self, needle: &str) -> &Self {
        assert!(!self.all().contains(needle), "did not expect `{needle}` in the output of terraform {:?}:\n{self}", self.args);
        self
    }

    /// The output with Terraform's line wrapping undone (diagnostic details are wrapped at 80
    /// columns), for matching messages.
    pub fn unwrapped(&self) -> String {
        self.all().split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Panics unless the (unwrapped) output contains `needle` (whitespace-insensitive).
    #[track_caller]
    pub fn assert_says(&self, needle: &str) -> &Self {
        let needle = needle.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(self.unwrapped().contains(&needle), "expected `{needle}` in the output of terraform {:?}:\n{self}", self.args);
        self
    }

    /// Panics unless there is an `Error: <summary>` diagnostic whose source snippet shows
    /// `attr_line` (e.g. `region = "eu-west-1"`): that is how Terraform shows the attribute a
    /// diagnostic is about.
    #[track_caller]
    pub fn assert_error_at(&self, summary: &str, attr_line: &str) -> &Self {
        let text = self.all();
        let blocks: Vec<&str> = text.split("Error: ").skip(1).collect();
        let hit = blocks.iter().any(|b| {
            b.starts_with(summary) && b.lines().any(|l| l.split_once(':').is_some_and(|(n, rest)| n.trim().parse::<u32>().is_ok() && squash(rest).contains(&squash(attr_line))))
        });
        assert!(hit, "expected an `Error: {summary}` pointing at `{attr_line}` in terraform {:?}:\n{self}", self.args);
        self
    }
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Display for TfOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.elapsed, self.stdout, self.stderr)
    }
}

impl fmt::Debug for TfOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A Terraform working directory (a temp dir of its own) wired to a server and a mirror.
pub struct Terraform {
    dir: TempDir,
    mirror: std::sync::Arc<Mirror>,
    envs: Vec<(String, Option<String>)>,
    /// Every command run, with its duration, for timing reports.
    log: std::sync::Mutex<Vec<(String, Duration)>>,
}

/// One mirror per test process (the provider binary is the same for all tests).
fn shared_mirror() -> std::sync::Arc<Mirror> {
    static MIRROR: OnceLock<std::sync::Arc<Mirror>> = OnceLock::new();
    MIRROR.get_or_init(|| std::sync::Arc::new(Mirror::new())).clone()
}

impl Terraform {
    /// A working dir whose provider talks to `server` with its dev token.
    pub fn new(server: &TestServer) -> Terraform {
        Self::with_credentials(Some(&server.base_url()), Some(server.dev_token()))
    }

    /// A working dir with the given endpoint and token (None: not set).
    pub fn with_credentials(endpoint: Option<&str>, token: Option<&str>) -> Terraform {
        let dir = tempfile::Builder::new().prefix("tf-work.").tempdir().expect("creating the working dir");
        let tf = Terraform { dir, mirror: shared_mirror(), envs: Vec::new(), log: Default::default() };
        tf.env("MATRIXHOST_ENDPOINT", endpoint).env("MATRIXHOST_TOKEN", token)
    }

    /// Sets (Some) or removes (None) an environment variable for every command.
    pub fn env(mut self, key: &str, value: Option<&str>) -> Self {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_owned(), value.map(str::to_owned)));
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// Writes `main.tf`: the `terraform {}` block plus `body`.
    pub fn write_main(&self, body: &str) {
        self.write_file("main.tf", &format!("{}\n{body}", required_providers()));
    }

    pub fn write_file(&self, name: &str, content: &str) {
        fs::write(self.dir().join(name), content).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }

    pub fn remove_file(&self, name: &str) {
        let _ = fs::remove_file(self.dir().join(name));
    }

    /// Runs `terraform <args>` in the working dir and returns what happened.
    pub fn run(&self, args: &[&str]) -> TfOutput {
        let mut cmd = Command::new(terraform_bin());
        cmd.args(args).current_dir(self.dir()).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("TF_") || k.starts_with("MATRIXHOST_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("TF_CLI_CONFIG_FILE", self.mirror.cli_config())
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0");
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let started = Instant::now();
        let out = cmd.output().unwrap_or_else(|e| panic!("running terraform {args:?}: {e}"));
        let elapsed = started.elapsed();
        self.log.lock().unwrap().push((args.first().copied().unwrap_or("").to_owned(), elapsed));
        TfOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }

    /// Runs a command and panics unless it exits 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> TfOutput {
        let out = self.run(args);
        assert!(out.success(), "terraform {args:?} failed:\n{out}");
        out
    }

    /// Runs a command and panics unless it fails.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> TfOutput {
        let out = self.run(args);
        assert!(!out.success(), "terraform {args:?} succeeded but should have failed:\n{out}");
        out
    }

    /// `terraform init` (a fresh one: every working dir is new, so the lock file matches the
    /// freshly built provider).
    #[track_caller]
    pub fn init(&self) -> TfOutput {
        self.ok(&["init", "-input=false", "-no-color"])
    }

    #[track_caller]
    pub fn apply(&self) -> TfOutput {
        self.ok(&["apply", "-auto-approve", "-input=false", "-no-color"])
    }

    #[track_caller]
    pub fn apply_fails(&self) -> TfOutput {
        self.fails(&["apply", "-auto-approve", "-input=false", "-no-color"])
    }

    #[track_caller]
    pub fn destroy(&self) -> TfOutput {
        self.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"])
    }

    /// `terraform plan -detailed-exitcode`: 0 no changes, 2 changes, 1 error.
    pub fn plan(&self) -> TfOutput {
        self.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"])
    }

    /// Panics unless the plan has no changes (exit code 0 with `-detailed-exitcode`).
    #[track_caller]
    pub fn assert_no_changes(&self) -> TfOutput {
        let out = self.plan();
        assert_eq!(out.code, 0, "expected an empty plan (-detailed-exitcode = 0):\n{out}");
        // Computed values that moved on their own (a status still settling) are noise too.
        assert!(!out.stdout.contains("changed outside of Terraform"), "the empty plan reports changes outside of Terraform:\n{out}");
        out
    }

    /// Like [`Terraform::assert_no_changes`], after a deliberate change outside of Terraform
    /// (an anniversary passed, say): the refresh may report it, the plan must still be empty.
    #[track_caller]
    pub fn assert_no_changes_after_outside_change(&self) -> TfOutput {
        let out = self.plan();
        assert_eq!(out.code, 0, "expected an empty plan (-detailed-exitcode = 0):\n{out}");
        out
    }

    /// Panics unless the plan has changes (exit code 2); returns it.
    #[track_caller]
    pub fn assert_changes(&self) -> TfOutput {
        let out = self.plan();
        assert_eq!(out.code, 2, "expected a plan with changes (-detailed-exitcode = 2):\n{out}");
        out
    }

    /// Panics unless the plan fails; returns it.
    #[track_caller]
    pub fn plan_fails(&self) -> TfOutput {
        let out = self.plan();
        assert_eq!(out.code, 1, "expected the plan to fail:\n{out}");
        out
    }

    #[track_caller]
    pub fn import(&self, address: &str, id: &str) -> TfOutput {
        self.ok(&["import", "-input=false", "-no-color", address, id])
    }

    /// Imports `id` into a throwaway `<resource_type>.probe` (declared with `body` in
    /// `probe.tf`, as Terraform 1.0 requires) and panics unless the import fails; returns it.
    #[track_caller]
    pub fn import_fails(&self, resource_type: &str, body: &str, id: &str) -> TfOutput {
        self.write_file("probe.tf", &format!("resource \"{resource_type}\" \"probe\" {{\n{body}\n}}\n"));
        let out = self.run(&["import", "-input=false", "-no-color", &format!("{resource_type}.probe"), id]);
        self.remove_file("probe.tf");
        assert!(!out.success(), "importing `{id}` should have failed:\n{out}");
        out
    }

    #[track_caller]
    pub fn state_rm(&self, address: &str) -> TfOutput {
        self.ok(&["state", "rm", "-no-color", address])
    }

    /// `terraform show -json` of the state.
    #[track_caller]
    pub fn show_json(&self) -> Value {
        let out = self.ok(&["show", "-json", "-no-color"]);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("terraform show -json is not JSON ({e}):\n{out}"))
    }

    /// The state file as JSON (read directly: no terraform process).
    #[track_caller]
    pub fn state_json(&self) -> Value {
        let text = self.state_file();
        assert!(!text.is_empty(), "no terraform.tfstate in {}", self.dir().display());
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("terraform.tfstate is not JSON ({e})"))
    }

    /// The attribute values of a resource (`type.name`) or data source (`data.type.name`) in
    /// the state (blocks appear as `terraform show -json` shows them).
    #[track_caller]
    pub fn values(&self, address: &str) -> Value {
        let state = self.state_json();
        let (mode, rest) = match address.strip_prefix("data.") {
            Some(rest) => ("data", rest),
            None => ("managed", address),
        };
        let (ty, name) = rest.split_once('.').unwrap_or_else(|| panic!("`{address}` is not type.name"));
        state["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["mode"] == mode && r["type"] == ty && r["name"] == name && r.get("module").is_none())
            .and_then(|r| r["instances"].get(0).map(|i| i["attributes"].clone()))
            .unwrap_or_else(|| panic!("{address} is not in the state"))
    }

    /// Whether a resource is in the state.
    pub fn in_state(&self, address: &str) -> bool {
        let state: Value = serde_json::from_str(&self.state_file()).unwrap_or(Value::Null);
        let (mode, rest) = match address.strip_prefix("data.") {
            Some(rest) => ("data", rest),
            None => ("managed", address),
        };
        let Some((ty, name)) = rest.split_once('.') else { return false };
        state["resources"].as_array().into_iter().flatten().any(|r| {
            r["mode"] == mode && r["type"] == ty && r["name"] == name && r["instances"].as_array().is_some_and(|i| !i.is_empty())
        })
    }

    /// The outputs of the state (name -> value).
    #[track_caller]
    pub fn outputs(&self) -> Value {
        let state = self.state_json();
        let mut m = serde_json::Map::new();
        if let Some(obj) = state["outputs"].as_object() {
            for (k, v) in obj {
                m.insert(k.clone(), v["value"].clone());
            }
        }
        Value::Object(m)
    }

    /// The raw state file (to search it for secrets).
    pub fn state_file(&self) -> String {
        fs::read_to_string(self.dir().join("terraform.tfstate")).unwrap_or_default()
    }

    /// The commands run so far with their durations.
    pub fn timings(&self) -> Vec<(String, Duration)> {
        self.log.lock().unwrap().clone()
    }

    /// Prints the commands run and how long they took (shown with `--nocapture`).
    pub fn print_timings(&self, test: &str) {
        let t = self.timings();
        let total: Duration = t.iter().map(|(_, d)| *d).sum();
        let detail: Vec<String> = t.iter().map(|(c, d)| format!("{c} {:.1}s", d.as_secs_f64())).collect();
        eprintln!("[timing] {test}: {} terraform commands, {:.1}s: {}", t.len(), total.as_secs_f64(), detail.join(", "));
    }
}

/// HCL string literal.
pub fn hcl_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_snippets_are_found() {
        let out = TfOutput {
            args: vec![],
            code: 1,
            stdout: String::new(),
            stderr: "\nError: Invalid region\n\n  with matrixhost_homeserver.hs,\n  on main.tf line 12, in resource \"matrixhost_homeserver\" \"hs\":\n  12:   region          = \"eu-west-1\"\n\nR1: `eu-west-1` is outside the US\n".into(),
            elapsed: Duration::ZERO,
        };
        out.assert_error_at("Invalid region", "region = \"eu-west-1\"");
        out.assert_says("R1: `eu-west-1` is outside the US");
    }
}
