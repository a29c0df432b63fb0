//! The layout of keys in the state store.
//!
//! ```text
//! row          partition u16 BE | table id u32 BE | encoded primary key        -> encoded row
//! index entry  partition u16 BE | index id u32 BE | encoded index values | encoded primary key -> empty
//! recorded     partition u16 BE | RECORDED_TABLE  | encoded (workflow id, step id) -> output JSON
//! metadata     0xFFFF | name                                                    -> value
//! ```
//!
//! Table and index ids come from one sequence of the catalog, so they never collide; each
//! partition's data is contiguous, so a partition-local scan is a prefix scan.

use comb_log::Lsn;
use comb_planner::Value;

use crate::keycodec::encode_value;

/// The table id of the recorded outputs of invocations (a system table in every partition).
pub(crate) const RECORDED_TABLE: u32 = u32::MAX;

const META: [u8; 2] = [0xFF, 0xFF];

/// Highest usable partition count: `0xFFFF` is the metadata prefix.
pub const PARTITIONS_MAX: u16 = 0xFFFE;

/// `partition | object id`: the prefix of a table's or an index's entries in a partition.
pub(crate) fn object_prefix(partition: u16, object: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&object.to_be_bytes());
    key
}

/// The partition a data key belongs to.
pub(crate) fn partition_of_key(key: &[u8]) -> u16 {
    u16::from_be_bytes([key[0], key[1]])
}

/// The object (table or index) id of a data key.
pub(crate) fn object_of_key(key: &[u8]) -> u32 {
    u32::from_be_bytes([key[2], key[3], key[4], key[5]])
}

/// The key of a recorded output.
pub(crate) fn recorded_key(partition: u16, workflow: &str, step: &str) -> Vec<u8> {
    let mut key = recorded_prefix(partition, workflow);
    encode_value(&mut key, &Value::Text(step.to_owned()));
    key
}

/// The prefix of every recorded output of one workflow run in a partition (the encoded id
/// is self-delimiting, so no other run's keys share it).
pub(crate) fn recorded_prefix(partition: u16, workflow: &str) -> Vec<u8> {
    let mut key = object_prefix(partition, RECORDED_TABLE);
    encode_value(&mut key, &Value::Text(workflow.to_owned()));
    key
}

/// The metadata key holding the partition count.
pub(crate) fn meta_partitions() -> Vec<u8> {
    [&META[..], b"partitions"].concat()
}

/// The metadata key holding a partition's applied LSN.
pub(crate) fn meta_applied(partition: u16) -> Vec<u8> {
    [&META[..], b"applied/", &partition.to_be_bytes()].concat()
}

/// The metadata key holding the catalog's applied LSN.
pub(crate) fn meta_catalog_applied() -> Vec<u8> {
    [&META[..], b"catalog-applied"].concat()
}

/// The prefix of the DDL scripts applied, by LSN.
pub(crate) fn meta_ddl_prefix() -> Vec<u8> {
    [&META[..], b"ddl/"].concat()
}

/// The metadata key of one DDL script.
pub(crate) fn meta_ddl(lsn: Lsn) -> Vec<u8> {
    [meta_ddl_prefix(), lsn.to_be_bytes().to_vec()].concat()
}
