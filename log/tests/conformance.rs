//! Every loglet implementation passes the one conformance suite.

use std::sync::Arc;

use comb_log::conformance::Fresh;
use comb_log::{MemoryLoglet, RocksLoglet};

fn memory_loglet() -> Fresh {
    Fresh { loglet: Arc::new(MemoryLoglet::new()), guard: Box::new(()) }
}

fn rocks_loglet() -> Fresh {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let loglet = RocksLoglet::open(dir.path()).expect("open a RocksDB loglet");
    Fresh { loglet: Arc::new(loglet), guard: Box::new(dir) }
}

mod memory {
    comb_log::loglet_conformance_tests!(super::memory_loglet);
}

mod rocksdb {
    comb_log::loglet_conformance_tests!(super::rocks_loglet);
}
