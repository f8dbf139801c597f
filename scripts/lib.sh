# Shared helpers of the project's scripts: package installation, free ports, and throw-away
# etcd and ZooKeeper servers on loopback. Source it; do not run it.

# Prints a TCP port on 127.0.0.1 that nothing listens on, below the kernel's ephemeral range
# (so no outgoing connection holds it either), reserved for this script against the tests and
# other scripts: a file named after the port in $TMPDIR/waypost-test-ports, created exclusively,
# holds the owner's pid (the test helpers in tests/src/ports.rs do the same), and a reservation
# whose owner has exited is taken over.
free_port() {
    local port low owner dir=${TMPDIR:-/tmp}/waypost-test-ports
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    mkdir -p "$dir"
    while :; do
        port=$((10000 + RANDOM % (low - 10000)))
        if ! (set -o noclobber; echo "$$" >"$dir/$port") 2>/dev/null; then
            owner=$(cat "$dir/$port" 2>/dev/null || true)
            if [ -n "$owner" ] && [ ! -d "/proc/$owner" ]; then rm -f "$dir/$port"; fi
            continue
        fi
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

# The Debian packages each part of the project needs, named one by one (installed without
# recommends, so nothing is left to what a package merely recommends).
# Building the etcd backend: protoc, and the well-known .proto files it includes
# (google/protobuf/descriptor.proto), which only libprotobuf-dev ships.
BUILD_PACKAGES=(protobuf-compiler libprotobuf-dev)
# A throw-away etcd, and etcdctl.
ETCD_PACKAGES=(etcd-server etcd-client)
# A throw-away ZooKeeper (the package pulls in a Java runtime) and zkCli.sh.
ZOOKEEPER_PACKAGES=(zookeeper)
# Tools the tests call: openssl (keys and certificates for etcd's JWT auth and TLS tests),
# prlimit from util-linux (a provider under a low file-descriptor limit), curl and python3 (the
# HTTP/JSON ingress called by clients no one here wrote). All are in most base images; named
# so that nothing relies on that.
TEST_TOOL_PACKAGES=(openssl util-linux curl python3)
# Python packages the tests call, installed by pip into target/python (tests find it through
# RPC_TEST_PYTHONPATH): a real OpenAPI validator for the HTTP ingress's /openapi.json.
PYTHON_TOOLS=(openapi-spec-validator)
PYTHON_TOOLS_DIR=target/python

# ensure_python_tools: installs PYTHON_TOOLS into PYTHON_TOOLS_DIR unless they import already
# (pip from Debian's python3-pip when the python3 on PATH has none).
ensure_python_tools() {
    if PYTHONPATH=$PYTHON_TOOLS_DIR python3 -c 'import openapi_spec_validator' 2>/dev/null; then
        return 0
    fi
    python3 -m pip --version >/dev/null 2>&1 || ensure_packages python3-pip
    echo "installing into $PYTHON_TOOLS_DIR: ${PYTHON_TOOLS[*]}" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$PYTHON_TOOLS_DIR" "${PYTHON_TOOLS[@]}" >&2
}

# Whether a Debian package is installed (not merely known: a removed package whose
# configuration files remain is not installed).
package_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# Installs the Debian packages named, if any of them is missing. Needs root (or sudo).
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "error: need root (or sudo) to install: ${missing[*]}" >&2
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: apt-get not found; install these packages by hand: ${missing[*]}" >&2
        return 1
    fi
    echo "installing: ${missing[*]}" >&2
    if ! $sudo apt-get update -qq >&2; then
        echo "error: apt-get update failed (no network to the package mirror?)" >&2
        return 1
    fi
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
        echo "error: apt-get install ${missing[*]} failed (see above)" >&2
        return 1
    fi
}

# Waits until `cmd...` succeeds, at most $1 seconds.
wait_for() {
    local timeout=$1; shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then return 1; fi
        sleep 0.2
    done
}

# wait_ready PID TIMEOUT CMD...: waits until CMD succeeds, failing early when PID exits.
wait_ready() {
    local pid=$1 timeout=$2; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then return 1; fi
        sleep 0.2
    done
}

# start_etcd DIR: starts etcd on free loopback ports (reserved by free_port, so nothing else
# binds them) with its data in DIR. Sets ETCD_PID, ETCD_ENDPOINT (host:port) and ETCDCTL (an
# etcdctl command line for it).
start_etcd() { start_or_stop ETCD_PID start_etcd_once "$1"; }

# start_or_stop PID_VAR START_FN DIR: runs START_FN DIR, stopping the process named by PID_VAR
# when it fails.
start_or_stop() {
    local pid_var=$1 start_fn=$2 dir=$3
    "$start_fn" "$dir" && return 0
    stop_pid "${!pid_var}"
    echo "$start_fn did not start" >&2
    return 1
}

