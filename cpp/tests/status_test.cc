#include "kvdump/status.h"

#include <gtest/gtest.h>

namespace kvdump {
namespace {

TEST(Status, CodesAreStable) {
  // These numbers are part of the Python contract (kvdump.StatusCode); changing one breaks users.
  EXPECT_EQ(static_cast<int>(StatusCode::kOk), 0);
  EXPECT_EQ(static_cast<int>(StatusCode::kLifecycle), 2);
  EXPECT_EQ(static_cast<int>(StatusCode::kTimeout), 3);
  EXPECT_EQ(static_cast<int>(StatusCode::kNotFound), 5);
  EXPECT_EQ(static_cast<int>(StatusCode::kStoreFull), 6);
  EXPECT_EQ(static_cast<int>(StatusCode::kChecksumMismatch), 8);
  EXPECT_EQ(static_cast<int>(StatusCode::kInternal), 13);
  EXPECT_STREQ(statusCodeName(StatusCode::kStoreFull), "STORE_FULL");
}

TEST(Status, FactoriesCarryCodeMessageAndKey) {
  Status s = Status::NotFound("gone").withKey("ns/abc/0");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "gone");
  EXPECT_EQ(s.key(), "ns/abc/0");
  EXPECT_EQ(s.toString(), "NOT_FOUND: gone [key=ns/abc/0]");
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_EQ(Status::Unsupported("x").code(), StatusCode::kUnsupported);
}

TEST(Status, ResultHoldsValueOrError) {
  Result<int> good(7);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good.value(), 7);
  Result<int> bad(Status::IoError("disk"));
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kIoError);
  // An OK status without a value is a programming error, surfaced rather than hidden.
  Result<int> confused{Status::Ok()};
  EXPECT_EQ(confused.status().code(), StatusCode::kInternal);
}

TEST(Status, PayloadIsSharedAndOpaque) {
  auto marker = std::make_shared<int>(42);
  Status s = Status::TaskFailed("py").withPayload(marker);
  Status copy = s;
  EXPECT_EQ(marker.use_count(), 3);
  EXPECT_EQ(*static_cast<int*>(copy.payload().get()), 42);
}

}  // namespace
}  // namespace kvdump
