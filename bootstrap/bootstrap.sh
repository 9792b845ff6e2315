#!/usr/bin/env bash
# Prepare TLS bootstrapping of a krustlet-wasi node against the CURRENT kubectl context.
# Run by a cluster admin. It:
#   1. creates a bootstrap token Secret kube-system/bootstrap-token-<id>,
#   2. applies the RBAC that kubeadm clusters have and bare clusters lack (idempotent):
#      - kubeadm:kubelet-bootstrap                 bootstrappers may create CSRs
#      - kubeadm:node-autoapprove-bootstrap        their node-client CSRs are auto-approved
#      - kubeadm:node-autoapprove-certificate-rotation  nodes' renewal CSRs are auto-approved
#      - krustlet-wasi:network-policy              nodes may read NetworkPolicies, Namespaces
#        and Pods cluster-wide, to enforce NetworkPolicy on their Wasm pods' sockets
#   3. writes a bootstrap kubeconfig (server + CA of the current context, token user)
#      to ${CONFIG_DIR:-$HOME/.krustlet/config}/${FILE_NAME:-bootstrap.conf} (mode 0600),
#   4. prints the command that starts the node.
#
# Env: KUBECTL (default: kubectl), TOKEN_TTL_SECONDS (default 3600), CONFIG_DIR, FILE_NAME,
#      NODE_IP (only for the printed command; default guessed from the API server address).
set -euo pipefail

KUBECTL="${KUBECTL:-kubectl}"
TOKEN_TTL_SECONDS="${TOKEN_TTL_SECONDS:-3600}"
CONFIG_DIR="${CONFIG_DIR:-$HOME/.krustlet/config}"
FILE_NAME="${FILE_NAME:-bootstrap.conf}"
BOOTSTRAP_GROUP="system:bootstrappers:kubeadm:default-node-token"

log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

# random_string LEN: LEN characters from [a-z0-9] (the bootstrap token alphabet).
random_string() {
  local out
  # tr|head ends with SIGPIPE on tr by design; ignore pipefail just here.
  out="$(set +o pipefail; LC_ALL=C tr -dc 'a-z0-9' </dev/urandom | head -c "$1")"
  [[ ${#out} -eq $1 ]] || die "could not generate a random string"
  printf '%s' "$out"
}

check_prereqs() {
  command -v "$KUBECTL" >/dev/null || die "kubectl not found (set KUBECTL=/path/to/kubectl)"
  [[ "$TOKEN_TTL_SECONDS" =~ ^[0-9]+$ && "$TOKEN_TTL_SECONDS" -gt 0 ]] ||
    die "TOKEN_TTL_SECONDS must be a positive integer, got '$TOKEN_TTL_SECONDS'"
  local ctx
  ctx="$("$KUBECTL" config current-context 2>/dev/null)" || die "no current kubectl context"
  "$KUBECTL" auth can-i create secrets -n kube-system >/dev/null 2>&1 ||
    die "context '$ctx' may not create Secrets in kube-system (admin rights needed)"
  log "using kubectl context '$ctx'"
}

# Reads server URL and CA bundle of the current context into SERVER / CA_DATA.
read_cluster_info() {
  SERVER="$("$KUBECTL" config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.server}')"
  CA_DATA="$("$KUBECTL" config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
  [[ -n "$SERVER" ]] || die "current context has no cluster server"
  [[ -n "$CA_DATA" ]] || die "current context has no CA data (insecure-skip-tls-verify is not supported)"
}

create_token() {
  TOKEN_ID="$(random_string 6)"
  TOKEN_SECRET="$(random_string 16)"
  local expiration
  expiration="$(date -u -d "+${TOKEN_TTL_SECONDS} seconds" +%Y-%m-%dT%H:%M:%SZ)"
  "$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-$TOKEN_ID
  namespace: kube-system
type: bootstrap.kubernetes.io/token
stringData:
  description: "krustlet-wasi node bootstrap token"
  token-id: "$TOKEN_ID"
  token-secret: "$TOKEN_SECRET"
  expiration: "$expiration"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: "$BOOTSTRAP_GROUP"
EOF
  log "created Secret kube-system/bootstrap-token-$TOKEN_ID (expires $expiration)"
}

# crb NAME CLUSTERROLE GROUP: one ClusterRoleBinding document.
crb() {
  cat <<EOF
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: $1
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: $2
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: $3
EOF
}

# The agent enforces NetworkPolicy for its pods as a CNI plugin would: it watches
# NetworkPolicies, Namespaces and Pods of the whole cluster (the node role reads none of the
# first and cannot list the second). Without this the node warns and leaves its pods open.
network_policy_role() {
  cat <<EOF
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: krustlet-wasi:network-policy
rules:
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces", "pods"]
  verbs: ["get", "list", "watch"]
EOF
}

apply_rbac() {
  {
    crb kubeadm:kubelet-bootstrap system:node-bootstrapper "$BOOTSTRAP_GROUP"
    crb kubeadm:node-autoapprove-bootstrap \
      system:certificates.k8s.io:certificatesigningrequests:nodeclient "$BOOTSTRAP_GROUP"
    crb kubeadm:node-autoapprove-certificate-rotation \
      system:certificates.k8s.io:certificatesigningrequests:selfnodeclient system:nodes
    network_policy_role
    crb krustlet-wasi:network-policy krustlet-wasi:network-policy system:nodes
  } | "$KUBECTL" apply -f - >&2
}

write_bootstrap_kubeconfig() {
  BOOTSTRAP_FILE="$CONFIG_DIR/$FILE_NAME"
  mkdir -p "$CONFIG_DIR"
  local tmp
  tmp="$(mktemp "$CONFIG_DIR/.$FILE_NAME.XXXXXX")" # mktemp creates it 0600
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: krustlet-bootstrap
  cluster:
    server: $SERVER
    certificate-authority-data: $CA_DATA
users:
- name: tls-bootstrap-token-user
  user:
    token: $TOKEN_ID.$TOKEN_SECRET
contexts:
- name: tls-bootstrap-token-user@krustlet-bootstrap
  context:
    cluster: krustlet-bootstrap
    user: tls-bootstrap-token-user
current-context: tls-bootstrap-token-user@krustlet-bootstrap
EOF
  chmod 0600 "$tmp"
  mv -f "$tmp" "$BOOTSTRAP_FILE"
  log "wrote bootstrap kubeconfig $BOOTSTRAP_FILE"
}

# The node IP the API server should use to reach the node (logs/exec).
guess_node_ip() {
  if [[ -n "${NODE_IP:-}" ]]; then
    printf '%s' "$NODE_IP"
    return
  fi
  local host="${SERVER#*://}"
  host="${host%%/*}"
  host="${host%:*}"
  case "$host" in
    127.* | localhost | \[::1\]) printf '127.0.0.1' ;; # local control plane
    *) hostname -I 2>/dev/null | awk '{print $1}' ;;
  esac
}

main() {
  check_prereqs
  read_cluster_info
  # Two bootstraps at once against a cluster without the RBAC yet (parallel tests, two
  # nodes joining together) may both try to create an object: the loser's apply fails
  # with AlreadyExists, and applying again finds the object and succeeds.
  apply_rbac || { sleep 1; apply_rbac; }
  create_token
  write_bootstrap_kubeconfig
  local ip
  ip="$(guess_node_ip)"
  echo "Start the node with:"
  echo "  krustlet-wasi --node-ip ${ip:-<node-ip>} --bootstrap-file $BOOTSTRAP_FILE"
}

main "$@"
