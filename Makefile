# endpoint-policy

# Every recipe line fails on the first failing command, pipes included
# (`go test | tee` in bench), as kubebuilder's Makefile sets it.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# Tools and the envtest control plane live in ./bin (gitignored).
LOCALBIN ?= $(CURDIR)/bin
# kube-apiserver and etcd versions come from the modules that build them.
# A module's version in a go.mod: $(call gomod_version,<module>,<go.mod>).
gomod_version = $(shell awk '$$1 == "$(1)" { print $$2; exit } $$1 == "require" && $$2 == "$(1)" { print $$3; exit }' $(2))
K8S_VERSION  := $(call gomod_version,k8s.io/kubernetes,hack/envtest/kube-apiserver/go.mod)
ETCD_VERSION := $(shell awk '$$1 == "require" && $$2 == "go.etcd.io/etcd/server/v3" { print $$3 }' hack/envtest/etcd/go.mod)
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s/$(K8S_VERSION:v%=%)-etcd-$(ETCD_VERSION:v%=%)
KWOK_VERSION := $(call gomod_version,sigs.k8s.io/kwok,hack/envtest/kube-apiserver/go.mod)
# The simulated cluster's kube-controller-manager, kube-scheduler and kwok.
SIM_ASSETS ?= $(LOCALBIN)/k8s/sim-$(K8S_VERSION:v%=%)-kwok-$(KWOK_VERSION:v%=%)
# The real node's kubelet (test/node), from the same module as kube-apiserver.
NODE_ASSETS ?= $(LOCALBIN)/k8s/node-$(K8S_VERSION:v%=%)
# Helm and kustomize CLIs for the chart tests. Helm is built from the control
# plane's module (hack/tools/helm.sh), kustomize from hack/tools.
HELM_VERSION      := $(call gomod_version,helm.sh/helm/v3,hack/envtest/kube-apiserver/go.mod)
KUSTOMIZE_VERSION := $(shell awk '$$1 == "require" && $$2 == "sigs.k8s.io/kustomize/kustomize/v5" { print $$3 }' hack/tools/kustomize/go.mod)
PROMTOOL_VERSION  := $(shell awk '$$1 == "require" && $$2 == "github.com/prometheus/prometheus" { print $$3 }' hack/tools/promtool/go.mod)
GOLANGCI_LINT_VERSION := $(shell awk '$$1 == "require" && $$2 == "github.com/golangci/golangci-lint/v2" { print $$3 }' hack/tools/golangci-lint/go.mod)
# The tools and the control plane are linked with -s -w: no DWARF in the
# binary. The compiler would still write it into every package's object
# (about an eighth of k8s.io/api/core/v1's compile time, measured in
# docs/performance.md "Cold build"): work the link throws away.
TOOL_GCFLAGS := -gcflags=all=-dwarf=false
HELM      ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
# Debian's where apt has it (any version that passes the alert tests),
# else the module's: the name says where it came from.
PROMTOOL  ?= $(LOCALBIN)/promtool-$(if $(shell command -v apt-get),debian,$(PROMTOOL_VERSION))
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
TEST_ENV   = KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" ENDPOINT_POLICY_SIM_ASSETS="$(SIM_ASSETS)" ENDPOINT_POLICY_NODE_ASSETS="$(NODE_ASSETS)" HELM="$(HELM)" KUSTOMIZE="$(KUSTOMIZE)" PROMTOOL="$(PROMTOOL)"

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w \
	-X github.com/endpoint-policy/endpoint-policy/internal/version.version=$(VERSION) \
	-X github.com/endpoint-policy/endpoint-policy/internal/version.commit=$(COMMIT)
IMG ?= endpoint-policy:$(VERSION)

# -vet=off: make test runs golangci-lint, whose govet has every analyzer
# go test's own vet pass would run again on each package.
GO_TEST_FLAGS ?= -race -vet=off
BENCH_ENV := ENDPOINT_POLICY_BENCH=1

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: fmt
fmt: ## Format the code (gofmt).
	gofmt -w ./cmd ./internal ./test ./hack

