//! Benchmark (not a test) of the Terraform provider against HashiCorp's Go `null` provider 2.1.2,
//! side by side in one run (`scripts/bench.sh provider`, see `docs/benchmarks.md`):
//! - create: `terraform apply` of `MH_BENCH_N` (default 1000) `matrixhost_reserved_user`
//!   against the real matrixhostd, and of as many `null_resource`;
//! - no-change plan: `terraform plan -detailed-exitcode` right after (exit code 0 required);
//! - the provider's peak resident memory (VmHWM) during the apply and during the plan.
//!
//! Terraform 1.0.3 (the project's) runs both. Runs alternate the order of the two providers
//! (`MH_BENCH_RUNS`, default 5), and the report gives the median of each and the ratio. The
//! server runs without the runtime (reserved users are records until a homeserver runs) and
//! with its per-token rate limit raised, so that what is measured is the provider and the API.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matrixhost_tests::runtime::create_homeserver;
use matrixhost_tests::terraform::{required_providers, Terraform};
use matrixhost_tests::{tools_dir, workspace_bin, Backend, TestServer};
use serde_json::json;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Matrixhost,
    Null,
}

#[derive(Default)]
struct Samples {
    create_s: Vec<f64>,
    plan_s: Vec<f64>,
    create_hwm_mib: Vec<f64>,
    plan_hwm_mib: Vec<f64>,
    /// CPU seconds of one create: Terraform with its provider, the provider alone, matrixhostd.
    create_cpu: Vec<Cpu>,
}

/// Where a run's CPU time went, in seconds.
#[derive(Clone, Copy, Default)]
struct Cpu {
    terraform_and_provider: f64,
    provider: f64,
    server: f64,
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// User + system CPU ticks of a process from /proc/<pid>/stat; with `children`, of its waited
/// children instead.
fn cpu_ticks(pid: &str, children: bool) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command (which may hold spaces) come the fields from 3 (state) on; utime and
    // stime are fields 14 and 15, cutime and cstime 16 and 17 (proc(5)).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    let (a, b) = if children { (16, 17) } else { (14, 15) };
    field(a) + field(b)
}

/// The peak resident set (VmHWM) of processes whose command line contains `needle`, sampled
/// until `stop` is set; processes are read just before they exit too (every 20 ms). Also their
/// CPU seconds as last seen.
fn sample_peak(needle: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(f64, f64)> {
    std::thread::spawn(move || {
        let mut peak_kib = 0u64;
        let mut cpu = std::collections::HashMap::<String, u64>::new();
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let dir = entry.path();
                let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else { continue };
                if !String::from_utf8_lossy(&cmdline).contains(needle) {
                    continue;
                }
                let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
                let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok());
                peak_kib = peak_kib.max(hwm.unwrap_or(0));
                let pid = entry.file_name().to_string_lossy().into_owned();
                let ticks = cpu_ticks(&pid, false);
                cpu.insert(pid, ticks);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (peak_kib as f64 / 1024.0, cpu.values().sum::<u64>() as f64 / TICKS)
    })
}

/// A CLI config with both providers' filesystem mirrors.
fn cli_config(tf: &Terraform, dir: &Path) -> PathBuf {
    let ours = tf.mirror().path().display().to_string();
    let null = tools_dir().join("null-provider/mirror");
    assert!(null.exists(), "{} is missing; run scripts/setup.sh", null.display());
    let path = dir.join("bench.tfrc");
    std::fs::write(
        &path,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{ours}\"\n    include = [\"terraform.local/*/*\"]\n  }}\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/hashicorp/null\"]\n  }}\n}}\n",
            null.display()
        ),
    )
    .unwrap();
    path
}

fn configuration(which: Which, n: usize, homeserver: &str) -> String {
    match which {
        Which::Matrixhost => format!(
            "{}resource \"matrixhost_reserved_user\" \"u\" {{\n  count         = {n}\n  homeserver_id = \"{homeserver}\"\n  email         = \"user${{count.index}}@corp.example\"\n  localpart     = \"user${{count.index}}\"\n}}\n",
            required_providers()
        ),
        Which::Null => format!(
            "terraform {{\n  required_providers {{\n    null = {{\n      source  = \"hashicorp/null\"\n      version = \"2.1.2\"\n    }}\n  }}\n}}\nresource \"null_resource\" \"r\" {{\n  count    = {n}\n  triggers = {{ i = count.index }}\n}}\n"
        ),
    }
}

