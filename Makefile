# Frugal: the two commands that do everything on a fresh Debian machine are `make demo` and `make test`.
# Each runs set-up (installs missing Debian packages) and the build as needed.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DFRUGAL_WERROR=ON
MPI_ROOT_ENV = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

.PHONY: setup build demo test bench bench-fp8 format clean docs

setup:
	@bash scripts/setup.sh

$(BUILD_DIR)/CMakeCache.txt: | setup
	cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS)

build: setup $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

corpus/fortunes/train.bin: | build
	$(BUILD_DIR)/frugal prepare-data /usr/share/games/fortunes --out corpus/fortunes

demo: build corpus/fortunes/train.bin
	$(BUILD_DIR)/frugal launch -n 4 configs/demo.yaml

test: build
	cd $(BUILD_DIR) && $(MPI_ROOT_ENV) ctest --output-on-failure

bench: build corpus/fortunes/train.bin
	$(BUILD_DIR)/bench_train configs/demo.yaml
	$(BUILD_DIR)/bench_checkpoint configs/demo.yaml
	$(BUILD_DIR)/bench_hf configs/demo.yaml
	$(MPI_ROOT_ENV) mpirun -n 2 --bind-to core -x OMP_NUM_THREADS=1 $(BUILD_DIR)/bench_dispatch
	$(MPI_ROOT_ENV) bash bench/scaling.sh $(BUILD_DIR)/frugal

bench-fp8: build corpus/fortunes/train.bin
	$(BUILD_DIR)/bench_precision configs/demo.yaml

docs: build
	$(BUILD_DIR)/frugal config --docs > docs/config.md

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