.PHONY: vet
vet: ## Check formatting and run go vet.
	@unformatted="$$(gofmt -l ./cmd ./internal ./test ./hack)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (.golangci.yml) on the project's module.
	$(GOLANGCI_LINT) run ./...

.PHONY: check-tracked-files
check-tracked-files: ## Fail when git tracks a file over 1 MiB or an executable binary.
	hack/check-tracked-files.sh

# make test lints with golangci-lint, whose govet runs every go vet analyzer
# (and more) and whose gofmt formatter checks the formatting: `make vet` on
# top would type-check and analyse the tree a second time.
.PHONY: test
test: check-tracked-files test-deps ## Run all tests: tracked files, lint (go vet and gofmt included), unit, handler, envtest and chart suites (builds the envtest binaries and tools on first use).
	$(TEST_ENV) go test $(GO_TEST_FLAGS) ./...

# What make test does before the tests, two jobs at a time: the control
# plane (kube-apiserver, kube-controller-manager, kube-scheduler, kwok, the
# kubelet, kube-proxy and helm in one go build, etcd beside it), the other
# tools, the race-instrumented build of the module's packages (which the
# suites' server reuses: it is built with -race) and the linter on it. Each
# leaves a core idle for long stretches (a link, one large package compiling
# alone). docs/performance.md, "Cold build".
.PHONY: test-deps
test-deps:
	@$(MAKE) --no-print-directory -j2 HELM_AFTER_ENVTEST=1 envtest sim node tools lint-race

# race-build compiles the module's packages and their dependencies with
# -race into the build cache, for go test -race to find.
.PHONY: race-build
race-build:
	go build -race ./...

# lint-race is make lint on the race build: golangci-lint's `go list -export`
# compiles every dependency for their export data, which with -race are the
# packages race-build (and go test -race) compile; without it, a whole
# configuration more (about 200 s of a cold make test).
.PHONY: lint-race
lint-race: race-build $(GOLANGCI_LINT)
	GOFLAGS="$(strip $(GOFLAGS) -race)" $(GOLANGCI_LINT) run ./...

.PHONY: test-unit
test-unit: ## Run the tests that need no API server.
	go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v /test/)

# Fuzz targets as package:Target; their seed corpora (and any failing input
# saved under testdata/fuzz) run in `make test`.
FUZZ_TARGETS := ./internal/webhook:FuzzPodMutator ./internal/webhook:FuzzValidateWorkloads \
	./internal/webhook:FuzzValidateKubeadmConfig ./internal/check:FuzzRead
FUZZTIME ?= 2m
# Minimizing each new interesting input (60s by default) would take most of a
# short run: the execution counter stands still meanwhile.
FUZZMINIMIZETIME ?= 5s

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 2m); a failing input is saved under the package's testdata/fuzz.
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo ">> $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
		go test "$${t%%:*}" -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME); \
	done

# make bench writes its report here: handlers.md, server.md, e2e.md,
# memory.md, kube-proxy.md, the server's CPU profile, and report.md (all).
BENCH_DIR ?= $(LOCALBIN)/bench
# Runs of each Go benchmark, for min/median/max.
BENCH_COUNT ?= 5

.PHONY: bench
bench: envtest ## Run the benchmarks and write the report to $(BENCH_DIR) (docs/performance.md).
	@mkdir -p $(BENCH_DIR)
	go test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./internal/... | tee $(BENCH_DIR)/handlers.txt
	go run ./hack/benchsummary < $(BENCH_DIR)/handlers.txt > $(BENCH_DIR)/handlers.md
	$(BENCH_ENV) ENDPOINT_POLICY_BENCH_DIR=$(BENCH_DIR) KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test -count=1 -timeout 60m -v ./test/integration/ -run TestIntegration -args -ginkgo.label-filter=bench
	cat $(BENCH_DIR)/handlers.md $(BENCH_DIR)/server.md $(BENCH_DIR)/e2e.md $(BENCH_DIR)/kube-proxy.md $(BENCH_DIR)/memory.md > $(BENCH_DIR)/report.md
	@echo "make bench: report in $(BENCH_DIR)/report.md"

