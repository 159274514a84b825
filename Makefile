# Two commands matter: `make run` (the whole mesh on embedded servers) and `make test`.
# Everything else is a step they depend on.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PROTOS := $(wildcard protos/tiktok/v1/*.proto)
HLS_JS := cdn/node_modules/hls.js/dist/hls.min.js
OPENAPI := gen/openapi.json
PUBLIC_PROTOS := protos/tiktok/v1/activity.proto protos/tiktok/v1/upload.proto protos/tiktok/v1/feed.proto
# Debian packages, installed when missing (needs root, as on CI and a fresh machine)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
apt_install = if [ "$$(id -u)" != 0 ]; then echo "missing: $(1) (Debian: apt-get install $(1)); run make as root or install it" >&2; exit 1; fi; apt-get update -qq && $(APT_INSTALL) $(1)

.PHONY: run test test-cluster unit lint typecheck protos bench faults lock clean distclean

# make run INSTANCES=2: every service twice behind Envoy (or INSTANCES=activity=2,feed=3)
run: $(VENV)/.installed gen/.stamp $(OPENAPI) $(VENV)/.system $(HLS_JS)
	INSTANCES="$(INSTANCES)" $(PY) -m stack run

# the whole suite twice: on one Valkey node, then on a 3-node Valkey Cluster (REDIS_CLUSTER=1)
test: lint typecheck gen/.stamp $(OPENAPI) $(VENV)/.system $(VENV)/.browser $(HLS_JS)
	$(PY) -m pytest
	REDIS_CLUSTER=1 $(PY) -m pytest

test-cluster: lint typecheck gen/.stamp $(OPENAPI) $(VENV)/.system $(VENV)/.browser $(HLS_JS)
	REDIS_CLUSTER=1 $(PY) -m pytest

unit: $(VENV)/.installed gen/.stamp
	$(PY) -m pytest tests/unit

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy --strict on the shared runtime and read models, plain mypy on the services (pyproject.toml)
typecheck: $(VENV)/.installed gen/.stamp
	$(BIN)/mypy --strict mesh readmodels
	$(BIN)/mypy activity_svc upload_svc feed_svc precache_svc

protos: gen/.stamp $(OPENAPI)

# Benchmarks are not tests: each starts its own stack and writes bench/results/*.json.
bench: $(VENV)/.installed $(VENV)/.bench $(VENV)/.system $(VENV)/.loadgen gen/.stamp $(OPENAPI)
	$(PY) -m bench.uploads
	$(PY) -m bench.likes
	$(PY) -m bench.media
	$(PY) -m bench.feed
	$(PY) -m bench.security
	$(PY) -m bench.views

# The fault suite: its own stack (two instances of everything), faults under load, the table.
faults: $(VENV)/.installed $(VENV)/.bench $(VENV)/.system gen/.stamp $(OPENAPI)
	$(PY) -m bench.faults

$(VENV)/.bench: $(VENV)/.installed requirements-bench.lock
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements-bench.lock
	touch $@

# Servers that are not pip wheels: nginx, the media edge (the CDN stand-in).
$(VENV)/.system: | $(VENV)/.installed
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { $(call apt_install,nginx-light); }
	touch $@

# The load generator the benchmarks drive (C, so the client is not the bottleneck we measure).
$(VENV)/.loadgen: | $(VENV)/.installed
	@command -v wrk >/dev/null 2>&1 || { $(call apt_install,wrk); }
	touch $@

# The browser the playback tests drive (Playwright's own download is never used).
$(VENV)/.browser: | $(VENV)/.installed
	@[ -x /usr/bin/chromium ] || { $(call apt_install,chromium); }
	touch $@

# hls.js for the test player page, pinned by cdn/package-lock.json, served by the media edge.
$(HLS_JS): cdn/package.json cdn/package-lock.json
	@command -v npm >/dev/null 2>&1 || { $(call apt_install,npm); }
	npm ci --prefix cdn --no-audit --no-fund --loglevel=error
	touch $@

# The venv, exactly the locked tree (every package pinned and hash-checked), and a .pth so
# `python -m <svc>` finds the repo and gen/.
$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "tiktok_mesh.pth").write_text("$(CURDIR)\n$(CURDIR)/gen\n")'
	touch $@

# Python stubs + typed .pyi (mypy-protobuf's plugins, from the venv) into gen/, plus the
# descriptor set the Envoy transcoder reads.
gen/.stamp: $(VENV)/.installed $(PROTOS)
	rm -rf gen && mkdir -p gen
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=gen --grpc_python_out=gen --mypy_out=quiet:gen --mypy_grpc_out=quiet:gen \
	  --include_imports --include_source_info --descriptor_set_out=gen/tiktok.pb \
	  $(PROTOS)
	touch $@

# The OpenAPI 3 document the edge serves at /openapi.json: protoc-gen-swagger (Debian's
# golang-grpc-gateway) from the public protos, swagger2openapi (npm, pinned by
# tools/openapi/package-lock.json) to OpenAPI 3, then stack/openapi.py adds security and errors.
# (the request rules come from the services' own constants)
OPENAPI_RULES := activity_svc/rules.py activity_svc/views.py upload_svc/rules.py mesh/validation.py \
  readmodels/objects.py feed_svc/service.py
$(OPENAPI): gen/.stamp $(VENV)/.openapi-tools stack/openapi.py stack/envoy_config.py $(OPENAPI_RULES)
	$(PY) -m grpc_tools.protoc -Iprotos --plugin=protoc-gen-swagger=$$(command -v protoc-gen-swagger) \
	  --swagger_out=allow_merge=true,merge_file_name=api:gen $(PUBLIC_PROTOS)
	tools/openapi/node_modules/.bin/swagger2openapi gen/api.swagger.json -o gen/openapi.v3.json
	$(PY) -m stack.openapi gen/openapi.v3.json $@

$(VENV)/.openapi-tools: tools/openapi/package.json tools/openapi/package-lock.json | $(VENV)/.installed
	@command -v protoc-gen-swagger >/dev/null 2>&1 || { $(call apt_install,golang-grpc-gateway); }
	@command -v npm >/dev/null 2>&1 || { $(call apt_install,npm); }
	npm ci --prefix tools/openapi --no-audit --no-fund --loglevel=error
	touch $@

# The locks, from the direct pins in requirements*.txt: run after editing those. pip-tools lives
# in its own venv; the index and find-links of this machine's pip config stay out of the locks.
LOCK_VENV := $(VENV)-lock
PIP_COMPILE = $(LOCK_VENV)/bin/pip-compile --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links --annotation-style=line --quiet
lock:
	[ -x $(LOCK_VENV)/bin/pip-compile ] || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q pip-tools==7.6.2; }
	$(PIP_COMPILE) -o requirements.lock requirements.txt
	$(PIP_COMPILE) -c requirements.lock -o requirements-bench.lock requirements-bench.txt

clean:
	rm -rf gen .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) $(VENV)-lock .data
