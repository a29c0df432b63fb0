//! The README's first command: `comb demo` runs to its end, and its checks pass.

use std::process::Command;

#[test]
fn the_demo_books_through_a_crash_and_checks_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_comb"))
        .args(["demo", "--clients", "8", "--burst-seconds", "1", "--data-dir"])
        .arg(&data)
        .output()
        .expect("the demo starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    for expected in ["killed after", "the server resumed", "answered as before", "The traces agree", "bookings by outcome", "book-"] {
        assert!(stdout.contains(expected), "the demo's output lacks {expected:?}:\n{stdout}");
    }
}
