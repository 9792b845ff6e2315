//! A pod's resources as the kubelet reads them: each container's requests and limits (a
//! request not given is its limit, as the API server defaults it, which static pods do not
//! get), the pod's requests (the larger of its containers' sum and its largest init
//! container, plus its overhead), its QoS class, its priority, whether it is critical (never
//! evicted), and the limits of each container's resource group. Pure.

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};

use crate::base::quantity;
use crate::config::eviction::Thresholds;
use crate::runtime::GroupLimits;

/// What the node gives its pods, and what it does when it runs short.
#[derive(Debug, Clone, Default)]
pub struct NodeResources {
    /// The node's allocatable: what admission fits pods' requests into.
    pub allocatable: Amounts,
    /// The budget of every guest's memory together (the allocatable memory), if any.
    pub memory_budget: Option<u64>,
    /// `--eviction-hard`: past these, pods are evicted (`eviction/`).
    pub eviction_hard: Thresholds,
    /// The previous agent was killed by the kernel for lack of memory (how that was seen):
    /// the runs it lost are charged to their pods as `OOMKilled`.
    pub agent_oom_killed: Option<String>,
}

/// The priority from which a pod is critical, as the kubelet's `SystemCriticalPriority`
/// (`system-cluster-critical` is 2000000000, `system-node-critical` 2000001000).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// An amount of each resource the node hands out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl Amounts {
    fn plus(self, o: Amounts) -> Amounts {
        Amounts {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes.saturating_add(o.ephemeral_storage_bytes),
        }
    }

    fn max(self, o: Amounts) -> Amounts {
        Amounts {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            memory_bytes: self.memory_bytes.max(o.memory_bytes),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes.max(o.ephemeral_storage_bytes),
        }
    }
}

/// `resource` of `requests` (or `limits`), parsed as that resource is.
fn amount(resources: Option<&ResourceRequirements>, requests: bool, resource: &str) -> Option<u64> {
    let r = resources?;
    let map = if requests { r.requests.as_ref() } else { r.limits.as_ref() }?;
    let q = &map.get(resource)?.0;
    match resource {
        "cpu" => quantity::millis(q),
        _ => quantity::units(q),
    }
}

/// A container's request of `resource`: as written, else its limit (the API server's
/// default), else none.
pub fn request(c: &Container, resource: &str) -> Option<u64> {
    amount(c.resources.as_ref(), true, resource).or_else(|| limit(c, resource))
}

/// A container's limit of `resource`, if it sets one.
pub fn limit(c: &Container, resource: &str) -> Option<u64> {
    amount(c.resources.as_ref(), false, resource)
}

fn requests_of(c: &Container) -> Amounts {
    Amounts {
        cpu_millis: request(c, "cpu").unwrap_or(0),
        memory_bytes: request(c, "memory").unwrap_or(0),
        ephemeral_storage_bytes: request(c, "ephemeral-storage").unwrap_or(0),
    }
}

/// What the pod requests of the node, as the scheduler and the kubelet's admission count
/// it: its containers' requests together, or its largest init container's if larger, plus
/// its `overhead`.
pub fn pod_requests(pod: &Pod) -> Amounts {
    let Some(spec) = pod.spec.as_ref() else { return Amounts::default() };
    let main = spec.containers.iter().map(requests_of).fold(Amounts::default(), Amounts::plus);
    let init = spec.init_containers.iter().flatten().map(requests_of).fold(Amounts::default(), Amounts::max);
    let overhead = spec.overhead.as_ref().map_or(Amounts::default(), |o| {
        let get = |r: &str, cpu: bool| {
            o.get(r)
                .and_then(|q| if cpu { quantity::millis(&q.0) } else { quantity::units(&q.0) })
                .unwrap_or(0)
        };
        Amounts {
            cpu_millis: get("cpu", true),
            memory_bytes: get("memory", false),
            ephemeral_storage_bytes: get("ephemeral-storage", false),
        }
    });
    main.max(init).plus(overhead)
}

/// The pod's priority (`spec.priority`, set from its PriorityClass; 0 without one).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether the pod is critical to the node, as the kubelet's `IsCriticalPod`: a static or
/// mirror pod, or one of system-critical priority. Such pods are never evicted.
pub fn is_critical(pod: &Pod) -> bool {
    super::status::report::is_static(pod)
        || super::status::report::is_mirror(pod)
        || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

/// The limits of a container's resource group: `limits.memory`, else `default_memory`
/// (`--default-memory-limit`); `limits.cpu`; `requests.cpu` (its limit if not given). The
/// flag says whether the default memory limit applied.
pub fn group_limits(c: &Container, default_memory: Option<u64>) -> (GroupLimits, bool) {
    let own = limit(c, "memory");
    let memory_limit = own.or(default_memory);
    let limits = GroupLimits {
        memory_limit,
        cpu_limit_millis: limit(c, "cpu"),
        cpu_request_millis: request(c, "cpu"),
    };
    (limits, own.is_none() && memory_limit.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value, init: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": containers, "initContainers": init},
        }))
        .unwrap()
    }

    fn c(resources: serde_json::Value) -> serde_json::Value {
        json!({"name": "c", "resources": resources})
    }

    #[test]
    fn pod_requests_take_the_larger_of_containers_and_init_containers() {
        let p = pod(
            json!([
                c(json!({"requests": {"cpu": "100m", "memory": "64Mi"}})),
                c(json!({"limits": {"memory": "1Gi"}}))
            ]),
            json!([c(json!({"requests": {"cpu": "1", "memory": "128Mi"}}))]),
        );
        let r = pod_requests(&p);
        assert_eq!(r.cpu_millis, 1000, "the init container's CPU is larger");
        assert_eq!(r.memory_bytes, (64 << 20) + (1 << 30), "a limit without a request requests it");
        let mut with_overhead = p.clone();
        with_overhead.spec.as_mut().unwrap().overhead = Some(
            [("memory".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("10Mi".into()))]
                .into(),
        );
        assert_eq!(pod_requests(&with_overhead).memory_bytes, r.memory_bytes + (10 << 20));
    }

    #[test]
    fn group_limits_come_from_the_container_or_the_node_default() {
        let spin: Container =
            serde_json::from_value(c(json!({"limits": {"cpu": "200m"}, "requests": {"cpu": "50m"}})))
                .unwrap();
        let (limits, defaulted) = group_limits(&spin, Some(512 << 20));
        assert_eq!(
            limits,
            GroupLimits {
                memory_limit: Some(512 << 20),
                cpu_limit_millis: Some(200),
                cpu_request_millis: Some(50)
            }
        );
        assert!(defaulted);
        let own: Container =
            serde_json::from_value(c(json!({"limits": {"memory": "64Mi", "cpu": "1"}}))).unwrap();
        let (limits, defaulted) = group_limits(&own, Some(512 << 20));
        assert_eq!(limits.memory_limit, Some(64 << 20));
        assert_eq!(limits.cpu_request_millis, Some(1000), "the request defaults to the limit");
        assert!(!defaulted);
        assert_eq!(group_limits(&own, None).0.memory_limit, Some(64 << 20));
    }

    #[test]
    fn static_mirror_and_system_critical_pods_are_critical() {
        let mut p = pod(json!([c(json!({}))]), json!([]));
        assert!(!is_critical(&p));
        p.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY);
        assert!(is_critical(&p));
        p.spec.as_mut().unwrap().priority = Some(1000);
        p.metadata.annotations =
            Some([("kubernetes.io/config.source".to_string(), "file".to_string())].into());
        assert!(is_critical(&p));
    }
}
