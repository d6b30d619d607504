//! Start-up failures: each a clear message and a non-zero exit, never a panic.
//! And the first start on the embedded defaults, which trains from the bundled data.

use std::path::Path;

use serde_json::json;

use crate::common::{client, post, run, shared_model, write_config, BIN};

fn serve_fails(dir: &Path) -> (i32, String) {
    let (code, _, stderr) = run(&["serve", "--config", "steward.toml"], dir);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (code, stderr)
}

#[test]
fn a_missing_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[model]\ninitial = \"nowhere.safetensors\"\n");
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("nowhere.safetensors: cannot read model file"),
        "{stderr}"
    );
}

#[test]
fn a_truncated_model_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(shared_model()).unwrap();
    std::fs::write(
        dir.path().join("cut.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    write_config(dir.path(), "[model]\ninitial = \"cut.safetensors\"\n");
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cut.safetensors: not a readable safetensors file (truncated or corrupt?)"),
        "{stderr}"
    );
}

#[test]
fn a_shape_mismatched_model_file_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(shared_model()).unwrap();
    // The metadata says the first layer is [o, i]; make it say [o ± 1, i], keeping
    // the header's length.
    let model = steward::model::artifact::load(shared_model()).unwrap();
    let (o, i) = model.network.layers()[0].weight.dim();
    let wrong = if (o + 1).to_string().len() == o.to_string().len() {
        o + 1
    } else {
        o - 1
    };
    let (from, to) = (format!("[[{o},{i}]"), format!("[[{wrong},{i}]"));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let at = header.find(&from).expect("layer shapes in the metadata");
    bytes[8 + at..8 + at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(dir.path().join("bad.safetensors"), &bytes).unwrap();
    write_config(dir.path(), "[model]\ninitial = \"bad.safetensors\"\n");
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2, "{stderr}");
    let want = format!(
        "bad.safetensors: tensor `layers.0.weight`: shape [{o}, {i}], the metadata implies [{wrong}, {i}]"
    );
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn a_config_with_an_unknown_key_or_bad_value_stops_serve_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("steward.toml"),
        "[database]\nurl = \"sqlite://x.db\"\nretain = 3\n",
    )
    .unwrap();
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2);
    assert!(
        stderr.contains("steward.toml:3:1: unknown field `retain`"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("steward.toml"), "[server]\nmax_batch = 0\n").unwrap();
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2);
    assert!(
        stderr.contains("key `server.max_batch`: must be greater than 0"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_database_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    write_config(
        dir.path(),
        "[database]\nurl = \"sqlite://a-file/steward.db\"\n",
    );
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("database.url = a-file: exists and is not a directory"),
        "{stderr}"
    );
}

/// An artifact whose encoding makes every answer NaN (a standard deviation of
/// 0) passes the types; `inspect` and `serve` refuse it, naming the feature.
#[test]
fn an_artifact_whose_encoding_gives_nan_is_refused() {
    use steward::model::schema::FeatureKind;
    let dir = tempfile::tempdir().unwrap();
    let mut model = steward::model::artifact::load(shared_model()).unwrap();
    let feature = model
        .schema
        .features
        .iter_mut()
        .find(|f| matches!(f.kind, FeatureKind::Numeric { .. }))
        .unwrap();
    feature.kind = FeatureKind::Numeric {
        mean: 40.0,
        std: 0.0,
    };
    let name = feature.name.clone();
    steward::model::artifact::save(&model, &dir.path().join("nan.safetensors")).unwrap();
    let want =
        format!("nan.safetensors: metadata: schema: feature `{name}`: standard deviation 0e0");
    let (code, _, stderr) = run(&["inspect", "--model", "nan.safetensors"], dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&want), "{stderr}");
    write_config(dir.path(), "[model]\ninitial = \"nan.safetensors\"\n");
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&want), "{stderr}");
}

