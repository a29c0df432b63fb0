//! Recovery on open: the catalog first, then each partition replays the log's records after
//! its applied LSN. Replaying writes after-images, so replaying a record twice is harmless.

use std::sync::Arc;

use comb_log::{LogBook, Lsn};
use comb_planner::Catalog;

use crate::commit::{CATALOG_TAG, LogRecord, decode_payload, partition_tag};
use crate::error::{Error, Result};
use crate::keys::{meta_applied, meta_catalog_applied, meta_ddl, meta_ddl_prefix, meta_partitions};
use crate::store::{Batch, Store};

/// Records read from the log per step of replay.
const REPLAY_BATCH_RECORDS: usize = 1024;

/// Runs storage work off the async runtime's workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|err| Err(Error::Internal(format!("a blocking task failed: {err}"))))
}

fn read_lsn(store: &Store, key: &[u8]) -> Result<Lsn> {
    match store.get(key)? {
        None => Ok(0),
        Some(bytes) => Ok(Lsn::from_be_bytes(bytes.as_slice().try_into().map_err(|_| Error::Corrupt { location: "metadata".to_owned(), detail: "an LSN is not 8 bytes".to_owned() })?)),
    }
}

/// Checks (or, on creation, stores) the partition count.
pub(crate) fn check_partitions(store: &Store, requested: u16) -> Result<()> {
    match store.get(&meta_partitions())? {
        Some(bytes) => {
            let stored = u16::from_be_bytes(bytes.as_slice().try_into().map_err(|_| Error::Corrupt { location: "metadata".to_owned(), detail: "the partition count is not 2 bytes".to_owned() })?);
            if stored != requested {
                return Err(Error::PartitionCount { stored, requested });
            }
            Ok(())
        }
        None => {
            let mut batch = Batch::default();
            batch.put(&meta_partitions(), &requested.to_be_bytes());
            store.write(batch)?;
            store.flush()
        }
    }
}

/// The first LSN to replay after `applied`, what the state store holds of `what`. A
/// checkpoint trims the log only below what the catalog and every partition have stored, so
/// a gap between the two means records lost: a state store older than the log (restored
/// from an earlier copy, or removed).
fn replay_from(applied: Lsn, log: &LogBook, what: &str) -> Result<Lsn> {
    let trim_point = log.trim_point();
    if applied + 1 < trim_point {
        return Err(Error::Corrupt {
            location: format!("the state store ({what})"),
            detail: format!(
                "it holds the log up to LSN {applied}, but the log was trimmed up to {trim_point}: the records between are in neither. The state store is older than the log (restored from an earlier copy, or removed): put back the state store that goes with this log"
            ),
        });
    }
    Ok(applied + 1)
}

/// Rebuilds the catalog: the DDL stored in the state store, then the catalog records after
/// it in the log. Returns the catalog.
pub(crate) async fn recover_catalog(store: &Arc<Store>, log: &LogBook) -> Result<Catalog> {
    let s = Arc::clone(store);
    let (scripts, applied) = blocking(move || {
        let prefix = meta_ddl_prefix();
        let end = crate::keycodec::prefix_end(&prefix).expect("the prefix is not all 0xFF");
        let scripts = s.scan(&prefix, Some(&end), usize::MAX, false)?;
        Ok((scripts, read_lsn(&s, &meta_catalog_applied())?))
    })
    .await?;
    let mut catalog = Catalog::new();
    for (key, ddl) in scripts {
        let ddl = String::from_utf8(ddl).map_err(|_| Error::Corrupt { location: format!("stored DDL {key:?}"), detail: "not UTF-8".to_owned() })?;
        catalog = catalog.apply(&ddl).map_err(Error::Ddl)?;
    }
    let mut from = replay_from(applied, log, "the catalog")?;
    loop {
        let records = log.read_range(CATALOG_TAG, from, REPLAY_BATCH_RECORDS).await?;
        let Some(last) = records.last() else { break };
        from = last.lsn + 1;
        let mut batch = Batch::default();
        for record in &records {
            if let LogRecord::Catalog(ddl) = decode_payload(&record.payload)? {
                catalog = catalog.apply(&ddl.ddl).map_err(Error::Ddl)?;
                batch.put(&meta_ddl(record.lsn), ddl.ddl.as_bytes());
                batch.put(&meta_catalog_applied(), &record.lsn.to_be_bytes());
            }
        }
        let s = Arc::clone(store);
        blocking(move || s.write(batch)).await?;
    }
    Ok(catalog)
}

