// Device choice (backend/cuda/device.h): the local rank from a fake environment, and the device count and selection
// on whatever machine runs the test (without a GPU: 0 devices and a reason, never a crash).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "backend/cuda/device.h"
#include "core/error.h"

namespace frugal::cuda {
namespace {

// A getenv over a fixed map.
struct FakeEnv {
    std::map<std::string, std::string> vars;
    const char* operator()(const char* name) const {
        auto it = vars.find(name);
        return it == vars.end() ? nullptr : it->second.c_str();
    }
};

TEST(LocalRank, IsZeroWhenNoLauncherVariableIsSet) { EXPECT_EQ(local_rank_from_env(FakeEnv{}), 0); }

TEST(LocalRank, EachLauncherVariableIsReadWhenItIsTheOnlyOne) {
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"}) {
        EXPECT_EQ(local_rank_from_env(FakeEnv{{{name, "3"}}}), 3) << name;
    }
}

TEST(LocalRank, OpenMpiComesBeforeSlurmAndSlurmBeforeMpich) {
    EXPECT_EQ(local_rank_from_env(
                  FakeEnv{{{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"SLURM_LOCALID", "2"}, {"MPI_LOCALRANKID", "3"}}}),
              1);
    EXPECT_EQ(local_rank_from_env(FakeEnv{{{"SLURM_LOCALID", "2"}, {"MPI_LOCALRANKID", "3"}, {"PMI_LOCAL_RANK", "4"}}}),
              2);
    EXPECT_EQ(local_rank_from_env(FakeEnv{{{"MPI_LOCALRANKID", "3"}, {"PMI_LOCAL_RANK", "4"}}}), 3);
}

TEST(LocalRank, AnEmptyVariableCountsAsUnset) {
    EXPECT_EQ(local_rank_from_env(FakeEnv{{{"OMPI_COMM_WORLD_LOCAL_RANK", ""}, {"SLURM_LOCALID", "5"}}}), 5);
}

TEST(LocalRank, AMalformedValueIsAnErrorNamingTheVariableAndTheValue) {
    for (const char* value : {"two", "1x", "-1", "99999999999999999999", " "}) {
        try {
            local_rank_from_env(FakeEnv{{{"SLURM_LOCALID", value}}});
            ADD_FAILURE() << "'" << value << "' was accepted";
        } catch (const Error& e) {
            const std::string m = e.what();
            EXPECT_NE(m.find("SLURM_LOCALID"), std::string::npos) << m;
            EXPECT_NE(m.find(std::string("'") + value + "'"), std::string::npos) << m;
        }
    }
}

TEST(CudaDevices, WithoutAGpuTheCountIsZeroAndSaysWhy) {
    std::string why;
    const int count = cuda_device_count(&why);
    if (count > 0) GTEST_SKIP() << "this machine has " << count << " GPU(s)";
    EXPECT_EQ(count, 0);
    EXPECT_FALSE(why.empty());
    EXPECT_EQ(cuda_device_count(nullptr), 0);
}

TEST(CudaDevices, WithoutAGpuSelectingOneNamesRunDeviceAndTheAlternatives) {
    std::string why;
    if (cuda_device_count(&why) > 0) GTEST_SKIP() << "this machine has a GPU";
    try {
        select_device(0);
        ADD_FAILURE() << "select_device succeeded without a GPU";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("run.device: cuda was asked for but " + why), std::string::npos) << m;
        EXPECT_NE(m.find("use run.device: cpu or auto"), std::string::npos) << m;
    }
}

TEST(CudaDevices, WithGpusTheLocalRankWrapsAroundTheDeviceCount) {
    const int count = cuda_device_count(nullptr);
    if (count == 0) GTEST_SKIP() << "needs a GPU: this machine has none";
    EXPECT_EQ(select_device(0), 0);
    EXPECT_EQ(select_device(count), 0);
    EXPECT_EQ(select_device(count + count - 1), count - 1);
    EXPECT_THROW(select_device(-1), Error);
}

}  // namespace
}  // namespace frugal::cuda
