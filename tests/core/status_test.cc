#include "engram/status.h"

#include <gtest/gtest.h>

namespace engram {
namespace {

TEST(StatusTest, DefaultIsOkAndCostsOnePointer) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(sizeof(Status), sizeof(void*));
}

TEST(StatusTest, ErrorCarriesCodeAndMessage) {
  Status s = Status::OutOfRange("row 9 outside [0, 5)");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsOutOfRange());
  EXPECT_EQ(s.ToString(), "OutOfRange: row 9 outside [0, 5)");
  EXPECT_EQ(s.WithContext("pull").message(), "pull: row 9 outside [0, 5)");
}

TEST(StatusTest, StaleShardMapCarriesEpoch) {
  Status s = Status::StaleShardMap(42, "refresh");
  EXPECT_TRUE(s.IsStaleShardMap());
  EXPECT_EQ(s.epoch(), 42u);
  Status copy = s;
  EXPECT_EQ(copy.epoch(), 42u);
}

StatusOr<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  ENGRAM_ASSIGN_OR_RETURN(*out, Half(x));
  return Status::OK();
}

TEST(StatusTest, AssignOrReturnPropagatesErrors) {
  int v = 0;
  EXPECT_TRUE(UseHalf(8, &v).ok());
  EXPECT_EQ(v, 4);
  Status s = UseHalf(3, &v);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(v, 4);
}

TEST(StatusTest, StatusOrFromOkStatusIsAnError) {
  StatusOr<int> bad{Status::OK()};
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInternal);
}

}  // namespace
}  // namespace engram
