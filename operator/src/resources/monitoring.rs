//! prometheus-operator objects for one cluster, when its spec asks for them: a ServiceMonitor that scrapes every
//! member (ready or not, through the headless peer Service) as job `<cluster>`, and a PrometheusRule holding the
//! project's alert rules (monitoring/alerts.yaml, unit-tested with promtool) scoped to that job, so that two
//! clusters in one namespace never evaluate, record or alert on each other's series.

use serde_json::{Value, json};

use super::services::LABEL_SERVICE;
use super::{Cluster, LABEL_CLUSTER};

pub const API_VERSION: &str = "monitoring.coreos.com/v1";

/// The rules every cluster gets, as written and tested in monitoring/alerts.yaml.
const ALERTS: &str = include_str!("../../../monitoring/alerts.yaml");

pub fn service_monitor(cluster: &Cluster) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": cluster.metadata(cluster.name, &[]),
        "spec": {
            // The Service's cluster label names the job: `job="<cluster>"`, which the rules below select.
            "jobLabel": LABEL_CLUSTER,
            "selector": {"matchLabels": {LABEL_CLUSTER: cluster.name, LABEL_SERVICE: "peers"}},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        }
    })
}

/// ALERTS parsed once: the rule is rebuilt on every pass of a cluster that asks for it.
static ALERT_GROUPS: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    let file: Value = serde_saphyr::from_str(ALERTS).expect("monitoring/alerts.yaml is valid YAML");
    file["groups"].clone()
});

pub fn prometheus_rule(cluster: &Cluster) -> Value {
    let selector = format!("namespace=\"{}\",job=\"{}\"", cluster.namespace, cluster.name);
    let mut groups = ALERT_GROUPS.clone();
    for group in groups.as_array_mut().expect("alerts.yaml has groups") {
        group["name"] = json!(format!("{}-{}", group["name"].as_str().unwrap_or("bft"), cluster.name));
        for rule in group["rules"].as_array_mut().expect("every group has rules") {
            let expr = rule["expr"]
                .as_str()
                .expect("every rule has an expr")
                .trim()
                .to_string();
            rule["expr"] = json!(scope(&expr, &selector));
        }
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": cluster.metadata(&format!("{}-alerts", cluster.name), &[]),
        "spec": {"groups": groups},
    })
}

/// Adds `selector` to every selector of a replica metric (`bft_*`), of a series recorded from them (`*:bft_*`)
/// and of `up` in a PromQL expression. Label names (in `by (...)`, `on (...)` and braces), functions, keywords,
/// strings and durations are left as they are.
pub fn scope(expr: &str, selector: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 64);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let end = (i + 1..chars.len())
                .find(|&j| chars[j] == c && chars[j - 1] != '\\')
                .unwrap_or(chars.len() - 1);
            out.extend(&chars[i..=end]);
            i = end + 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let token: String = chars[start..i].iter().collect();
            let preceded_by_digit = start > 0 && chars[start - 1].is_ascii_digit();
            out.push_str(&token);
            let metric = token.starts_with("bft_") || token.contains(":bft_") || token == "up";
            if !metric || preceded_by_digit {
                continue;
            }
            let next = (i..chars.len()).find(|&j| !chars[j].is_whitespace());
            match next.map(|j| chars[j]) {
                Some('(') => {} // a function of that name, not a selector
                Some('{') => {
                    let j = next.expect("found");
                    out.extend(&chars[i..=j]);
                    out.push_str(selector);
                    let empty = (j + 1..chars.len())
                        .find(|&k| !chars[k].is_whitespace())
                        .map(|k| chars[k])
                        == Some('}');
                    if !empty {
                        out.push(',');
                    }
                    i = j + 1;
                }
                _ => out.push_str(&format!("{{{selector}}}")),
            }
        } else if c == '{' {
            // A matcher list of a selector already handled, or of another metric: copied as it is.
            let end = (i..chars.len()).find(|&j| chars[j] == '}').unwrap_or(chars.len() - 1);
            out.extend(&chars[i..=end]);
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, spec};

    const SEL: &str = "namespace=\"bft\",job=\"drill\"";

    #[test]
    fn scoping_adds_the_cluster_to_every_metric_selector_and_nothing_else() {
        assert_eq!(
            scope("max by (namespace, job) (bft_members)", SEL),
            format!("max by (namespace, job) (bft_members{{{SEL}}})")
        );
        assert_eq!(
            scope(
                "up == 0 and on (namespace, job) max_over_time(namespace_job:bft_members:max[1d])",
                SEL
            ),
            format!(
                "up{{{SEL}}} == 0 and on (namespace, job) max_over_time(namespace_job:bft_members:max{{{SEL}}}[1d])"
            )
        );
        assert_eq!(
            scope(
                "increase(bft_messages_refused_total{reason=\"not_a_member\"}[5m]) > 0",
                SEL
            ),
            format!("increase(bft_messages_refused_total{{{SEL},reason=\"not_a_member\"}}[5m]) > 0")
        );
        assert_eq!(scope("bft_x{ } offset 5m", SEL), format!("bft_x{{{SEL} }} offset 5m"));
        // Strings and label values are never touched.
        assert_eq!(
            scope("label_replace(up, \"bft_x\", \"up\", \"\", \"\")", SEL),
            format!("label_replace(up{{{SEL}}}, \"bft_x\", \"up\", \"\", \"\")")
        );
    }

    #[test]
    fn the_rule_carries_every_alert_of_the_project_scoped_to_its_cluster() {
        let spec = spec(7);
        let rule = prometheus_rule(&cluster(&spec));
        assert_eq!(rule["kind"], "PrometheusRule");
        assert_eq!(rule["metadata"]["name"], "drill-alerts");
        let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
        let alerts = rules.iter().filter(|r| r.get("alert").is_some()).count();
        assert_eq!(alerts, ALERTS.matches("- alert:").count());
        for r in rules {
            let expr = r["expr"].as_str().unwrap();
            let selectors = expr.matches("bft_").count() + expr.matches("up ").count();
            assert!(selectors > 0, "{expr}");
            // Every mention of a replica metric is followed, sooner or later, by this cluster's matcher.
            for (at, _) in expr.match_indices("bft_") {
                let rest = &expr[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                assert!(rest[end..].starts_with(&format!("{{{SEL}")), "unscoped in {expr}");
            }
        }
        let monitor = service_monitor(&cluster(&spec));
        assert_eq!(monitor["spec"]["jobLabel"], LABEL_CLUSTER);
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    }
}
