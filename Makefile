# kiln — daemonless Dockerfile builder.
#   make build   bin/kiln (static, no cgo), with kiln-init, the sandbox
#                init of RUN steps, built first and embedded
#   make test    the whole test suite (installs nothing); CI runs it with
#                KILN_TEST_STRICT=1: a test this machine cannot run (not
#                root, a package missing) then fails instead of skipping
#   make deps    the Debian packages the test fixtures need (root; idempotent)
#   make demo    build examples/hello against a throwaway local registry
#   make bench   benchmarks (see issue 3)
#   make bench-serve  only make bench's kiln serve rows (docker build
#                through kiln serve vs dockerd's classic builder)
#   make clean

GO       ?= go
BIN      := bin
PACKAGES := busybox-static debootstrap ca-certificates docker-registry uidmap passt slirp4netns iproute2 util-linux git openssh-client openssh-server docker.io python3-docker docker-compose qemu-user-static
DEMO_OUT ?= /tmp/kiln-demo.tar

# One shell per recipe, stopping at the first failing command: the demo
# starts a background registry and must tear it down on every path.
SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:

.PHONY: build print-ldflags init mkbase test deps demo bench bench-serve clean

# kiln embeds kiln-init (internal/initbin): a plain `go build` without it
# still works, and RUN steps then re-execute kiln, which starts slower.
# Reproducible (no VCS stamp), so that a test can tell a stale one.
INIT := internal/initbin/files/kiln-init

init:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '-s -w' -o $(INIT) ./cmd/kiln-init

# kiln version: the tag (or commit) and commit of the tree, stamped at
# link time; without git, Go's own VCS stamp (ReadBuildInfo) is the fallback.
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null)
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS    := -X main.version=$(VERSION) -X main.gitCommit=$(GIT_COMMIT)

build: init
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kiln ./cmd/kiln

# The link flags `make build` uses, for tests that build kiln the same way.
print-ldflags:
	@echo '$(LDFLAGS)'

mkbase:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/mkbase ./internal/testutil/cmd/mkbase

test: init
	$(GO) test -count=1 -timeout 30m ./...

deps:
	@missing=()
	for p in $(PACKAGES); do
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$$p")
	done
	if [ $${#missing[@]} -eq 0 ]; then exit 0; fi
	echo "installing: $${missing[*]}"
	apt-get update || apt-get update || echo "warning: some package indexes could not be refreshed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$${missing[@]}"

# The demo needs no registry of its own: mkbase serves the busybox test
# base from an in-process registry on a free loopback port for as long as
# the build runs, and the Dockerfile takes that address as BASE.
demo: deps build mkbase
	@addr_file=$$(mktemp -u /tmp/kiln-demo-registry.XXXXXX)
	$(BIN)/mkbase -busybox -serve 127.0.0.1:0 -addr-file "$$addr_file" &
	pid=$$!
	trap 'kill $$pid 2>/dev/null || true; wait $$pid 2>/dev/null || true; rm -f "$$addr_file"' EXIT
	for _ in $$(seq 600); do
		[ -s "$$addr_file" ] && break
		kill -0 $$pid 2>/dev/null || { echo "demo: mkbase exited before serving" >&2; exit 1; }
		sleep 0.1
	done
	[ -s "$$addr_file" ] || { echo "demo: mkbase did not start serving" >&2; exit 1; }
	base="$$(cat "$$addr_file")/library/busybox:latest"
	echo "demo: busybox base served at $$base"
	rm -f $(DEMO_OUT)
	$(BIN)/kiln build --root $${KILN_ROOT:-/tmp/kiln-demo-root} --progress=plain \
		-f examples/hello/Dockerfile --build-arg BASE="$$base" \
		-t kiln-demo/hello:latest -o type=oci,dest=$(DEMO_OUT) examples/hello
	$(BIN)/kiln inspect $(DEMO_OUT)
	[ -s $(DEMO_OUT) ] || { echo "demo: kiln wrote no $(DEMO_OUT)" >&2; exit 1; }
	# mkbase exits non-zero when its registry does not stop cleanly.
	kill $$pid
	wait $$pid || { echo "demo: mkbase did not stop cleanly" >&2; exit 1; }
	echo "demo: wrote $(DEMO_OUT)"

# The workloads of issue 3 (10k-file context, 30 RUN steps, a 500 MB layer),
# timed with kiln and, when the peers' buildkitd answers, with BuildKit in
# the same run; see bench/run.sh for the knobs. The Go micro-benchmarks of
# the hot paths: go test -run '^$$' -bench . ./cache ./layer ...
bench: build mkbase
	bench/run.sh

# Only the kiln serve rows of make bench (bench/serve.sh): a few minutes.
bench-serve: build mkbase
	bench/run.sh serve

clean:
	rm -rf $(BIN) $(DEMO_OUT) $(INIT)
