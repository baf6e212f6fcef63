# make build              release binaries in target/release
# make bench             benchmarks against LXC, nspawn and tar (scripts/bench.sh; as root)
# make install            build, then install into / (or DESTDIR=/some/root) with
#                         scripts/install.sh; on a live systemd machine, reload it and dbus
#                         so that the unit and bus policy take effect without a reboot.
DESTDIR ?= /
CARGO ?= cargo

.PHONY: build install bench

build:
	$(CARGO) build --release

install: build
	scripts/install.sh "$(DESTDIR)" target/release
	@if [ "$(DESTDIR)" = "/" ] && [ "$$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then \
		echo "reloading systemd and dbus"; \
		systemctl daemon-reload; \
		systemctl reload dbus; \
	fi

bench:
	scripts/bench.sh
