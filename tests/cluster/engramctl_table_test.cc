// engramctl table, row and safetensors commands against a real engram-server.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../testing/server_process.h"
#include "../testing/vectors.h"

namespace engram {
namespace {

class EngramctlTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::ServerProcess::Start(0);
    char tmpl[] = "/tmp/engramctl_tbl_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  struct Out {
    int code;
    std::string out, err;
  };
  Out Ctl(const std::string& args) {
    const std::string o = dir_ + "/o", e = dir_ + "/e";
    const int rc = std::system((std::string(ENGRAMCTL_PATH) + " " + args + " --servers=" + server_->address() + " >" + o +
                                " 2>" + e).c_str());
    auto slurp = [](const std::string& p) {
      std::ifstream f(p);
      return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    };
    return {WEXITSTATUS(rc), slurp(o), slurp(e)};
  }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
    return dir_ + "/" + name;
  }
  // A safetensors file with the given tensors (name, dtype, shape, bytes).
  std::string WriteSafetensors(const std::string& name,
                               const std::vector<std::tuple<std::string, std::string, std::vector<uint64_t>,
                                                            std::vector<uint8_t>>>& tensors) {
    nlohmann::json h = nlohmann::json::object();
    uint64_t at = 0;
    for (const auto& [n, dt, shape, bytes] : tensors) {
      h[n] = {{"dtype", dt}, {"shape", shape}, {"data_offsets", {at, at + bytes.size()}}};
      at += bytes.size();
    }
    const std::string header = h.dump();
    const uint64_t len = header.size();
    const std::string path = dir_ + "/" + name;
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(&len), 8);
    f << header;
    for (const auto& t : tensors) f.write(reinterpret_cast<const char*>(std::get<3>(t).data()), std::get<3>(t).size());
    return path;
  }
  std::unique_ptr<testing::ServerProcess> server_;
  std::string dir_;
};

TEST_F(EngramctlTableTest, CreatePutGetPushDescribeDrop) {
  ASSERT_EQ(Ctl("create-table --name=t --rows=100 --dim=2 --optimizer=sgd --lr=0.5 --init=zeros --shards=4").code, 0);
  EXPECT_NE(Ctl("create-table --name=t --rows=100 --dim=2").code, 0);  // Exists.
  ASSERT_EQ(Ctl("put --table=t --rows=3,7 --values=" + Write("v.json", "[[1,2],[3,4]]")).code, 0);
  ASSERT_EQ(Ctl("push --table=t --rows=3,3 --grads=" + Write("g.json", "[[1,1],[1,1]]")).code, 0);
  const auto got = Ctl("get --table=t --rows=7,3,9 --json");
  ASSERT_EQ(got.code, 0) << got.err;
  EXPECT_EQ(nlohmann::json::parse(got.out),
            nlohmann::json::parse(R"({"rows":[7,3,9],"values":[[3.0,4.0],[0.0,1.0],[0.0,0.0]]})"));
  const auto d = Ctl("describe --table=t --json");
  ASSERT_EQ(d.code, 0);
  EXPECT_EQ(nlohmann::json::parse(d.out)["rows_touched"], 2);
  const auto l = Ctl("list --json");
  EXPECT_EQ(nlohmann::json::parse(l.out).size(), 1u);
  ASSERT_EQ(Ctl("drop-table --name=t").code, 0);
  const auto gone = Ctl("get --table=t --rows=1");
  EXPECT_NE(gone.code, 0);
  EXPECT_NE(gone.err.find("NotFound"), std::string::npos) << gone.err;
}

TEST_F(EngramctlTableTest, ATableWithADramBudgetKeepsTheRestInTheColdTierAndDropRemovesIt) {
  // 16 slots of DRAM (~56 B each for dim 2 SGD) for 1000 rows, one shard.
  ASSERT_EQ(Ctl("create-table --name=c --rows=1000 --dim=2 --optimizer=sgd --init=zeros --shards=1 --dram_bytes=1000").code, 0);
  std::string rows, values;
  for (int r = 0; r < 200; ++r) {
    rows += (r ? "," : "") + std::to_string(r * 5);
    values += std::string(r ? "," : "") + "[" + std::to_string(r) + ",1]";
  }
  const auto put = Ctl("put --table=c --rows=" + rows + " --values=" + Write("v.json", "[" + values + "]"));
  ASSERT_EQ(put.code, 0) << put.err;
  const auto got = Ctl("get --table=c --rows=995,5,7 --json");
  ASSERT_EQ(got.code, 0) << got.err;
  EXPECT_EQ(nlohmann::json::parse(got.out)["values"], nlohmann::json::parse("[[199.0,1.0],[1.0,1.0],[0.0,0.0]]"));
  const auto d = Ctl("describe --table=c --json");
  EXPECT_EQ(nlohmann::json::parse(d.out)["dram_bytes"], 1000) << d.out;
  const std::string cold = server_->dir() + "/data/cold";
  auto entries = [&] {
    return std::distance(std::filesystem::directory_iterator(cold), std::filesystem::directory_iterator{});
  };
  EXPECT_EQ(entries(), 1) << "one RocksDB for the table";
  ASSERT_EQ(Ctl("drop-table --name=c").code, 0);
  EXPECT_EQ(entries(), 0) << "dropping the table removes its cold tier";
}

