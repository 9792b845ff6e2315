//! A bystander pod: it prints a line every 200 ms beside a hostile one, to show the node
//! kept serving its other pods.

use std::time::Duration;

use serde_json::json;

use super::Cluster;
use super::node::{TestNode, main_status, phase, pod};

pub struct Bystander {
    pub name: String,
}

impl Bystander {
    /// Starts `image` (the `tool` guest) with `serve` on `node`, and waits until it runs.
    pub fn start(cluster: &Cluster, node: &TestNode, image: &str, tag: &str) -> Bystander {
        let name = format!("bystander-{tag}-{}", std::process::id());
        let mut p = pod(&name, &node.name, image);
        p["spec"]["containers"][0]["args"] = json!(["serve"]);
        cluster.apply(&p);
        cluster.wait_pod(&name, "Running", Duration::from_secs(60), |p| phase(p) == "Running");
        Bystander { name }
    }

    fn last_line(&self, cluster: &Cluster) -> String {
        cluster.kubectl_ok(&["logs", "-n", "default", &self.name, "--tail", "1"])
    }

    /// Still Running, never restarted, and still writing.
    pub fn assert_unharmed(&self, cluster: &Cluster) {
        let p = cluster.get_json(&["pod", &self.name, "-n", "default"]).expect("bystander exists");
        assert_eq!(phase(&p), "Running", "bystander: {:#}", p["status"]);
        assert_eq!(main_status(&p)["restartCount"], 0, "bystander: {:#}", p["status"]);
        let before = self.last_line(cluster);
        super::wait_for("the bystander's next line", Duration::from_secs(10), || {
            (self.last_line(cluster) != before).then_some(())
        });
    }

    pub fn delete(self, cluster: &Cluster) {
        cluster.kubectl(&["delete", "pod", &self.name, "--wait=false"]);
    }
}
