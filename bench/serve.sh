#!/usr/bin/env bash
# bench/serve.sh — `docker build` (the classic build API, DOCKER_BUILDKIT=0)
# through kiln serve vs through dockerd's classic builder, on bench/run.sh's
# 10,000-file context; and the per-request overhead of kiln serve's API path
# over `kiln build`. bench/run.sh runs it as part of make bench, and alone
# with `bench/run.sh serve` (make bench-serve).
#
#   bench/serve.sh WORK CONTEXT
#
# WORK is a work directory (stores, logs under WORK/logs), CONTEXT the
# 10k-file context. It prints its part of results.txt on stdout:
#
#   serve: docker CLI …, dockerd … (classic builder), --network none
#   serve workload          kiln serve (s)  dockerd (s)  ratio
#   10k-files cold          …
#   10k-files no-op rebuild …
#   serve overhead: …
#
# Both daemons start empty but for the same busybox base (bin/mkbase's,
# kiln load'ed into kiln's store and docker load'ed into dockerd's), under
# WORK/serve, removed at the end (the logs stay, WORK/logs/serve-*); dockerd runs with its own --data-root, --exec-root and socket,
# without a bridge (builds use --network none, on both sides), and is
# stopped at the end. Cold: the first build in the fresh store. No-op: the
# same build again, median of RUNS.
#
# The overhead: the same no-op build timed through the API (the docker CLI
# sending the context to kiln serve, kiln serve unpacking and building it)
# and with kiln build on the same store, median of SERVE_REPS each; on a
# one-file context, where the difference is the per-request cost, and on the
# 10k-file context, where sending and unpacking ~120 MB dominates.
#
# Environment: KILN, MKBASE (binaries), RUNS (default 3), SERVE_REPS
# (default 10), DOCKER (the client; default Debian's /usr/bin/docker, the
# docker.io package, else docker on PATH), DOCKERD (default dockerd).
set -eu -o pipefail

work=${1:?usage: bench/serve.sh WORK CONTEXT}
ctx=${2:?usage: bench/serve.sh WORK CONTEXT}
repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/bin/kiln}
MKBASE=${MKBASE:-$repo/bin/mkbase}
RUNS=${RUNS:-3}
SERVE_REPS=${SERVE_REPS:-10}
if [ -z "${DOCKER:-}" ]; then
	DOCKER=docker
	[ ! -x /usr/bin/docker ] || DOCKER=/usr/bin/docker
fi
DOCKERD=${DOCKERD:-dockerd}
for b in "$DOCKER" "$DOCKERD"; do
	command -v "$b" >/dev/null || { echo "bench serve: $b is missing (apt-get install docker.io)" >&2; exit 1; }
done

dir=$work/serve
logs=$work/logs
rm -rf "$dir"
mkdir -p "$dir" "$logs"
# Sockets and dockerd's exec root under a short path: a unix socket's path
# is limited to 107 bytes, and containerd puts its own below the exec root.
run=$(mktemp -d /tmp/kiln-bench-serve.XXXXXX)
ksock=$run/kiln.sock dsock=$run/docker.sock
kiln_pid= dockerd_pid=

stop() { # stop PID: SIGTERM, then wait for it to exit
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null || return 0
	for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	kill -9 "$1" 2>/dev/null || true
}
cleanup() {
	stop "$kiln_pid"
	stop "$dockerd_pid"
	rm -rf "$run"
	# the stores and the context's copy: the logs are what stays
	rm -rf "$dir" 2>/dev/null || echo "bench serve: could not remove $dir (a mount of dockerd's left?)" >&2
}
trap cleanup EXIT

# waitfor WHAT CMD...: retries CMD for 30 s.
waitfor() {
	local what=$1
	shift
	for _ in $(seq 300); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "bench serve: $what did not start; its log:" >&2
	return 1
}

# --- the two daemons, each with the busybox base -------------------------------
"$MKBASE" -busybox -o "$dir/busybox" >"$logs/serve-mkbase.log" 2>&1
"$KILN" --root "$dir/kiln" load -i "$dir/busybox" >"$logs/serve-kiln-load.log" 2>&1
"$KILN" --root "$dir/kiln" save busybox:latest -o "$dir/busybox.tar" >>"$logs/serve-kiln-load.log" 2>&1

"$KILN" --root "$dir/kiln" serve --host "unix://$ksock" >"$logs/serve-kiln.log" 2>&1 &
kiln_pid=$!
waitfor "kiln serve" "$DOCKER" -H "unix://$ksock" version || { cat "$logs/serve-kiln.log" >&2; exit 1; }

"$DOCKERD" --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
	--data-root "$dir/dockerd" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" -H "unix://$dsock" \
	--containerd-namespace kiln-bench --containerd-plugins-namespace kiln-bench-plugins >"$logs/serve-dockerd.log" 2>&1 &
dockerd_pid=$!
waitfor dockerd "$DOCKER" -H "unix://$dsock" version || { tail -n 30 "$logs/serve-dockerd.log" >&2; exit 1; }
"$DOCKER" -H "unix://$dsock" load -i "$dir/busybox.tar" >>"$logs/serve-dockerd.log" 2>&1

client=$("$DOCKER" -H "unix://$dsock" version --format '{{.Client.Version}}')
server=$("$DOCKER" -H "unix://$dsock" version --format '{{.Server.Version}}')