/// `check-config` and `serve` refuse the same configs for the same reasons:
/// a model.dir that cannot be created, a CA file that is missing, a device as
/// the first model (which `serve` used to read until memory ran out).
#[test]
fn check_config_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    for (sections, want) in [
        (
            "[model]\ndir = \"a-file/models\"\n".to_string(),
            "model.dir = a-file/models: cannot create it",
        ),
        (
            "[alerts]\ntransport = \"smtp\"\nto = [\"ops@example.com\"]\nca_file = \"absent-ca.pem\"\n"
                .to_string(),
            "absent-ca.pem",
        ),
        (
            "[model]\ninitial = \"/dev/zero\"\n".to_string(),
            "/dev/zero: cannot read model file: not a regular file",
        ),
    ] {
        write_config(dir.path(), &sections);
        let (code, _, stderr) = run(&["check-config", "--config", "steward.toml"], dir.path());
        assert_eq!(code, 2, "check-config {sections}: {stderr}");
        assert!(stderr.contains(want), "check-config {sections}: {stderr}");
        let (code, stderr) = serve_fails(dir.path());
        assert_eq!(code, 2, "serve {sections}: {stderr}");
        assert!(stderr.contains(want), "serve {sections}: {stderr}");
        assert!(
            !dir.path().join("data").exists(),
            "nothing was created for {sections}"
        );
    }
}

#[test]
fn a_read_only_database_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be: SQLite cannot open it.
    std::fs::create_dir_all(dir.path().join("data/steward.db")).unwrap();
    write_config(dir.path(), "");
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("database data/steward.db: cannot open"),
        "{stderr}"
    );
}

/// README's first command: no config file at all, the embedded defaults, a model
/// trained from the bundled data on first start, then a restart serving the same one.
#[tokio::test]
async fn the_embedded_defaults_train_the_first_model_and_a_restart_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    // No steward.toml: only a port override so parallel tests do not collide.
    let start = || {
        let mut child = crate::common::ChildGuard::spawn(
            std::process::Command::new(BIN)
                .arg("serve")
                .current_dir(dir.path())
                .env("STEWARD_SERVER__LISTEN", "127.0.0.1:0")
                .env("STEWARD_LOG__FORMAT", "json")
                .stderr(std::process::Stdio::piped()),
        );
        let stderr = child.0.stderr.take().unwrap();
        let (_, addr) = crate::common::watch_log(stderr).unwrap();
        (child, addr)
    };
    let (child, addr) = start();
    let c = client();
    let (status, one) = post(
        &c,
        &format!("http://{addr}/v1/predict"),
        &json!({"features": crate::common::penguin()}),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let card: serde_json::Value =
        crate::common::get_json(&c, &format!("http://{addr}/v1/model")).await;
    assert_eq!(card["training"]["source"], "bundled:penguins");
    terminate(child);
    assert!(dir.path().join("data/steward.db").exists());
    assert!(dir.path().join("data/models/v1.safetensors").exists());

    let (child, addr) = start();
    let models: serde_json::Value =
        crate::common::get_json(&c, &format!("http://{addr}/v1/models")).await;
    assert_eq!(
        models["models"].as_array().unwrap().len(),
        1,
        "a restart must not train again: {models}"
    );
    terminate(child);
}

fn terminate(mut child: crate::common::ChildGuard) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = crate::common::wait(&mut child.0, std::time::Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
}

/// The active version's artifact damaged between two starts: exit 2 naming the
/// version and the file (it was 1, where the docs promise 2 for a bad file).
#[tokio::test]
async fn a_damaged_artifact_of_the_active_version_stops_serve_with_exit_2() {
    let d = crate::common::Daemon::start("");
    let (status, dir, _) = d.stop();
    assert!(status.success());
    let artifact = dir.path().join("data/models/v1.safetensors");
    let bytes = std::fs::read(&artifact).unwrap();
    std::fs::write(&artifact, &bytes[..bytes.len() / 3]).unwrap();
    let (code, stderr) = serve_fails(dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr
            .contains("the active version 1 in the registry points at data/models/v1.safetensors"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not a readable safetensors file"),
        "{stderr}"
    );
}
