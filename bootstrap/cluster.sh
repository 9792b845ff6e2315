#!/usr/bin/env bash
# Local Kubernetes 1.20 control plane for developing and testing krustlet-wasi.
#
#   bootstrap/cluster.sh install        apt packages + build/cache the k8s 1.20.2 binaries
#   bootstrap/cluster.sh up             start etcd, apiserver, controller-manager, scheduler, registry
#   bootstrap/cluster.sh down [--purge] stop them (--purge also deletes the state dir)
#   bootstrap/cluster.sh env            print shell exports (eval "$(bootstrap/cluster.sh env)")
#   bootstrap/cluster.sh status         one line per component; exit 0 only if all run
#
# Env: KRUSTLET_CP_CACHE (binaries, default /var/cache/krustlet-wasi/k8s-1.20.2)
#      KRUSTLET_CP_DIR   (state: PKI, kubeconfigs, data, logs; default /var/lib/krustlet-wasi/cp)
# Ports (all on 127.0.0.1): apiserver 6443, etcd 2379 (client) / 2380 (peer),
#      registry 5000 (plain HTTP), controller-manager 10257, scheduler 10259 (HTTPS health).
set -euo pipefail

CACHE="${KRUSTLET_CP_CACHE:-/var/cache/krustlet-wasi/k8s-1.20.2}"
STATE="${KRUSTLET_CP_DIR:-/var/lib/krustlet-wasi/cp}"
BIN="$CACHE/bin"
PKI="$STATE/pki"
RUN="$STATE/run"
LOGS="$STATE/logs"
KUBECTL="$BIN/kubectl-1.20"
ADMIN_KUBECONFIG="$STATE/admin.kubeconfig"

K8S_VERSION="v1.20.2"
APISERVER_PORT=6443
ETCD_PORT=2379
ETCD_PEER_PORT=2380
REGISTRY_ADDR="127.0.0.1:5000"
KCM_PORT=10257
SCHED_PORT=10259
SERVICE_CIDR="10.96.0.0/24"
SERVICE_IP="10.96.0.1" # first IP of SERVICE_CIDR: the `kubernetes` Service's ClusterIP
SA_ISSUER="https://kubernetes.default.svc.cluster.local"
GO_BIN="/usr/lib/go-1.19/bin"
REFLECT2_FIXED="/usr/share/gocode/src/github.com/modern-go/reflect2"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)
# Stop order for `down`; `up` starts them in dependency order.
COMPONENTS=(kube-scheduler kube-controller-manager kube-apiserver registry etcd)
APT_PACKAGES=(dpkg-dev golang-1.19-go golang-github-modern-go-reflect2-dev make gcc
  etcd-server docker-registry openssl rsync curl jq ca-certificates
  clang lld wasi-libc libclang-rt-14-dev-wasm32 iproute2 socat wrk)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# die_with_log NAME MESSAGE: fail, showing the tail of NAME's log.
die_with_log() {
  printf '[cluster] ERROR: %s\n[cluster] ---- tail of %s ----\n' "$2" "$LOGS/$1.log" >&2
  tail -n 40 "$LOGS/$1.log" >&2 2>/dev/null || true
  die "$2"
}

# ----------------------------------------------------------------------------- install