start_etcd_once() {
    local dir=$1 certs=${ETCD_TLS_CERTS:-}
    mkdir -p "$dir"
    local client_port peer_port scheme=http tls=()
    client_port=$(free_port)
    peer_port=$(free_port)
    ETCD_ENDPOINT="127.0.0.1:$client_port"
    ETCDCTL=(etcdctl --endpoints "$ETCD_ENDPOINT")
    if [ -n "$certs" ]; then
        scheme=https
        ETCD_ENDPOINT="https://$ETCD_ENDPOINT"
        tls=(--cert-file "$certs/server.pem" --key-file "$certs/server.key"
            --trusted-ca-file "$certs/ca.pem" --client-cert-auth)
        ETCDCTL=(etcdctl --endpoints "$ETCD_ENDPOINT" --cacert "$certs/ca.pem"
            --cert "$certs/client.pem" --key "$certs/client.key")
    fi
    local client_url="$scheme://127.0.0.1:$client_port"
    etcd --name "rpc-test" --data-dir "$dir/data" \
        --listen-client-urls "$client_url" --advertise-client-urls "$client_url" "${tls[@]}" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "rpc-test=http://127.0.0.1:$peer_port" \
        --log-level warn >"$dir/etcd.log" 2>&1 &
    ETCD_PID=$!
    if ! wait_ready "$ETCD_PID" 30 "${ETCDCTL[@]}" endpoint health; then
        echo "error: etcd did not become healthy; log:" >&2
        tail -20 "$dir/etcd.log" >&2
        return 1
    fi
    if [ -n "$certs" ]; then
        "${ETCDCTL[@]}" user add root --new-user-password "$ETCD_ROOT_PASSWORD" >/dev/null &&
            "${ETCDCTL[@]}" user grant-role root root >/dev/null &&
            "${ETCDCTL[@]}" auth enable >/dev/null || return 1
        ETCDCTL+=(--user "root:$ETCD_ROOT_PASSWORD")
    fi
}

# start_etcd_tls DIR CERTS: like start_etcd, serving clients over TLS only with the
# certificates in CERTS (ca.pem, server.pem/.key, client.pem/.key, as bin make-certs writes
# them), requiring client certificates signed by that CA, and with authentication enabled for
# user root (password $ETCD_ROOT_PASSWORD). Sets ETCD_PID, ETCD_ENDPOINT (https://host:port)
# and ETCDCTL (an etcdctl command line with the certificates and the user).
start_etcd_tls() {
    ETCD_TLS_CERTS=$2 start_or_stop ETCD_PID start_etcd_once "$1"
}
ETCD_ROOT_PASSWORD=${ETCD_ROOT_PASSWORD:-demo-root-password}

# start_zookeeper DIR: starts a standalone ZooKeeper on a free loopback port with its data in
# DIR. Sets ZK_PID and ZK_ENDPOINT (host:port).
start_zookeeper() { start_or_stop ZK_PID start_zookeeper_once "$1"; }

start_zookeeper_once() {
    local dir=$1
    mkdir -p "$dir/data"
    local port
    port=$(free_port)
    ZK_ENDPOINT="127.0.0.1:$port"
    cat >"$dir/zoo.cfg" <<CFG
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
# Every client here comes from 127.0.0.1 (the scale benchmark's 200): no per-address limit.
maxClientCnxns=0
CFG
    # slf4j-simple (from libslf4j-java, a dependency of the package) makes the server log to
    # $dir/zookeeper.log; without a binding it logs nothing.
    java -Dorg.slf4j.simpleLogger.defaultLogLevel="${ZK_LOG_LEVEL:-warn}" \
        -cp "$dir:/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" >"$dir/zookeeper.log" 2>&1 &
    ZK_PID=$!
    if ! wait_ready "$ZK_PID" 30 zk_ok "$port"; then
        echo "error: ZooKeeper did not start; log:" >&2
        tail -20 "$dir/zookeeper.log" >&2
        return 1
    fi
}

# Whether ZooKeeper on 127.0.0.1:$1 serves requests. `ruok` answers before the server is ready
# for sessions; `srvr` reports a mode only once it is.
zk_ok() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null | grep -q '^Mode:'
}

# Stops a process started above and waits for it.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

# start_test_servers: starts the throw-away etcd and ZooKeeper every test shares, in a scratch
# directory (in memory, /dev/shm, where the machine has it: their fsyncs then cost nothing and a
# busy disk cannot stall them), stopped (and the directory removed) when the calling script
# exits. Exports their
# addresses as RPC_TEST_ETCD_ENDPOINTS and RPC_TEST_ZK_SERVERS, and the Python tools of
# scripts/setup as RPC_TEST_PYTHONPATH.
start_test_servers() {
    local root=${TMPDIR:-/tmp}
    [ -d /dev/shm ] && [ -w /dev/shm ] && root=/dev/shm
    TEST_SERVERS_DIR=$(mktemp -d -p "$root" waypost-test.XXXXXX)
    ETCD_PID="" ZK_PID=""
    trap 'stop_pid "$ETCD_PID"; stop_pid "$ZK_PID"; rm -rf "$TEST_SERVERS_DIR"' EXIT
    start_etcd "$TEST_SERVERS_DIR/etcd"
    start_zookeeper "$TEST_SERVERS_DIR/zookeeper"
    echo "etcd at $ETCD_ENDPOINT, ZooKeeper at $ZK_ENDPOINT" >&2
    export RPC_TEST_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
    export RPC_TEST_ZK_SERVERS="$ZK_ENDPOINT"
    export RPC_TEST_PYTHONPATH="$PWD/$PYTHON_TOOLS_DIR"
}

# build_workspace: builds every binary and every test of the workspace in one cargo invocation,
# with one feature set, so that the scripts, the examples and the tests share every artifact and
# nothing is built twice (a `cargo build -p X` resolves the features of X alone and builds the
# framework again). It also puts the workspace's binaries back in target/debug after a build
# with other features (scripts/check-build). Under scripts/suite.py, which has just made that
# build and runs test binaries beside this script, WAYPOST_BUILT=1 skips it (cargo would put the
# binaries in target/debug afresh while tests start them).
build_workspace() {
    [ "${WAYPOST_BUILT:-}" = 1 ] && return 0
    cargo build -q --workspace --bins --tests "$@"
}
