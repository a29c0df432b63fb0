//! Micro-benchmarks of the tracing feed's CPU per commit record, without the log or the
//! disk: turning records into rows, rows into Arrow batches, batches into a Parquet file.
//! The records are the counter workflow's commits (one application invocation, one row
//! updated, the run's row ended), the end-to-end load's (`comb-bench tracing-overhead`).

use bytes::Bytes;
use comb_backend::{CommitRecord, InvocationRecord, Value, WriteRecord, encode_commit, encode_row, partition_tag};
use comb_log::Record;
use comb_planner::Catalog;
use comb_tracing::tables::{Rows, write_parquet};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

// The server's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Records per iteration: one feed step's worth.
const RECORDS: usize = 1_024;

fn catalog() -> Catalog {
    Catalog::new()
        .apply(
            "CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);
             CREATE TABLE comb_workflows (home BIGINT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL,
                status TEXT NOT NULL, input TEXT NOT NULL, output TEXT, error TEXT, started_us BIGINT NOT NULL, ended_us BIGINT,
                PRIMARY KEY (home, id)) WITH (partition_by = 'home')",
        )
        .expect("catalog")
}

fn records(catalog: &Catalog) -> Vec<Record> {
    let counters = catalog.table("counters").expect("counters");
    let workflows = catalog.table("comb_workflows").expect("comb_workflows");
    let image = |values: Vec<Value>| Some(Bytes::from(encode_row(&values)));
    let text = |s: String| Value::Text(s);
    (0..RECORDS as u64)
        .map(|i| {
            let id = format!("0193a1c2-7f00-7000-8000-{i:012x}");
            let start = 1_764_000_000_000_000 + i * 60;
            let invocation = |function: &str, step: &str| InvocationRecord {
                function: function.into(),
                workflow_id: Some(id.clone()),
                step_id: Some(step.into()),
                start_us: start,
                end_us: start + 40,
                partition: Some((i % 2) as u32),
                ..Default::default()
            };
            let counter = (i * 7_919 % 100_000) as i64;
            let run = vec![
                Value::Int((i % 2) as i64),
                text(id.clone()),
                text("counter".into()),
                Value::Int(1),
                text("succeeded".into()),
                text(format!(r#"{{"id":{counter}}}"#)),
                text(format!(r#"{{"id":{counter},"n":{}}}"#, i + 1)),
                Value::Null,
                Value::Int(start as i64),
                Value::Int(start as i64 + 50),
            ];
            let commit = CommitRecord {
                partitions: vec![(i % 2) as u32],
                // The run's end is the server's own function, whose invocation commits leave out.
                invocations: vec![invocation("counter_add", "add")],
                writes: vec![
                    WriteRecord {
                        partition: (i % 2) as u32,
                        kind: 0,
                        object: counters.id.0,
                        key: Bytes::from_static(b"counter-key"),
                        before: image(vec![Value::Int(counter), Value::Int(i as i64)]),
                        after: image(vec![Value::Int(counter), Value::Int(i as i64 + 1)]),
                    },
                    WriteRecord { partition: (i % 2) as u32, kind: 0, object: workflows.id.0, key: Bytes::from_static(b"run-key"), before: None, after: image(run) },
                ],
                ..Default::default()
            };
            Record { lsn: i + 1, tags: vec![partition_tag((i % 2) as u16)], payload: encode_commit(&commit).into() }
        })
        .collect()
}

fn rows_of(records: &[Record], catalog: &Catalog) -> Rows {
    let mut rows = Rows::default();
    let mut ingest = comb_tracing::Ingest::new(catalog);
    for record in records {
        ingest.record(record, &mut rows);
    }
    rows
}

fn feed(c: &mut Criterion) {
    let catalog = catalog();
    let records = records(&catalog);
    let rows = rows_of(&records, &catalog);
    assert_eq!(rows.counts(), [RECORDS, RECORDS, RECORDS, 0], "every record yields its rows");
    let batches = rows.into_batches().expect("batches");

    let mut group = c.benchmark_group("feed");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("ingest", |b| b.iter(|| rows_of(&records, &catalog)));
    group.bench_function("batches", |b| b.iter_batched(|| rows_of(&records, &catalog), Rows::into_batches, BatchSize::SmallInput));
    group.bench_function("parquet", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            for (table, batch) in batches.iter().enumerate() {
                if let Some(batch) = batch {
                    out.clear();
                    write_parquet(&mut out, table, std::slice::from_ref(batch)).expect("parquet");
                }
            }
        })
    });
    group.bench_function("all", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            let batches = rows_of(&records, &catalog).into_batches().expect("batches");
            for (table, batch) in batches.iter().enumerate() {
                if let Some(batch) = batch {
                    out.clear();
                    write_parquet(&mut out, table, std::slice::from_ref(batch)).expect("parquet");
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, feed);
criterion_main!(benches);