TEST_F(EngramctlTableTest, CheckpointAndRestoreRollATableBack) {
  ASSERT_EQ(Ctl("create-table --name=t --rows=100 --dim=2 --optimizer=sgd --lr=1 --init=zeros --shards=4").code, 0);
  const std::string g = Write("g.json", "[[1,1]]");
  ASSERT_EQ(Ctl("push --table=t --rows=5 --grads=" + g).code, 0);
  const auto cp = Ctl("checkpoint --name=before --json");
  ASSERT_EQ(cp.code, 0) << cp.err;
  EXPECT_EQ(nlohmann::json::parse(cp.out)[0]["label"], "before");
  ASSERT_EQ(Ctl("push --table=t --rows=5 --grads=" + g).code, 0);
  ASSERT_EQ(Ctl("push --table=t --rows=6 --grads=" + g).code, 0);
  const auto r = Ctl("restore --table=t --name=before");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("server 1/1 ... done"), std::string::npos) << r.err;  // Progress on stderr.
  const auto got = Ctl("get --table=t --rows=5,6 --json");
  ASSERT_EQ(got.code, 0);
  EXPECT_EQ(nlohmann::json::parse(got.out)["values"], nlohmann::json::parse("[[-1,-1],[0,0]]"));
  EXPECT_NE(Ctl("restore --table=t").err.find("--name=LABEL"), std::string::npos);
  EXPECT_NE(Ctl("restore --table=t --name=nope").err.find("NotFound"), std::string::npos);
  ASSERT_EQ(Ctl("drop-checkpoint --name=before").code, 0);
  EXPECT_NE(Ctl("restore --table=t --name=before").err.find("NotFound"), std::string::npos);
  EXPECT_NE(Ctl("drop-checkpoint").err.find("--name=LABEL"), std::string::npos);
}

TEST_F(EngramctlTableTest, BadRowInputsFailWithMessages) {
  ASSERT_EQ(Ctl("create-table --name=t --rows=10 --dim=2").code, 0);
  EXPECT_NE(Ctl("get --table=t --rows=1,x").err.find("not a row id"), std::string::npos);
  EXPECT_NE(Ctl("get --table=t --rows=10").err.find("OutOfRange"), std::string::npos);
  EXPECT_NE(Ctl("push --table=t --rows=1 --grads=" + Write("g.json", "[[1]]")).err.find("2 numbers"), std::string::npos);
  EXPECT_NE(Ctl("create-table --name=u --rows=10 --dim=2 --dtype=f64").err.find("unknown dtype"), std::string::npos);
  EXPECT_EQ(Ctl("list").code, 0);
}

TEST_F(EngramctlTableTest, CreateTableFromSpecMakesOneTablePerLayerWithTheHashedRowCount) {
  const auto& c = testing::VectorCase("demo_defaults");
  const auto r = Ctl("create-table --name=e --spec=" + Write("spec.json", c["spec"].dump()) + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["created"], nlohmann::json({"e_layer1", "e_layer15"}));
  for (const char* layer : {"1", "15"}) {
    const auto d = Ctl(std::string("describe --json --table=e_layer") + layer);
    ASSERT_EQ(d.code, 0) << d.err;
    const auto j = nlohmann::json::parse(d.out);
    EXPECT_EQ(j["rows"], c["layers"][layer]["table_rows"]);
    EXPECT_EQ(j["dim"], 64);
  }
}