# make bench-scale: the simulated cluster's size, and its pods on the pod network.
SCALE_NODES ?= 5000
SCALE_POD_NETWORK ?= 10000
SIM_ENV := KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" ENDPOINT_POLICY_SIM_ASSETS="$(SIM_ASSETS)"

.PHONY: bench-scale
bench-scale: envtest sim build ## endpoint-policy in a simulated cluster of SCALE_NODES kwok nodes (5,000), Enforce then Audit; report in $(BENCH_DIR)/scale.md (docs/performance.md).
	@mkdir -p $(BENCH_DIR)
	for mode in Enforce Audit; do \
	  m=$$(echo $$mode | tr A-Z a-z); \
	  $(SIM_ENV) go run ./hack/benchscale --nodes $(SCALE_NODES) --pod-network-pods $(SCALE_POD_NETWORK) --mode $$mode \
	    --binary "$(LOCALBIN)/endpoint-policy" --out $(BENCH_DIR)/scale-$$m.md --log-dir $(BENCH_DIR)/scale-$$m || exit 1; \
	done
	cat $(BENCH_DIR)/scale-enforce.md $(BENCH_DIR)/scale-audit.md > $(BENCH_DIR)/scale.md
	@echo "make bench-scale: report in $(BENCH_DIR)/scale.md"

.PHONY: envtest
envtest: $(ENVTEST_ASSETS)/kube-apiserver ## Build kube-apiserver and etcd from Go modules into bin/ (once); in the same go build, the simulated cluster's kube-controller-manager, kube-scheduler and kwok, the real node's kubelet and kube-proxy, and helm.

$(ENVTEST_ASSETS)/kube-apiserver:
	hack/envtest/build.sh "$(ENVTEST_ASSETS)" "$(SIM_ASSETS)" "$(NODE_ASSETS)" "$(HELM)"

.PHONY: node
node: $(NODE_ASSETS)/kubelet $(NODE_ASSETS)/kube-proxy ## Build the real node's kubelet and kube-proxy from Go modules into bin/ (once).

# In envtest's build, which builds them with kube-apiserver (as the
# simulated cluster's binaries); alone, after it, for the same reason.
$(NODE_ASSETS)/kubelet $(NODE_ASSETS)/kube-proxy: | $(ENVTEST_ASSETS)/kube-apiserver
	hack/node/build.sh "$(NODE_ASSETS)"

.PHONY: test-node
test-node: envtest sim node tools node-tools ## The real-node suite (root, containerd, runc, CNI plugins: apt-get install containerd runc containernetworking-plugins): a kubelet and containerd on this machine, the chart installed on it.
	$(TEST_ENV) go test -count=1 -v ./test/node/

.PHONY: sim
sim: $(SIM_ASSETS)/kwok-stages.yaml ## Build kube-controller-manager, kube-scheduler and kwok from Go modules into bin/ (once).

# After envtest's build, which builds kube-controller-manager and
# kube-scheduler with kube-apiserver: two builds of k8s.io/kubernetes side
# by side would each compile what they share.
$(SIM_ASSETS)/kwok-stages.yaml: | $(ENVTEST_ASSETS)/kube-apiserver
	hack/sim/build.sh "$(SIM_ASSETS)"

NODES ?= 50
.PHONY: sim-cluster
sim-cluster: envtest sim ## Run a simulated cluster of NODES kwok nodes (default 50); prints a kubeconfig, stops on Ctrl-C.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" ENDPOINT_POLICY_SIM_ASSETS="$(SIM_ASSETS)" go run ./hack/sim-cluster --nodes $(NODES)

.PHONY: tools
tools: $(HELM) $(KUSTOMIZE) $(PROMTOOL) ## Build the helm, kustomize and promtool CLIs from Go modules into bin/ (once).

# envtest's go build builds helm too (the Kubernetes libraries they share
# compile once). make test's test-deps orders helm after it (HELM_AFTER_ENVTEST),
# so that the two never compile them side by side; `make tools` or `make
# helm-lint` alone build helm alone, without the control plane.
$(HELM): | $(if $(HELM_AFTER_ENVTEST),$(ENVTEST_ASSETS)/kube-apiserver)
	hack/tools/helm.sh "$@"

