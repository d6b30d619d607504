//! The shipped config and `check-config`.

use std::path::Path;

use steward::config::Config;

use crate::common::run;

#[test]
fn the_shipped_config_loads_and_documents_exactly_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/steward.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut c = Config::from_parts("config/steward.toml", &text, &[]).unwrap();
    let defaults = Config::defaults().unwrap();
    c.source.clone_from(&defaults.source);
    assert_eq!(
        c, defaults,
        "config/steward.toml and the code's defaults differ"
    );
}

#[test]
fn check_config_prints_the_effective_values_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), "[server]\nmax_batch = 9\n").unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .args(["check-config", "--config", "s.toml"])
        .current_dir(dir.path())
        .env("STEWARD_TOKEN", "very-secret-token")
        .env("STEWARD_DATABASE__RETENTION_DAYS", "3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("max_batch = 9"), "{stdout}");
    assert!(stdout.contains("retention_days = 3"), "{stdout}");
    assert!(
        stdout.contains("token (STEWARD_TOKEN): set (value masked)"),
        "{stdout}"
    );
    assert!(!stdout.contains("very-secret-token"), "{stdout}");
}

#[test]
fn check_config_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            "bad.toml:3:1: unknown field `lisen`",
        ),
        (
            "[drift]\nalpha = 2.0\n",
            "bad.toml: key `drift.alpha`: 2 is outside (0, 1)",
        ),
        ("[server]\nlisten = \"localhost\"\n", "key `server.listen`"),
        ("[alerts]\ntransport = \"smtp\"\n", "key `alerts.to`"),
        (
            "[alerts]\nto = [\"not an address\"]\n",
            "key `alerts.to[0]`",
        ),
        ("[server\n", "bad.toml:1:8:"),
    ] {
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let (code, _, stderr) = run(&["check-config", "--config", "bad.toml"], dir.path());
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
    }
    let (code, _, stderr) = run(&["check-config", "--config", "absent.toml"], dir.path());
    assert_eq!(code, 2);
    assert!(
        stderr.contains("absent.toml: cannot read config file"),
        "{stderr}"
    );
}

#[test]
fn check_config_rejects_a_bad_training_schedule() {
    let dir = tempfile::tempdir().unwrap();
    for schedule in ["not a cron", "61 * * * * *", "0 3 * * *"] {
        std::fs::write(
            dir.path().join("bad.toml"),
            format!("[training]\nschedule = \"{schedule}\"\n"),
        )
        .unwrap();
        let (code, _, stderr) = run(&["check-config", "--config", "bad.toml"], dir.path());
        assert_eq!(code, 2, "{schedule}: {stderr}");
        assert!(
            stderr.contains("bad.toml: key `training.schedule`"),
            "{schedule}: {stderr}"
        );
        assert!(stderr.contains(&format!("`{schedule}`")), "{stderr}");
    }
}

/// The config file can be given before or after the command, or as
/// STEWARD_CONFIG; the flag wins over the variable.
#[test]
fn the_config_is_found_by_flag_anywhere_or_by_steward_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), "[server]\nmax_batch = 7\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "[server]\nmax_batch = 9\n").unwrap();
    let check = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(crate::common::BIN);
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("STEWARD_CONFIG");
        if let Some(path) = env {
            cmd.env("STEWARD_CONFIG", path);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(check(&["--config", "a.toml", "check-config"], None).contains("max_batch = 7"));
    assert!(check(&["check-config", "--config", "a.toml"], None).contains("max_batch = 7"));
    assert!(check(&["check-config"], Some("b.toml")).contains("max_batch = 9"));
    assert!(
        check(&["check-config", "--config", "a.toml"], Some("b.toml")).contains("max_batch = 7")
    );
}