# have_binaries NAME...: true if all are executable (bare names live in $BIN); else prints the first missing.
have_binaries() {
  local b
  for b in "$@"; do
    [[ "$b" == */* ]] || b="$BIN/$b"
    [[ -x "$b" ]] || { echo "$b"; return 1; }
  done
}

ensure_apt() {
  local need_update=0 missing=() p src=/etc/apt/sources.list.d/debian.sources
  local twin=/etc/apt/sources.list.d/debian-src.sources
  # `apt-get source` needs deb-src entries; bookworm images only ship `Types: deb`.
  if [[ ! -e "$twin" ]] && ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    [[ -f "$src" ]] || die "no $src to derive deb-src entries from"
    log "writing deb-src twin $twin"
    sed -E 's/^Types:.*/Types: deb-src/' "$src" >"$twin"
    need_update=1
  fi
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) && need_update=1
  apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes' || need_update=1
  if ((need_update)); then
    log "apt-get update"
    apt-get update -q
  fi
  if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# Build kube-apiserver/-controller-manager/-scheduler from Debian's source package.
build_k8s() {
  local work="$CACHE/build" src b out start=$SECONDS
  if have_binaries "${K8S_BINARIES[@]}" >/dev/null; then
    log "k8s binaries already cached in $BIN (skipping build)"
    return
  fi
  rm -rf "$work"
  mkdir -p "$work" "$BIN"
  chown _apt "$work" 2>/dev/null || true
  log "fetching Debian source package 'kubernetes' into $work"
  (cd "$work" && apt-get source -q kubernetes) >"$work/source.log" 2>&1 ||
    { tail -n 30 "$work/source.log" >&2; die "apt-get source kubernetes failed"; }
  src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
  [[ -n "$src" && -f "$src/Makefile" ]] || die "unpacked kubernetes source not found in $work"
  # Vendored reflect2 1.0.1 corrupts memory in map iteration under Go >= 1.18 (the
  # apiserver segfaults after a while); Debian ships the fixed 1.0.2 source.
  [[ -f "$REFLECT2_FIXED/go_above_118.go" ]] || die "$REFLECT2_FIXED lacks the Go 1.18 fix"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -rL "$REFLECT2_FIXED" "$src/vendor/github.com/modern-go/reflect2"
  log "building ${K8S_BINARIES[*]} (takes ~10 min on 2 cores; log: $work/build.log)"
  # GOPATH mode: the tree's vendor/modules.txt still names reflect2 1.0.1.
  if ! (cd "$src" && env PATH="$GO_BIN:$PATH" GO111MODULE=off GOFLAGS= GOCACHE="$work/gocache" \
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler") \
        >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "kubernetes build failed (full log: $work/build.log)"
  fi
  for b in "${K8S_BINARIES[@]}"; do
    out="$src/_output/local/bin/linux/amd64/$b"
    [[ -x "$out" ]] || die "build produced no $out"
    "$out" --version | grep -qF "$K8S_VERSION" || die "$out is not $K8S_VERSION"
    install -m 0755 "$out" "$BIN/$b.tmp" && mv -f "$BIN/$b.tmp" "$BIN/$b"
  done
  if [[ "${KRUSTLET_CP_KEEP_BUILD:-0}" == 1 ]]; then
    log "build done in $((SECONDS - start))s; source tree kept in $work"
  else
    log "build done in $((SECONDS - start))s; removing $work (KRUSTLET_CP_KEEP_BUILD=1 keeps it)"
    rm -rf "$work"
  fi
}

# Debian's kubectl 1.20 (SPDY-only exec/attach), unpacked beside, never installed.
fetch_kubectl_120() {
  [[ -x "$KUBECTL" ]] && { log "kubectl-1.20 already in $BIN"; return; }
  local dl="$CACHE/kubernetes-client"
  rm -rf "$dl" && mkdir -p "$dl/root" "$BIN"
  chown _apt "$dl" 2>/dev/null || true # lets apt download sandboxed (no warning)
  (cd "$dl" && apt-get download -q kubernetes-client) >&2 || die "apt-get download kubernetes-client failed"
  dpkg -x "$dl"/kubernetes-client_*.deb "$dl/root"
  install -m 0755 "$dl/root/usr/bin/kubectl" "$KUBECTL"
  "$KUBECTL" version --client | grep -qF "v1.20." || die "$KUBECTL is not kubectl 1.20"
  log "kubectl 1.20 at $KUBECTL"
}

cmd_install() {
  [[ $EUID -eq 0 ]] || die "install needs root (apt-get)"
  local start=$SECONDS
  ensure_apt
  fetch_kubectl_120
  build_k8s
  log "install complete in $((SECONDS - start))s; binaries in $BIN"
}

# ----------------------------------------------------------------------------- PKI

have_pair() { [[ -s "$PKI/$1.crt" && -s "$PKI/$1.key" ]]; }

# new_ca NAME CN: self-signed CA.
new_ca() {
  openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 -out "$PKI/$1.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
}

# new_cert NAME SUBJECT EXTENSIONS: key + cert signed by the cluster CA (or $CA_NAME), once.
new_cert() {
  local name="$1" subj="$2" ext="$3"
  have_pair "$name" && return
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/${CA_NAME:-ca}.crt" -CAkey "$PKI/${CA_NAME:-ca}.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext") \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

# write_kubeconfig FILE USER CERT_NAME: client-cert kubeconfig for the local apiserver.
write_kubeconfig() {
  local file="$1" user="$2" cert="$3"
  [[ -s "$file" ]] && return
  install -m 0600 /dev/null "$file"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: krustlet-wasi-local
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")}
users:
- name: $user
  user: {client-certificate-data: $(base64 -w0 "$PKI/$cert.crt"), client-key-data: $(base64 -w0 "$PKI/$cert.key")}
contexts:
- {name: $user@krustlet-wasi-local, context: {cluster: krustlet-wasi-local, user: $user}}
current-context: $user@krustlet-wasi-local
EOF
}

ensure_pki() {
  mkdir -p "$PKI" && chmod 700 "$PKI"
  if ! have_pair ca; then
    log "creating cluster CA and certificates in $PKI"
    rm -f "$PKI"/* "$STATE"/*.kubeconfig # a new CA invalidates everything it signed
    new_ca ca krustlet-wasi-local-ca
  fi
  # Separate CA for the aggregation layer's front proxy (requestheader authentication);
  # without it controller-manager and scheduler log "missing content for CA bundle" forever.
  if ! have_pair front-proxy-ca; then
    rm -f "$PKI"/front-proxy-client.*
    new_ca front-proxy-ca krustlet-wasi-front-proxy-ca
  fi
  CA_NAME=front-proxy-ca new_cert front-proxy-client "/CN=front-proxy-client" "extendedKeyUsage=clientAuth"
  new_cert apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  new_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  new_cert admin "/O=system:masters/CN=kubernetes-admin" "extendedKeyUsage=clientAuth"
  new_cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  new_cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  # Service-account token signing key pair.
  if [[ ! -s "$PKI/sa.key" || ! -s "$PKI/sa.pub" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI"/*.key
  write_kubeconfig "$ADMIN_KUBECONFIG" kubernetes-admin admin
  write_kubeconfig "$STATE/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$STATE/scheduler.kubeconfig" system:kube-scheduler scheduler
}

write_registry_config() {
  mkdir -p "$STATE/registry/data"
  [[ -s "$STATE/registry/config.yml" ]] && return
  cat >"$STATE/registry/config.yml" <<EOF
version: 0.1
log: {level: info, fields: {service: registry}}
storage:
  filesystem: {rootdirectory: $STATE/registry/data}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
http:
  addr: $REGISTRY_ADDR
  secret: $(openssl rand -hex 16)
  headers: {X-Content-Type-Options: [nosniff]}
EOF
}

# ----------------------------------------------------------------------------- processes

binary_of() {
  case "$1" in
    etcd) echo /usr/bin/etcd ;;
    registry) echo /usr/bin/docker-registry ;;
    *) echo "$BIN/$1" ;;
  esac
}

# Prints the pid if NAME's pid file points at a live process running its binary.
running_pid() {
  local pidfile="$RUN/$1.pid" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(binary_of "$1")" || return 1
  echo "$pid"
}

# Serialise concurrent up/down runs on the same state dir.
take_lock() {
  exec 9>"$STATE/.lock"
  flock -w 120 9 || die "another cluster.sh holds $STATE/.lock"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_daemon NAME PORT ARGS...: detached (own session), pid file + log in the state dir.
start_daemon() {
  local name="$1" port="$2"; shift 2
  local bin pid
  bin="$(binary_of "$name")"
  if pid="$(running_pid "$name")"; then
    log "$name already running (pid $pid)"
    return
  fi
  [[ -x "$bin" ]] || die "$bin not found"
  port_in_use "$port" && die "port 127.0.0.1:$port is taken by a process that is not our $name ($(ss -ltnpH "sport = :$port" 2>/dev/null | head -n1))"
  [[ -f "$LOGS/$name.log" ]] && mv -f "$LOGS/$name.log" "$LOGS/$name.log.prev"
  rm -f "$RUN/$name.pid"
  # The inner shell records its own pid and execs the daemon, so the pid file is exact.
  # No descriptor but stdio leaks into the long-lived daemon: not fd 9 (the up/down lock),
  # nor a lock the caller holds around its run (`flock FILE cmd` hands its fd down), which
  # the daemon would hold until it stops, shutting out everyone waiting for that lock.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$0"
    for fd in /proc/$$/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
    exec "$@"' "$RUN/$name.pid" "$bin" "$@" \
    >"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  for _ in {1..50}; do [[ -s "$RUN/$name.pid" ]] && break; sleep 0.1; done
  log "started $name (pid $(cat "$RUN/$name.pid" 2>/dev/null || echo '?'), log $LOGS/$name.log)"
}

# wait_until NAME TIMEOUT DESCRIPTION CMD...: poll CMD; fail with NAME's log if it dies.
wait_until() {
  local name="$1" timeout="$2" desc="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    running_pid "$name" >/dev/null || die_with_log "$name" "$name exited while waiting for: $desc"
    ((SECONDS < deadline)) || die_with_log "$name" "timed out after ${timeout}s waiting for: $desc"
    sleep 0.5
  done
  log "ok: $desc"
}

kubectl_admin() { "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=5s "$@"; }
etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
apiserver_ready() { [[ "$(kubectl_admin get --raw /readyz 2>/dev/null)" == ok ]]; }
https_healthz() { [[ "$(curl -ksS --max-time 2 "https://127.0.0.1:$1/healthz")" == ok ]]; }
registry_ready() { curl -fsS --max-time 2 "http://$REGISTRY_ADDR/v2/" >/dev/null; }
default_sa_exists() { kubectl_admin -n default get serviceaccount default; }

all_healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do running_pid "$c" >/dev/null || return 1; done
  apiserver_ready && registry_ready && https_healthz "$KCM_PORT" && https_healthz "$SCHED_PORT"
}

# ----------------------------------------------------------------------------- daemons

start_etcd() {
  start_daemon etcd "$ETCD_PORT" --name krustlet-wasi-cp --data-dir "$STATE/etcd-data" --logger=zap \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "krustlet-wasi-cp=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new
}

# Endpoint reconciler off: the `kubernetes` Endpoints may not hold a loopback address.
# kubelet-certificate-authority = cluster CA, which also signs node serving certs (csrsigning).
start_apiserver() {
  start_daemon kube-apiserver "$APISERVER_PORT" \
    --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" --insecure-port=0 \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --enable-bootstrap-token-auth \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer="$SA_ISSUER" --api-audiences="$SA_ISSUER" \
    --feature-gates=BoundServiceAccountTokenVolume=true \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key"
}

# Node lifecycle controller stays on ("*"): it taints nodes whose Lease goes stale.
start_controller_manager() {
  start_daemon kube-controller-manager "$KCM_PORT" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 --leader-elect=false \
    --controllers='*,bootstrapsigner,tokencleaner' \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --use-service-account-credentials=true --feature-gates=BoundServiceAccountTokenVolume=true \
    --flex-volume-plugin-dir="$STATE/flexvolume"
}

start_scheduler() {
  start_daemon kube-scheduler "$SCHED_PORT" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0 --leader-elect=false
}

cmd_up() {
  local start=$SECONDS b
  b="$(have_binaries "${K8S_BINARIES[@]}" kubectl-1.20 /usr/bin/{etcd,docker-registry,openssl,curl})" ||
    die "missing $b: run 'bootstrap/cluster.sh install' first"
  mkdir -p "$STATE" "$RUN" "$LOGS"
  take_lock
  if [[ -s "$ADMIN_KUBECONFIG" ]] && all_healthy; then
    log "control plane already up and healthy ($((SECONDS - start))s)"
    return
  fi
  ensure_pki
  write_registry_config

  start_etcd
  start_daemon registry "${REGISTRY_ADDR##*:}" serve "$STATE/registry/config.yml"
  wait_until etcd 30 "etcd /health" etcd_healthy
  start_apiserver
  wait_until kube-apiserver 60 "kube-apiserver /readyz" apiserver_ready
  start_controller_manager
  start_scheduler
  wait_until kube-controller-manager 30 "kube-controller-manager /healthz" https_healthz "$KCM_PORT"
  wait_until kube-scheduler 30 "kube-scheduler /healthz" https_healthz "$SCHED_PORT"
  wait_until kube-controller-manager 45 "serviceaccount default/default" default_sa_exists
  wait_until registry 15 "registry /v2/ on $REGISTRY_ADDR" registry_ready
  log "control plane up in $((SECONDS - start))s — eval \"\$($0 env)\""
}

cmd_down() {
  local purge=0 c pid
  case "${1:-}" in --purge) purge=1 ;; "") ;; *) die "usage: $0 down [--purge]" ;; esac
  [[ -d "$STATE" ]] || { log "nothing to stop ($STATE does not exist)"; return; }
  take_lock
  for c in "${COMPONENTS[@]}"; do
    if pid="$(running_pid "$c")"; then
      log "stopping $c (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in {1..100}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then
        log "$c did not exit after 20s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in {1..25}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      fi
    fi
    rm -f "$RUN/$c.pid"
  done
  if ((purge)); then
    [[ -n "$STATE" && "$STATE" != / ]] || die "refusing to purge '$STATE'"
    log "removing $STATE"
    rm -rf -- "$STATE"
  fi
  log "control plane stopped"
}

cmd_env() {
  printf 'export %s=%q\n' KUBECONFIG "$ADMIN_KUBECONFIG" KRUSTLET_CP_DIR "$STATE" KRUSTLET_CP_CACHE "$CACHE" \
    KRUSTLET_TEST_REGISTRY "$REGISTRY_ADDR" KUBECTL_1_20 "$KUBECTL"
}

cmd_status() {
  local c pid rc=0
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler registry; do
    if pid="$(running_pid "$c")"; then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s stopped\n' "$c"
      rc=1
    fi
  done
  return "$rc"
}

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    install) cmd_install "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    env) cmd_env "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