/// Stores the DDL of every catalog record after `catalog-applied` and up to `upto` (which the
/// caller knows to hold no catalog change in flight), then `catalog-applied = upto`: a
/// checkpoint's part for the catalog. The log may then be trimmed up to `upto + 1` and the
/// catalog still recovered, even if a DDL's own store write failed after its append.
pub(crate) async fn store_catalog_through(store: &Arc<Store>, log: &LogBook, upto: Lsn) -> Result<()> {
    let s = Arc::clone(store);
    let applied = blocking(move || read_lsn(&s, &meta_catalog_applied())).await?;
    if applied >= upto {
        return Ok(());
    }
    let mut from = applied + 1;
    let mut batch = Batch::default();
    while from <= upto {
        let records = log.read_range(CATALOG_TAG, from, REPLAY_BATCH_RECORDS).await?;
        let mut last = None;
        for record in records.iter().take_while(|r| r.lsn <= upto) {
            if let LogRecord::Catalog(ddl) = decode_payload(&record.payload)? {
                batch.put(&meta_ddl(record.lsn), ddl.ddl.as_bytes());
            }
            last = Some(record.lsn);
        }
        match last {
            // A read may return fewer than asked (the log's read-batch-records-max) before
            // the end: only an empty one, or one past `upto`, ends the reading.
            Some(lsn) if lsn < upto => from = lsn + 1,
            _ => break,
        }
    }
    batch.put(&meta_catalog_applied(), &upto.to_be_bytes());
    let s = Arc::clone(store);
    blocking(move || s.write(batch)).await
}

/// Replays a partition's commits after its applied LSN; returns the new applied LSN.
pub(crate) async fn replay_partition(store: &Arc<Store>, log: &LogBook, partition: u16) -> Result<Lsn> {
    let s = Arc::clone(store);
    let mut applied = blocking(move || read_lsn(&s, &meta_applied(partition))).await?;
    let mut from = replay_from(applied, log, &format!("partition {partition}"))?;
    let tag = partition_tag(partition);
    let mut replayed = 0usize;
    loop {
        let records = log.read_range(tag, from, REPLAY_BATCH_RECORDS).await?;
        let Some(last) = records.last() else { break };
        from = last.lsn + 1;
        let mut batch = Batch::default();
        for record in &records {
            if let LogRecord::Commit(commit) = decode_payload(&record.payload)? {
                for write in commit.writes.iter().filter(|w| w.partition == u32::from(partition)) {
                    match &write.after {
                        Some(value) => batch.put(&write.key, value),
                        None => batch.delete(&write.key),
                    }
                }
            }
            applied = record.lsn;
            replayed += 1;
        }
        batch.put(&meta_applied(partition), &applied.to_be_bytes());
        let s = Arc::clone(store);
        blocking(move || s.write(batch)).await?;
    }
    tracing::debug!(partition, applied, replayed, "partition recovered");
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use comb_log::LogOptions;

    use super::*;
    use crate::commit::{CatalogRecord, encode_catalog};

    /// A checkpoint stores every catalog record up to its LSN, also when the log returns
    /// fewer records a read than asked (`read-batch-records-max`): the log is trimmed below
    /// that LSN after it, so a DDL left out would be gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_stores_every_ddl_though_the_log_reads_come_short() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogBook::open_dir(dir.path().join("log"), LogOptions { read_batch_records_max: 2, ..LogOptions::default() }).await.unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
        // Five DDL records whose own store writes were lost (as a failed write leaves them).
        let mut upto = 0;
        for t in 0..5 {
            upto = log.append(&[CATALOG_TAG], encode_catalog(&CatalogRecord { ddl: format!("CREATE TABLE t{t} (k BIGINT PRIMARY KEY)") })).await.unwrap();
        }
        store_catalog_through(&store, &log, upto).await.unwrap();
        log.trim(upto + 1).await.unwrap();
        let catalog = recover_catalog(&store, &log).await.unwrap();
        for t in 0..5 {
            assert!(catalog.table(&format!("t{t}")).is_some(), "table t{t} was lost");
        }
        log.close().await.unwrap();
    }
}
