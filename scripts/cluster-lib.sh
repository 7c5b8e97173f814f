# Helpers for the benchmark scripts that run local clusters of release nodes on loopback.
# Sourced after scripts/ensure-deps.sh, with `bin` set to the release directory:
#   cluster_init PORT   nodes listen on 127.0.0.1:PORT+N (gRPC) and :PORT+80+N (HTTP), for
#                       example 19100 gives 19101..19103 and 19181..19183; data and logs
#                       go to a temporary directory removed on exit
#   cluster_start N [FLAGS...]   start node N (nodes after the first join node 1)
#   cluster_up N        start nodes 1..N and wait until every shard is replicated
#   cluster_stop_all    stop every node started
#   cluster_leaders     "shard node" lines, from every member's report of its own replicas
#   cluster_leader_counts   "node:count ..." of shard leaders
#   ctl ARGS...         hotlakectl against the cluster
#   cluster_heartbeats  "SENT REQUESTS": Raft heartbeats the running nodes have sent to peers,
#                       and the requests that carried them (heartbeats bound for one peer go
#                       together), from their /metrics
#   heartbeats_between "S0 R0" "S1 R1"   "N heartbeats in M requests (K per request)"
# The cluster is created with authentication on: node 1 writes its admin token to
# $cluster_base/admin.token, and cluster_up exports it as HOTLAKE_TOKEN for hotlake-bench.

declare -A cluster_pids
cluster_init() {
    cluster_port=$1
    cluster_base=$(mktemp -d)
    cluster_grpc="127.0.0.1:$((cluster_port + 1))"
    cluster_http="127.0.0.1:$((cluster_port + 81))"
    trap 'cluster_stop_all; rm -rf "$cluster_base"' EXIT
}
cluster_start() {
    local n=$1; shift
    local join=()
    [ "$n" != 1 ] && join=(--join "127.0.0.1:$((cluster_port + 91))")
    "$bin/hotlake" serve --node-id "$n" --data-dir "$cluster_base/node$n" \
        --grpc-addr "127.0.0.1:$((cluster_port + n))" --http-addr "127.0.0.1:$((cluster_port + 80 + n))" \
        --peer-addr "127.0.0.1:$((cluster_port + 90 + n))" \
        --auth-bootstrap-token-file "$cluster_base/admin.token" \
        "${join[@]}" "$@" >>"$cluster_base/node$n.log" 2>&1 &
    cluster_pids[$n]=$!
}
ctl() { "$bin/hotlakectl" --cluster "$cluster_grpc" --token-file "$cluster_base/admin.token" "$@"; }
cluster_up() {
    local count=$1; shift
    cluster_start 1 "$@"
    for _ in $(seq 1 300); do [ -s "$cluster_base/admin.token" ] && ctl --timeout-s 2 health >/dev/null 2>&1 && break; sleep 0.1; done
    HOTLAKE_TOKEN=$(cat "$cluster_base/admin.token")
    export HOTLAKE_TOKEN
    for n in $(seq 2 "$count"); do cluster_start "$n" "$@"; done
    for n in $(seq 1 "$count"); do
        kill -0 "${cluster_pids[$n]}" 2>/dev/null || { echo "error: node $n exited:" >&2; head -5 "$cluster_base/node$n.log" >&2; exit 1; }
    done
    ctl cluster status --wait-ready-s 300 --wait-nodes "$count" >/dev/null
}
cluster_stop_all() {
    for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    cluster_pids=()
}
cluster_leaders() {
    ctl --timeout-s 5 cluster status --output json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
for m in s["members"]:
    for r in (m.get("report") or {}).get("replicas", []):
        if r["role"] == "leader":
            print(r["shard"], m["id"])' | sort -n
}
cluster_leader_counts() {
    cluster_leaders | awk '{c[$2]++} END {for (n in c) printf "%s:%s ", n, c[n]}'
}
cluster_heartbeats() {
    local sent=0 requests=0 n text
    for n in "${!cluster_pids[@]}"; do
        text=$(curl -sf -H "Authorization: Token $HOTLAKE_TOKEN" "http://127.0.0.1:$((cluster_port + 80 + n))/metrics") || continue
        sent=$((sent + $(awk '$1 == "hotlake_raft_heartbeats_sent_total" {print $2}' <<<"$text")))
        requests=$((requests + $(awk '$1 == "hotlake_raft_heartbeat_requests_total" {print $2}' <<<"$text")))
    done
    echo "$sent $requests"
}
heartbeats_between() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " "); s = y[1] - x[1]; r = y[2] - x[2]
        printf "%d heartbeats in %d requests (%.1f per request)", s, r, (r > 0 ? s / r : 0) }'
}
