# Frugal: the two commands that do everything on a fresh Debian machine are `make demo` and `make test`.
# Each runs set-up (installs missing Debian packages) and the build as needed.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DFRUGAL_WERROR=ON
MPI_ROOT_ENV = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

.PHONY: setup build demo test test-asan bench bench-fp8 format clean docs

setup:
	@bash scripts/setup.sh

$(BUILD_DIR)/CMakeCache.txt: | setup
	cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS)

build: setup $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

corpus/fortunes/train.bin: | build
	$(BUILD_DIR)/frugal prepare-data /usr/share/games/fortunes --out corpus/fortunes

# The demo starts from scratch each time: its previous output (runs/demo, configs/demo.yaml's run.out_dir) is
# removed first, since a fresh run refuses to overwrite another run's checkpoints.
demo: build corpus/fortunes/train.bin
	rm -rf runs/demo
	$(BUILD_DIR)/frugal launch -n 4 configs/demo.yaml

test: build
	cd $(BUILD_DIR) && $(MPI_ROOT_ENV) ctest --output-on-failure -j $(JOBS)

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build tree. -O2 keeps the run short and
# still reports every memory error; -g1 (line tables only) keeps the build short, and the stacks still name every
# function and line. Any finding stops its process with a non-zero exit, so it fails its test also in
# one MPI rank or in a frugal subprocess: those inherit these variables (mpirun passes them to the ranks).
# LeakSanitizer is off: Open MPI leaks from its MCA components at every exit, and those are unloaded by then and
# built without frame pointers, so the one-frame stacks name no library a suppression could match.
# A failed allocation returns null as without ASan, so the tests of "out of host memory" reach that check.
ASAN_BUILD_DIR ?= build-asan
SANITIZER_ENV = ASAN_OPTIONS=halt_on_error=1:detect_leaks=0:allocator_may_return_null=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# Left out under the sanitizers: the tests that train the demo model for many steps or over several launches (20 to
# 50 times slower instrumented: minutes each), whose code paths the shorter training, checkpoint and launch tests
# also run; the two whose wall-clock limits an instrumented run cannot meet; and the two that compare memory with
# the measured peak (the estimate, the growth of a sharded Hugging Face load), which ASan's shadow memory inflates; and the three that time the FMA benchmark
# against the clock's theoretical peak or against itself on more threads, which instrumented code runs at a tenth
# of the speed and with ten times the spread; and the two-host test, which times how fast failures end a job and
# whose launcher code the launch tests also run. `make test` runs them all.
ASAN_EXCLUDE_TESTS = Launch.OneTwoAndFourRanksAgreeOnTheDemoModel Launch.RestartsAfterAFailureOncePerRunDirectory \
  Launch.TheDeepSeekDemoTrainsOnFourRanksAndReportsItsMtpLoss Launch.ZeroOneTrainsLikeZeroZeroWithItsOptimizerStateSharded \
  Launch.ARankThatThrowsStopsTheWholeJob Launch.AHungRankTimesOutWithStepLayerAndCollective \
  Checkpoint.ReshardsFourToTwoToOneAndOneToFour Checkpoint.AKilledRankUnderMaxRestartsEndsWithTheUninterruptedLoss \
  Checkpoint.AKillBetweenWritingAndCommittingLeavesThePreviousOneLoadable Checkpoint.ResumeWith.* \
  Training.LossFallsOnTheDemoCorpus Training.TwentyStepsAreBitwiseDeterministic RecordedLosses.* \
  Accounting.RunsWriteACostReportThatSumsToRanksTimesWallTime Reliability.ADiskThatFillsDuringACollectiveWrite.* \
  MemoryCheck.EstimateAgreesWithMeasuredPeakResidentMemory Hf.ExpertParallelLoadingHoldsOnlyTheShard \
  CpuPeak.TheMeasuredPeakIsPositiveAndWithinTwiceTheDerivedOne CpuPeak.TwoThreadsOnTwoCoresMeasureTwiceOneThread \
  CpuPeak.RanksOnOneMachineShareItsPeak multihost.TwoHostsTrainLikeOneAndEveryLostRankHostOrLinkEndsTheJobByName
empty :=
space := $(empty) $(empty)
ASAN_EXCLUDE = ^($(subst $(space),|,$(strip $(ASAN_EXCLUDE_TESTS))))$$

# The sanitizer build leaves out the CUDA backend (-DFRUGAL_CUDA=OFF): the suite it runs is the CPU one, and GCC's
# sanitizers do not instrument device code or the CUDA libraries.
test-asan: setup
	cmake -S . -B $(ASAN_BUILD_DIR) -DFRUGAL_WERROR=ON -DFRUGAL_SANITIZE=address,undefined -DFRUGAL_CUDA=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
	cmake --build $(ASAN_BUILD_DIR) -j $(JOBS) --target frugal frugal_tests frugal_mpi_tests
	cd $(ASAN_BUILD_DIR) && $(MPI_ROOT_ENV) $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS) -E '$(ASAN_EXCLUDE)'

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
