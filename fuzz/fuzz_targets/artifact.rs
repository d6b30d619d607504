//! Model artifacts (safetensors + the `steward` JSON metadata):
//! `model::artifact::from_bytes`; an accepted model must pass `check`, serialise
//! again with `to_bytes` and answer a forward pass on a zero row without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use steward::model::{artifact, Form};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = artifact::from_bytes("fuzz.safetensors", data) else {
        return;
    };
    // `from_bytes` already checks; an accepted model that fails its own check
    // would be a loader bug, but only a panic is a finding here.
    let _ = std::hint::black_box(model.check());
    let _ = std::hint::black_box(artifact::to_bytes(&model));
    let x = vec![0f32; model.schema.width()];
    std::hint::black_box(model.predict_encoded(&x));
    // The int8 form serves too when the model was quantized.
    if model.quant.is_some() {
        std::hint::black_box(model.predict_form(Form::Int8, &x));
    }
});
