# make test runs every test: vet (with and without the integration tag), a
# gofmt check, the unit tests under the race detector, and the end-to-end
# tests against real Postfix and rbldnsd. Those install their Debian
# packages when run as root, and skip (fail, with CI=true) where they
# cannot.

GO ?= go

.PHONY: all build test unit vet fmt-check integration demo clean

all: build

build:
	$(GO) build -o authbl-milter ./cmd/authbl-milter

demo:
	$(GO) run ./cmd/authbl-milter demo

test: vet fmt-check unit integration

vet:
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 ./...

integration:
	@if [ "$$(id -u)" = 0 ]; then bash integration/setup.sh; fi
	$(GO) test -tags integration -race -count=1 ./integration/...

clean:
	rm -f authbl-milter
