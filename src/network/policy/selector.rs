//! Label selectors (`matchLabels`, `matchExpressions` with In, NotIn, Exists,
//! DoesNotExist), compiled once from a NetworkPolicy and matched against labels, with
//! Kubernetes' semantics: every requirement must hold, an empty selector selects
//! everything, `NotIn` and `DoesNotExist` hold where the key is absent.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    /// An operator this node does not know (the API server refuses them): selects nothing.
    Never,
}

/// A compiled label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Selects everything.
    pub fn everything() -> Selector {
        Selector(Vec::new())
    }

    pub fn compile(s: &LabelSelector) -> Selector {
        let mut reqs: Vec<Requirement> = (s.match_labels.iter().flatten())
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => Requirement::Never,
            });
        }
        Selector(reqs)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::Never => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn selector(v: serde_json::Value) -> Selector {
        Selector::compile(&serde_json::from_value(v).unwrap())
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_match_as_kubernetes_does() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases = [
            (json!({}), [true, true, true]),
            (json!({"matchLabels": {"app": "web"}}), [true, false, false]),
            (json!({"matchLabels": {"app": "web", "tier": "back"}}), [false, false, false]),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}),
                [true, true, false],
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                [false, true, true],
            ),
            (json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}), [true, false, false]),
            (json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}), [false, true, true]),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}),
                [true, false, false],
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}),
                [false, false, false],
            ),
        ];
        for (s, want) in cases {
            let sel = selector(s.clone());
            let got = [sel.matches(&web), sel.matches(&db), sel.matches(&none)];
            assert_eq!(got, want, "{s}");
        }
        assert!(Selector::everything().matches(&none));
    }
}
