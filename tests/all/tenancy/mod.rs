//! End to end, on the real control plane, as a hostile tenant would try it: the agent is
//! each pod's cgroup and network namespace (issue 18). Each module provokes one kind of
//! isolation from outside — a pod spec, a guest's behaviour, or a client — and checks what
//! the user sees: the guest's error, the pod's status and Events, the node staying healthy.
//! Nodes that must not be on loopback run in a network namespace the test makes.

mod network;
mod resources;
mod secrets;
