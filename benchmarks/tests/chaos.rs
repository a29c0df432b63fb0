//! A short crash campaign through the stock `comb-bench` binary: three rounds of the mixed
//! workloads against a server child killed with SIGKILL and restarted; every invariant must
//! hold. The long campaign (`comb-bench chaos --rounds 100`) is run by hand; its figures are
//! in docs/reliability.md.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_crash_campaign_finds_no_violation() {
    let output = Command::new(env!("CARGO_BIN_EXE_comb-bench"))
        .args(["chaos", "--rounds", "3", "--seconds", "1.5", "--clients", "8", "--scale", "0.002"])
        .output()
        .expect("comb-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the campaign failed:\n{stderr}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let report: Value = serde_json::from_str(stdout.lines().last().expect("a report")).expect("a JSON line");
    assert_eq!(report["violations"], 0, "{report}\n{stderr}");
    assert_eq!(report["kills"], 3, "{report}");
    assert_eq!(report["app_checks"], 12, "four applications' checks a round: {report}");
    assert!(report["runs_acknowledged"].as_u64().is_some_and(|n| n > 0), "no run answered: {report}");
    assert!(report["runs_cut"].as_u64().is_some_and(|n| n > 0), "no kill cut a call: nothing was invoked again: {report}");
    let acknowledged = report["runs_acknowledged"].as_u64().unwrap();
    assert_eq!(report["outputs_verified"].as_u64(), Some(2 * acknowledged), "each answered run read back after its round and after the last: {report}");
    assert_eq!(report["trace_checks"], 8, "{report}");
    assert!(report["runs_answered_without_id"].as_u64().is_some_and(|n| n > 0), "no run without an id answered: {report}");
    for round in 1..=3 {
        assert!(stderr.contains(&format!("round {round}/3: killed after")), "round {round} not reported:\n{stderr}");
    }
}
