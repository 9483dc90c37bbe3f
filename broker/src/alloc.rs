//! The process allocator, with one guard: allocations of 1 GiB or more are reserved address space
//! (`mmap` with `MAP_NORESERVE`) rather than committed memory.
//!
//! Why: kafka-protocol 0.18 decodes an array by calling `Vec::with_capacity(n)` with `n` read from the request
//! (protocol/types.rs, `Array::decode`), before it knows whether `n` elements follow. A 40-byte garbled frame
//! can ask for tens of gigabytes; the system allocator refuses and Rust aborts the whole broker. (The seeded
//! fuzz test in tests/fuzz.rs found this.) With the guard the reservation succeeds, the decoder fails on the
//! missing bytes a few elements later, and the untouched pages are unmapped. No legitimate allocation in the
//! broker is this large: frames are capped by `socket.request.max.bytes` (100 MiB by default).
//! Remove this once the codec bounds preallocation by the bytes remaining.

use std::alloc::{GlobalAlloc, Layout};

/// The allocator behind the guard: mimalloc. Under workload (a) glibc's malloc/free were ~13% of the broker's
/// CPU (perf, call graphs through task spawns and batch copies); with mimalloc the same run published 7% more
/// (medians of 3, side by side: 858 vs 800 MB/s).
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in v3's `mi_option_e` (libmimalloc-sys 0.1.49 builds v3; the
/// crate's own constants are v2's), checked against the option's default before it is set.
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;
/// That option's default in this mimalloc: 1 s.
const PURGE_DELAY_DEFAULT_MS: libc::c_long = 1000;
/// How long freed memory stays with the thread that freed it before mimalloc returns it to the kernel.
pub const PURGE_DELAY_MS: libc::c_long = 10_000;

extern "C" {
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// Keeps freed memory for reuse 10 s instead of 1 s: a memory pool per shard, which mimalloc's thread-local heaps
/// already are, as long as it does not hand pages back. Under workload (a) the shard cache turns over in about a
/// second, so batches freed by its evictions were mostly returned to the kernel (`madvise`) before new batches
/// needed the memory, and every new batch page-faulted fresh pages in: `clear_page_erms` was 12–21% of the
/// broker's CPU (perf), and near nothing with purging off. Memory the broker stops using is still returned, 10 s
/// later. Does nothing if the option is not where this build expects it (its default does not match).
pub fn keep_freed_memory() {
    // SAFETY: plain calls into the linked mimalloc with an option index of its enum; no memory is touched.
    unsafe {
        if mi_option_get(MI_OPTION_PURGE_DELAY) == PURGE_DELAY_DEFAULT_MS {
            mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// The purge delay mimalloc uses now, in ms.
pub fn purge_delay_ms() -> libc::c_long {
    // SAFETY: as in `keep_freed_memory`.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

/// From this size up, memory is reserved lazily.
const RESERVED_SIZE_MIN: usize = 1 << 30;
/// mmap returns page-aligned memory; larger alignments go to the system allocator.
const PAGE_SIZE: usize = 4096;

pub struct GuardedAllocator;

fn is_reserved(layout: &Layout) -> bool {
    layout.size() >= RESERVED_SIZE_MIN && layout.align() <= PAGE_SIZE
}

// SAFETY: every method returns memory valid for `layout` (mmap'd anonymous pages, zero-filled and page-aligned,
// or the system allocator's), and frees each block with the call that matches how it was obtained, decided by
// the same `is_reserved(layout)` test on the same layout.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_reserved(&layout) {
            // SAFETY: the caller's contract (non-zero size) is passed through unchanged.
            return unsafe { INNER.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping of `size` bytes; no existing memory is touched.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            pointer as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_reserved(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: the caller's contract is passed through unchanged.
            unsafe { INNER.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_reserved(&layout) {
            // SAFETY: `pointer` came from the mmap in `alloc` with this same size.
            unsafe { libc::munmap(pointer as *mut libc::c_void, layout.size()) };
        } else {
            // SAFETY: `pointer` came from INNER.alloc with this layout.
            unsafe { INNER.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size_new: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `size_new`, rounded to `layout.align()`, does not overflow isize.
        let layout_new = unsafe { Layout::from_size_align_unchecked(size_new, layout.align()) };
        if !is_reserved(&layout) && !is_reserved(&layout_new) {
            // SAFETY: both blocks belong to the system allocator.
            return unsafe { INNER.realloc(pointer, layout, size_new) };
        }
        // SAFETY: a fresh block, a copy of the bytes both blocks hold, then the old block freed as it was made.
        unsafe {
            let moved = self.alloc(layout_new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(pointer, moved, layout.size().min(size_new));
                self.dealloc(pointer, layout);
            }
            moved
        }
    }
}

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

#[cfg(test)]
mod tests {
    /// A codec-style preallocation far beyond RAM neither aborts nor commits memory.
    #[test]
    fn huge_untouched_reservation_succeeds() {
        let mut reserved: Vec<[u8; 64]> = Vec::with_capacity(1 << 34); // 1 TiB of address space
        reserved.push([1; 64]);
        assert_eq!(reserved[0][0], 1);
        let mut grown: Vec<u8> = Vec::with_capacity(16);
        grown.extend_from_slice(&[7; 1024]);
        assert_eq!(grown[1023], 7);
    }

    /// The option index this file assumes is mimalloc's purge delay: its default is 1 s, and setting it takes.
    /// (A mimalloc whose enum moved would leave the option alone, and this test would say so.)
    #[test]
    fn freed_memory_is_kept_for_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment chose a delay; keep_freed_memory leaves it
        }
        super::keep_freed_memory();
        assert_eq!(super::purge_delay_ms(), super::PURGE_DELAY_MS);
    }
}
