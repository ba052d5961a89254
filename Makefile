# Veil — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build run test test-deps bench operators lint clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/veil ./cmd/veil

# The broker with the example household, embedded FerretDB, data under ./var.
run: build
	./scripts/run.sh

test-deps:
	./scripts/install-test-deps.sh

# Everything, with the race detector: a data race in the delivery path is a
# privacy leak waiting to happen.
test: test-deps
	$(GO) vet ./...
	./scripts/mochi-fork.sh test
	$(GO) test -race -count=1 -timeout 20m ./...

# Micro-benchmarks of the engine and hooks, then the broker-level comparison.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./policies/ ./hooks/
	./scripts/bench.sh

# Raspberry Pi operators, cross-compiled (linux/arm64, arm v7, arm v6, host).
operators:
	./scripts/build-operators.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf bin
