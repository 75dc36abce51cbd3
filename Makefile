# Thin aliases for ./dev, which does the work (and needs no make on a fresh machine).
.PHONY: up test bench
up:
	./dev up
test:
	./dev test
bench:
	./dev bench
