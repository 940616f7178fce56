// A checkpoint slot that is a flat range of its global tensor (a ZeRO-1 shard of optimizer state): any range of a
// 3-D tensor, starting and ending inside rows and inside matrices, reads back the elements of that range in
// row-major order and nothing else. (Ranges written by several ranks into one tensor: the ZeRO-1 checkpoint tests.)
#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "checkpoint/checkpoint.h"
#include "parallel/communicator.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

TEST(FlatSlots, EveryRangeOfAThreeDimensionalTensorReadsBackItsElementsInOrder) {
    const fs::path dir = test::temp_dir("flat_slots");
    parallel::SingleProcessComm world;
    const Shape shape{3, 4, 5};
    std::vector<float> full(60);
    std::iota(full.begin(), full.end(), 1.0f);
    checkpoint::TrainingState st;
    st.run_id = "flat";
    std::vector<checkpoint::TensorSlot> whole_slot{{"optim/whole", shape, 0, shape, true, full.data()}};
    const std::string path = checkpoint::save(dir.string(), whole_slot, st, world, 1, 0);
    std::vector<float> part(61);
    int64_t ranges = 0;
    for (int64_t a = 0; a < 60; a += 3)
        for (int64_t b = a + 1; b <= 60; b += 4) {
            std::fill(part.begin(), part.end(), -1.0f);
            checkpoint::TensorSlot s{"optim/whole", shape, 0, {}, false, part.data()};
            s.flat_begin = a;
            s.flat_count = b - a;
            std::vector<checkpoint::TensorSlot> read{s};
            checkpoint::load(path, read, st);
            for (int64_t i = 0; i < b - a; ++i) ASSERT_EQ(part[size_t(i)], full[size_t(a + i)]) << a << ".." << b;
            EXPECT_EQ(part[size_t(b - a)], -1.0f) << "nothing past the range is written, " << a << ".." << b;
            ++ranges;
        }
    EXPECT_GT(ranges, 100);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal
