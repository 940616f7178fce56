#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair on a private /24, Open MPI over TCP only
# between them (btl tcp,self; the veth subnet for btl and oob), its remote daemon started by a launch agent that
# runs it through `ip netns exec` instead of ssh. What a multi-node user of `frugal launch --hostfile` sees:
#   1. 2 hosts x 2 ranks with ep 4 (every all-to-all crosses hosts): the losses and the final checkpoint are
#      bitwise those of 4 ranks on one host; with moe.max_nodes_per_token 1 the hosts are the routing's 2 nodes;
#      with parallel.dispatch hierarchical the losses are within 1e-6 of flat's and fewer bytes cross the link;
#   2. a rank killed on the second host: the job ends with the rank, host and signal named, exit code 137;
#   3. every process of the second host killed: exit code 4, the host named;
#   4. the link brought down and left down: exit code 4, the host named (TCP keepalives, frugal launch's default
#      for --hostfile jobs, instead of a hang);
#   5. the link brought down under --max-restarts and back up once the job has failed: the job resumes from its
#      checkpoint and finishes.
# Each failure ends within parallel.timeout_s + 15 s and leaves no process in either namespace.
#
# usage: two_hosts.sh FRUGAL_BINARY SOURCE_DIR    (root; exits 77, "skipped", elsewhere)
set -uo pipefail
FRUGAL=${1:?usage: two_hosts.sh FRUGAL_BINARY SOURCE_DIR}
SRC=${2:?usage: two_hosts.sh FRUGAL_BINARY SOURCE_DIR}
skip() { echo "SKIPPED: $*"; exit 77; }
[[ $(id -u) == 0 ]] || skip "needs root (it creates network namespaces)"
command -v ip > /dev/null || skip "iproute2 is missing (scripts/setup.sh installs it)"
command -v mpirun > /dev/null || skip "mpirun is missing"
[[ -d /usr/share/games/fortunes ]] || skip "the fortunes corpus is missing (scripts/setup.sh installs it)"

id=$$
NS1=frmh_a$id NS2=frmh_b$id V1=frva$id V2=frvb$id
NET=10.213.$((id % 250)).
H1=${NET}1 H2=${NET}2
TIMEOUT_S=10
WORK=$(mktemp -d /tmp/frugal_multihost.XXXXXX)
failures=0

cleanup() {
    for ns in $NS1 $NS2; do
        pids=$(ip netns pids $ns 2> /dev/null)
        [[ -n $pids ]] && kill -9 $pids 2> /dev/null
        ip netns del $ns 2> /dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add $NS1 2> /dev/null || skip "cannot create network namespaces here (ip netns add failed)"
ip netns add $NS2
ip link add $V1 type veth peer name $V2
ip link set $V1 netns $NS1
ip link set $V2 netns $NS2
ip -n $NS1 addr add $H1/24 dev $V1
ip -n $NS2 addr add $H2/24 dev $V2
for ns in $NS1 $NS2; do ip -n $ns link set lo up; done
ip -n $NS1 link set $V1 up
ip -n $NS2 link set $V2 up

# Open MPI's rsh launcher calls "AGENT HOST COMMAND...": run COMMAND in HOST's namespace.
cat > "$WORK/agent" << AGENT
#!/bin/bash
host="\$1"; shift
case "\$host" in
  $H1) ns=$NS1 ;;
  $H2) ns=$NS2 ;;
  *) echo "launch agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$WORK/agent"
printf '%s slots=2\n%s slots=2\n' $H1 $H2 > "$WORK/hostfile"
# The two hosts share this machine's cores, more ranks than cores: ranks waiting in MPI yield the core (without it
# every small collective waits out a time slice over TCP, and a checkpoint takes 40 times as long).
MCA=(--mca plm_rsh_agent "$WORK/agent" --mca btl tcp,self --mca btl_tcp_if_include ${NET}0/24
     --mca oob_tcp_if_include ${NET}0/24 --mca mpi_yield_when_idle 1)

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
"$FRUGAL" prepare-data /usr/share/games/fortunes --out "$WORK/corpus" > /dev/null 2>&1 || { echo "prepare-data failed"; exit 1; }

