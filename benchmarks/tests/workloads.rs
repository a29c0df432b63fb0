//! Each workload end to end through the stock `comb-bench` binary, on small data: the load,
//! the mix against a Comb server it starts, and the workload's correctness check, which
//! must pass. The PostgreSQL baseline runs too when `COMB_BENCH_POSTGRES` names a server
//! (`benchmarks/postgres.sh start`).

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_comb-bench")).args(args).output().expect("comb-bench runs");
    assert!(output.status.success(), "comb-bench {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let line = stdout.lines().last().unwrap_or_else(|| panic!("comb-bench {args:?} printed nothing"));
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"))
}

fn run(workload: &str, extra: &[&str]) -> Value {
    let mut args = vec!["workload", workload, "--scale", "0.002", "--clients", "4", "--seconds", "1", "--warmup-seconds", "0"];
    args.extend_from_slice(extra);
    let report = bench(&args);
    assert_eq!(report["workload"], workload);
    assert!(report["check"].as_str().is_some_and(|c| c.starts_with("ok: ")), "{workload}: {report}");
    assert!(report["ops"].as_u64().is_some_and(|ops| ops > 0), "{workload}: no operation completed: {report}");
    assert_eq!(report["errors"], 0, "{workload}: {report}");
    for field in ["ops_per_sec", "latency_ms_p50", "latency_ms_p99", "fsync_us_p50"] {
        assert!(report[field].as_f64().is_some_and(|v| v > 0.0), "{workload}: {field} missing: {report}");
    }
    report
}

fn comb(workload: &str) {
    let report = run(workload, &[]);
    assert_eq!(report["system"], "comb");
    assert!(report["records_per_fsync"].as_f64().is_some_and(|v| v >= 1.0), "{report}");
}

#[test]
fn counter_on_comb_passes_its_check() {
    comb("counter");
}

#[test]
fn hotel_on_comb_passes_its_check() {
    comb("hotel");
}

#[test]
fn shop_on_comb_passes_its_check() {
    comb("shop");
}

#[test]
fn retwis_on_comb_passes_its_check() {
    comb("retwis");
}

#[test]
fn the_baseline_passes_the_same_checks() {
    let Ok(url) = std::env::var("COMB_BENCH_POSTGRES") else {
        eprintln!("skipped: set COMB_BENCH_POSTGRES to a PostgreSQL server's URL (benchmarks/postgres.sh start) to run the baseline");
        return;
    };
    for workload in ["counter", "hotel", "shop", "retwis"] {
        let report = run(workload, &["--baseline", "postgres", "--postgres", &url]);
        assert_eq!(report["system"], "postgres");
    }
}

#[test]
fn bad_options_are_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_comb-bench")).args(["workload", "hotel", "--scale", "0"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--scale must be between"), "{}", String::from_utf8_lossy(&output.stderr));
}
