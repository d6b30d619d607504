//! deploy/: the Grafana dashboard and the Prometheus alerting rules over
//! `/metrics`. A renamed series would leave a panel empty and an alert silent
//! with nothing failing, so these tests hold both to a real daemon: every metric
//! an expression names, every label it matches or groups on, and every label a
//! legend or an annotation prints must be on the daemon's `/metrics` once it has
//! served, learned, checked drift and retrained. The dashboard must be one
//! Grafana imports, each alert must say how long, how bad and what to do, and
//! where promtool is installed (CI installs it) the rules, their unit tests and
//! the dashboard's queries must pass it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::common::{client, metrics_text, Daemon};
use crate::learning::{feed, finished, labelled, retrain};
use crate::monitoring::checks_after;

const DASHBOARD: &str = "deploy/grafana/steward.json";
const RULES: &str = "deploy/prometheus/steward-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/steward-rules.test.yml";

/// Labels Prometheus attaches to every scraped series: never on `/metrics`.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(path(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// A rules file, as Prometheus reads it (alerting rules only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rules() -> Vec<Rule> {
    let text = std::fs::read_to_string(path(RULES)).unwrap();
    let file: RuleFile = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    assert!(!file.groups.is_empty(), "{RULES}: no group");
    file.groups
        .into_iter()
        .inspect(|g| assert!(!g.name.is_empty() && !g.rules.is_empty(), "{g:?}"))
        .flat_map(|g| g.rules)
        .collect()
}

/// One query of the dashboard: where it is, its PromQL, and the labels its
/// legend prints.
#[derive(Debug)]
struct Query {
    place: String,
    expr: String,
    legend_labels: Vec<String>,
}

/// Every PromQL expression of the dashboard: the panels' targets, the
/// annotations and the template variables (`label_values(SELECTOR, label)`:
/// the selector, and the label as one its legend prints).
fn dashboard_queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!("panel {} ({}) target {}", p["id"], p["title"], t["refId"]),
                expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                legend_labels: legend_labels(t["legendFormat"].as_str().unwrap_or_default()),
            });
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                place: format!("annotation {}", a["name"]),
                expr: expr.to_owned(),
                legend_labels: legend_labels(a["textFormat"].as_str().unwrap_or_default()),
            });
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap();
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(..): {query}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push(Query {
            place: format!("variable {}", v["name"]),
            expr: selector.trim().to_owned(),
            legend_labels: vec![label.trim().to_owned()],
        });
    }
    out
}

/// The panels, those inside collapsed rows too.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// What `{{ .. }}` pairs of `text` hold, trimmed.
fn braces(text: &str) -> impl Iterator<Item = &str> {
    text.split("{{")
        .skip(1)
        .map(|part| part.split("}}").next().unwrap_or_default().trim())
}

