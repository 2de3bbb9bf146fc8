#include "engram/numeric.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engram/row_codec.h"

namespace engram {
namespace {

TEST(NumericTest, Bf16RoundTripsEveryFiniteEncoding) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Bf16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToBf16(f), h) << h;
  }
}

TEST(NumericTest, F16RoundTripsEveryEncoding) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToF16(f), h) << h;
  }
}

TEST(NumericTest, F16RoundsToNearestEvenAndOverflowsToInf) {
  EXPECT_EQ(F16ToF32(F32ToF16(1.0f + 1.0f / 2048)), 1.0f);  // Tie -> even (1.0).
  EXPECT_EQ(F16ToF32(F32ToF16(1.0f + 3.0f / 2048)), 1.0f + 2.0f / 1024);  // Tie -> even (up).
  EXPECT_EQ(F16ToF32(F32ToF16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(F32ToF16(65520.0f))));
  EXPECT_EQ(F16ToF32(F32ToF16(std::ldexp(1.0f, -24))), std::ldexp(1.0f, -24));  // Smallest subnormal.
  EXPECT_EQ(F16ToF32(F32ToF16(std::ldexp(1.0f, -26))), 0.0f);
}

TEST(NumericTest, Bf16AndF16ConversionsAreNearestAmongNeighbours) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> d(-1000.0f, 1000.0f);
  for (int i = 0; i < 100000; ++i) {
    const float f = d(gen);
    const float b = Bf16ToF32(F32ToBf16(f));
    EXPECT_LE(std::fabs(b - f), std::fabs(f) * (1.0f / 256)) << f;
    const float h = F16ToF32(F32ToF16(f));
    EXPECT_LE(std::fabs(h - f), std::fabs(f) * (1.0f / 2048) + 1e-7f) << f;
  }
}

TEST(NumericTest, Fp8E4M3RoundTripsEveryFiniteEncoding) {
  for (uint32_t b = 0; b < 256; ++b) {
    const float f = Fp8E4M3ToF32(static_cast<uint8_t>(b));
    if (std::isnan(f)) {
      EXPECT_EQ(b & 0x7f, 0x7fu);
      continue;
    }
    if (b == 0x80) continue;  // -0 encodes back as -0 (0x80); checked by value below.
    EXPECT_EQ(F32ToFp8E4M3(f), b) << b;
  }
  EXPECT_EQ(Fp8E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4M3ToF32(0x01), std::ldexp(1.0f, -9));
}

TEST(NumericTest, Fp8SaturatesInsteadOfProducingNaN) {
  EXPECT_EQ(Fp8E4M3ToF32(F32ToFp8E4M3(1e6f)), 448.0f);
  EXPECT_EQ(Fp8E4M3ToF32(F32ToFp8E4M3(-500.0f)), -448.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToF32(F32ToFp8E4M3(NAN))));
}

TEST(NumericTest, Ue8m0IsAPowerOfTwo) {
  EXPECT_EQ(Ue8m0ToF32(127), 1.0f);
  EXPECT_EQ(Ue8m0ToF32(130), 8.0f);
  EXPECT_EQ(Ue8m0ToF32(120), 1.0f / 128);
  EXPECT_TRUE(std::isnan(Ue8m0ToF32(255)));
}

TEST(RowCodecTest, Fp8RowOf256IsTheFlashFormatAndRoundTripsWithinOneStep) {
  constexpr uint32_t kDim = 256;
  ASSERT_EQ(ValueBytes(DType::kFp8E4M3Ue8m0, kDim), 264u);
  std::mt19937 gen(11);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> in(kDim), out(kDim);
  for (auto& v : in) v = d(gen);
  in[40] = 3.0f;  // One block with a much larger range.
  std::vector<uint8_t> row(264);
  EncodeRow(DType::kFp8E4M3Ue8m0, kDim, in.data(), row.data());
  DecodeRow(DType::kFp8E4M3Ue8m0, kDim, row.data(), out.data());
  for (uint32_t b = 0; b < kDim / 32; ++b) {
    float amax = 0;
    for (uint32_t i = b * 32; i < (b + 1) * 32; ++i) amax = std::max(amax, std::fabs(in[i]));
    const float scale = Ue8m0ToF32(row[kDim + b]);
    EXPECT_LE(amax / scale, 448.0f);
    EXPECT_GT(amax / scale, 112.0f);  // The smallest sufficient power of two.
    for (uint32_t i = b * 32; i < (b + 1) * 32; ++i) {
      // E4M3 keeps 3 mantissa bits: relative error <= 2^-4, plus the subnormal step.
      EXPECT_LE(std::fabs(out[i] - in[i]), std::fabs(in[i]) / 16 + scale * std::ldexp(1.0f, -10)) << i;
    }
  }
}

TEST(RowCodecTest, TrainableRowsRoundTrip) {
  std::vector<float> in = {0.5f, -1.25f, 3.0f, 1e-3f}, out(4);
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<uint8_t> raw(ValueBytes(t, 4));
    EncodeRow(t, 4, in.data(), raw.data());
    DecodeRow(t, 4, raw.data(), out.data());
    for (int i = 0; i < 3; ++i) EXPECT_EQ(out[i], in[i]) << DTypeName(t);
    EXPECT_NEAR(out[3], in[3], 1e-5) << DTypeName(t);
  }
}

}  // namespace
}  // namespace engram
