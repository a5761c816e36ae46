//! Thread-count plumbing for candle on the CPU.
//!
//! candle 0.11 asks for its thread count on every CPU matmul, and unless
//! `RAYON_NUM_THREADS` is set it computes it by reading `/proc/cpuinfo`
//! (and cpu masks in sysfs). That costs more than a small matmul: on a
//! 2-core machine it halved SmolLM2 decoding speed at batch 1 and made
//! TinyLm 15x slower. [`pin_candle_threads`] sets the variable once to
//! rayon's pool size, so the answer comes from the environment instead.
//! Models call it when they are built; programs may call it first thing in
//! `main`.
//!
//! ```
//! cgpo::threads::pin_candle_threads();
//! assert!(std::env::var("RAYON_NUM_THREADS").is_ok());
//! ```

use std::sync::Once;

/// Sets `RAYON_NUM_THREADS` to rayon's current thread count when it is not
/// set (a value already there is kept). Runs once per process. Only Rust
/// code reads the environment in this process's hot paths, and Rust's
/// environment access is serialised by the standard library.
pub fn pin_candle_threads() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            std::env::set_var(
                "RAYON_NUM_THREADS",
                rayon::current_num_threads().to_string(),
            );
        }
    });
}