# --- the builds ---------------------------------------------------------------
# The Dockerfile is bench/run.sh's 10k one, on the loaded base, inside a
# copy of the context made of hard links: a Dockerfile from outside the
# context is sent under a random name that the docker CLI adds to the
# .dockerignore it sends, and COPY . copies that .dockerignore, so no
# rebuild would be a no-op.
mkdir -p "$dir/small"
cp -al "$ctx" "$dir/df" 2>/dev/null || cp -a "$ctx" "$dir/df"
cat >"$dir/df/Dockerfile" <<'EOF'
FROM busybox:latest
COPY . /data/
RUN find /data -type f | wc -l > /count
RUN du -s /data > /size
EOF
printf 'FROM busybox:latest\nCOPY f /f\nRUN cat /f > /g\n' >"$dir/small/Dockerfile"
echo small >"$dir/small/f"

# dbuild SOCK LOG DOCKERFILE CONTEXT TAG: docker build through SOCK.
dbuild() {
	local sock=$1 log=$2 df=$3 c=$4 tag=$5
	DOCKER_BUILDKIT=0 "$DOCKER" -H "unix://$sock" build --network none -f "$df" -t "$tag" "$c" >"$log" 2>&1 ||
		{ echo "bench serve: FAILED: docker build via $sock ($log):" >&2; tail -n 30 "$log" >&2; exit 1; }
}
kbuild() { # kbuild LOG DOCKERFILE CONTEXT TAG: kiln build on kiln serve's store
	local log=$1 df=$2 c=$3 tag=$4
	"$KILN" --root "$dir/kiln" build --progress=plain --network none -f "$df" -t "$tag" "$c" >"$log" 2>&1 ||
		{ echo "bench serve: FAILED: kiln build ($log):" >&2; tail -n 30 "$log" >&2; exit 1; }
}

# secs CMD...: runs CMD, sets S to its wall time in seconds (3 decimals).
secs() {
	local t0=$EPOCHREALTIME
	"$@"
	S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.3f", b-a}')
}
# cached LOG N: LOG's build took N steps from the cache (kiln's "#N CACHED",
# the classic builder's "Using cache"): a no-op that ran a step is no no-op.
cached() {
	local n
	n=$(grep -Ec '^#[0-9]+ CACHED$|^ ---> Using cache$' "$1" || true)
	[ "$n" = "$2" ] || { echo "bench serve: $1 is no no-op rebuild: $n steps of $2 cached" >&2; exit 1; }
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A KT DT
for side in kiln dockerd; do
	sock=$ksock
	[ $side = kiln ] || sock=$dsock
	sync
	secs dbuild "$sock" "$logs/serve-$side-10k-cold" "$dir/df/Dockerfile" "$dir/df" bench/10k
	KT[$side-cold]=$S
	ts=()
	for i in $(seq "$RUNS"); do
		secs dbuild "$sock" "$logs/serve-$side-10k-noop-$i" "$dir/df/Dockerfile" "$dir/df" bench/10k
		ts+=("$S")
		cached "$logs/serve-$side-10k-noop-$i" 3
	done
	KT[$side-noop]=$(printf '%s\n' "${ts[@]}" | median)
done
# The overhead, kiln serve vs kiln build, each warm.
kbuild "$logs/serve-kbuild-small-warmup" "$dir/small/Dockerfile" "$dir/small" bench/small
dbuild "$ksock" "$logs/serve-api-small-warmup" "$dir/small/Dockerfile" "$dir/small" bench/small
api=() cli=() api10k=() cli10k=()
for i in $(seq "$SERVE_REPS"); do
	secs dbuild "$ksock" "$logs/serve-api-small-$i" "$dir/small/Dockerfile" "$dir/small" bench/small
	api+=("$S")
	secs kbuild "$logs/serve-kbuild-small-$i" "$dir/small/Dockerfile" "$dir/small" bench/small
	cli+=("$S")
	cached "$logs/serve-api-small-$i" 2
	cached "$logs/serve-kbuild-small-$i" 2
done
for i in $(seq "$RUNS"); do
	secs dbuild "$ksock" "$logs/serve-api-10k-$i" "$dir/df/Dockerfile" "$dir/df" bench/10k
	api10k+=("$S")
	secs kbuild "$logs/serve-kbuild-10k-$i" "$dir/df/Dockerfile" "$dir/df" bench/10k
	cli10k+=("$S")
	cached "$logs/serve-api-10k-$i" 3
	cached "$logs/serve-kbuild-10k-$i" 3
done
rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$kiln_pid/status")
a=$(printf '%s\n' "${api[@]}" | median) c=$(printf '%s\n' "${cli[@]}" | median)
a10k=$(printf '%s\n' "${api10k[@]}" | median) c10k=$(printf '%s\n' "${cli10k[@]}" | median)

# --- report ---------------------------------------------------------------------
echo "serve: docker CLI $client, dockerd $server (classic builder, DOCKER_BUILDKIT=0), --network none; kiln serve peak RSS $rss MB"
printf '%-30s %14s %12s %8s\n' "serve workload" "kiln serve (s)" "dockerd (s)" ratio
for w in cold noop; do
	label="10k-files cold"
	[ $w = cold ] || label="10k-files no-op rebuild"
	printf '%-30s %14s %12s %8s\n' "$label" "${KT[kiln-$w]}" "${KT[dockerd-$w]}" \
		"$(awk -v k="${KT[kiln-$w]}" -v d="${KT[dockerd-$w]}" 'BEGIN {printf "%.2fx", k/d}')"
done
awk -v a="$a" -v c="$c" -v a10="$a10k" -v c10="$c10k" -v n="$SERVE_REPS" -v r="$RUNS" 'BEGIN {
	printf "serve overhead: no-op build of a 1-file context, docker build via kiln serve %.1f ms, kiln build %.1f ms: API path %+.1f ms per request (target ≤50 ms; median of %d); 10k-file context %.1f ms vs %.1f ms: %+.1f ms (sending and unpacking the context; median of %d)\n",
		a*1000, c*1000, (a-c)*1000, n, a10*1000, c10*1000, (a10-c10)*1000, r
}'