// A DeepSeek-V4.1-Flash-style serving table: FP8 values with UE8M0 scales, 264 bytes per row.
TEST_F(EngramctlTableTest, Fp8SafetensorsImportExportRoundTripsAndMismatchesAreRefused) {
  constexpr uint64_t kRows = 70000;  // More than one streaming chunk.
  ASSERT_EQ(Ctl("create-table --name=flash --rows=" + std::to_string(kRows) + " --dim=256 --dtype=fp8_e4m3_ue8m0").code, 0);
  std::vector<uint8_t> values(kRows * 256), scales(kRows * 8);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<uint8_t>((i * 2654435761u) >> 24) & 0x7e;
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = static_cast<uint8_t>(120 + i % 9);
  const std::string in = WriteSafetensors(
      "in.safetensors", {{"layers.1.engram.embed.weight", "F8_E4M3", {kRows, 256}, values},
                         {"layers.1.engram.embed.scale", "F8_E8M0", {kRows, 8}, scales}});
  const auto imp = Ctl("import --table=flash --safetensors=" + in + " --tensor=layers.1.engram.embed.weight");
  ASSERT_EQ(imp.code, 0) << imp.err;
  EXPECT_NE(imp.err.find("100%"), std::string::npos);  // Progress was shown.
  const std::string out = dir_ + "/out.safetensors";
  const auto exp = Ctl("export --table=flash --safetensors=" + out + " --tensor=layers.1.engram.embed.weight");
  ASSERT_EQ(exp.code, 0) << exp.err;
  // Read the exported file back: same tensors, same bytes.
  std::ifstream f(out, std::ios::binary);
  uint64_t len = 0;
  f.read(reinterpret_cast<char*>(&len), 8);
  std::string header(len, '\0');
  f.read(header.data(), len);
  const auto h = nlohmann::json::parse(header);
  ASSERT_EQ(h["layers.1.engram.embed.weight"]["shape"], nlohmann::json({kRows, 256}));
  ASSERT_EQ(h["layers.1.engram.embed.scale"]["dtype"], "F8_E8M0");
  std::vector<uint8_t> back_v(values.size()), back_s(scales.size());
  f.seekg(8 + len + h["layers.1.engram.embed.weight"]["data_offsets"][0].get<uint64_t>());
  f.read(reinterpret_cast<char*>(back_v.data()), back_v.size());
  f.seekg(8 + len + h["layers.1.engram.embed.scale"]["data_offsets"][0].get<uint64_t>());
  f.read(reinterpret_cast<char*>(back_s.data()), back_s.size());
  EXPECT_TRUE(back_v == values);
  EXPECT_TRUE(back_s == scales);

  // Mismatches: wrong row count, wrong dtype, missing scale tensor, missing tensor.
  const std::string small = WriteSafetensors(
      "small.safetensors", {{"w", "F8_E4M3", {10, 256}, std::vector<uint8_t>(2560)}, {"s", "U8", {10, 8}, std::vector<uint8_t>(80)}});
  auto r1 = Ctl("import --table=flash --safetensors=" + small + " --tensor=w --scale-tensor=s");
  EXPECT_NE(r1.code, 0);
  EXPECT_NE(r1.err.find("shape"), std::string::npos) << r1.err;
  const std::string wrong = WriteSafetensors("wrong.safetensors", {{"w", "BF16", {kRows, 256}, std::vector<uint8_t>(kRows * 512)}});
  auto r2 = Ctl("import --table=flash --safetensors=" + wrong + " --tensor=w");
  EXPECT_NE(r2.err.find("BF16"), std::string::npos) << r2.err;
  auto r3 = Ctl("import --table=flash --safetensors=" + in + " --tensor=nope");
  EXPECT_NE(r3.err.find("it has:"), std::string::npos) << r3.err;
  auto r4 = Ctl("import --table=flash --safetensors=" + Write("junk", "not a safetensors file") + " --tensor=w");
  EXPECT_NE(r4.code, 0);
}

TEST_F(EngramctlTableTest, AClientKilledMidImportLeavesTheDaemonServing) {
  constexpr uint64_t kRows = 400000;
  ASSERT_EQ(Ctl("create-table --name=big --rows=" + std::to_string(kRows) + " --dim=256 --dtype=fp8_e4m3_ue8m0").code, 0);
  const std::string in = WriteSafetensors(
      "big.safetensors", {{"w", "F8_E4M3", {kRows, 256}, std::vector<uint8_t>(kRows * 256, 0x38)},
                          {"s", "U8", {kRows, 8}, std::vector<uint8_t>(kRows * 8, 127)}});
  const pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    execl(ENGRAMCTL_PATH, ENGRAMCTL_PATH, "import", "--table=big", ("--safetensors=" + in).c_str(), "--tensor=w",
          "--scale-tensor=s", ("--servers=" + server_->address()).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  kill(pid, SIGKILL);  // Mid-stream: requests in flight, endpoint never closed.
  waitpid(pid, nullptr, 0);
  const auto got = Ctl("get --table=big --rows=0,399999 --json");
  ASSERT_EQ(got.code, 0) << got.err << "\nthe server's log:\n"
                         << std::string(std::istreambuf_iterator<char>(std::ifstream(server_->dir() + "/log").rdbuf()), {});
  EXPECT_EQ(nlohmann::json::parse(got.out)["rows"].size(), 2u);
  EXPECT_EQ(Ctl("list").code, 0);
}

}  // namespace
}  // namespace engram
