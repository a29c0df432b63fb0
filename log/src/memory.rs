//! A loglet in memory: the reference implementation of the contract, for tests and for
//! embedding without durability. Nothing survives the process.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use crate::error::{Error, Result};
use crate::loglet::{Loglet, LogletState, check_not_trimmed};
use crate::record::{ANY_TAG, Entry, Lsn, Record, Tag};

/// A loglet whose records live in memory.
#[derive(Debug, Default)]
pub struct MemoryLoglet {
    state: RwLock<Option<Memory>>,
}

#[derive(Debug)]
struct Memory {
    /// `records[i]` has LSN `trim_point + i`: dense by construction.
    records: VecDeque<Record>,
    /// For each tag, the LSNs carrying it, ascending.
    by_tag: HashMap<Tag, VecDeque<Lsn>>,
    trim_point: Lsn,
    sealed: bool,
}

impl Default for Memory {
    fn default() -> Self {
        Memory { records: VecDeque::new(), by_tag: HashMap::new(), trim_point: 1, sealed: false }
    }
}

impl Memory {
    fn tail(&self) -> Lsn {
        self.trim_point + self.records.len() as Lsn - 1
    }

    fn get(&self, lsn: Lsn) -> Option<&Record> {
        let index = lsn.checked_sub(self.trim_point)?;
        self.records.get(usize::try_from(index).ok()?)
    }
}

impl MemoryLoglet {
    /// An empty loglet.
    pub fn new() -> Self {
        MemoryLoglet { state: RwLock::new(Some(Memory::default())) }
    }

    fn read<T>(&self, f: impl FnOnce(&Memory) -> T) -> Result<T> {
        let guard = self.state.read().map_err(|_| poisoned())?;
        guard.as_ref().map(f).ok_or(Error::Closed)
    }

    fn modify<T>(&self, f: impl FnOnce(&mut Memory) -> Result<T>) -> Result<T> {
        let mut guard = self.state.write().map_err(|_| poisoned())?;
        guard.as_mut().map(f).unwrap_or(Err(Error::Closed))
    }
}

fn poisoned() -> Error {
    Error::Internal("memory loglet lock poisoned by a panicking thread".to_owned())
}

impl Loglet for MemoryLoglet {
    fn state(&self) -> LogletState {
        self.read(|m| LogletState { tail: m.tail(), trim_point: m.trim_point, sealed: m.sealed })
            .unwrap_or(LogletState { tail: 0, trim_point: 1, sealed: true })
    }

    fn append(&self, entries: &[Entry]) -> Result<Lsn> {
        self.write(entries)
    }

    /// Memory is as durable as it gets at once: `sync` has nothing to do.
    fn write(&self, entries: &[Entry]) -> Result<Lsn> {
        self.modify(|m| {
            if m.sealed {
                return Err(Error::Sealed { tail: m.tail() });
            }
            let first = m.tail() + 1;
            for (lsn, entry) in (first..).zip(entries) {
                for tag in &entry.tags {
                    m.by_tag.entry(*tag).or_default().push_back(lsn);
                }
                m.records.push_back(Record { lsn, tags: entry.tags.clone(), payload: entry.payload.clone() });
            }
            Ok(first)
        })
    }

    fn sync(&self) -> Result<()> {
        self.read(|_| ())
    }

    fn scan(&self, tag: Tag, from: Lsn, to: Lsn, limit: usize) -> Result<Vec<Record>> {
        self.read(|m| {
            check_not_trimmed(from, m.trim_point)?;
            let from = from.max(m.trim_point);
            let to = to.min(m.tail());
            if from > to {
                return Ok(Vec::new());
            }
            if tag == ANY_TAG {
                return Ok((from..=to).take(limit).filter_map(|lsn| m.get(lsn).cloned()).collect());
            }
            let Some(lsns) = m.by_tag.get(&tag) else { return Ok(Vec::new()) };
            let start = lsns.partition_point(|lsn| *lsn < from);
            Ok(lsns.range(start..).take_while(|lsn| **lsn <= to).take(limit).filter_map(|lsn| m.get(*lsn).cloned()).collect())
        })?
    }

    fn read_prev(&self, tag: Tag, max: Lsn) -> Result<Option<Record>> {
        self.read(|m| {
            let max = max.min(m.tail());
            if max < m.trim_point {
                return Ok(None);
            }
            if tag == ANY_TAG {
                return Ok(m.get(max).cloned());
            }
            let Some(lsns) = m.by_tag.get(&tag) else { return Ok(None) };
            let end = lsns.partition_point(|lsn| *lsn <= max);
            let Some(&lsn) = end.checked_sub(1).and_then(|at| lsns.get(at)) else { return Ok(None) };
            Ok(if lsn < m.trim_point { None } else { m.get(lsn).cloned() })
        })?
    }

    fn trim(&self, upto: Lsn) -> Result<()> {
        self.modify(|m| {
            while m.trim_point < upto {
                m.records.pop_front();
                m.trim_point += 1;
            }
            for lsns in m.by_tag.values_mut() {
                let below = lsns.partition_point(|lsn| *lsn < upto);
                lsns.drain(..below);
            }
            m.by_tag.retain(|_, lsns| !lsns.is_empty());
            Ok(())
        })
    }

    fn seal(&self) -> Result<Lsn> {
        self.modify(|m| {
            m.sealed = true;
            Ok(m.tail())
        })
    }

    fn close(&self) -> Result<()> {
        let mut guard = self.state.write().map_err(|_| poisoned())?;
        *guard = None;
        Ok(())
    }
}
