//! deploy/: the Grafana dashboard and the Prometheus alerting rules over
//! `/metrics`. A renamed series would leave a panel empty and an alert silent
//! with nothing failing, so these tests hold both to a real daemon: every metric
//! an expression names, every label it matches or groups on, and every label a
//! legend or an annotation prints must be on the daemon's `/metrics` once it has
//! served, learned, checked drift and retrained. The dashboard must be one
//! Grafana imports, each alert must say how long, how bad and what to do, and
//! where promtool is installed (CI installs it) the rules, their unit tests and
//! the dashboard's queries must pass it.
//!
//! The load balancer configs (deploy/nginx, deploy/haproxy) run as shipped, with
//! only their addresses rewritten, in front of three real daemons: requests
//! spread over the replicas, each answer is logged once, and a replica killed
//! with SIGKILL costs no request. Where nginx or HAProxy is missing these tests
//! skip, except under CI (which installs both), where they fail.

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

// The load balancer configs (issue 19): deploy/nginx/steward.conf and
// deploy/haproxy/haproxy.cfg, run as shipped in front of three real daemons.

const NGINX_CONF: &str = "deploy/nginx/steward.conf";
const HAPROXY_CFG: &str = "deploy/haproxy/haproxy.cfg";
/// The replicas' addresses in both shipped files.
const SHIPPED_REPLICAS: [&str; 3] = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"];

/// A shipped config with each `(from, to)` replaced in its directives (comment
/// lines are left alone). Each `from` must be in exactly one directive, so that
/// a change to the shipped file fails here instead of leaving a test of
/// something else: else the error says which is not.
fn rewrite(text: &str, swaps: &[(&str, String)]) -> Result<String, String> {
    let mut found = vec![0; swaps.len()];
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_owned();
        if !line.trim_start().starts_with('#') {
            for ((from, to), n) in swaps.iter().zip(&mut found) {
                *n += line.matches(from).count();
                line = line.replace(from, to);
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    for ((from, _), n) in swaps.iter().zip(found) {
        if n != 1 {
            return Err(format!(
                "{from:?}: in {n} directives of the shipped file, not 1"
            ));
        }
    }
    Ok(out)
}

#[test]
fn rewrite_replaces_directives_only_and_each_exactly_once() {
    let text = "# from 127.0.0.1:8081\nserver 127.0.0.1:8081;\nlisten 8080;\n";
    assert_eq!(
        rewrite(text, &[("127.0.0.1:8081", "127.0.0.1:40001".into())]).unwrap(),
        "# from 127.0.0.1:8081\nserver 127.0.0.1:40001;\nlisten 8080;\n"
    );
    assert!(rewrite(text, &[("listen 80;", String::new())]).is_err());
    assert!(rewrite(&format!("{text}{text}"), &[("listen 8080;", String::new())]).is_err());
}

/// A load balancer in the foreground: its process, its URL, and its directory
/// (the rewritten config, its output, nginx's pid file and access log).
struct Balancer {
    process: crate::common::ChildGuard,
    url: String,
    dir: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    /// The binary (on `PATH`, or in /usr/sbin, which a user's `PATH` may lack);
    /// `None` after a note where it is not installed, outside CI. Under CI a
    /// missing one fails the test, as a missing PostgreSQL does (common/pg.rs).
    fn installed(self) -> Option<PathBuf> {
        let name = self.binary();
        let found = on_path(name).or_else(|| {
            let p = Path::new("/usr/sbin").join(name);
            p.is_file().then_some(p)
        });
        if found.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name} is not installed (apt-get install {name}); CI must run the load balancer tests"
            );
            let _ = writeln!(
                std::io::stderr(),
                "deploy: {name} not installed: {} NOT tested",
                self.shipped()
            );
        }
        found
    }

    fn shipped(self) -> &'static str {
        match self {
            Kind::Nginx => NGINX_CONF,
            Kind::Haproxy => HAPROXY_CFG,
        }
    }
}

