// Loads tests/data/engram_vectors.json, the reference vectors made by
// tests/tools/gen_engram_vectors.py with numpy.
#ifndef ENGRAM_TESTS_TESTING_VECTORS_H_
#define ENGRAM_TESTS_TESTING_VECTORS_H_

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace engram::testing {

inline const nlohmann::json& EngramVectors() {
  static const nlohmann::json j = [] {
    std::ifstream f(std::string(ENGRAM_TEST_DATA_DIR) + "/engram_vectors.json");
    if (!f) throw std::runtime_error("cannot open engram_vectors.json");
    std::stringstream ss;
    ss << f.rdbuf();
    return nlohmann::json::parse(ss.str());
  }();
  return j;
}

inline const nlohmann::json& VectorCase(const std::string& name) {
  for (const auto& c : EngramVectors()["cases"]) {
    if (c["name"] == name) return c;
  }
  throw std::runtime_error("no vector case " + name);
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_VECTORS_H_
