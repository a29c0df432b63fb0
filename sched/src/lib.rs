//! A short scheduler time slice for the threads every commit waits on.
//!
//! The log's writer sleeps in each group commit's fdatasync, and its completer sleeps until a
//! group is durable; each wakes for a few microseconds of work that every commit of the
//! group waits for. When the cores are busy, as they are in bursts right after each sync when
//! the group's callers all wake, Linux's fair scheduler (EEVDF) lets a woken thread wait for a
//! running one until a deadline set by the thread's time slice (0.7 ms times one plus the
//! base-2 logarithm of the CPU count by default: 1.4 ms on 2 cores). Since Linux 6.12 a thread
//! may ask for a shorter slice (`sched_setattr` with `sched_runtime`, 0.1 to 100 ms, no
//! privilege needed): its deadline comes sooner, so it runs sooner after a wake-up, and is
//! preempted sooner if it keeps the CPU. Its share of the CPU stays what its niceness gives.
//! Older kernels ignore the request. A thread started by one with a custom slice inherits it.
//!
//! The standard library has no call for this, nor has any safe wrapper the project uses; this
//! crate is the one place in the workspace with `unsafe` code, two system calls.

use std::io;
use std::time::Duration;

/// The shortest slice the kernel grants; a shorter request is raised to it.
pub const SLICE_MIN: Duration = Duration::from_micros(100);

/// The longest slice the kernel grants; a longer request is lowered to it.
pub const SLICE_MAX: Duration = Duration::from_millis(100);

/// Asks that the calling thread run with time slices of `slice` (held to [`SLICE_MIN`] to
/// [`SLICE_MAX`]), keeping its scheduling policy and niceness. Fails with
/// [`io::ErrorKind::Unsupported`] off Linux, or when the thread's policy is not one of the
/// fair ones (`SCHED_OTHER`, `SCHED_BATCH`): a real-time thread is left as it is. The
/// thread's attributes are read, then written back with the new slice: a change another
/// thread makes to them in between is undone, so call it where nothing else changes them (at
/// the thread's start).
pub fn request_slice(slice: Duration) -> io::Result<()> {
    imp::request_slice(slice.clamp(SLICE_MIN, SLICE_MAX))
}

/// The time slice of thread `tid` (0: the calling thread), as the kernel reports it: `None`
/// when it reports none (before Linux 6.12, or for a thread that is not fair-scheduled).
pub fn slice_of(tid: i32) -> io::Result<Option<Duration>> {
    imp::slice_of(tid)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::time::Duration;

    /// `struct sched_attr` of `<linux/sched/types.h>`, in its first published size (48
    /// bytes, `SCHED_ATTR_SIZE_VER0`), which every kernel since 3.14 accepts.
    #[repr(C)]
    #[derive(Debug, Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    const _: () = assert!(std::mem::size_of::<SchedAttr>() == 48, "SCHED_ATTR_SIZE_VER0");

    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    /// The one flag of a fair thread's that `sched_getattr` reports and `sched_setattr` must be
    /// given back: clearing it needs privilege.
    const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

    fn attr_size() -> u32 {
        std::mem::size_of::<SchedAttr>() as u32
    }

    fn get(tid: i32) -> io::Result<SchedAttr> {
        let mut attr = SchedAttr::default();
        // SAFETY: `attr` is a live, writable `sched_attr` of `attr_size()` bytes, as the call
        // is told; the kernel writes at most that many bytes into it and keeps no pointer.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &raw mut attr, attr_size(), 0u32) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr)
    }

    pub(super) fn request_slice(slice: Duration) -> io::Result<()> {
        let mut attr = get(0)?;
        if attr.policy != SCHED_OTHER && attr.policy != SCHED_BATCH {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("the thread's scheduling policy ({}) is not a fair one", attr.policy)));
        }
        // Policy, niceness and reset-on-fork as read, so that only the slice changes.
        attr.size = attr_size();
        attr.flags &= SCHED_FLAG_RESET_ON_FORK;
        attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: `attr` is a live, initialized `sched_attr` of `attr_size()` bytes, as the
        // call is told; the kernel only reads it.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0u32) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn slice_of(tid: i32) -> io::Result<Option<Duration>> {
        let attr = get(tid)?;
        let fair = attr.policy == SCHED_OTHER || attr.policy == SCHED_BATCH;
        Ok((fair && attr.runtime > 0).then(|| Duration::from_nanos(attr.runtime)))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::time::Duration;

    pub(super) fn request_slice(_slice: Duration) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "time slices are set on Linux only"))
    }

    pub(super) fn slice_of(_tid: i32) -> io::Result<Option<Duration>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own, so that no other test's thread is changed.
    fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("the thread ran")
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_requested_slice_is_the_threads_where_the_kernel_reports_slices() {
        let (before, after) = on_own_thread(|| {
            let before = slice_of(0).unwrap();
            request_slice(Duration::from_micros(250)).unwrap();
            (before, slice_of(0).unwrap())
        });
        match before {
            // The kernel reports a fair thread's slice (6.12 on): it must be the one asked for.
            Some(default) => {
                assert_ne!(default, Duration::from_micros(250), "the default slice is not the one asked for");
                assert_eq!(after, Some(Duration::from_micros(250)));
            }
            // An older kernel takes the request and ignores it.
            None => assert_eq!(after, None),
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn requests_beyond_the_kernels_range_are_held_to_it() {
        let (short, long) = on_own_thread(|| {
            request_slice(Duration::from_nanos(1)).unwrap();
            let short = slice_of(0).unwrap();
            request_slice(Duration::from_secs(10)).unwrap();
            (short, slice_of(0).unwrap())
        });
        if let (Some(short), Some(long)) = (short, long) {
            assert_eq!(short, SLICE_MIN);
            assert_eq!(long, SLICE_MAX);
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_slice_of_a_thread_that_does_not_exist_is_an_error() {
        let err = slice_of(i32::MAX).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");
    }
}
