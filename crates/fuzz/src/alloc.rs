//! An allocator that refuses any single allocation above a limit and keeps the
//! bytes live at once under another, so that an input which makes a parser ask
//! for gigabytes fails the run (Rust aborts with "memory allocation of N bytes
//! failed") instead of taking the machine's memory. Code that asks fallibly
//! (`try_reserve`) gets an error and goes on: that is handling, not a failure.
//!
//! The limits are off (`usize::MAX`) until [`enable`]: a fuzzing child turns
//! them on; the test harness and the parent process run unlimited.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Install in the fuzzing binary: `#[global_allocator] static A: LimitedAlloc = LimitedAlloc;`
pub struct LimitedAlloc;

static MAX_ONE: AtomicUsize = AtomicUsize::new(usize::MAX);
static MAX_LIVE: AtomicUsize = AtomicUsize::new(usize::MAX);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Turns the limits on.
pub fn enable(max_one: usize, max_live: usize) {
    MAX_ONE.store(max_one, Ordering::SeqCst);
    MAX_LIVE.store(max_live, Ordering::SeqCst);
}

/// The size of the last allocation refused, 0 if none.
pub fn last_refused() -> usize {
    REFUSED.load(Ordering::Relaxed)
}

/// The most bytes live at once so far.
pub fn peak_live() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Books `grow` more bytes for an allocation whose new size is `size`; false to refuse.
fn admit(size: usize, grow: usize) -> bool {
    if size > MAX_ONE.load(Ordering::Relaxed) {
        REFUSED.store(size, Ordering::Relaxed);
        return false;
    }
    let live = LIVE.fetch_add(grow, Ordering::Relaxed).saturating_add(grow);
    if live > MAX_LIVE.load(Ordering::Relaxed) {
        LIVE.fetch_sub(grow, Ordering::Relaxed);
        REFUSED.store(size, Ordering::Relaxed);
        return false;
    }
    PEAK.fetch_max(live, Ordering::Relaxed);
    true
}

unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size(), layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size(), layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        let grow = new_size.saturating_sub(old);
        if !admit(new_size, grow) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            LIVE.fetch_sub(grow, Ordering::Relaxed);
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}