fn is_label(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The labels a Grafana legend prints (`{{feature}}`).
fn legend_labels(text: &str) -> Vec<String> {
    braces(text)
        .filter(|s| is_label(s))
        .map(str::to_owned)
        .collect()
}

/// The labels a Prometheus template prints or tests (`{{ $labels.feature }}`,
/// `{{ if $labels.instance }}`).
fn template_labels(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for inside in braces(text) {
        for after in inside.split("$labels.").skip(1) {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            out.push(after[..end].to_owned());
        }
    }
    out
}

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    // The data source is a variable, so that the file imports through the UI
    // and through provisioning alike, and every query uses it.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus data source variable");
    let uid = format!("${{{}}}", ds["name"].as_str().unwrap());
    let uses_it = |v: &Value| v["type"] == "prometheus" && v["uid"] == uid.as_str();

    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels(&d) {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a panel without an id: {p}"));
        assert!(ids.insert(id), "panel id {id} twice");
        let pos = &p["gridPos"];
        for k in ["x", "y", "w", "h"] {
            assert!(pos[k].is_u64(), "panel {id}: gridPos.{k}");
        }
        assert!(
            pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
            "panel {id}"
        );
        assert!(
            p["title"].as_str().is_some_and(|t| !t.is_empty()),
            "panel {id}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(uses_it(&p["datasource"]), "panel {id}: {}", p["datasource"]);
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {id}: no targets"));
        assert!(!targets.is_empty(), "panel {id}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(uses_it(&t["datasource"]), "panel {id}: {t}");
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "panel {id}: refId twice"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {id}"
            );
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(uses_it(&v["datasource"]), "variable {}", v["name"]);
    }
}

#[test]
fn every_alert_says_how_long_how_bad_and_what_to_do_and_has_a_unit_test() {
    let rules = rules();
    let mut names = BTreeSet::new();
    for r in &rules {
        assert!(names.insert(r.alert.as_str()), "{} twice", r.alert);
        assert!(!r.expr.trim().is_empty(), "{}", r.alert);
        assert!(
            r.for_.ends_with(['s', 'm', 'h']) && !r.for_.starts_with('0'),
            "{}: for: {}",
            r.alert,
            r.for_
        );
        let severity = r.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{}: severity {severity:?}",
            r.alert
        );
        for key in ["summary", "description"] {
            let text = r.annotations.get(key).map(String::as_str).unwrap_or("");
            assert!(text.len() > 20, "{}: {key} is {text:?}", r.alert);
        }
    }
    // promtool's tests: each alert both fires and stays quiet somewhere.
    let text = std::fs::read_to_string(path(RULE_TESTS)).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(tests["rule_files"][0].as_str(), Some("steward-rules.yml"));
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_sequence().unwrap() {
        for t in case["alert_rule_test"].as_sequence().unwrap() {
            let name = t["alertname"].as_str().unwrap().to_owned();
            assert!(
                names.contains(name.as_str()),
                "a test of an unknown alert {name}"
            );
            match t["exp_alerts"].as_sequence() {
                Some(alerts) if !alerts.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for name in &names {
        assert!(fires.contains(*name), "no test shows {name} firing");
        assert!(quiet.contains(*name), "no test shows {name} quiet");
    }
}

#[test]
fn promtool_accepts_the_rules_their_tests_and_the_dashboards_queries() {
    let Some(promtool) = on_path("promtool") else {
        // Written to stderr itself, not with eprintln!, which the harness
        // captures and hides for a test that passes: the skip must show.
        let _ = writeln!(
            std::io::stderr(),
            "deploy: promtool not found on PATH: `promtool check rules` and `promtool test \
             rules` NOT run (CI installs it: apt-get install prometheus)"
        );
        return;
    };
    let run = |args: &[&OsStr]| {
        let out = Command::new(&promtool).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        text
    };
    let [check, test, rules] = ["check", "test", "rules"].map(OsStr::new);
    let out = run(&[check, rules, path(RULES).as_os_str()]);
    assert!(out.contains("SUCCESS"), "{out}");
    run(&[test, rules, path(RULE_TESTS).as_os_str()]);

    // The dashboard's queries parse: each as a recording rule, with Grafana's
    // variables given values.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    let records: Vec<serde_json::Value> = dashboard_queries(&dashboard())
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .expr
                .replace("$__rate_interval", "2m")
                .replace("$__range", "6h")
                .replace("$__interval", "1m");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": records}]});
    std::fs::write(&file, serde_yaml::to_string(&groups).unwrap()).unwrap();
    run(&[check, rules, file.as_os_str()]);
}

/// The file `name` in a directory of `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn every_series_the_dashboard_and_the_rules_read_is_on_a_real_daemons_metrics() {
    // Fast drift checks; a retrain that reaches a decision on 200 labels.
    let d = Daemon::start(
        "[drift]\ninterval_secs = 1\nwindow = 300\nmin_rows = 50\nconfirm_checks = 1\n\
         [training]\nmin_rows = 100\nfolds = 3\nmax_regression = 1.0\ndrift_retrain = false\n",
    );
    let c = client();
    let (inputs, labels) = labelled(200, |_| {});
    feed(&d, &c, &inputs, &labels).await;
    checks_after(&d, &c, 1.0).await;
    let run = finished(&d, &c, retrain(&d, &c).await).await;
    assert!(
        matches!(run["state"].as_str(), Some("promoted" | "rejected")),
        "{run}"
    );
    let scrape = Scrape::parse(&metrics_text(&c, &d.url).await);

    let mut problems = Vec::new();
    for q in dashboard_queries(&dashboard()) {
        for p in scrape.problems(&q.expr, &q.legend_labels, &[]) {
            problems.push(format!("{DASHBOARD}: {}: {p}\n    {}", q.place, q.expr));
        }
    }
    for r in rules() {
        let printed: Vec<String> = r
            .annotations
            .values()
            .flat_map(|a| template_labels(a))
            .collect();
        // `up` is Prometheus' own series for a scrape.
        for p in scrape.problems(&r.expr, &printed, &["up"]) {
            problems.push(format!("{RULES}: {}: {p}\n    {}", r.alert, r.expr));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nthe daemon's /metrics has: {:?}",
        problems.join("\n"),
        scrape.series.keys().collect::<Vec<_>>()
    );
}

/// The samples of one `/metrics` answer: each name and the label sets it has.
struct Scrape {
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut series: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = match line[end..].strip_prefix('{') {
                Some(rest) => parse_labels(rest, '}').0,
                None => BTreeMap::new(),
            };
            series
                .entry(line[..end].to_owned())
                .or_default()
                .push(labels);
        }
        Scrape { series }
    }

    /// What in `expr` the daemon does not export: metrics, labels matched or
    /// grouped on, and `printed` labels (a legend's, an annotation's) found on
    /// none of the expression's metrics. `external` names series Prometheus
    /// makes itself.
    fn problems(&self, expr: &str, printed: &[String], external: &[&str]) -> Vec<String> {
        let scan = scan(expr);
        let mut out = Vec::new();
        if scan.selectors.is_empty() {
            out.push("names no metric".to_owned());
        }
        let mut known: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        for s in &scan.selectors {
            if external.contains(&s.metric.as_str()) {
                known.extend(s.matchers.iter().map(|m| m.label.as_str()));
                continue;
            }
            let Some(sets) = self.series.get(&s.metric) else {
                out.push(format!("no series `{}` on /metrics", s.metric));
                continue;
            };
            known.extend(sets.iter().flat_map(|l| l.keys().map(String::as_str)));
            for m in s
                .matchers
                .iter()
                .filter(|m| !TARGET_LABELS.contains(&m.label.as_str()))
            {
                let with_label = || sets.iter().filter_map(|l| l.get(&m.label));
                if with_label().next().is_none() {
                    out.push(format!("`{}` has no label `{}`", s.metric, m.label));
                } else if m.op == "="
                    && !m.value.contains('$')
                    && !with_label().any(|v| *v == m.value)
                {
                    out.push(format!(
                        "no series `{}{{{}=\"{}\"}}`",
                        s.metric, m.label, m.value
                    ));
                }
            }
        }
        for label in scan.grouping.iter().chain(printed) {
            if !known.contains(label.as_str()) {
                out.push(format!("label `{label}` is on none of its metrics"));
            }
        }
        out
    }
}

/// Parses `k="v",...` up to `close`; returns the labels and the rest.
fn parse_labels(mut s: &str, close: char) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix(close) {
            return (labels, rest);
        }
        let (matcher, rest) = parse_matcher(s);
        labels.insert(matcher.label, matcher.value);
        s = rest;
    }
}

