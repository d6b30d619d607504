//! `steward drift`: scipy's KS and chi-square numbers through the command line,
//! the documented JSON keys, and bad input answered with exit code 2.

use crate::common::run;

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).expect("exactly one JSON document on stdout")
}

fn csv(header: &str, values: &[&str]) -> String {
    let mut s = format!("{header}\n");
    for v in values {
        s.push_str(v);
        s.push('\n');
    }
    s
}

#[test]
fn drift_json_gives_scipys_ks_and_chi_square() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ref_a.csv"),
        csv("a", &["0.1", "0.5", "0.9", "1.3", "2.0"]),
    )
    .unwrap();
    std::fs::write(
        d.join("cur_a.csv"),
        csv("a", &["0.3", "0.4", "1.1", "1.8", "2.5", "3.0", "3.3"]),
    )
    .unwrap();
    let (code, stdout, stderr) = run(
        &[
            "drift",
            "--reference",
            "ref_a.csv",
            "--current",
            "cur_a.csv",
            "--json",
        ],
        d,
    );
    assert_eq!(code, 0, "{stderr}");
    let r = json(&stdout);
    let f = &r["features"][0];
    assert_eq!(
        (f["name"].as_str(), f["kind"].as_str(), f["test"].as_str()),
        (Some("a"), Some("numeric"), Some("ks"))
    );
    // scipy.stats.ks_2samp(ref, cur) = (0.42857142857142855, 0.5454545454545454)
    assert!(
        (f["statistic"].as_f64().unwrap() - 0.428_571_428_571_428_55).abs() < 1e-6,
        "{f}"
    );
    assert!(
        (f["p_value"].as_f64().unwrap() - 0.545_454_545_454_545_4).abs() < 1e-6,
        "{f}"
    );
    assert!(f["psi"].is_f64());
    assert_eq!(f["drift"], false);
    assert_eq!(r["drift"], false);
    assert_eq!(r["alpha"], 0.05);
    assert_eq!(r["correction"], "bonferroni");

    let cats = |a: usize, b: usize, c: usize| -> String {
        let rows = [("a", a), ("b", b), ("c", c)]
            .iter()
            .map(|(name, n)| format!("{name},1\n").repeat(*n))
            .collect::<String>();
        format!("c,label\n{rows}")
    };
    std::fs::write(d.join("ref_c.csv"), cats(30, 50, 20)).unwrap();
    std::fs::write(d.join("cur_c.csv"), cats(40, 40, 20)).unwrap();
    let (code, stdout, stderr) = run(
        &[
            "drift",
            "--reference",
            "ref_c.csv",
            "--current",
            "cur_c.csv",
            "--exclude",
            "label",
            "--json",
        ],
        d,
    );
    assert_eq!(code, 0, "{stderr}");
    let r = json(&stdout);
    assert_eq!(r["features"].as_array().unwrap().len(), 1, "label excluded");
    let f = &r["features"][0];
    assert_eq!(f["test"], "chi2");
    // scipy.stats.chisquare([40, 40, 20], [30, 50, 20]) = (5.333333333333334, 0.0694834512228015)
    assert!(
        (f["statistic"].as_f64().unwrap() - 5.333_333_333_333_334).abs() < 1e-6,
        "{f}"
    );
    assert!(
        (f["p_value"].as_f64().unwrap() - 0.069_483_451_222_801_5).abs() < 1e-6,
        "{f}"
    );
}

#[test]
fn drift_refuses_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ref.csv"), csv("a,b", &["1,x", "2,y", "3,x"])).unwrap();
    std::fs::write(d.join("nob.csv"), csv("a", &["1", "2"])).unwrap();
    std::fs::write(d.join("text.csv"), csv("a,b", &["1,x", "two,y"])).unwrap();
    std::fs::write(d.join("one.csv"), csv("a,b", &["1,x"])).unwrap();
    for (args, message) in [
        (vec!["--current", "nob.csv"], "nob.csv:1:1: no column `b`, which the reference has"),
        (
            vec!["--current", "text.csv"],
            "text.csv:3:1: `two` is not a finite number, and the column is numeric in the reference (column `a`)",
        ),
        (vec!["--current", "absent.csv"], "absent.csv: cannot read"),
        (vec!["--current", "ref.csv", "--alpha", "0"], "--alpha 0: must be between 0 and 1"),
    ] {
        let mut all = vec!["drift", "--reference", "ref.csv", "--json"];
        all.extend(args);
        let (code, stdout, stderr) = run(&all, d);
        assert_eq!(code, 2, "{stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(message), "want `{message}` in {stderr}");
    }
    let (code, _, stderr) = run(
        &["drift", "--reference", "one.csv", "--current", "ref.csv"],
        d,
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("one.csv: the reference has 1 rows; at least 2 are needed"),
        "{stderr}"
    );
}
