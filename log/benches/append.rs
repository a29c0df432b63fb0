//! Micro-benchmarks of one append: in memory (the write path's own cost) and on RocksDB
//! (one synced write per group commit), single records and batches.
//! End-to-end load with many appenders: `comb-bench log`.

use bytes::Bytes;
use comb_log::{Entry, LogBook, LogOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let payload = Bytes::from(vec![0x5Au8; 128]);
    let batch: Vec<Entry> = (0..64).map(|i| Entry::new([i % 4 + 1], payload.clone())).collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let memory = LogBook::in_memory(LogOptions::default()).expect("memory log");
    let rocks = runtime.block_on(LogBook::open_dir(dir.path(), LogOptions::default())).expect("RocksDB log");

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("memory/1x128B", |b| b.to_async(&runtime).iter(|| memory.append(&[1], payload.clone())));
    group.bench_function("rocksdb-synced/1x128B", |b| b.to_async(&runtime).iter(|| rocks.append(&[1], payload.clone())));
    group.throughput(Throughput::Elements(64));
    group.bench_function("memory/64x128B", |b| b.to_async(&runtime).iter(|| memory.append_batch(batch.clone())));
    group.bench_function("rocksdb-synced/64x128B", |b| b.to_async(&runtime).iter(|| rocks.append_batch(batch.clone())));
    group.finish();
    runtime.block_on(rocks.close()).expect("close");
}

criterion_group!(benches, append);
criterion_main!(benches);
