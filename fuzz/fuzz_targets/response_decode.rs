//! `frame::decode_response` over arbitrary bytes: `data[0]` picks the API (see
//! `responses::APIS`), `data[1]` the version (mostly within the API's `VERSIONS` range,
//! sometimes outside it), the rest is the response frame (header and body, without the
//! length prefix). Nothing may panic; a response that decodes must re-encode to the
//! same values; a Fetch response's record sets are decoded too.
//!
//! Upstream bug, fixed in `vendor/kafka-protocol`: kafka-protocol 0.18 pre-allocated
//! every array from its wire count (`Vec::with_capacity(n)`), so a few bytes made it ask
//! for hundreds of GB and the process aborted (see `examples/repro_array_alloc.rs`).
//! Without the patch, plain runs find that in seconds and stop. To fuzz past it, run with `PAPERBOY_FUZZ_TOLERATE_HUGE_ALLOC=1`
//! and `ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=1024` (see
//! fuzz/README.md): a failed allocation then panics (a nightly alloc error hook) and
//! this target swallows exactly those panics ("memory allocation of N bytes failed");
//! every other panic is still a crash.
#![no_main]
#![cfg_attr(fuzzing, feature(alloc_error_hook))]

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

use libfuzzer_sys::fuzz_target;
use paperboy_protocol_fuzz::responses::fuzz_one;

fn tolerate_huge_alloc() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| {
        std::env::var_os("PAPERBOY_FUZZ_TOLERATE_HUGE_ALLOC").is_some_and(|v| v == "1")
    })
}

fn is_alloc_failure(payload: &(dyn Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    msg.is_some_and(|m| m.starts_with("memory allocation of") && m.ends_with("bytes failed"))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    if !tolerate_huge_alloc() {
        fuzz_one(data[0], data[1], &data[2..]);
        return;
    }
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // A failed allocation panics instead of aborting (nightly only; cargo fuzz
        // builds with nightly and `--cfg fuzzing`).
        #[cfg(fuzzing)]
        std::alloc::set_alloc_error_hook(|layout| {
            panic!("memory allocation of {} bytes failed", layout.size())
        });
        // libfuzzer-sys's hook aborts on every panic; let allocation failures unwind.
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !is_alloc_failure(info.payload()) {
                previous(info);
            }
        }));
    });
    if let Err(payload) =
        panic::catch_unwind(AssertUnwindSafe(|| fuzz_one(data[0], data[1], &data[2..])))
    {
        if !is_alloc_failure(&*payload) {
            panic::resume_unwind(payload);
        }
    }
});
