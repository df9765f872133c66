#!/usr/bin/env bash
# bench/run.sh — the build workloads of issue 3, timed with kiln and, when
# BuildKit answers on $BUILDKIT_ADDR, with BuildKit in the same run:
#
#   1. 10k-files: a context of 10,000 text files (~120 MB) copied with one
#      COPY, then two RUN steps: cold, no-op rebuild, one file changed;
#   2. 30 trivial RUN steps, cold (and one RUN step, cold, to derive the
#      per-RUN overhead);
#   3. one RUN writing a 500 MB file, exported to an OCI archive;
#   4. RUN's default network: 1 and 30 RUN steps again with the host's
#      network (kiln only), whose differences from 2. are the once-per-build
#      cost of the isolated network (pasta) and its per-RUN overhead; the
#      same measured precisely by the executor's Go benchmarks when Go is
#      installed;
#   5. emulated: 11 RUN steps of a linux/arm64 build under QEMU (a gzip of
#      30 MB, then 300 short emulated processes), cold, both builders using
#      the same binfmt_misc handlers; skipped, with the reason in the report,
#      where there is no usable arm64 handler (apt-get install
#      qemu-user-static && kiln binfmt --install), where dpkg lacks arm64
#      (the base is Debian's busybox-static:arm64), or where this kiln cannot
#      build --platform linux/arm64.
#   6. kiln serve (bench/serve.sh): `docker build` (DOCKER_BUILDKIT=0) of the
#      10k-file context through kiln serve vs through dockerd 20.10's classic
#      builder, cold and no-op, and the per-request overhead of the API path
#      over kiln build; dockerd (Debian's docker.io) is started by the bench
#      with its own data root and socket, and stopped after. Skipped, with
#      the reason in the report, without dockerd and the docker CLI.
#
#   bench/run.sh serve (make bench-serve) runs 6. alone (BENCH_ONLY=serve).
#
# Every build exports an OCI archive (kiln -o type=oci, buildctl --output
# type=oci). Wall time and peak RSS come from /usr/bin/time; BuildKit's RSS
# is buildkitd's and is not reported (buildctl's own is meaningless).
# The base image is served by bin/mkbase from a registry this script starts.
#
# Environment:
#   KILN, MKBASE      binaries (default bin/kiln, bin/mkbase)
#   BENCH_DIR         work directory (default /var/tmp/kiln-bench; contexts
#                     are kept between runs, stores are not)
#   BENCH_STORES      where kiln's stores and the fleet's work directories go
#                     (default: beside BuildKit's state, BUILDKIT_ROOT,
#                     default /tmp/peers/buildkit-data, so that both write
#                     to the same filesystem; BENCH_DIR without BuildKit)
#   RUNS              repetitions of warm measurements, median (default 3)
#   COLD_RUNS         repetitions of cold measurements, median (default 3)
#   BUILDCTL, BUILDKIT_ADDR   BuildKit client and daemon
#                     (default /tmp/peers/bin/buildctl, unix:///tmp/peers/buildkitd.sock)
#   BUILDKIT_VERSION  the BuildKit version to print when buildkitd reports none
#                     (one built from its Go module without version stamping)
#   BENCH_BUILDKIT=0  skip BuildKit even if it answers
#   BENCH_ONLY=run    only the RUN workloads (2., 4. and 5.), e.g. to try
#                     the script quickly
#   BENCH_ONLY=serve  only kiln serve's rows (6.)
#   BENCH_SERVE=0     skip kiln serve's rows (6.)
#   DOCKER, DOCKERD   the docker CLI and dockerd of 6. (default Debian's
#                     /usr/bin/docker, else docker on PATH; dockerd)
#   SERVE_REPS        repetitions of 6.'s overhead measurement (default 10)
#   BENCH_EMULATED=0  skip the emulated arm64 row (5.)
#   BENCH_FLEET=0     skip the fleet benchmark (bench/fleet: FLEET_RUNNERS
#                     empty stores in a row sharing a registry cache)
#   BENCH_FLEET_DEBIAN=0  skip the fleet's Debian apt + Go module workload
#                     (it needs debootstrap, dpkg-dev, and Debian's archive
#                     and the Go module proxy once; cached in KILN_TEST_CACHE)
#   BENCH_GO=1        also run the Go micro-benchmarks of the hot paths
#                     (context hashing, layer tar, commit = tar+gzip+sync,
#                     pull, RUN, store lookups), to locate a regression
#   BENCH_SETTLE      seconds to let the machine settle before each timed
#                     cold build (default 1): the builder before may still be
#                     cleaning up in the background
#   BENCH_README=0    do not rewrite README.md's performance tables; =1
#                     rewrites them even from a partial run (BENCH_ONLY,
#                     no BuildKit), which by default leaves README.md alone
#
# Every kiln build writes a trace (kiln build --trace) under
# BENCH_DIR/traces, named like its log: open one in ui.perfetto.dev or
# chrome://tracing to see where that run's time went. The fleet's are under
# BENCH_STORES/fleet-*/traces.
#
# The report goes to BENCH_DIR/results.txt; from it bench/readme rewrites
# the tables between the bench:begin and bench:end markers of README.md
# (never edit them by hand).
set -eu -o pipefail

