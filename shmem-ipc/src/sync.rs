//! The one place atomics come from, so `--cfg loom` can swap in loom's model-checked types.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// One step of a bounded busy wait on another thread or process: a pause for the CPU, or for
/// loom a yield, so the model lets the other side run instead of exploring the spin.
#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// One step of a bounded busy wait on another thread or process: a pause for the CPU, or for
/// loom a yield, so the model lets the other side run instead of exploring the spin.
#[cfg(not(loom))]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}
