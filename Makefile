# Two set-up commands: `make demo` (train + evaluate on a generated corpus) and `make test`.
# Both create the virtualenv on first use and are fast on a second run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/speaker-demo

# Keep the project's compiled modules (__pycache__, git-ignored) where the environment says not to write them
# (PYTHONDONTWRITEBYTECODE is set on these machines): a test run starts hundreds of interpreters (Ray workers,
# CLI subprocesses), and each compiled the project's modules again (0.4-0.6 s for a training worker's imports).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv demo test test-fast lint system-data bench compare-heads speaker-augment sed-demo semiweak-demo clean

# --no-compile: pip would byte-compile every installed module (torch, ray, scipy...: 2:48 -> 1:26 for the install,
# measured); Python compiles the ones a run imports on first use instead (~2.6 s once for the whole stack).
$(STAMP): pyproject.toml constraints.txt scripts/fix_torchaudio.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PY) scripts/fix_torchaudio.py
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) workflows/speaker.py --out $(OUT)

# Two pytest passes at once: the tests that start their own Ray instances (marker own_ray) in a second process beside
# the rest (each pass alone leaves ~20 % of the cores idle; scripts/run_test_passes.py says more).
test: lint system-data
	$(PY) scripts/run_test_passes.py

# The fast lane: lint, then the unit, data and bad-input tests (no end-to-end training), a few minutes.
test-fast: lint system-data
	$(PY) -m pytest -q -m "not slow and not own_ray" --durations=5

# Style (ruff, line length 120) and the architecture contracts (import-linter, pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

# Real Fashion-MNIST from Debian for the semi-weak tests (best effort: they skip without it).
system-data:
	@scripts/system_data.sh

compare-heads: $(STAMP)
	$(PY) workflows/speaker.py --compare-heads --out runs/compare-heads

# Speaker augmentation measured on Debian's recorded TTS voices (docs/speaker.md): without, then with WeSpeaker's
# augmentation (speed perturbation, MUSAN-layout noise, RIRS_NOISES-layout reverberation). EPOCHS=30 for the longer run.
EPOCHS ?= 12
speaker-augment: $(STAMP)
	$(PY) scripts/speaker_voices.py --out runs/tts --fetch-sounds
	$(PY) workflows/speaker.py --data runs/tts/voxceleb1 --out runs/tts-clean-$(EPOCHS) --set data.shards=runs/tts-shards \
	    --set train.epochs=$(EPOCHS)
	$(PY) workflows/speaker.py --data runs/tts/voxceleb1 --out runs/tts-aug-$(EPOCHS) --set data.shards=runs/tts-shards \
	    --set train.epochs=$(EPOCHS) --set augment.speed_perturb=true --musan runs/tts/musan --rirs runs/tts/RIRS_NOISES

sed-demo: $(STAMP)
	$(PY) workflows/sed.py --out runs/sed-demo

semiweak-demo: $(STAMP)
	$(PY) workflows/semiweak.py --out runs/semiweak-demo

bench: $(STAMP)
	$(PY) benchmarks/bench_shards.py
	$(PY) benchmarks/bench_input_pipeline.py
	$(PY) benchmarks/bench_train_overhead.py
	$(PY) benchmarks/bench_scoring.py
	$(PY) benchmarks/bench_heads.py
	$(PY) benchmarks/bench_sweep.py

clean:
	rm -rf runs .pytest_cache
