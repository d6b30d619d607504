//! Config files: `config::Config::from_parts` (TOML syntax, typing and every
//! validation rule) with no environment overrides. Non-UTF-8 input is skipped
//! (the daemon reads the file as a `String` first).

#![no_main]

use libfuzzer_sys::fuzz_target;
use steward::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_parts("fuzz.toml", text, &[]) {
        // Format the error as `check-config` prints it.
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
        Ok(config) => {
            std::hint::black_box(config.base_url());
            // What `check-config` prints for an accepted file.
            std::hint::black_box(config.render_masked());
        }
    }
});