# promtool checks and unit-tests the chart's alerts (test/chart/alerts_test.go)
# and the dashboard's queries: Debian's (the prometheus package's, extracted),
# else built from Go modules with remove_all_sd, which leaves out Prometheus'
# service discoveries (cloud SDKs): hack/tools/promtool.sh.
$(PROMTOOL):
	hack/tools/promtool.sh "$@"

$(GOLANGCI_LINT):
	@echo ">> building golangci-lint $(GOLANGCI_LINT_VERSION) from Go modules (first time only, ~3 min cold)"
	cd hack/tools/golangci-lint && CGO_ENABLED=0 go build -trimpath $(TOOL_GCFLAGS) -ldflags "-s -w" -o "$@.tmp" github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	mv "$@.tmp" "$@"

$(KUSTOMIZE):
	@echo ">> building kustomize $(KUSTOMIZE_VERSION) from Go modules (first time only, ~1 min cold)"
	cd hack/tools/kustomize && CGO_ENABLED=0 go build -trimpath $(TOOL_GCFLAGS) -ldflags "-s -w" -o "$@.tmp" sigs.k8s.io/kustomize/kustomize/v5
	mv "$@.tmp" "$@"

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the chart.
	$(HELM) lint --strict charts/endpoint-policy

.PHONY: demo
demo: envtest build ## Run the local demo: a real API server, the webhook, the examples/.
	go run ./hack/demo --assets "$(ENVTEST_ASSETS)" --binary "$(LOCALBIN)/endpoint-policy" --examples examples

##@ Build

.PHONY: build
# The flags of the control plane's builds (hack/lib/gobuild.sh): the
# dependencies both compile (k8s.io/api, client-go, ...) are then in the build
# cache already, as hack/envtest/kube-apiserver keeps their versions ours
# (test/image's TestControlPlaneSharesOurDependencies).
build: ## Build bin/endpoint-policy.
	CGO_ENABLED=0 go build -trimpath $(TOOL_GCFLAGS) -ldflags "$(LDFLAGS)" -o "$(LOCALBIN)/endpoint-policy" ./cmd/endpoint-policy

# make image: the OCI image, built without a container engine (hack/image,
# go-containerregistry) into IMAGE_DIR: oci/ (OCI layout, tag = IMG's) and
# endpoint-policy.tar (docker archive: docker load, kind load image-archive,
# ctr import).
IMAGE_DIR ?= $(LOCALBIN)/image
IMAGE_CREATED ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: image
image: build ## Build the OCI image without a container engine into bin/image/ (OCI layout and docker archive).
	cd hack/image && go run . --binary "$(LOCALBIN)/endpoint-policy" --out "$(IMAGE_DIR)" --tag "$(IMG)" \
		--version "$(VERSION)" --revision "$(COMMIT)" --created "$(IMAGE_CREATED)"

.PHONY: image-tools
image-tools: ## Install runc and umoci (Debian packages) when missing: make image-test runs the image with them.
	@command -v runc >/dev/null && command -v umoci >/dev/null || { \
		echo ">> installing runc and umoci (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc umoci >/dev/null || { \
			apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runc umoci >/dev/null; }; }

.PHONY: node-tools
node-tools: ## Install containerd, runc, the CNI plugins and nft (Debian packages) when missing: the real-node suite (test/node) runs a kubelet with them.
	@command -v containerd >/dev/null && command -v runc >/dev/null && command -v nft >/dev/null && test -x /usr/lib/cni/bridge || { \
		echo ">> installing containerd, runc, containernetworking-plugins and nftables (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd runc containernetworking-plugins nftables >/dev/null || { \
			apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd runc containernetworking-plugins nftables >/dev/null; }; }

.PHONY: image-test
image-test: envtest image-tools ## Build the image, unpack it with umoci and run it with runc (root, host network, loopback only): --version, and serve ready against the envtest API server.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test -count=1 -v ./test/image/

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMG) .

.PHONY: clean
clean: ## Remove built binaries (keeps the envtest control plane).
	rm -f "$(LOCALBIN)/endpoint-policy"