if [ "${1:-}" = serve ]; then
	BENCH_ONLY=serve
elif [ $# -gt 0 ]; then
	echo "usage: bench/run.sh [serve]" >&2
	exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/bin/kiln}
MKBASE=${MKBASE:-$repo/bin/mkbase}
BENCH_DIR=${BENCH_DIR:-/var/tmp/kiln-bench}
RUNS=${RUNS:-3}
COLD_RUNS=${COLD_RUNS:-3}
BUILDCTL=${BUILDCTL:-/tmp/peers/bin/buildctl}
BUILDKIT_ADDR=${BUILDKIT_ADDR:-unix:///tmp/peers/buildkitd.sock}

for b in "$KILN" "$MKBASE"; do
	[ -x "$b" ] || { echo "bench: $b is missing (make build mkbase)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

bk=0
if [ "${BENCH_BUILDKIT:-1}" != 0 ] && [ -x "$BUILDCTL" ] &&
	timeout 10 "$BUILDCTL" --addr "$BUILDKIT_ADDR" debug workers >/dev/null 2>&1; then
	bk=1
fi

mkdir -p "$BENCH_DIR"
work=$BENCH_DIR
logs=$work/logs
traces=$work/traces

# kiln's stores (--root) and the fleet's work directories go on the
# filesystem buildkitd keeps its state on (peers.sh: /tmp/peers), so that
# both builders pay the same for writing files: on a tmpfs an inode costs
# nothing to find, on an ext4 without a journal (this machine's /) its
# allocation scans past every inode freed lately. BENCH_STORES overrides.
BUILDKIT_ROOT=${BUILDKIT_ROOT:-/tmp/peers/buildkit-data}
if [ -n "${BENCH_STORES:-}" ]; then
	stores=$BENCH_STORES
elif [ $bk = 1 ] && [ -d "$BUILDKIT_ROOT" ]; then
	stores=$(dirname "$BUILDKIT_ROOT")/kiln-bench-stores
else
	stores=$work
fi
mkdir -p "$stores"
# the filesystem a path is on: the last of the mounts findmnt lists, the
# one on top (a tmpfs mounted twice on /tmp is listed twice)
fstype() { findmnt -no FSTYPE -T "$1" | tail -n 1; }
stores_fs=$(fstype "$stores")
stores_tmpfs=0
[ "$stores_fs" != tmpfs ] || stores_tmpfs=1
if [ $bk = 1 ] && [ -d "$BUILDKIT_ROOT" ]; then
	stores_fs="$stores_fs (kiln's; BuildKit's state: $(fstype "$BUILDKIT_ROOT"))"
fi
rm -rf "$logs" "$traces" "$work/out" "$stores/root" "$work/df"
mkdir -p "$logs" "$traces" "$work/out" "$work/df"

# --- can this machine run the emulated row? ----------------------------------
# It needs a usable arm64 handler (F flag) and dpkg's arm64 architecture, for
# mkbase's busybox:arm64 (Debian's busybox-static:arm64).
# (Outputs are read whole first: grep -q exiting early would fail the
# pipeline under pipefail.)
emu_skip=
runnable=$("$KILN" binfmt 2>/dev/null | grep '^RUN can execute:' || true)
foreign_archs=$(dpkg --print-foreign-architectures 2>/dev/null || true)
if [ "${BENCH_EMULATED:-1}" = 0 ]; then
	emu_skip="BENCH_EMULATED=0"
elif [ "$(uname -m)" = aarch64 ]; then
	emu_skip="arm64 is native here"
elif ! printf '%s\n' "$runnable" | grep -Eq ' linux/arm64(,|$)'; then
	emu_skip="no arm64 handler (apt-get install qemu-user-static && kiln binfmt --install)"
elif ! printf '%s\n' "$foreign_archs" | grep -qx arm64; then
	emu_skip="dpkg lacks arm64 for the busybox-static:arm64 base (dpkg --add-architecture arm64 && apt-get update)"
fi

# --- the base images, from a registry of our own ------------------------------
addr_file=$work/registry.addr
rm -f "$addr_file"
mkbase_args=(-busybox)
[ -n "$emu_skip" ] || mkbase_args+=(-platforms linux/arm64)
"$MKBASE" "${mkbase_args[@]}" -serve 127.0.0.1:0 -addr-file "$addr_file" >"$logs/mkbase.log" 2>&1 &
mkbase_pid=$!
cleanup() {
	kill "$mkbase_pid" 2>/dev/null || true
	wait "$mkbase_pid" 2>/dev/null || true
	[ -z "${trash:-}" ] || emptytrash
	if [ "${stores_tmpfs:-0}" = 1 ]; then
		# Stores on a tmpfs are memory: only the fleet's traces and logs
		# stay.
		rm -rf "$stores/root"
		for f in "$stores"/fleet-*; do
			[ ! -d "$f" ] || find "$f" -mindepth 1 -maxdepth 1 ! -name traces ! -name logs -exec rm -rf {} +
		done
	fi
}
trap cleanup EXIT
for _ in $(seq 600); do
	[ -s "$addr_file" ] && break
	kill -0 "$mkbase_pid" 2>/dev/null || { echo "bench: mkbase exited:" >&2; cat "$logs/mkbase.log" >&2; exit 1; }
	sleep 0.1
done
[ -s "$addr_file" ] || { echo "bench: mkbase did not start serving" >&2; exit 1; }
base="$(cat "$addr_file")/library/busybox:latest"
base_arm64="$(cat "$addr_file")/library/busybox:arm64"

# --- workloads ---------------------------------------------------------------
ctx10k=$work/ctx10k
if [ "${BENCH_ONLY:-}" != run ] && [ ! -e "$ctx10k/.complete" ]; then
	echo "bench: generating the 10,000-file context in $ctx10k"
	rm -rf "$ctx10k"
	(cd "$repo" && go run ./bench/gencontext -dir "$ctx10k")
	touch "$ctx10k/.complete"
fi
# A context left modified by the one-file runs of a previous bench goes back
# to its generated state (a changed file is rewritten whole).
onefile=$ctx10k/d00/f00000.txt
if [ "${BENCH_ONLY:-}" != run ]; then
	[ -e "$work/onefile.orig" ] || cp "$onefile" "$work/onefile.orig"
	cp "$work/onefile.orig" "$onefile"
	printf '.complete\n' >"$ctx10k/.dockerignore"
fi

empty=$work/empty-ctx
mkdir -p "$empty"

dockerfile() { mkdir -p "$work/df/$1"; cat >"$work/df/$1/Dockerfile"; }
dockerfile 10k <<'EOF'
ARG BASE
FROM $BASE
COPY . /data/
RUN find /data -type f | wc -l > /count
RUN du -s /data > /size
EOF
{
	printf 'ARG BASE\nFROM $BASE\n'
	for i in $(seq 30); do printf 'RUN echo %d > /step%d\n' "$i" "$i"; done
} | dockerfile run30
printf 'ARG BASE\nFROM $BASE\nRUN echo 1 > /step1\n' | dockerfile run1
dockerfile big <<'EOF'
ARG BASE
FROM $BASE
RUN head -c 500000000 /dev/urandom > /big
EOF
# RUN-heavy under emulation: CPU in one step, process start-up (each exec is
# a new QEMU) in the others.
{
	printf 'ARG BASE_ARM64\nFROM $BASE_ARM64\nRUN head -c 30000000 /dev/zero | gzip | md5sum > /gzip.md5\n'
	for i in $(seq 10); do
		printf 'RUN i=0; while [ $i -lt 30 ]; do /bin/uname -m > /dev/null; i=$((i+1)); done; echo %d > /step%d\n' "$i" "$i"
	done
} | dockerfile emu-arm64
printf 'ARG BASE_ARM64\nFROM $BASE_ARM64\n' | dockerfile probe-arm64

# --- measuring ---------------------------------------------------------------
# timed LOG CMD...: runs CMD, sets T (seconds, to the millisecond: GNU
# time's own figure has two decimals, a tenth of a short build's time)
# and M (peak RSS, MB).
timed() {
	local log=$1
	shift
	local t0=$EPOCHREALTIME
	if ! /usr/bin/time -f '%e %M' -o "$log.time" "$@" >"$log" 2>&1; then
		echo "bench: FAILED: $*" >&2
		tail -n 30 "$log" >&2
		exit 1
	fi
	local t1=$EPOCHREALTIME
	read -r _ kb <"$log.time"
	T=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
	M=$((kb / 1024))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# settle: before a timed cold build, the disk is synced and whatever the
# build before left running in the background (BuildKit's cleanup of its
# snapshots, kiln's detached sync of its store) is given time to finish,
# so that neither builder is timed against the other's leftovers.
settle() {
	sync
	sleep "${BENCH_SETTLE:-1}"
}

# kiln_build DF CONTEXT NAME [FLAG...] / bk_build DF CONTEXT [FLAG...]: set
# CMD, the build command (an array, so that /usr/bin/time runs the binary
# itself). kiln's trace goes to $traces/NAME.json (NAME as its log's).
kiln_build() {
	local dfname=$1 ctx=$2 name=$3
	shift 3
	CMD=("$KILN" build --root "$stores/root" --progress=plain -f "$work/df/$dfname/Dockerfile"
		--build-arg BASE="$base" -o type=oci,dest="$work/out/kiln-$dfname.tar"
		--trace "$traces/$name.json" "$@" "$ctx")
}

# slug LABEL: LABEL as a file name ("10k-files cold" -> 10k-files-cold).
slug() { printf '%s' "$1" | tr -cs 'A-Za-z0-9.' '-' | sed 's/-*$//'; }

bk_build() {
	local dfname=$1 ctx=$2
	shift 2
	CMD=("$BUILDCTL" --addr "$BUILDKIT_ADDR" build --progress=plain --frontend dockerfile.v0
		--local context="$ctx" --local dockerfile="$work/df/$dfname"
		--opt build-arg:BASE="$base" --output type=oci,dest="$work/out/bk-$dfname.tar" "$@")
}

bk_prune() { "$BUILDCTL" --addr "$BUILDKIT_ADDR" prune --all >/dev/null; }

declare -A KT KM BT
order=()
record() { order+=("$1"); }

# tally LABEL: the row's figures from the runs its caller collected in
# ts and ms (kiln's times and peak RSS) and bts (BuildKit's times):
# medians, and the largest RSS.
tally() {
	KT[$1]=$(printf '%s\n' "${ts[@]}" | median)
	KM[$1]=$(printf '%s\n' "${ms[@]}" | sort -n | tail -1)
	[ $bk = 0 ] || BT[$1]=$(printf '%s\n' "${bts[@]}" | median)
}

# cold LABEL DF CONTEXT: COLD_RUNS cold builds with each builder, on an
# empty store and a pruned BuildKit, median. One cold build is one sample
# of a machine whose speed drifts by a tenth from minute to minute; the
# trace of kiln's median run is kept under the row's own name.
cold() {
	local label=$1 dfname=$2 ctx=$3
	record "$label"
	local ts=() ms=() bts=()
	for i in $(seq "$COLD_RUNS"); do
		rmstore "$stores/root"
		warmcache "$ctx"
		settle
		kiln_build "$dfname" "$ctx" "kiln-$(slug "$label")-$i"
		timed "$logs/kiln-$label-$i" "${CMD[@]}"
		ts+=("$T") ms+=("$M")
		if [ $bk = 1 ]; then
			bk_prune
			settle
			bk_build "$dfname" "$ctx" --no-cache
			timed "$logs/bk-$label-$i" "${CMD[@]}"
			bts+=("$T")
		fi
	done
	tally "$label"
	local i
	for i in $(seq "$COLD_RUNS"); do
		if [ "${ts[$((i - 1))]}" = "${KT[$label]}" ]; then
			cp "$traces/kiln-$(slug "$label")-$i.json" "$traces/kiln-$(slug "$label").json"
			break
		fi
	done
}

# cold_kiln LABEL DF CONTEXT [FLAG...]: a cold build with kiln only.
cold_kiln() {
	local label=$1 dfname=$2 ctx=$3
	shift 3
	record "$label"
	rmstore "$stores/root"
	settle
	kiln_build "$dfname" "$ctx" "kiln-$(slug "$label")" "$@"
	timed "$logs/kiln-$label" "${CMD[@]}"
	KT[$label]=$T KM[$label]=$M
}

# warm LABEL DF CONTEXT [PREPARE]: RUNS builds, each after PREPARE, median
warm() {
	local label=$1 dfname=$2 ctx=$3 prepare=${4:-true}
	record "$label"
	local ts=() ms=() bts=()
	for i in $(seq "$RUNS"); do
		$prepare "kiln$i"
		kiln_build "$dfname" "$ctx" "kiln-$(slug "$label")-$i"
		timed "$logs/kiln-$label-$i" "${CMD[@]}"
		ts+=("$T") ms+=("$M")
		if [ $bk = 1 ]; then
			$prepare "bk$i"
			bk_build "$dfname" "$ctx"
			timed "$logs/bk-$label-$i" "${CMD[@]}"
			bts+=("$T")
		fi
	done
	tally "$label"
}

# rmstore sets a store aside, to be removed when the bench is over. Not
# removed at once: on an ext4 without a journal (this machine's), each
# inode allocated in the next minutes skips, one by one, every inode freed
# in its block group lately (ext4's recently_deleted check), so a cold
# build right after deleting the last one's 10,000 files measures the
# deletion, which no cold build on a fresh runner sees.
trash=$stores/trash
rmstore() {
	[ -e "$1" ] || return 0
	if [ "$stores_tmpfs" = 1 ]; then
		# a tmpfs has no such cost, and its stores take memory
		rm -rf "$1" 2>/dev/null || { sleep 1; rm -rf "$1"; }
		return 0
	fi
	mkdir -p "$trash"
	mv "$1" "$(mktemp -u "$trash/store.XXXXXX")"
}
# emptytrash removes what rmstore set aside; a detached kiln may still be
# finishing a store's last sync (one small write), so a busy directory
# gets a retry.
emptytrash() { rm -rf "$trash" 2>/dev/null || { sleep 1; rm -rf "$trash"; }; }

# warmcache reads a context once, so that whichever builder runs first
# does not pay for reading it from disk.
warmcache() { find "$1" -type f -print0 | xargs -0 -r cat >/dev/null; }

change_one() { printf 'changed by run %s\n' "$1" >>"$onefile"; }

# cold_emulated LABEL DF: a cold linux/arm64 build of DF on busybox:arm64,
# with kiln and BuildKit. A kiln that cannot build --platform linux/arm64
# (one probe build) skips the row instead of failing the bench.
cold_emulated() {
	local label=$1 dfname=$2
	local emu=(--platform linux/arm64 --build-arg BASE_ARM64="$base_arm64")
	rmstore "$stores/root"
	kiln_build probe-arm64 "$empty" kiln-probe-arm64 "${emu[@]}"
	if ! "${CMD[@]}" >"$logs/kiln-probe-arm64" 2>&1; then
		emu_skip="this kiln cannot build --platform linux/arm64: $(tail -n 1 "$logs/kiln-probe-arm64")"
		return
	fi
	record "$label"
	sync
	rmstore "$stores/root"
	kiln_build "$dfname" "$empty" "kiln-$(slug "$label")" "${emu[@]}"
	timed "$logs/kiln-$label" "${CMD[@]}"
	KT[$label]=$T KM[$label]=$M
	if [ $bk = 1 ]; then
		bk_prune
		sync
		bk_build "$dfname" "$empty" --no-cache --opt platform=linux/arm64 --opt build-arg:BASE_ARM64="$base_arm64"
		timed "$logs/bk-$label" "${CMD[@]}"
		BT[$label]=$T
	fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "?")
bkversion=
if [ $bk = 1 ]; then
	# "BuildKit: github.com/moby/buildkit v0.34.2 <commit>"
	bkversion=$("$BUILDCTL" --addr "$BUILDKIT_ADDR" debug info 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -1 || true)
	[ "$bkversion" != v0.0.0 ] || bkversion= # a build without version information
	# buildkitd built from its Go module carries no version: say it
	bkversion=${BUILDKIT_VERSION:-$bkversion}
fi
started=$(date -u +%Y-%m-%d)
echo "bench: kiln at $commit, BuildKit: $([ $bk = 1 ] && echo "yes ${bkversion:-}" || echo no), base $base"

# The cold 10k build leaves kiln's store and BuildKit's cache warm for the
# rebuilds that follow; the other cold builds start from empty stores again.
if [ "${BENCH_ONLY:-}" != serve ]; then
	if [ "${BENCH_ONLY:-}" != run ]; then
		cold "10k-files cold" 10k "$ctx10k"
		warm "10k-files no-op rebuild" 10k "$ctx10k"
		warm "10k-files one file changed" 10k "$ctx10k" change_one
		cp "$work/onefile.orig" "$onefile"
	fi
	cold "30 RUN steps cold" run30 "$empty"
	cold "1 RUN step cold" run1 "$empty"
	[ "${BENCH_ONLY:-}" = run ] || cold "500 MB RUN, OCI export" big "$empty"
	hostnet=(--network=host --allow network.host)
	cold_kiln "30 RUN steps, host network" run30 "$empty" "${hostnet[@]}"
	cold_kiln "1 RUN step, host network" run1 "$empty" "${hostnet[@]}"
	[ -n "$emu_skip" ] || cold_emulated "arm64 emulated RUN steps cold" emu-arm64
fi

# kiln serve vs dockerd's classic builder (bench/serve.sh), on the 10k context.
serve_txt= serve_skip=
if [ "${BENCH_ONLY:-}" = run ]; then
	serve_skip="BENCH_ONLY=run"
elif [ "${BENCH_SERVE:-1}" = 0 ]; then
	serve_skip="BENCH_SERVE=0"
elif ! command -v "${DOCKERD:-dockerd}" >/dev/null || ! command -v "${DOCKER:-docker}" >/dev/null; then
	serve_skip="no dockerd or docker CLI (apt-get install docker.io)"
else
	echo "bench: kiln serve vs dockerd's classic builder (bench/serve.sh)"
	serve_txt=$(KILN=$KILN MKBASE=$MKBASE RUNS=$RUNS "$repo/bench/serve.sh" "$work" "$ctx10k") ||
		{ echo "bench: the kiln serve rows failed (bench/serve.sh, logs in $logs/serve-*)" >&2; exit 1; }
fi

# The executor's benchmarks of the same, without the noise of whole builds:
# set up and tear down the build network; one RUN of /bin/true in it, and
# in the host's network.
netbench=
if [ "${BENCH_ONLY:-}" != serve ] && command -v go >/dev/null; then
	netbench=$(cd "$repo" && go test -run '^$' -bench 'BenchmarkNetworkSetup|BenchmarkRunNetwork/(default|host)$' \
		-benchtime "${BENCH_NET_TIME:-20x}" ./executor 2>&1 |
		# A benchmark's name and its result can be split by a line the
		# run writes in between: join them again.
		awk '/^Benchmark/ && !/ns\/op/ {name = $1; next}
			/ns\/op/ {if ($1 ~ /^Benchmark/) print; else if (name != "") {print name, $0; name = ""}}' || true)
fi
rmstore "$stores/root"; rm -rf "$work/out"
[ $bk = 0 ] || bk_prune

# --- report ------------------------------------------------------------------
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
{
	echo
	echo "machine: $(nproc) CPUs ($cpu), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), kernel $(uname -r), stores on $stores_fs at $stores"
	echo "date: $started"
	echo "kiln: $commit"
	[ $bk = 0 ] || echo "BuildKit: ${bkversion:-unknown version}"
	[ -z "${BENCH_ONLY:-}" ] || echo "partial: BENCH_ONLY=$BENCH_ONLY"
	if [ ${#order[@]} = 0 ]; then
		: # BENCH_ONLY=serve: no workload table
	elif [ $bk = 1 ]; then
		printf '%-30s %10s %12s %12s %8s\n' workload "kiln (s)" "kiln RSS MB" "BuildKit (s)" ratio
	else
		printf '%-30s %10s %12s\n' workload "kiln (s)" "kiln RSS MB"
	fi
	for l in ${order[@]+"${order[@]}"}; do
		if [ $bk = 1 ]; then
			# kiln-only rows (the host-network ones) have no BuildKit time
			printf '%-30s %10s %12s %12s %8s\n' "$l" "${KT[$l]}" "${KM[$l]}" "${BT[$l]:--}" \
				"$(awk -v k="${KT[$l]}" -v b="${BT[$l]:-0}" 'BEGIN {if (b > 0 && k/b < 0.1) printf "%.3fx", k/b; else if (b > 0) printf "%.2fx", k/b; else print "-"}')"
		else
			printf '%-30s %10s %12s\n' "$l" "${KT[$l]}" "${KM[$l]}"
		fi
	done
	per_run() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f ms", (a-b)/29*1000}'; }
	# (BENCH_ONLY=serve has no RUN rows)
	if [ "${BENCH_ONLY:-}" != serve ]; then
		printf 'per-RUN overhead (30 RUN − 1 RUN)/29: kiln %s' "$(per_run "${KT[30 RUN steps cold]}" "${KT[1 RUN step cold]}")"
		[ $bk = 0 ] || printf ', BuildKit %s' "$(per_run "${BT[30 RUN steps cold]}" "${BT[1 RUN step cold]}")"
		echo
		ms() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.1f ms", (a-b)/n*1000}'; }
		printf 'RUN network (default: isolated, through pasta): set up once per build %s (1 RUN step, default − host network); per-RUN %s with it, %s with the host network (target ≤25 ms)\n' \
			"$(ms "${KT[1 RUN step cold]}" "${KT[1 RUN step, host network]}" 1)" \
			"$(per_run "${KT[30 RUN steps cold]}" "${KT[1 RUN step cold]}")" \
			"$(per_run "${KT[30 RUN steps, host network]}" "${KT[1 RUN step, host network]}")"
	fi
	if [ -n "$netbench" ]; then
		# ns/op of each benchmark, by name without the -CPUS suffix
		nsop() { printf '%s\n' "$netbench" | awk -v b="$1" '{n=$1; sub(/-[0-9]+$/, "", n)} n == b {print $3}'; }
		setup=$(nsop BenchmarkNetworkSetup) rdef=$(nsop BenchmarkRunNetwork/default) rhost=$(nsop BenchmarkRunNetwork/host)
		if [ -n "$setup" ] && [ -n "$rdef" ] && [ -n "$rhost" ]; then
			awk -v s="$setup" -v d="$rdef" -v h="$rhost" 'BEGIN {printf "RUN network, executor benchmarks: build network set up + torn down %.1f ms; RUN /bin/true %.1f ms in it, %.1f ms in the host network: per-RUN overhead %.1f ms\n", s/1e6, d/1e6, h/1e6, (d-h)/1e6}'
		else
			printf 'RUN network, executor benchmarks: %s\n' "$netbench"
		fi
	fi
	[ -z "$emu_skip" ] || [ "${BENCH_ONLY:-}" = serve ] || echo "emulated arm64 row: skipped: $emu_skip"
	if [ -n "$serve_txt" ]; then
		printf '%s\n' "$serve_txt"
	else
		echo "serve rows: skipped: $serve_skip"
	fi
	echo "(cold rows: median of $COLD_RUNS runs, warm rows: of $RUNS; load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after:"
	echo " other work on the machine skews both builders; compare ratios from one run; logs in $logs)"
	echo "traces of every kiln build (kiln build --trace; open in ui.perfetto.dev): $traces"
} | tee "$work/results.txt"

# Where kiln's time went in the builds with a target (bench/tracesum of
# their traces, the 15 longest phases; a step's phases are within "step").
if command -v go >/dev/null && (cd "$repo" && go build -o "$work/tracesum" ./bench/tracesum); then
	for n in kiln-10k-files-cold kiln-10k-files-no-op-rebuild-1 kiln-10k-files-one-file-changed-1 \
		kiln-30-RUN-steps-cold kiln-500-MB-RUN-OCI-export kiln-arm64-emulated-RUN-steps-cold; do
		[ -e "$traces/$n.json" ] || continue
		echo
		echo "where the time went, $n ($traces/$n.json):"
		"$work/tracesum" -top 15 "$traces/$n.json"
	done | tee -a "$work/results.txt"
fi

# --- the fleet (issue 10): N empty stores in a row sharing a registry cache --
# bench/fleet starts its own docker-registry on 127.0.0.1 and counts what
# each runner moves through a proxy in front of it. Two workloads: the
# 10k-file context, and a build whose RUN fills a cache mount (a stand-in for
# a Go module or apt cache: slow to fill, fast when warm) and changes with
# every runner's commit. BENCH_FLEET=0 skips it.
# A third, BENCH_FLEET_DEBIAN=0 skips it: bench/fleet -workload apt-go, a
# Debian bookworm base, apt-get install of Debian's Go toolchain from a flat
# apt repository and go build of a module with seven requirements from a Go
# module proxy, both served by bench/fleet on 127.0.0.1 (the .debs and
# modules are fetched once on the host and kept under
# KILN_TEST_CACHE/fleet-debian). Its RUN steps use the host's network
# (--network=host --allow network.host) only so they reach those servers:
# a bench-only choice, not a recommendation.
if [ -z "${BENCH_ONLY:-}" ] && [ "${BENCH_FLEET:-1}" != 0 ]; then
	fleetctx=$work/fleet-mounts
	rm -rf "$fleetctx"
	mkdir -p "$fleetctx/src"
	printf 'package main\n' >"$fleetctx/src/main.go"
	cat >"$fleetctx/Dockerfile" <<'EOF'
ARG BASE
FROM $BASE
COPY src /src
# "Downloading modules": 3 s and 60 MB, only into a cold cache.
RUN --mount=type=cache,id=modules,target=/cache \
	if [ ! -e /cache/warm ]; then \
		i=0; while [ $i -lt 300 ]; do head -c 200000 /dev/urandom > /cache/m$i; i=$((i+1)); done; \
		sleep 3; touch /cache/warm; \
	fi; cat /cache/m1 /src/* | md5sum > /out
EOF
	bkflags=()
	if [ $bk = 1 ]; then bkflags=(-buildctl "$BUILDCTL" -buildkit-addr "$BUILDKIT_ADDR"); fi
	fleet=(go run ./bench/fleet -kiln "$KILN" -runners "${FLEET_RUNNERS:-4}" "${bkflags[@]}")
	# an earlier run's work directory is set aside as a store is (rmstore)
	[ "$stores_tmpfs" = 1 ] || fleet+=(-trash "$trash")
	echo
	(cd "$repo" && "${fleet[@]}" -label "10k files" -work "$stores/fleet-10k" -context "$ctx10k" -f "$work/df/10k/Dockerfile") |
		tee -a "$work/results.txt"
	echo
	(cd "$repo" && "${fleet[@]}" -label "cache mount, a commit per runner" -work "$stores/fleet-mounts-run" -context "$fleetctx" -change src/commit.txt) |
		tee -a "$work/results.txt"
	if [ "${BENCH_FLEET_DEBIAN:-1}" != 0 ]; then
		echo
			(cd "$repo" && "${fleet[@]}" -label "Debian apt + Go modules, a commit per runner" -work "$stores/fleet-apt-go" -workload apt-go) |
			tee -a "$work/results.txt"
	fi
fi

if [ "${BENCH_GO:-0}" = 1 ]; then
	echo
	echo "Go micro-benchmarks:"
	pkgs=()
	for p in ./contexthash ./layer ./cache ./executor; do
		[ -d "$repo/$p" ] && pkgs+=("$p")
	done
	(cd "$repo" && go test -run '^$' -bench . -benchtime "${BENCH_GO_TIME:-3x}" "${pkgs[@]}") |
		grep -E '^(Benchmark|ok|FAIL|---)' | tee -a "$work/results.txt"
fi

# --- README.md's tables --------------------------------------------------------
# Only a whole run with BuildKit rewrites them by default: a partial one
# would replace a full table with a few rows.
readme=${BENCH_README:-}
if [ -z "$readme" ]; then
	readme=0
	if [ $bk = 1 ] && [ -z "${BENCH_ONLY:-}" ]; then readme=1; fi
fi
if [ "$readme" = 1 ]; then
	if command -v go >/dev/null; then
		(cd "$repo" && go run ./bench/readme -results "$work/results.txt" -readme README.md) ||
			{ echo "bench: rewriting README.md's tables failed (see above)" >&2; exit 1; }
		echo "bench: README.md's performance tables rewritten from $work/results.txt: review and commit them"
	else
		echo "bench: README.md's tables not rewritten: go is missing (go run ./bench/readme -results $work/results.txt later)"
	fi
else
	echo "bench: README.md's tables left alone (a partial run or no BuildKit; BENCH_README=1 rewrites them anyway)"
fi
echo "bench: where each kiln build's time went: the traces in $traces (and $stores/fleet-*/traces); open one in ui.perfetto.dev"
