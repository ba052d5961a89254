# Veil — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build run test test-deps bench lint clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/veil ./cmd/veil

# The broker with the example household, embedded FerretDB, data under ./var.
run: build
	./bin/veil serve --bootstrap examples/bootstrap.yaml --data-dir var

test-deps:
	./scripts/install-test-deps.sh

# Everything, with the race detector: a data race in the delivery path is a
# privacy leak waiting to happen.
test: test-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./policies/ ./hooks/ ./broker/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf bin
