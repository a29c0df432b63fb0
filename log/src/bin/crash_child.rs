//! The child process of the log's crash test: appends self-checking records from concurrent
//! appenders and prints one line per acknowledged record, `<lsn> <round> <appender> <seq>`,
//! until it is killed (or, as a safety bound, until `--seconds` pass).
//!
//! Usage: comb-log-crash-child <dir> <round> <appenders> <seconds>
//! Even appenders append single records; odd ones append batches of three. The log's segments
//! are the smallest allowed, so that the kill also finds segments rolling and being deleted.

use std::io::Write;
use std::time::{Duration, Instant};

use comb_log::testkit::CrashWrite;
use comb_log::{Error, LogBook, LogOptions, SEGMENT_BYTES_MIN};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, round, appenders, seconds] = args.as_slice() else {
        eprintln!("usage: comb-log-crash-child <dir> <round> <appenders> <seconds>");
        std::process::exit(2);
    };
    let parse = |what: &str, value: &str| -> u64 {
        value.parse().unwrap_or_else(|_| {
            eprintln!("{what} must be a whole number, got {value:?}");
            std::process::exit(2)
        })
    };
    let round = parse("round", round) as u32;
    let appenders = parse("appenders", appenders) as u32;
    let deadline = Instant::now() + Duration::from_secs(parse("seconds", seconds));

    let runtime = tokio::runtime::Runtime::new().expect("start the runtime");
    runtime.block_on(async move {
        let options = LogOptions { segment_bytes: SEGMENT_BYTES_MIN, ..LogOptions::default() };
        let log = LogBook::open_dir(dir, options).await.unwrap_or_else(|err| {
            eprintln!("open {dir}: {err}");
            std::process::exit(3)
        });
        let tasks: Vec<_> = (0..appenders)
            .map(|appender| {
                let log = log.clone();
                tokio::spawn(async move {
                    let batch = if appender % 2 == 0 { 1 } else { 3 };
                    let mut seq = 0;
                    while Instant::now() < deadline {
                        let writes: Vec<CrashWrite> = (seq..seq + batch).map(|seq| CrashWrite { round, appender, seq }).collect();
                        match log.append_batch(writes.iter().map(CrashWrite::entry).collect()).await {
                            Ok(first) => {
                                let mut out = std::io::stdout().lock();
                                for (lsn, write) in (first..).zip(&writes) {
                                    writeln!(out, "{lsn} {} {} {}", write.round, write.appender, write.seq).expect("write stdout");
                                }
                                out.flush().expect("flush stdout");
                                seq += batch;
                            }
                            Err(Error::QueueFull { .. }) => tokio::task::yield_now().await,
                            Err(err) => {
                                eprintln!("append failed: {err}");
                                std::process::exit(4);
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("appender task");
        }
    });
}
