//! The allocator of the default components' `wasm32-unknown-unknown` build
//! (a crate that links this one gets it): a bump arena in the module's own
//! data, falling back to the standard allocator when it is spent. Other
//! targets get nothing from this crate.
//!
//! The host runs every call on a fresh instance, so nothing allocated ever
//! needs to be reused within one. The standard allocator of this target
//! grows the linear memory on its first allocation, and growing (then
//! resetting) a pooled memory slot costs the host a TLB shootdown on every
//! call; a fresh instance that allocates from the arena never grows its
//! memory (docs/benchmarks.md, "Where a plugin call's time goes").

#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes a call may take from the arena; a call that needs more carries on
/// with the standard allocator.
const ARENA_BYTES: usize = 256 << 10;

#[repr(align(16))]
struct Arena {
    bytes: UnsafeCell<[u8; ARENA_BYTES]>,
    /// Offset of the first free byte.
    next: UnsafeCell<usize>,
}

// SAFETY: a WebAssembly instance of this component runs on one thread.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena {
    bytes: UnsafeCell::new([0; ARENA_BYTES]),
    next: UnsafeCell::new(0),
};

struct BumpThenSystem;

impl BumpThenSystem {
    fn start() -> usize {
        ARENA.bytes.get() as usize
    }

    fn owns(ptr: *mut u8) -> bool {
        let address = ptr as usize;
        address >= Self::start() && address < Self::start() + ARENA_BYTES
    }
}

unsafe impl GlobalAlloc for BumpThenSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread (see above); `next` is only touched here.
        let next = unsafe { &mut *ARENA.next.get() };
        let start = Self::start();
        let aligned = (start + *next).next_multiple_of(layout.align());
        match aligned.checked_add(layout.size()) {
            Some(end) if end <= start + ARENA_BYTES => {
                *next = end - start;
                aligned as *mut u8
            }
            // SAFETY: the caller's layout is passed on unchanged.
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Arena bytes are given back when the instance is dropped.
        if !Self::owns(ptr) {
            // SAFETY: not from the arena, so from `System.alloc` with this
            // layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: BumpThenSystem = BumpThenSystem;
