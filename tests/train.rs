//! `steward train` and `steward eval`: the report's contract, determinism, and
//! every bad input answered with exit code 2 and the file, line and column.

use std::path::Path;

use crate::common::run;

const PENGUINS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/penguins.csv");

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).expect("exactly one JSON document on stdout")
}

/// `train --data penguins.csv --out m.safetensors --json` plus `extra`, which must
/// succeed; the report.
fn train_penguins(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "train",
        "--data",
        PENGUINS,
        "--out",
        "m.safetensors",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run(&args, dir);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("selected "), "{stderr}");
    json(&stdout)
}

#[test]
fn train_json_report_has_the_documented_keys_and_eval_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let r = train_penguins(dir.path(), &["--folds", "3"]);
    assert_eq!(r["task"], "classification");
    assert_eq!(r["label"], "label");
    assert_eq!(r["rows"], 344);
    assert_eq!(r["features"], 6);
    assert_eq!(r["cv"]["folds"], 3);
    assert_eq!(r["cv"]["metric"], "accuracy");
    let per_fold: Vec<f64> = r["cv"]["per_fold"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(per_fold.len(), 3);
    let mean = per_fold.iter().sum::<f64>() / 3.0;
    assert!((r["cv"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(r["cv"]["std"].as_f64().unwrap() >= 0.0);
    assert!(r["selected"]["model"].is_string());
    for c in r["candidates"].as_array().unwrap() {
        assert!(c["cv_mean"].is_f64() && c["cv_std"].is_f64(), "{c}");
    }
    for key in [
        "sparsity",
        "bits",
        "metric_before",
        "metric_after",
        "size_bytes_f32",
        "size_bytes",
    ] {
        assert!(r["compressed"][key].is_number(), "compressed.{key}");
    }
    assert_eq!(r["model"], "m.safetensors");
    // The default budget compresses the bundled model: pruned, int8, smaller,
    // within 0.01 of the uncompressed metric on rows the measuring fit never saw.
    let c = &r["compressed"];
    assert_eq!(c["bits"], 8, "{c}");
    assert!(
        c["size_bytes"].as_u64() < c["size_bytes_f32"].as_u64(),
        "{c}"
    );
    assert!(
        c["metric_after"].as_f64().unwrap() >= c["metric_before"].as_f64().unwrap() - 0.01,
        "{c}"
    );
    assert!(c["held_out_rows"].as_u64().unwrap() > 0);
    let (code, stdout, _) = run(
        &["inspect", "--model", "m.safetensors", "--json"],
        dir.path(),
    );
    assert_eq!(code, 0);
    let card = json(&stdout);
    assert_eq!(card["bits"], 8);
    assert_eq!(card["serving_bytes"]["int8"], c["size_bytes"]);
    assert_eq!(card["sparsity"], c["sparsity"]);
    let per_class = r["cv"]["pooled"]["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 3);

    // eval on the training data scores the refitted model.
    let (code, stdout, stderr) = run(
        &[
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            PENGUINS,
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let e = json(&stdout);
    assert_eq!(e["rows"], 344);
    assert_eq!(e["metric"], "accuracy");
    assert!(e["value"].as_f64().unwrap() > 0.95, "{e}");
    let confusion: u64 = e["scores"]["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion, 344);
}

#[test]
fn the_same_data_and_seed_give_bit_identical_artifacts_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let train = |out: &str, seed: &str| {
        let (code, stdout, stderr) = run(
            &[
                "train", "--data", PENGUINS, "--folds", "3", "--seed", seed, "--out", out, "--json",
            ],
            dir.path(),
        );
        assert_eq!(code, 0, "{stderr}");
        let mut r = json(&stdout);
        r["model"] = serde_json::Value::Null;
        (r, std::fs::read(dir.path().join(out)).unwrap())
    };
    let (ra, a) = train("a.safetensors", "7");
    let (rb, b) = train("b.safetensors", "7");
    assert_eq!(ra, rb);
    assert!(a == b, "artifacts differ");
    let (rc, c) = train("c.safetensors", "8");
    assert!(c != a && rc != ra, "the seed must matter");
}

#[test]
fn no_compress_keeps_the_f32_model() {
    let dir = tempfile::tempdir().unwrap();
    let r = train_penguins(dir.path(), &["--folds", "2", "--no-compress"]);
    let c = &r["compressed"];
    assert_eq!(c["method"], "none");
    assert_eq!(c["bits"], 32);
    assert_eq!(c["size_bytes"], c["size_bytes_f32"]);
    let (code, _, stderr) = run(
        &["train", "--data", PENGUINS, "--max-metric-drop", "2"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--max-metric-drop 2: must be between 0 and 1"),
        "{stderr}"
    );
}

#[test]
fn regression_is_inferred_and_can_be_forced() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("a,b,label\n");
    for i in 0..120 {
        let a = (i * 37 % 101) as f64 / 10.0;
        let b = (i * 53 % 97) as f64 / 20.0;
        csv.push_str(&format!("{a},{b},{}\n", 1.5 + 2.0 * a - 3.0 * b));
    }
    std::fs::write(dir.path().join("lin.csv"), &csv).unwrap();
    let (code, stdout, stderr) = run(&["train", "--data", "lin.csv", "--json"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let r = json(&stdout);
    assert_eq!(r["task"], "regression");
    assert_eq!(r["cv"]["metric"], "r2");
    assert!(r["cv"]["mean"].as_f64().unwrap() > 0.99, "{r}");
    assert!(dir.path().join("lin.safetensors").exists(), "default --out");
    let (code, stdout, _) = run(
        &[
            "eval",
            "--model",
            "lin.safetensors",
            "--data",
            "lin.csv",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0);
    let e = json(&stdout);
    assert!(e["scores"]["rmse"].as_f64().unwrap() < 0.2, "{e}");

    // Integer labels with few values are classes unless forced.
    std::fs::write(
        dir.path().join("int.csv"),
        "a,label\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n9,0\n10,1\n",
    )
    .unwrap();
    let (code, stdout, _) = run(
        &["train", "--data", "int.csv", "--folds", "2", "--json"],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert_eq!(json(&stdout)["task"], "classification");
    let (code, stdout, _) = run(
        &[
            "train",
            "--data",
            "int.csv",
            "--folds",
            "2",
            "--task",
            "regression",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert_eq!(json(&stdout)["task"], "regression");
}

/// Runs `train` on `contents` written to `name` and expects exit 2, nothing on
/// stdout, no artifact, and `message` on stderr.
fn refused(dir: &Path, name: &str, contents: &[u8], extra: &[&str], message: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
    let mut args = vec![
        "train",
        "--data",
        name,
        "--out",
        "out.safetensors",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run(&args, dir);
    assert_eq!(code, 2, "{name}: {stderr}");
    assert!(stdout.is_empty(), "{name}: {stdout}");
    assert!(
        stderr.contains(message),
        "{name}: want `{message}` in {stderr}"
    );
    assert!(!dir.join("out.safetensors").exists(), "{name}");
}

#[test]
fn bad_training_data_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, stderr) = run(&["train", "--data", "absent.csv"], d);
    assert_eq!(code, 2);
    assert!(stderr.contains("absent.csv: cannot read"), "{stderr}");

    refused(d, "empty.csv", b"", &[], "empty.csv:1:1: the file is empty");
    refused(
        d,
        "header.csv",
        b"a,label\n",
        &[],
        "header.csv:2:1: the file has a header but no data rows",
    );
    refused(
        d,
        "nolabel.csv",
        b"a,b\n1,2\n",
        &[],
        "nolabel.csv:1:1: no label column `label`",
    );
    refused(
        d,
        "ragged.csv",
        b"a,b,label\n1,2,x\n1,2\n",
        &[],
        "ragged.csv:3:1: row has 2 fields, the header has 3",
    );
    refused(
        d,
        "textlabel.csv",
        b"a,label\n1,2.5\n2,tall\n",
        &["--task", "regression"],
        "textlabel.csv:3:2: `tall` is not a finite number, and regression needs numeric labels",
    );
    refused(
        d,
        "oneclass.csv",
        b"a,label\n1,x\n2,x\n3,x\n",
        &[],
        "oneclass.csv: label `label` has a single class (`x`)",
    );
    refused(
        d,
        "few.csv",
        b"a,label\n1,x\n2,y\n3,x\n",
        &[],
        "few.csv: 3 rows, fewer than the 5 folds",
    );
    refused(
        d,
        "emptycol.csv",
        b"a,b,label\n1,,x\n2,,y\n",
        &["--folds", "2"],
        "emptycol.csv:1:2: the column is empty throughout (column `b`)",
    );
    refused(
        d,
        "nan.csv",
        b"a,label\n1,x\nNaN,y\n",
        &[],
        "nan.csv:3:1: `NaN` is not a finite number (column `a`)",
    );
    refused(
        d,
        "inf.csv",
        b"a,label\n1,x\n2,y\n-inf,x\n",
        &[],
        "inf.csv:4:1: `-inf` is not a finite number (column `a`)",
    );
    refused(
        d,
        "nolabelcell.csv",
        b"a,label\n1,x\n2,\n",
        &[],
        "nolabelcell.csv:3:2: the label is empty",
    );
    let mut long = b"a,label\n1,x\n".to_vec();
    long.extend(std::iter::repeat_n(b'7', 2 << 20));
    long.extend_from_slice(b",y\n");
    refused(
        d,
        "long.csv",
        &long,
        &[],
        "long.csv:3:1: line longer than 1048576 bytes",
    );
    refused(
        d,
        "folds.csv",
        b"a,label\n1,x\n2,y\n",
        &["--folds", "1"],
        "folds.csv: 1 folds: cross-validation needs at least 2",
    );
    let (code, _, stderr) = run(&["train", "--data", "folds.csv", "--task", "ranking"], d);
    assert_eq!(code, 2, "usage error: {stderr}");
}

#[test]
fn eval_refuses_data_that_does_not_fit_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, stderr) = run(
        &[
            "train",
            "--data",
            PENGUINS,
            "--folds",
            "2",
            "--out",
            "m.safetensors",
        ],
        d,
    );
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(d.join("nosex.csv"), "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,label\nDream,40,18,190,3500,Adelie\n").unwrap();
    let (code, stdout, stderr) = run(
        &[
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            "nosex.csv",
            "--json",
        ],
        d,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("nosex.csv:1:1: no column `sex`, which the model needs"),
        "{stderr}"
    );
    std::fs::write(d.join("text.csv"), "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,label\nDream,40,18,190,3500,male,Adelie\nDream,long,18,190,3500,male,Adelie\n").unwrap();
    let (code, _, stderr) = run(
        &["eval", "--model", "m.safetensors", "--data", "text.csv"],
        d,
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "text.csv:3:2: `long` is not a number, and feature `bill_length_mm` is numeric"
        ),
        "{stderr}"
    );
    std::fs::write(d.join("junk.safetensors"), b"junk").unwrap();
    let (code, _, stderr) = run(
        &["eval", "--model", "junk.safetensors", "--data", "text.csv"],
        d,
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("junk.safetensors"), "{stderr}");
    // A class the model never saw counts as an error and is reported.
    std::fs::write(d.join("new.csv"), "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,label\nDream,40,18,190,3500,male,Emperor\n").unwrap();
    let (code, stdout, _) = run(
        &[
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            "new.csv",
            "--json",
        ],
        d,
    );
    assert_eq!(code, 0);
    let e = json(&stdout);
    assert_eq!(e["unknown_labels"], 1);
    assert_eq!(e["value"], 0.0);
}