/// One label matcher of a selector: `label op "value"`.
#[derive(Debug, PartialEq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// Parses one `label op "value"`; returns it and the rest.
fn parse_matcher(s: &str) -> (Matcher, &str) {
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or_else(|| panic!("a label matcher: {s}"));
    let label = s[..name_end].to_owned();
    let rest = s[name_end..].trim_start();
    let op_end = rest
        .find(['"', '\'', '`'])
        .unwrap_or_else(|| panic!("a quoted value: {s}"));
    let op = rest[..op_end].trim().to_owned();
    let (value, rest) = quoted(&rest[op_end..]);
    (Matcher { label, op, value }, rest)
}

/// A quoted string at the start of `s` (`"`, `'` with escapes, or `` ` ``);
/// its value and the rest.
fn quoted(s: &str) -> (String, &str) {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next().unwrap();
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if quote != '`' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => value.push(other),
                None => break,
            },
            c if c == quote => return (value, &s[i + c.len_utf8()..]),
            c => value.push(c),
        }
    }
    panic!("an unterminated string: {s}")
}

/// A metric selector of an expression: the name and its matchers.
#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

/// What a PromQL expression reads: its selectors and the labels its
/// `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` lists name.
#[derive(Debug, Default)]
struct Scan {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

/// Words of PromQL that stand where a metric name could: aggregation
/// operators (which may be followed by `by (..)` before their parenthesis),
/// binary operators and modifiers, and the number literals.
const KEYWORDS: [&str; 21] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Scans a PromQL expression (Grafana's `$variables` allowed) for what it
/// reads. Not a parser: enough of the lexer to tell a metric name from a
/// function, a keyword, a label, a duration, a string or a variable.
fn scan(expr: &str) -> Scan {
    let mut out = Scan::default();
    let mut s = expr;
    let ident = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(s.len())
    };
    while let Some(c) = s.chars().next() {
        if matches!(c, '"' | '\'' | '`') {
            s = quoted(s).1;
        } else if c == '[' {
            s = &s[s.find(']').unwrap_or(s.len() - 1) + 1..];
        } else if c == '$' {
            let rest = &s[1..];
            s = match rest.strip_prefix('{') {
                Some(r) => &r[r.find('}').unwrap_or(r.len() - 1) + 1..],
                None => &rest[ident(rest)..],
            };
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`0.99`, `1e3`, `5m`, `1h30m`).
            s = &s[s[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .map_or(s.len(), |n| n + 1)..];
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let end = ident(s);
            let word = &s[..end];
            s = &s[end..];
            let next = s.trim_start();
            if GROUPING.contains(&word) {
                if let Some(list) = next.strip_prefix('(') {
                    let close = list.find(')').unwrap_or(list.len());
                    out.grouping.extend(
                        list[..close]
                            .split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    s = &list[(close + 1).min(list.len())..];
                }
            } else if next.starts_with('(') || KEYWORDS.contains(&word) {
                // A function, an aggregation or an operator.
            } else {
                let mut matchers = Vec::new();
                if let Some(mut rest) = next.strip_prefix('{') {
                    loop {
                        rest = rest.trim_start_matches([',', ' ']);
                        if let Some(r) = rest.strip_prefix('}') {
                            rest = r;
                            break;
                        }
                        let (m, r) = parse_matcher(rest);
                        matchers.push(m);
                        rest = r;
                    }
                    s = rest;
                }
                out.selectors.push(Selector {
                    metric: word.to_owned(),
                    matchers,
                });
            }
        } else {
            s = &s[c.len_utf8()..];
        }
    }
    out
}

#[test]
fn the_promql_scan_finds_metrics_not_functions_labels_durations_or_variables() {
    let names =
        |e: &str| -> Vec<String> { scan(e).selectors.into_iter().map(|s| s.metric).collect() };
    let q = scan(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(steward_x_bucket{job=~"$job", route="/v1/predict"}[$__rate_interval])))"#,
    );
    assert_eq!(q.grouping, ["le", "route"]);
    assert_eq!(
        q.selectors,
        [Selector {
            metric: "steward_x_bucket".into(),
            matchers: vec![
                Matcher {
                    label: "job".into(),
                    op: "=~".into(),
                    value: "$job".into()
                },
                Matcher {
                    label: "route".into(),
                    op: "=".into(),
                    value: "/v1/predict".into()
                },
            ],
        }]
    );
    assert_eq!(
        names("time() - a_ts > 49 * 3600 and on(instance) group_left(version) b_info offset 1h"),
        ["a_ts", "b_info"]
    );
    assert_eq!(
        scan("x and on(instance) group_left(version) y").grouping,
        ["instance", "version"]
    );
    assert_eq!(
        names("a > 3 * b and c < 1e-3 or absent(up{job=\"s\"})"),
        ["a", "b", "c", "up"]
    );
    assert_eq!(names(r#"sum(clamp_min(delta(m{s="}[a]"}[1h]), 0))"#), ["m"]);
    assert_eq!(names("max without (x) (y) / ${var} + $__range"), ["y"]);
    assert_eq!(
        legend_labels("v{{version}} {{ form }} on {{$x}}"),
        ["version", "form"]
    );
    assert_eq!(
        template_labels("{{ if $labels.instance }}{{ $labels.instance }}{{ else }}-{{ end }}"),
        ["instance", "instance"]
    );
}
