//! `steward inspect`.

use crate::common::{run, shared_model};

#[test]
fn inspect_json_prints_one_document_with_the_model_card() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_model().display().to_string();
    let (code, stdout, _) = run(&["inspect", "--model", &path, "--json"], dir.path());
    assert_eq!(code, 0);
    let card: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("exactly one JSON document on stdout");
    assert_eq!(card["task"], "classification");
    let model = steward::model::artifact::load(shared_model()).unwrap();
    let layers: Vec<serde_json::Value> = model
        .network
        .layers()
        .iter()
        .map(|l| serde_json::json!({"inputs": l.inputs(), "outputs": l.outputs()}))
        .collect();
    assert_eq!(card["layers"], serde_json::Value::from(layers));
    assert_eq!(
        card["layers"][0]["inputs"], 11,
        "4 numeric, island one-hot over 3 + other, sex over 2 + other"
    );
    let last = card["layers"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outputs"], 3, "three species");
    let parameters: usize = model
        .network
        .layers()
        .iter()
        .map(|l| l.inputs() * l.outputs() + l.outputs())
        .sum();
    assert_eq!(card["parameters"], parameters);
    assert_eq!(card["bits"], if model.quant.is_some() { 8 } else { 32 });
    assert_eq!(card["masked"], model.masks.is_some());
    assert_eq!(
        card["size_bytes"],
        std::fs::metadata(shared_model()).unwrap().len()
    );
    let names: Vec<&str> = card["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "island",
            "bill_length_mm",
            "bill_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "sex"
        ]
    );
}

#[test]
fn inspect_in_human_form_writes_to_stderr_only() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        &["inspect", "--model", &shared_model().display().to_string()],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert!(stdout.is_empty());
    assert!(stderr.contains("layers: 11→"), "{stderr}");
    assert!(
        stderr.contains("→3  hidden activations: [\"relu\"]\n"),
        "{stderr}"
    );
}

#[test]
fn inspect_of_a_bad_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.safetensors"), b"not a model").unwrap();
    let (code, stdout, stderr) = run(
        &["inspect", "--model", "junk.safetensors", "--json"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("junk.safetensors: not a readable safetensors file"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["inspect", "--model", "absent.safetensors"], dir.path());
    assert_eq!(code, 2);
    assert!(
        stderr.contains("absent.safetensors: cannot read model file"),
        "{stderr}"
    );
    let (code, _, _) = run(&["inspect"], dir.path());
    assert_eq!(code, 2, "usage error");
}
