# make test runs every test: vet (with and without the integration tag), a
# gofmt check, a static build (as the Dockerfile does it), the unit tests
# under the race detector, and the end-to-end tests against real Postfix,
# Sendmail, rbldnsd and Redis. Run as root on Debian, it first installs the
# packages those tests need (integration/setup.sh); elsewhere they skip,
# saying what is missing (with CI=true they fail instead).

GO ?= go

.PHONY: all build test setup unit vet fmt-check static integration demo clean

all: build

build:
	$(GO) build -o authbl-milter ./cmd/authbl-milter

demo:
	$(GO) run ./cmd/authbl-milter demo

test: vet fmt-check static unit integration

# setup installs the servers that some unit tests (Redis, rbldnsd) and the
# integration tests start; only as root, and only what is missing.
setup:
	@if [ "$$(id -u)" = 0 ]; then bash integration/setup.sh; \
	else echo "make setup: not root; tests that need missing servers will skip"; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

static:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/authbl-milter

unit: setup
	$(GO) test -race -count=1 ./...

integration: setup
	$(GO) test -tags integration -race -count=1 ./integration/...

clean:
	rm -f authbl-milter