# The demo model in FP32 (FP8's weight-gradient tiles group tokens by layout) on 4 ranks with ep 4.
demo() {
    local out=$1; shift
    echo "$SRC/configs/demo.yaml" --set data.dir="$WORK/corpus" --set run.out_dir="$WORK/$out" \
        --set precision.recipe=fp32 --set parallel.ep=4 --set train.threads=1 --set run.log_every=1 \
        --set train.eval_every=0 --set parallel.timeout_s=$TIMEOUT_S "$@"
}
two_hosts() { ip netns exec $NS1 "$FRUGAL" launch -n 4 --hostfile "$WORK/hostfile" "$@" -- "${MCA[@]}"; }
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
link_up() {
    ip -n $NS1 link set $V1 up
    # Reachable again when a TCP connection to a closed port is refused rather than unroutable.
    for _ in $(seq 50); do
        [[ $(ip netns exec $NS1 timeout 1 bash -c "echo > /dev/tcp/$H2/9" 2>&1) == *refused* ]] && return 0
        sleep 0.2
    done
    fail "the link did not come back"
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# No process of the job is left in either namespace (waiting for the remote side to notice, at most 30 s).
expect_no_leftovers() {
    for _ in $(seq 150); do
        [[ -z $(ip netns pids $NS1)$(ip netns pids $NS2) ]] && return 0
        sleep 0.2
    done
    fail "$1: processes left behind: $(ps -o pid,cmd -p "$(ip netns pids $NS1) $(ip netns pids $NS2)" | tail -n +2)"
    kill -9 $(ip netns pids $NS1) $(ip netns pids $NS2) 2> /dev/null
}
# Starts a long two-host run in the background; waits until it has logged `steps` steps.
start_long_run() {
    local out=$1 steps=$2; shift 2
    two_hosts $(demo $out --set train.steps=100000 "$@") > "$WORK/$out.log" 2>&1 &
    job=$!
    for _ in $(seq 600); do
        [[ $(grep -c '"loss"' "$WORK/$out/metrics.jsonl" 2> /dev/null) -ge $steps ]] && return 0
        kill -0 $job 2> /dev/null || break
        sleep 0.2
    done
    fail "$out: the run did not reach step $steps"; cat "$WORK/$out.log"
    return 1
}
# Waits for the background job; checks its exit code, the time since `since` and the message.
expect_end() {
    local name=$1 since=$2 want_rc=$3 want_msg=$4
    wait $job; local rc=$?
    local took=$(elapsed "$since" "$(now)")
    echo "$name: exit code $rc, ${took} s after the fault"
    [[ $rc == "$want_rc" ]] || fail "$name: exit code $rc, expected $want_rc"
    awk -v t="$took" -v lim=$((TIMEOUT_S + 15)) 'BEGIN { exit !(t <= lim) }' ||
        fail "$name: ended ${took} s after the fault, more than parallel.timeout_s + 15 = $((TIMEOUT_S + 15)) s"
    grep -qF -- "$want_msg" "$WORK/$name.log" || { fail "$name: no message '$want_msg'"; tail -30 "$WORK/$name.log"; }
    expect_no_leftovers "$name"
}

echo "== 1. two hosts train bitwise like one host"
"$FRUGAL" launch -n 4 $(demo one --set train.steps=6 --set checkpoint.every=6) > "$WORK/one.log" 2>&1 ||
    { fail "one host: exit code $?"; tail -20 "$WORK/one.log"; }
t0=$(now)
two_hosts $(demo two --set train.steps=6 --set checkpoint.every=6) > "$WORK/two.log" 2>&1 ||
    { fail "two hosts: exit code $?"; tail -20 "$WORK/two.log"; }
echo "two hosts x 2 ranks: 6 steps and a checkpoint in $(elapsed "$t0" "$(now)") s"
grep -q "btl tcp,self" "$WORK/two.log" || fail "two hosts: the launch line does not show the TCP-only transport"
grep -q "oob_tcp_keepalive_time" "$WORK/two.log" || fail "two hosts: frugal launch did not set the keepalives"
a=$(grep -o '"loss": [^,]*' "$WORK/one/metrics.jsonl"); b=$(grep -o '"loss": [^,]*' "$WORK/two/metrics.jsonl")
[[ -n $a && $a == "$b" ]] || fail "the losses differ: one host [$a], two hosts [$b]"
echo "losses: $(echo $a | tr '\n' ' ')"
for group in /params /optim /moe; do
    h5diff -q "$WORK/one/checkpoints/step_00000006.h5" "$WORK/two/checkpoints/step_00000006.h5" $group $group ||
        fail "the final checkpoints differ in $group"
done

echo "== 1b. node-limited routing across the two hosts"
two_hosts $(demo nodes --set train.steps=4 --set moe.max_nodes_per_token=1) > "$WORK/nodes.log" 2>&1 ||
    { fail "node-limited: exit code $?"; tail -20 "$WORK/nodes.log"; }
grep -q "experts of each expert-parallel group are on 2 nodes" "$WORK/nodes.log" ||
    { fail "node-limited: the two hosts were not seen as two nodes"; grep -i node "$WORK/nodes.log"; }
c=$(grep -o '"loss": [^,]*' "$WORK/nodes/metrics.jsonl" | head -4)
[[ $(echo "$c" | wc -l) == 4 && $c != "$(echo "$a" | head -4)" ]] ||
    fail "node-limited: the losses [$c] should exist and differ from unlimited routing's"

echo "== 1c. hierarchical dispatch across the two hosts"
t0=$(now)
two_hosts $(demo hier --set train.steps=6 --set parallel.dispatch=hierarchical) > "$WORK/hier.log" 2>&1 ||
    { fail "hierarchical: exit code $?"; tail -20 "$WORK/hier.log"; }
echo "two hosts x 2 ranks, hierarchical dispatch: 6 steps in $(elapsed "$t0" "$(now)") s"
grep -q "hierarchical dispatch: each expert-parallel group spans 2 nodes of 2 ranks" "$WORK/hier.log" ||
    { fail "hierarchical: the two hosts were not seen as two nodes"; grep -i node "$WORK/hier.log"; }
h=$(grep -o '"loss": [^,]*' "$WORK/hier/metrics.jsonl")
paste <(echo "$a" | cut -d' ' -f2) <(echo "$h" | cut -d' ' -f2) | awk '
    { n++; d = $1 - $2; if (d < 0) d = -d; if (d > 1e-6 * $1) bad++ }
    END { exit !(n == 6 && bad == 0) }' || fail "hierarchical: the losses [$h] are not within 1e-6 of flat's [$a]"
mb() { grep -o 'MB per step' "$1" > /dev/null && sed -n 's/.*(\([0-9.]*\) MB per step.*/\1/p' "$1" | tail -1; }
flat_mb=$(mb "$WORK/two.log") hier_mb=$(mb "$WORK/hier.log")
echo "bytes to the other host per step, rank 0: flat ${flat_mb:-?} MB, hierarchical ${hier_mb:-?} MB"
awk -v f="${flat_mb:-0}" -v h="${hier_mb:-0}" 'BEGIN { exit !(h > 0 && h < f) }' ||
    fail "hierarchical: ${hier_mb:-no} MB per step to the other host is not fewer than flat's ${flat_mb:-no} MB"

echo "== 2. a rank killed on the second host"
t0=$(now)
two_hosts $(demo rank_killed --set train.steps=20 --set fault.kill_rank=3 --set fault.at_step=3) \
    > "$WORK/rank_killed.log" 2>&1 &
job=$!
expect_end rank_killed "$t0" 137 "rank 3 on host $H2 was killed by signal 9"

echo "== 3. every process of the second host killed"
if start_long_run host_killed 2; then
    t0=$(now)
    kill -9 $(ip netns pids $NS2)
    expect_end host_killed "$t0" 4 "host $H2 was lost"
fi

echo "== 4. the link down and left down"
if start_long_run partition 2; then
    t0=$(now)
    ip -n $NS1 link set $V1 down
    expect_end partition "$t0" 4 "host $H2 was lost"
    link_up
fi

echo "== 5. the link down, back up after the failure, --max-restarts 1"
ip netns exec $NS1 "$FRUGAL" launch -n 4 --hostfile "$WORK/hostfile" --max-restarts 1 \
    $(demo restart --set train.steps=14 --set checkpoint.every=4) -- "${MCA[@]}" > "$WORK/restart.log" 2>&1 &
job=$!
for _ in $(seq 600); do
    [[ -f $WORK/restart/checkpoints/step_00000004.h5 ]] && break
    sleep 0.2
done
ip -n $NS1 link set $V1 down
for _ in $(seq 300); do grep -q "restart 1 of 1 in" "$WORK/restart.log" && break; sleep 0.2; done
grep -q "restart 1 of 1 in" "$WORK/restart.log" || fail "restart: the lost host was not followed by a delayed restart"
link_up
wait $job; rc=$?
[[ $rc == 0 ]] || { fail "restart: exit code $rc"; tail -30 "$WORK/restart.log"; }
grep -q "resumed from" "$WORK/restart.log" || fail "restart: the relaunch did not resume from the checkpoint"
grep -q "step    14/14" "$WORK/restart.log" || fail "restart: the run did not reach its last step"
expect_no_leftovers restart

if [[ $failures -gt 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all multi-host checks passed"
