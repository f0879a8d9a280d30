//! Benchmark (not a test) of what the sandbox costs (R3): the same homeservers run with the
//! bubblewrap sandbox and, as the baseline, without it (`matrixhost-agent --sandbox none`, a test
//! hook). Run it with `scripts/bench.sh sandbox`; see `docs/benchmarks.md`.
//!
//! Each round starts a fresh agent and `matrixhostd` (profile `bench-hooks`), creates
//! `MH_BENCH_HOMESERVERS` homeservers one after another and measures, per homeserver:
//! - create → running: from the API request to `status = running` (volume, config, signing key,
//!   Synapse start, readiness probe, service account);
//! - idle memory: the resident set (RSS) and the proportional set size (PSS, shared pages split
//!   fairly) of every process in the homeserver's cgroup, summed, once it has been idle a few
//!   seconds, so bubblewrap's own processes count;
//! - request latency: `GET /_matrix/client/versions` through the ingress, sequentially.
//!
//! Rounds alternate the order of the two variants (`MH_BENCH_ROUNDS`, default 2) so drift on a
//! noisy machine hits both; the report shows the median of each and the sandbox's overhead.

use std::time::{Duration, Instant};

use matrixhost_tests::runtime::{cgroup_pids, create_homeserver, runtime_available, wait_status, Matrix, RuntimeServer};
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Bubblewrap,
    None,
}

impl Variant {
    fn flag(self) -> &'static str {
        match self {
            Variant::Bubblewrap => "bubblewrap",
            Variant::None => "none",
        }
    }
}

#[derive(Default)]
struct Samples {
    create_to_running_s: Vec<f64>,
    pss_mib: Vec<f64>,
    rss_mib: Vec<f64>,
    processes: Vec<f64>,
    request_ms: Vec<f64>,
}

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if !runtime_available("bench sandbox") {
        return;
    }
    let homeservers = env_or("MH_BENCH_HOMESERVERS", 3);
    let rounds = env_or("MH_BENCH_ROUNDS", 2);
    let requests = env_or("MH_BENCH_REQUESTS", 300);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (mut sandboxed, mut baseline) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        let order = if round % 2 == 0 { [Variant::Bubblewrap, Variant::None] } else { [Variant::None, Variant::Bubblewrap] };
        for variant in order {
            eprintln!("round {}/{rounds}: {homeservers} homeservers with --sandbox {}", round + 1, variant.flag());
            let samples = if variant == Variant::Bubblewrap { &mut sandboxed } else { &mut baseline };
            rt.block_on(run_round(variant, homeservers, requests, samples));
        }
    }
    report(&sandboxed, &baseline, homeservers, rounds, requests);
}

async fn run_round(variant: Variant, homeservers: usize, requests: usize, samples: &mut Samples) {
    let server = RuntimeServer::start_with(&[], &["--sandbox", variant.flag()]).await;
    let client = server.client();
    let mut ids = Vec::new();
    for i in 0..homeservers {
        let started = Instant::now();
        let hs = create_homeserver(&client, "nickel", &format!("bench-{}-{i}", variant.flag()), json!({"federation_enabled": false})).await;
        let id = hs["id"].as_str().unwrap().to_owned();
        let running = wait_status(&client, &id, "running").await;
        samples.create_to_running_s.push(started.elapsed().as_secs_f64());
        ids.push((id, running["client_url"].as_str().unwrap().to_owned()));
    }
    // Idle: Synapse's start-up work (caches, the first background jobs) has settled.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (id, url) in &ids {
        let pids = cgroup_pids(id);
        samples.processes.push(pids.len() as f64);
        samples.pss_mib.push(pids.iter().map(|p| rollup_kib(*p, "Pss:")).sum::<u64>() as f64 / 1024.0);
        samples.rss_mib.push(pids.iter().map(|p| rollup_kib(*p, "Rss:")).sum::<u64>() as f64 / 1024.0);
        let matrix = Matrix::new(url);
        for _ in 0..requests {
            let started = Instant::now();
            let (status, _) = matrix.call(Method::GET, "/_matrix/client/versions", None, None).await;
            samples.request_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200);
        }
    }
}

/// A field of `/proc/PID/smaps_rollup` (`Rss:`, `Pss:`), in KiB.
fn rollup_kib(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(sandboxed: &Samples, baseline: &Samples, homeservers: usize, rounds: usize, requests: usize) {
    println!();
    println!(
        "sandbox benchmark (profile {}): {homeservers} homeservers x {rounds} rounds per variant, {requests} requests each; medians",
        matrixhost_tests::bin_profile()
    );
    println!("  {:<38} {:>12} {:>12} {:>10}", "", "bubblewrap", "no sandbox", "overhead");
    type Field = fn(&Samples) -> &Vec<f64>;
    let rows: [(&str, Field, f64); 6] = [
        ("create -> running (s)", |s| &s.create_to_running_s, 0.5),
        ("idle memory per homeserver, RSS (MiB)", |s| &s.rss_mib, 0.5),
        ("idle memory per homeserver, PSS (MiB)", |s| &s.pss_mib, 0.5),
        ("processes per homeserver", |s| &s.processes, 0.5),
        ("request via ingress, p50 (ms)", |s| &s.request_ms, 0.5),
        ("request via ingress, p99 (ms)", |s| &s.request_ms, 0.99),
    ];
    for (name, field, p) in rows {
        let (a, b) = (percentile(field(sandboxed), p), percentile(field(baseline), p));
        println!("  {name:<38} {a:>12.2} {b:>12.2} {:>+9.1}%", (a / b - 1.0) * 100.0);
    }
    println!("  target: the sandbox adds less than 10% to create -> running and to idle memory per homeserver");
}
