// Runs the engramctl binary as a user would and checks its output against the reference vectors.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "../testing/vectors.h"

namespace engram {
namespace {

struct CtlRun {
  int exit_code;
  std::string out;
  std::string err;
};

class EngramctlHashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/engramctl_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  CtlRun Ctl(const std::string& args) {
    const std::string out = dir_ + "/stdout", err = dir_ + "/stderr";
    const int rc = std::system((std::string(ENGRAMCTL_PATH) + " " + args + " >" + out + " 2>" + err).c_str());
    auto slurp = [](const std::string& p) {
      std::ifstream f(p);
      return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    };
    return {WEXITSTATUS(rc), slurp(out), slurp(err)};
  }

  std::string dir_;
};

TEST_F(EngramctlHashTest, PrintsEveryLayersRowIdsLikeTheReference) {
  for (const char* name : {"demo_defaults", "compressed_negative_ids", "deepseek_v41_flash"}) {
    const auto& c = testing::VectorCase(name);
    const std::string spec = Write("spec.json", c["spec"].dump());
    const std::string tokens = Write("tokens.json", c["tokens"].dump());
    const CtlRun r = Ctl("hash --spec " + spec + " --tokens " + tokens);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto got = nlohmann::json::parse(r.out);
    ASSERT_EQ(got.size(), c["layers"].size());
    for (const auto& [layer, want] : c["layers"].items()) EXPECT_EQ(got[layer], want["row_ids"]) << name << " " << layer;
  }
}

TEST_F(EngramctlHashTest, ErrorsGoToStderrWithNonZeroExit) {
  const auto& c = testing::VectorCase("demo_defaults");
  const std::string spec = Write("spec.json", c["spec"].dump());
  struct Bad {
    std::string tokens;
    std::string mentions;
  } cases[] = {{"[[1,2],[3]]", "equal"}, {"[[1,\"x\"]]", "integer"}, {"{}", "[B][T]"}, {"[[1,2", "JSON"}};
  for (const auto& b : cases) {
    const CtlRun r = Ctl("hash --spec " + spec + " --tokens " + Write("t.json", b.tokens));
    EXPECT_NE(r.exit_code, 0) << b.tokens;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_NE(r.err.find(b.mentions), std::string::npos) << r.err;
  }
  const CtlRun missing = Ctl("hash --spec " + dir_ + "/none.json --tokens " + Write("t.json", "[[1]]"));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("cannot open"), std::string::npos);
  const CtlRun bad_spec = Ctl("hash --spec " + Write("s.json", R"({"max_ngram_size": 3})") + " --tokens " +
                           Write("t.json", "[[1]]"));
  EXPECT_NE(bad_spec.exit_code, 0);
  EXPECT_NE(bad_spec.err.find("engram_vocab_size"), std::string::npos);
  EXPECT_NE(Ctl("frobnicate").exit_code, 0);
}

}  // namespace
}  // namespace engram
