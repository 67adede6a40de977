# alfresco-ssh — the two commands a newcomer needs: `make run` and `make test`.
# Both install what a fresh Debian 12 machine lacks (as root) before they build.

CARGO ?= cargo
ARGS ?=
# npm ci writes this file; it is newer than the lock file once the packages are installed.
ASSETS_STAMP := assets/node_modules/.package-lock.json
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get
TARGET := x86_64-unknown-linux-gnu

.PHONY: run test assets build release test-deps lint bench soak clean

## Build and run the gateway on 127.0.0.1:8022 (pass flags with ARGS="--listen …").
run: assets
	$(CARGO) run --release -- $(ARGS)

build: assets
	$(CARGO) build --release

## The page's npm packages (xterm.js), pinned by assets/package-lock.json.
assets: $(ASSETS_STAMP)
$(ASSETS_STAMP): assets/package.json assets/package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && $(APT_GET) install -y -qq npm; }
	cd assets && npm ci --no-audit --no-fund --loglevel=error

## What the tests need beyond the build: OpenSSH's sshd, Dropbear and TinySSH (the compat
## tests, docs/COMPATIBILITY.md), Chromium and ChromeDriver, asciinema (the recording tests
## check our files with it), a one-time-code PAM module (the keyboard-interactive tests), and
## the throw-away test account the test sshd logs into. The tests start tinysshd themselves:
## the disable file keeps the package's systemd socket unit from listening on port 22 of
## every interface.
test-deps:
	@missing=""; \
	  [ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	  [ -x /usr/sbin/dropbear ] || missing="$$missing dropbear-bin"; \
	  [ -x /usr/sbin/tinysshd ] || missing="$$missing tinysshd"; \
	  mkdir -p /etc/tinyssh && touch /etc/tinyssh/disable_tinysshd; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  [ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	  command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	  command -v openssl >/dev/null || missing="$$missing openssl"; \
	  command -v asciinema >/dev/null || missing="$$missing asciinema"; \
	  ls /usr/lib/*/security/pam_google_authenticator.so >/dev/null 2>&1 || missing="$$missing libpam-google-authenticator"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && $(APT_GET) install -y -qq --no-install-recommends $$missing; \
	  fi
	bash tests/setup-test-user.sh

lint: assets
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Formatting, lints, unit and integration tests (real sshd, real Chromium).
test: assets test-deps lint
	$(CARGO) test

## Gateway against direct SSH (libssh2 and OpenSSH clients), same run; see BENCHMARKS.md.
## BENCH_SCALE_N=1000 for the 1000-session scale run; BENCH_ONLY=target for the russh-target
## run alone (BENCH_TARGET_N, default 10000, capped by the gateway's descriptor limit).
bench: assets test-deps
	$(CARGO) bench --bench gateway

## The soak and fault run (RELIABILITY.md): a population of scripted people and injected
## faults for SOAK_MINUTES (10), SOAK_SESSIONS (200) of them, seeded by SOAK_SEED (printed;
## SOAK_PERSON=n replays one). Fails if a byte is lost or a session ends unexplained.
soak: assets test-deps
	BENCH_ONLY=soak $(CARGO) bench --bench gateway

## A fully static binary (glibc, libssh2 and OpenSSL linked in), assets embedded, and its
## SHA-256 checksum, in dist/.
release: assets
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(TARGET)
	mkdir -p dist
	cp target/$(TARGET)/release/alfresco-ssh dist/alfresco-ssh
	cd dist && sha256sum alfresco-ssh > alfresco-ssh.sha256
	@ls -l dist/alfresco-ssh && cat dist/alfresco-ssh.sha256
	@ldd dist/alfresco-ssh || true

clean:
	$(CARGO) clean
	rm -rf assets/node_modules