impl Balancer {
    /// Runs the shipped config of `kind` in front of `replicas` (host:port),
    /// listening on a free loopback port, and waits until it answers /readyz.
    /// What is rewritten: the three upstream addresses, the listen port and, for
    /// nginx, the access log's directory; nginx also gets the lines Debian's
    /// nginx.conf puts around conf.d/ (pid file, events, temporary
    /// directories), all inside the test's directory.
    async fn start(kind: Kind, bin: &Path, replicas: &[String]) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = crate::smtp::free_port();
        let mut swaps: Vec<(&str, String)> = SHIPPED_REPLICAS
            .iter()
            .copied()
            .zip(replicas.iter().cloned())
            .collect();
        let shipped = std::fs::read_to_string(path(kind.shipped())).unwrap();
        let mut cmd = Command::new(bin);
        match kind {
            Kind::Nginx => {
                swaps.push(("listen 8080;", format!("listen 127.0.0.1:{port};")));
                swaps.push(("/var/log/nginx/", format!("{d}/")));
                std::fs::write(
                    dir.path().join("steward.conf"),
                    rewrite(&shipped, &swaps).unwrap(),
                )
                .unwrap();
                let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
                    .iter()
                    .map(|t| format!("    {t}_temp_path {d}/{t};\n"))
                    .collect();
                let main = format!(
                    "pid {d}/nginx.pid;\nworker_processes 1;\nevents {{}}\n\
                     http {{\n{temp}    include {d}/steward.conf;\n}}\n"
                );
                std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
                cmd.args(["-p", &d, "-e", "stderr", "-c", &format!("{d}/nginx.conf")])
                    .args(["-g", "daemon off;"]);
            }
            Kind::Haproxy => {
                swaps.push(("bind :8080", format!("bind 127.0.0.1:{port}")));
                let cfg = dir.path().join("haproxy.cfg");
                std::fs::write(&cfg, rewrite(&shipped, &swaps).unwrap()).unwrap();
                cmd.arg("-f").arg(&cfg).arg("-db");
            }
        }
        let out = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        cmd.current_dir(dir.path()).stdout(out).stderr(err);
        let mut b = Balancer {
            process: crate::common::ChildGuard::spawn(&mut cmd),
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let c = client();
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = b.process.0.try_wait().unwrap() {
                panic!("{kind:?} exited ({status}):\n{}", b.output());
            }
            let ready = c.get(format!("{}/readyz", b.url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return b;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "{kind:?} not answering /readyz within 10 s:\n{}",
                b.output()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Everything it wrote: stdout, stderr and, for nginx, the access log.
    fn output(&self) -> String {
        ["stdout.log", "stderr.log", "steward.access.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }
}

/// Sends the head of a POST to `path` that declares a body of `length` bytes,
/// and no body; returns the answer's status and its JSON body (Null if none).
fn post_head_only(url: &str, path: &str, length: usize) -> (u16, Value) {
    use std::io::Read;
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(SECS_10)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let declared = head.lines().find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if n == 0 || declared.is_some_and(|d| body.len() >= d) {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, serde_json::from_str(body).unwrap_or(Value::Null));
            }
        }
        assert!(n > 0, "the connection closed before a whole answer: {text}");
    }
}

/// Sends `n` predictions (tests/api.rs's penguin) to `url`, `parallel` at a
/// time, and returns each answer's status (0: no answer).
async fn predictions(c: &reqwest::Client, url: &str, n: usize, parallel: usize) -> Vec<u16> {
    let body = serde_json::json!({ "features": crate::common::penguin() });
    let mut set = tokio::task::JoinSet::new();
    for k in 0..parallel {
        let (c, url, body) = (c.clone(), format!("{url}/v1/predict"), body.clone());
        let share = n / parallel + usize::from(k < n % parallel);
        set.spawn(async move {
            let mut statuses = Vec::with_capacity(share);
            for _ in 0..share {
                let answer = c.post(&url).json(&body).send().await;
                statuses.push(answer.map_or(0, |r| r.status().as_u16()));
            }
            statuses
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(statuses) = set.join_next().await {
        all.extend(statuses.unwrap());
    }
    all
}

fn successes(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| (200..300).contains(*s)).count()
}

async fn counter(c: &reqwest::Client, d: &Daemon, name: &str) -> u64 {
    crate::common::metric(c, &d.url, name).await as u64
}

/// The test of one balancer: predictions spread over three replicas, every
/// answer logged once by the replica that gave it, the request id passed
/// through, steward's body limit, and a replica killed with SIGKILL.
async fn balance(kind: Kind) {
    let Some(bin) = kind.installed() else { return };
    let replicas: Vec<Daemon> = (0..3).map(|_| Daemon::start("")).collect();
    let addrs: Vec<String> = replicas
        .iter()
        .map(|d| d.url.trim_start_matches("http://").to_owned())
        .collect();
    let lb = Balancer::start(kind, &bin, &addrs).await;
    let c = client();
    let mut answered = 0;

    // The request id: the client's reaches the replica (which echoes it); a
    // request without one gets the balancer's, which its log shows.
    let body = serde_json::json!({ "features": crate::common::penguin() });
    let r = c
        .post(format!("{}/v1/predict", lb.url))
        .header("x-request-id", "lb-test-0001")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "lb-test-0001");
    let r = c
        .post(format!("{}/v1/predict", lb.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    answered += 2;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    match kind {
        // nginx's $request_id: 32 hex digits (steward's own is a UUID).
        Kind::Nginx => assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        ),
        // HAProxy's uuid() is version 4 (steward's own is version 7).
        Kind::Haproxy => assert_eq!(id.as_bytes().get(14), Some(&b'4'), "{id}"),
    }
    crate::common::eventually("the balancer logs the request id", SECS_10, || async {
        lb.output().contains(&id)
    })
    .await;

    // A body over steward's server.max_body_bytes is refused at the balancer,
    // with steward's error code, on its Content-Length alone. Only the head
    // is sent: HAProxy closes at once after its 413, and a client still
    // sending the body may get a reset instead of the answer (seen here in one
    // run of several).
    let (status, error) = post_head_only(&lb.url, "/v1/predict", 1_048_577);
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["code"], "body_too_large", "{error}");

    // 300 predictions, 6 at a time: every one answered 2xx, by every replica.
    let statuses = predictions(&c, &lb.url, 300, 6).await;
    assert_eq!(successes(&statuses), 300, "{statuses:?}\n{}", lb.output());
    answered += 300;
    let mut split = Vec::new();
    for d in &replicas {
        split.push(counter(&c, d, "steward_predictions_total").await);
    }
    assert!(
        split.iter().all(|n| *n > 0),
        "a replica answered none: {split:?}"
    );
    assert_eq!(split.iter().sum::<u64>(), answered, "{split:?}");

    // Kill one replica outright once its rows are written (a killed replica
    // loses the rows still queued, which would blur the count below).
    for (d, n) in replicas.iter().zip(&split) {
        crate::common::eventually("the replica's rows are written", SECS_10, || async {
            counter(&c, d, "steward_log_rows_written_total").await == *n
        })
        .await;
    }
    let mut replicas = replicas.into_iter();
    let mut victim = replicas.next().unwrap();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let survivors: Vec<Daemon> = replicas.collect();

    // At once: the balancer's kept-alive connections to the dead replica are
    // closed, and it still counts as up. Every request must still get its
    // answer, from another replica (retried after a refused or reset
    // connection).
    let at_once = predictions(&c, &lb.url, 100, 6).await;
    let failed_at_once = at_once.len() - successes(&at_once);
    // HAProxy's health check takes the replica out (2 checks, 2 s apart);
    // nginx takes it out after 3 failed attempts, with no log line to wait for.
    if let Kind::Haproxy = kind {
        // The shipped file's name for the first replica.
        crate::common::eventually("HAProxy marks the killed replica down", SECS_10, || async {
            lb.output().contains("steward/r1 is DOWN")
        })
        .await;
    }
    let settled = predictions(&c, &lb.url, 100, 6).await;
    let mut report = format!(
        "deploy: {kind:?}: {answered} predictions split {split:?} over 3 replicas; after kill -9 \
         of one: {failed_at_once} of 100 failed at once, {} of 100 after it was taken out",
        settled.len() - successes(&settled)
    );
    // Requests that reached another replica after an attempt on the dead one:
    // nginx's access log lists every address tried; HAProxy's httplog marks a
    // redispatch with a `+` before the retry count (`1/1/0/0/+1`).
    let retried = match kind {
        Kind::Nginx => {
            let log = std::fs::read_to_string(lb.dir.path().join("steward.access.log")).unwrap();
            let tried_dead = format!("upstream={}, ", addrs[0]);
            log.lines().filter(|l| l.contains(&tried_dead)).count()
        }
        Kind::Haproxy => {
            let log = std::fs::read_to_string(lb.dir.path().join("stdout.log")).unwrap();
            log.lines().filter(|l| l.contains("/+")).count()
        }
    };
    report.push_str(&format!("; {retried} retried on another replica"));
    let _ = writeln!(std::io::stderr(), "{report}");
    assert_eq!(failed_at_once, 0, "{at_once:?}\n{}", lb.output());
    assert_eq!(successes(&settled), 100, "{settled:?}\n{}", lb.output());
    answered += 200;

    // Every 2xx answer is one row, logged by the replica that gave it: the
    // victim's rows as they were when it was killed, the others' after a clean
    // stop.
    let mut rows = vec![crate::common::count(&victim.db_path(), "predictions").await];
    let mut after_kill = Vec::new();
    for d in &survivors {
        after_kill.push(counter(&c, d, "steward_predictions_total").await);
    }
    drop(lb);
    for d in survivors {
        let (status, dir, log) = d.stop();
        assert!(status.success(), "{log}");
        rows.push(crate::common::count(&dir.path().join("data/steward.db"), "predictions").await);
    }
    assert_eq!(rows[0], split[0] as i64, "the killed replica's rows");
    assert_eq!(
        rows[1..],
        after_kill.iter().map(|n| *n as i64).collect::<Vec<_>>(),
        "each surviving replica logged what it answered"
    );
    assert_eq!(rows.iter().sum::<i64>(), answered as i64, "{rows:?}");
}

const SECS_10: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test]
async fn nginx_spreads_predictions_over_replicas_and_survives_a_kill() {
    balance(Kind::Nginx).await;
}

#[tokio::test]
async fn haproxy_spreads_predictions_over_replicas_and_survives_a_kill() {
    balance(Kind::Haproxy).await;
}
