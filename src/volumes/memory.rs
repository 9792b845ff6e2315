//! Which volumes the kubelet keeps in memory (secret, projected, downwardAPI, emptyDir
//! `medium: Memory`), and how large the tmpfs of each may grow.

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

use crate::base::quantity;
use crate::config::MEMORY_VOLUME_SIZE;
use crate::objects::PodContext;

/// Whether the volume lives on a tmpfs of its own where the agent may mount: the volumes
/// the kubelet backs with memory (secret, projected and downwardAPI through an emptyDir of
/// medium Memory, and emptyDir `medium: Memory` itself). ConfigMap volumes stay on disk,
/// as on the kubelet.
pub(crate) fn is_memory_backed(volume: &Volume) -> bool {
    volume.secret.is_some()
        || volume.projected.is_some()
        || volume.downward_api.is_some()
        || volume.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref() == Some("Memory"))
}

/// The most bytes the volume's tmpfs holds. An emptyDir: as the kubelet sizes it, the
/// least of the node's allocatable memory, the pod's memory limit (when every container
/// declares one) and the volume's `sizeLimit` (each only when above zero). Any other
/// memory-backed volume: [`MEMORY_VOLUME_SIZE`], or the node's allocatable if smaller.
pub(crate) fn tmpfs_size(volume: &Volume, ctx: &PodContext<'_>) -> u64 {
    let allocatable = ctx.allocatable.1;
    let Some(empty_dir) = &volume.empty_dir else {
        return positive_min(allocatable, Some(MEMORY_VOLUME_SIZE));
    };
    let size = positive_min(allocatable, pod_memory_limit(ctx.pod));
    let size_limit = empty_dir.size_limit.as_ref().and_then(|q| quantity::bytes(&q.0));
    positive_min(size, size_limit)
}

/// `candidate` when it is above zero and below `size`, else `size`.
fn positive_min(size: u64, candidate: Option<u64>) -> u64 {
    match candidate {
        Some(c) if c > 0 && c < size => c,
        _ => size,
    }
}

/// The pod's memory limit as the kubelet's pod cgroup gets it: the larger of its
/// containers' limits summed and its largest init container's limit; `None` unless every
/// container declares `limits.memory`.
fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &Container| {
        let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
        quantity::bytes(&q.0)
    };
    let mut sum = 0u64;
    for c in &spec.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    let mut init_max = 0;
    for c in spec.init_containers.iter().flatten() {
        init_max = init_max.max(limit(c)?);
    }
    Some(sum.max(init_max))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use serde_json::{Value, json};

    use super::*;

    fn volume(mut v: Value) -> Volume {
        v["name"] = json!("v");
        serde_json::from_value(v).expect("volume")
    }

    fn pod(limits: &[Option<&str>], init: &[Option<&str>]) -> Pod {
        let container = |i: usize, l: &Option<&str>| {
            let mut c = json!({"name": format!("c{i}")});
            if let Some(l) = l {
                c["resources"] = json!({"limits": {"memory": l}});
            }
            c
        };
        let containers: Vec<Value> = limits.iter().enumerate().map(|(i, l)| container(i, l)).collect();
        let init: Vec<Value> = init.iter().enumerate().map(|(i, l)| container(i + 10, l)).collect();
        serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": containers, "initContainers": init}}))
        .expect("pod")
    }

    fn ctx(pod: &Pod) -> PodContext<'_> {
        PodContext { pod, node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), allocatable: (1000, 8 << 30) }
    }

    #[test]
    fn the_kubelets_memory_backed_volumes() {
        let cases = [
            (json!({"secret": {"secretName": "s"}}), true),
            (json!({"projected": {"sources": []}}), true),
            (json!({"downwardAPI": {"items": []}}), true),
            (json!({"emptyDir": {"medium": "Memory"}}), true),
            (json!({"emptyDir": {}}), false),
            (json!({"emptyDir": {"medium": ""}}), false),
            (json!({"configMap": {"name": "c"}}), false),
            (json!({"hostPath": {"path": "/x"}}), false),
        ];
        for (v, want) in cases {
            assert_eq!(is_memory_backed(&volume(v.clone())), want, "{v}");
        }
    }

    #[test]
    fn tmpfs_sizes() {
        let limited = pod(&[Some("64Mi"), Some("32Mi")], &[Some("128Mi")]);
        let partly = pod(&[Some("64Mi"), None], &[]);
        let memory = |size_limit: Option<&str>| {
            let mut e = json!({"medium": "Memory"});
            if let Some(s) = size_limit {
                e["sizeLimit"] = json!(s);
            }
            volume(json!({"emptyDir": e}))
        };
        let secret = volume(json!({"secret": {"secretName": "s"}}));
        assert_eq!(tmpfs_size(&secret, &ctx(&limited)), MEMORY_VOLUME_SIZE);
        let tiny_node = PodContext { allocatable: (1000, 1 << 20), ..ctx(&limited) };
        assert_eq!(tmpfs_size(&secret, &tiny_node), 1 << 20, "never more than the node has");
        assert_eq!(tmpfs_size(&memory(None), &ctx(&limited)), 128 << 20, "an init container's larger limit");
        assert_eq!(tmpfs_size(&memory(Some("10Mi")), &ctx(&limited)), 10 << 20);
        assert_eq!(tmpfs_size(&memory(Some("1Gi")), &ctx(&limited)), 128 << 20, "the pod's limit is less");
        assert_eq!(tmpfs_size(&memory(None), &ctx(&partly)), 8 << 30, "not every container has a limit");
        assert_eq!(tmpfs_size(&memory(Some("1Gi")), &ctx(&partly)), 1 << 30);
        assert_eq!(tmpfs_size(&memory(Some("0")), &ctx(&partly)), 8 << 30, "zero is no limit");
        assert_eq!(tmpfs_size(&memory(Some("64Gi")), &ctx(&partly)), 8 << 30);
    }
}
