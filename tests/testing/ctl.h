// Runs the engramctl binary of this build (ENGRAMCTL_PATH) for tests.
#ifndef ENGRAM_TESTS_TESTING_CTL_H_
#define ENGRAM_TESTS_TESTING_CTL_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

namespace engram::testing {

// Runs `engramctl ARGS`; returns its exit code and stdout. When it fails, its stderr follows
// stdout (after "[stderr]"), so that a failed expectation shows engramctl's message.
inline std::pair<int, std::string> RunCtl(const std::string& args) {
  char err_path[] = "/tmp/engramctl_err_XXXXXX";
  const int err_fd = mkstemp(err_path);
  if (err_fd >= 0) close(err_fd);
  FILE* f = popen((std::string(ENGRAMCTL_PATH) + " " + args + " 2>" + (err_fd >= 0 ? err_path : "/dev/null")).c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; f != nullptr && (n = fread(buf, 1, sizeof(buf), f)) > 0;) out.append(buf, n);
  const int status = f ? pclose(f) : -1;
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (err_fd >= 0) {
    if (code != 0) {
      std::ifstream err(err_path);
      out += "[stderr]\n" + std::string(std::istreambuf_iterator<char>(err), {});
    }
    std::remove(err_path);
  }
  return {code, out};
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_CTL_H_
