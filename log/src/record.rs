//! Records, their identity and their stored encoding.

use bytes::{Buf, BufMut, Bytes};

use crate::error::{Error, Result};

/// A log sequence number: records are numbered densely from 1, in append order.
/// 0 is never a record's LSN; `tail() == 0` means the log has never held a record.
pub type Lsn = u64;

/// A record's tag. Consumers read the records of one tag (a partition, say) through an index.
pub type Tag = u64;

/// The tag that matches every record on reads. It cannot be attached to a record.
pub const ANY_TAG: Tag = 0;

/// What a caller appends: tags and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Tags by which the record can be read; each non-zero. Duplicates are kept once.
    pub tags: Vec<Tag>,
    /// The record's bytes, opaque to the log.
    pub payload: Bytes,
}

impl Entry {
    /// An entry with these tags and payload.
    pub fn new(tags: impl Into<Vec<Tag>>, payload: impl Into<Bytes>) -> Self {
        Entry { tags: tags.into(), payload: payload.into() }
    }
}

/// A durable record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's position.
    pub lsn: Lsn,
    /// The tags it was appended with (sorted, without duplicates).
    pub tags: Vec<Tag>,
    /// The bytes it was appended with.
    pub payload: Bytes,
}

impl Record {
    /// Whether a read for `tag` sees this record (`ANY_TAG` sees every record).
    pub fn has_tag(&self, tag: Tag) -> bool {
        tag == ANY_TAG || self.tags.binary_search(&tag).is_ok()
    }
}

/// Sorts and deduplicates tags, so that stored records and index entries agree.
pub(crate) fn normalize_tags(tags: &mut Vec<Tag>) {
    tags.sort_unstable();
    tags.dedup();
}

/// Format of a stored record value: `version u8 | tag count u16 | tags u64.. | payload`.
/// All integers big-endian. The key (the LSN) is stored apart by each loglet.
const ENCODING_V1: u8 = 1;

/// Encodes a record's tags and payload for storage at the end of `out`.
pub(crate) fn encode_value_into(tags: &[Tag], payload: &[u8], out: &mut Vec<u8>) {
    out.push(ENCODING_V1);
    // The tag count is bounded by LogOptions::tags_per_record_max (validated <= u16::MAX).
    out.put_u16(u16::try_from(tags.len()).expect("tags per record are bounded by options"));
    for tag in tags {
        out.put_u64(*tag);
    }
    out.extend_from_slice(payload);
}

/// Decodes a stored record value. Any malformation is `Corrupt`, naming the LSN.
pub(crate) fn decode_value(lsn: Lsn, value: &[u8]) -> Result<Record> {
    let (tags, payload) = decode_tags(lsn, value)?;
    Ok(Record { lsn, tags, payload: Bytes::copy_from_slice(payload) })
}

/// Decodes a stored record value's tags, and returns them with its payload, uncopied.
pub(crate) fn decode_tags(lsn: Lsn, value: &[u8]) -> Result<(Vec<Tag>, &[u8])> {
    let corrupt = |detail: String| Error::Corrupt { location: format!("record {lsn}"), detail };
    let mut buf = value;
    if buf.remaining() < 3 {
        return Err(corrupt(format!("value of {} bytes is shorter than its header", value.len())));
    }
    let version = buf.get_u8();
    if version != ENCODING_V1 {
        return Err(corrupt(format!("unknown record encoding version {version}")));
    }
    let count = usize::from(buf.get_u16());
    if buf.remaining() < count * 8 {
        return Err(corrupt(format!("{count} tags announced but only {} bytes follow", buf.remaining())));
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        tags.push(buf.get_u64());
    }
    if tags.windows(2).any(|w| w[0] >= w[1]) || tags.contains(&ANY_TAG) {
        return Err(corrupt("tags are not sorted, unique and non-zero".to_owned()));
    }
    Ok((tags, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn values_round_trip(mut tags in proptest::collection::vec(1u64.., 0..20), payload in proptest::collection::vec(any::<u8>(), 0..300), lsn in 1u64..) {
            normalize_tags(&mut tags);
            let mut value = Vec::new();
            encode_value_into(&tags, &payload, &mut value);
            let record = decode_value(lsn, &value).unwrap();
            prop_assert_eq!(record, Record { lsn, tags, payload: Bytes::from(payload) });
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_value(7, &value);
        }
    }

    #[test]
    fn malformed_values_are_corrupt_and_name_the_lsn() {
        for value in [&[][..], &[9, 0, 0][..], &[1, 0, 2, 0, 0][..], &[1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0][..]] {
            match decode_value(42, value) {
                Err(Error::Corrupt { location, .. }) => assert_eq!(location, "record 42"),
                other => panic!("expected Corrupt for {value:?}, got {other:?}"),
            }
        }
    }
}
