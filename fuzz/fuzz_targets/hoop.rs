//! `hoop`: raw bytes through countersign_core::backends::fuzzing::hoop, which must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| countersign_core::backends::fuzzing::hoop(data));
