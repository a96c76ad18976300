//! `prefect`: raw bytes through countersign_core::backends::fuzzing::prefect, which must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| countersign_core::backends::fuzzing::prefect(data));
