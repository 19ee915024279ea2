# trace2eval — the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: run build test test-deps bench lint fmt clean

## run: start the ingest service on its defaults (store ./data, WAL ./wal, gRPC :4317, HTTP :4318)
run:
	$(CARGO) run --release --bin ingest

build:
	$(CARGO) build --release --bins

## test-deps: Python virtualenv with the S3 test server, the OTel SDK, DuckDB and pyarrow
test-deps:
	scripts/pyenv.sh >/dev/null

## test: every unit and end-to-end test (real binaries, real S3 server, real OTel SDK)
test: test-deps
	$(CARGO) build --bins
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --no-fail-fast
else
	$(CARGO) test --workspace --no-fail-fast
endif

## bench: whole-process benchmarks of the release binaries; appends to BENCHMARKS.md (not in test)
bench:
	bench/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf .venv