/// Runs `args` while sampling the provider's peak memory and everyone's CPU; returns the output,
/// the peak and the CPU.
fn measured(tf: &Terraform, which: Which, server_pid: &str, args: &[&str]) -> (matrixhost_tests::terraform::TfOutput, f64, Cpu) {
    let needle = match which {
        Which::Matrixhost => "terraform-provider-matrixhost",
        Which::Null => "terraform-provider-null",
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(needle, stop.clone());
    let (children, server) = (cpu_ticks("self", true), cpu_ticks(server_pid, false));
    let out = tf.run(args);
    let (children, server) = (cpu_ticks("self", true) - children, cpu_ticks(server_pid, false) - server);
    stop.store(true, Ordering::Relaxed);
    let (peak, provider) = sampler.join().unwrap();
    let cpu = Cpu { terraform_and_provider: children as f64 / TICKS, provider, server: server as f64 / TICKS };
    (out, peak, cpu)
}

/// One create, one no-change plan and a destroy; returns (create s, plan s, create peak MiB,
/// plan peak MiB, create CPU).
fn run_once(tf: &Terraform, which: Which, server_pid: &str) -> (f64, f64, f64, f64, Cpu) {
    let (create, create_peak, cpu) = measured(tf, which, server_pid, &["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(create.success(), "the apply failed:\n{}", create.all());
    let (plan, plan_peak, _) = measured(tf, which, server_pid, &["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    assert_eq!(plan.code, 0, "the plan after apply must be empty:\n{}", plan.all());
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    (create.elapsed.as_secs_f64(), plan.elapsed.as_secs_f64(), create_peak, plan_peak, cpu)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn main() {
    let n = env_or("MH_BENCH_N", 1000);
    let runs = env_or("MH_BENCH_RUNS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = rt.block_on(
        TestServer::builder(&workspace_bin("matrixhostd"), Backend::Sqlite)
            .args(["--rate-limit-per-second", "1000000", "--rate-limit-burst", "1000000"])
            .start(),
    );
    let api = server.client();
    let plan_users = (n as i64 - 1000).max(0) + 10;
    let homeserver = rt.block_on(async {
        let hs = create_homeserver(&api, "platinum", "bench", json!({})).await;
        let bp = hs["billing_plan_id"].as_str().unwrap().to_owned();
        let current = matrixhost_tests::expect_status(&api.get(&format!("/v1/billing-plans/{bp}")).await, 200);
        let mut body = json!({ "plan": "platinum", "billing_period": current["billing_period"], "additional_users": plan_users });
        if let Some(pm) = current.get("payment_method_id").filter(|v| !v.is_null()) {
            body["payment_method_id"] = pm.clone();
        }
        matrixhost_tests::expect_status(&api.put(&format!("/v1/billing-plans/{bp}"), &body).await, 200);
        hs["id"].as_str().unwrap().to_owned()
    });

    let work = tempfile::tempdir().unwrap();
    let ours = Terraform::new(&server);
    let rc = cli_config(&ours, work.path());
    let ours = ours.env("TF_CLI_CONFIG_FILE", Some(rc.to_str().unwrap()));
    let null = Terraform::new(&server).env("TF_CLI_CONFIG_FILE", Some(rc.to_str().unwrap()));
    ours.write_file("main.tf", &configuration(Which::Matrixhost, n, &homeserver));
    null.write_file("main.tf", &configuration(Which::Null, n, &homeserver));
    ours.ok(&["init", "-input=false", "-no-color"]);
    null.ok(&["init", "-input=false", "-no-color"]);

    let server_pid = server.pid().expect("the server runs").to_string();
    let (mut m, mut g) = (Samples::default(), Samples::default());
    for run in 0..runs {
        let order = if run % 2 == 0 { [Which::Matrixhost, Which::Null] } else { [Which::Null, Which::Matrixhost] };
        for which in order {
            let (tf, samples) = match which {
                Which::Matrixhost => (&ours, &mut m),
                Which::Null => (&null, &mut g),
            };
            let (create, plan, create_peak, plan_peak, cpu) = run_once(tf, which, &server_pid);
            samples.create_cpu.push(cpu);
            samples.create_s.push(create);
            samples.plan_s.push(plan);
            samples.create_hwm_mib.push(create_peak);
            samples.plan_hwm_mib.push(plan_peak);
            eprintln!(
                "run {}/{runs} {}: create {create:.2} s ({create_peak:.1} MiB; CPU: terraform+provider {:.2} s, provider {:.2} s, matrixhostd {:.2} s), no-change plan {plan:.2} s ({plan_peak:.1} MiB)",
                run + 1,
                if which == Which::Matrixhost { "matrixhost" } else { "null" },
                cpu.terraform_and_provider,
                cpu.provider,
                cpu.server,
            );
        }
    }
    println!("\nprovider benchmark: Terraform 1.0.3, N = {n}, {runs} runs each, medians");
    println!("| | matrixhost (matrixhost_reserved_user) | Go hashicorp/null 2.1.2 (null_resource) | ratio |");
    println!("|---|---|---|---|");
    for (label, a, b) in [("create", &m.create_s, &g.create_s), ("no-change plan", &m.plan_s, &g.plan_s)] {
        println!("| {label} | {:.2} s | {:.2} s | {:.2}x |", median(a), median(b), median(a) / median(b));
    }
    println!("| provider peak RSS, create | {:.1} MiB | {:.1} MiB | |", median(&m.create_hwm_mib), median(&g.create_hwm_mib));
    println!("| provider peak RSS, plan | {:.1} MiB | {:.1} MiB | |", median(&m.plan_hwm_mib), median(&g.plan_hwm_mib));
    let cpu = |s: &Samples, f: fn(&Cpu) -> f64| median(&s.create_cpu.iter().map(f).collect::<Vec<_>>());
    println!("| create CPU, Terraform and provider | {:.2} s | {:.2} s | |", cpu(&m, |c| c.terraform_and_provider), cpu(&g, |c| c.terraform_and_provider));
    println!("| create CPU, provider | {:.2} s | {:.2} s | |", cpu(&m, |c| c.provider), cpu(&g, |c| c.provider));
    println!("| create CPU, matrixhostd | {:.2} s | {:.2} s | |", cpu(&m, |c| c.server), cpu(&g, |c| c.server));
}
