// WriteAheadLog: segment files, framing, group commit, replay.
#include "storage/wal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "storage/crc32c.h"

namespace engram::storage {
namespace {

Status Errno(const std::string& what) { return Status::IoError(what + ": " + std::strerror(errno)); }

Status WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno("write-ahead log write");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::OK();
}

Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Errno("open " + dir);
  const int r = ::fsync(fd);
  ::close(fd);
  return r == 0 ? Status::OK() : Errno("fsync " + dir);
}

}  // namespace

std::string WriteAheadLog::SegmentPath(const std::string& dir, uint64_t segment) {
  char name[64];
  std::snprintf(name, sizeof(name), "/wal-%016" PRIu64 ".log", segment);
  return dir + name;
}

StatusOr<std::vector<uint64_t>> WriteAheadLog::Segments(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Errno("open log directory " + dir);
  std::vector<uint64_t> out;
  while (dirent* e = ::readdir(d)) {
    uint64_t n = 0;
    char tail[8] = {};
    if (std::sscanf(e->d_name, "wal-%16" SCNu64 ".%3s", &n, tail) == 2 && std::strcmp(tail, "log") == 0) out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

StatusOr<std::unique_ptr<WriteAheadLog>> WriteAheadLog::Open(const std::string& dir, const WalOptions& options) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Errno("create " + dir);
  ENGRAM_ASSIGN_OR_RETURN(auto segs, Segments(dir));
  auto log = std::unique_ptr<WriteAheadLog>(new WriteAheadLog(dir, options));
  {
    std::lock_guard<std::mutex> lock(log->mu_);
    ENGRAM_RETURN_IF_ERROR(log->OpenSegmentLocked(segs.empty() ? 1 : segs.back() + 1));
  }
  log->writer_ = std::thread([p = log.get()] { p->WriterLoop(); });
  return log;
}

Status WriteAheadLog::OpenSegmentLocked(uint64_t segment) {
  const std::string path = SegmentPath(dir_, segment);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create " + path);
  ENGRAM_RETURN_IF_ERROR(SyncDir(dir_));  // The new file's name must survive a crash too.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  segment_ = segment;
  return Status::OK();
}

WriteAheadLog::~WriteAheadLog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;  // The writer drains the buffer and syncs before it exits.
  }
  work_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<uint64_t> WriteAheadLog::Append(std::span<const uint8_t> payload) {
  if (payload.size() > (size_t{1} << 31)) return Status::InvalidArgument("log record larger than 2 GiB");
  const uint32_t frame[2] = {static_cast<uint32_t>(payload.size()), Crc32c(payload.data(), payload.size())};
  std::unique_lock<std::mutex> lock(mu_);
  // Back-pressure: a writer that cannot keep up slows appenders instead of eating memory.
  done_cv_.wait(lock, [&] { return !failed_.ok() || buffer_.size() < kMaxBuffered; });
  if (!failed_.ok()) return failed_;
  const size_t at = buffer_.size();
  buffer_.resize(at + sizeof(frame) + payload.size());
  std::memcpy(buffer_.data() + at, frame, sizeof(frame));
  if (!payload.empty()) std::memcpy(buffer_.data() + at + sizeof(frame), payload.data(), payload.size());
  const uint64_t lsn = next_lsn_++;
  lock.unlock();
  work_cv_.notify_one();
  return lsn;
}

void WriteAheadLog::WriterLoop() {
  std::vector<uint8_t> out;
  const auto interval = std::chrono::milliseconds(options_.sync_interval_ms);
  auto last_sync = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Work: records to write, or (async mode) written records whose sync is due or wanted.
    for (;;) {
      const bool dirty = synced_lsn_ < written_lsn_;
      const bool due = dirty && (sync_wanted_ || stop_ || std::chrono::steady_clock::now() >= last_sync + interval);
      if ((!buffer_.empty() && failed_.ok()) || (due && failed_.ok())) break;
      if (stop_) return;
      if (dirty && failed_.ok()) {
        work_cv_.wait_until(lock, last_sync + interval);
      } else {
        work_cv_.wait(lock);
      }
    }
    out.swap(buffer_);
    const uint64_t upto = next_lsn_ - 1;
    const bool do_sync = options_.sync || sync_wanted_ || stop_ || std::chrono::steady_clock::now() >= last_sync + interval;
    sync_wanted_ = false;
    writing_ = true;
    const int fd = fd_;
    lock.unlock();
    done_cv_.notify_all();  // Appenders waiting for buffer space.
    Status st = WriteAll(fd, out.data(), out.size());
    if (st.ok() && do_sync && ::fdatasync(fd) != 0) st = Errno("write-ahead log fdatasync");
    out.clear();
    lock.lock();
    writing_ = false;
    if (!st.ok()) {
      failed_ = st;  // Sticky: every waiter and later append gets it.
      buffer_.clear();
    } else {
      written_lsn_ = std::max(written_lsn_, upto);
      if (do_sync) {
        synced_lsn_ = std::max(synced_lsn_, upto);
        last_sync = std::chrono::steady_clock::now();
      }
    }
    done_cv_.notify_all();
  }
}

Status WriteAheadLog::Sync(uint64_t lsn) {
  std::unique_lock<std::mutex> lock(mu_);
  if (options_.sync) {
    done_cv_.wait(lock, [&] { return !failed_.ok() || synced_lsn_ >= lsn; });
  } else {
    done_cv_.wait(lock, [&] { return !failed_.ok() || written_lsn_ >= lsn; });
  }
  return failed_;
}

StatusOr<uint64_t> WriteAheadLog::Rotate() {
  std::unique_lock<std::mutex> lock(mu_);
  // Everything appended so far goes to disk in the old segment first.
  for (;;) {
    if (!failed_.ok()) return failed_;
    if (buffer_.empty() && !writing_ && synced_lsn_ >= next_lsn_ - 1) break;
    sync_wanted_ = true;
    work_cv_.notify_one();
    done_cv_.wait(lock);
  }
  sync_wanted_ = false;
  ENGRAM_RETURN_IF_ERROR(OpenSegmentLocked(segment_ + 1));
  return segment_;
}

Status WriteAheadLog::DropSegmentsBelow(uint64_t segment) {
  ENGRAM_ASSIGN_OR_RETURN(auto segs, Segments(dir_));
  for (uint64_t s : segs) {
    if (s >= segment) break;
    if (::unlink(SegmentPath(dir_, s).c_str()) != 0 && errno != ENOENT) return Errno("remove log segment");
  }
  return SyncDir(dir_);
}

uint64_t WriteAheadLog::current_segment() const {
  std::lock_guard<std::mutex> lock(mu_);
  return segment_;
}

uint64_t WriteAheadLog::synced_lsn() const {
  std::lock_guard<std::mutex> lock(mu_);
  return synced_lsn_;
}

namespace {

// The offset of the first valid record (a nonzero length that fits and a matching checksum)
// starting after `from` in the `size`-byte segment `fd`, or -1.
int64_t NextValidRecord(int fd, uint64_t from, uint64_t size) {
  if (size <= from + 1) return -1;
  std::vector<uint8_t> rest(size - from - 1);
  size_t got = 0;
  while (got < rest.size()) {
    const ssize_t r = ::pread(fd, rest.data() + got, rest.size() - got, static_cast<off_t>(from + 1 + got));
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  for (size_t p = 0; p + 8 <= got; ++p) {
    uint32_t frame[2];
    std::memcpy(frame, rest.data() + p, sizeof(frame));
    if (frame[0] == 0 || frame[0] > got - p - 8) continue;
    if (Crc32c(rest.data() + p + 8, frame[0]) == frame[1]) return static_cast<int64_t>(from + 1 + p);
  }
  return -1;
}

}  // namespace

Status WriteAheadLog::Replay(const std::string& dir, uint64_t first_segment,
                             const std::function<Status(std::span<const uint8_t>)>& fn, WalReplayStats* stats) {
  ENGRAM_ASSIGN_OR_RETURN(auto segs, Segments(dir));
  std::vector<uint8_t> buf;
  for (uint64_t seg : segs) {
    if (seg < first_segment) continue;
    const std::string path = SegmentPath(dir, seg);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Errno("open " + path);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return Errno("stat " + path);
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    uint64_t off = 0;
    Status result;
    auto read_exact = [&](uint8_t* p, size_t n) {
      size_t got = 0;
      while (got < n) {
        const ssize_t r = ::pread(fd, p + got, n - got, static_cast<off_t>(off + got));
        if (r <= 0) return false;
        got += static_cast<size_t>(r);
      }
      return true;
    };
    while (off < size) {
      uint32_t frame[2];
      if (size - off < sizeof(frame) || !read_exact(reinterpret_cast<uint8_t*>(frame), sizeof(frame))) break;
      if (frame[0] == 0 || frame[0] > size - off - sizeof(frame)) break;  // Cut short (or zeroed).
      buf.resize(frame[0]);
      off += sizeof(frame);
      if (!read_exact(buf.data(), buf.size()) || Crc32c(buf.data(), buf.size()) != frame[1]) {
        off -= sizeof(frame);
        break;
      }
      off += frame[0];
      if (stats) stats->records++, stats->bytes += frame[0];
      result = fn(buf);
      if (!result.ok()) break;
    }
    // A bad record followed by a valid one is damage, not a torn tail (scanned on this fd).
    const int64_t next = result.ok() && off < size ? NextValidRecord(fd, off, size) : -1;
    ::close(fd);
    if (!result.ok()) return result.WithContext("replaying " + path);
    if (stats) stats->segments++;
    if (off < size) {
      const std::string where = path + ": " + std::to_string(off) + " of " + std::to_string(size);
      if (next >= 0) {  // Later records may build on the lost ones (row versions): stop here.
        const std::string what = where + ", a valid record follows at " + std::to_string(next);
        if (stats == nullptr) return Status::DataLoss("damaged record (not a torn tail) in " + what);
        stats->corrupt.push_back(what);
        return Status::OK();
      }
      if (stats) stats->torn_tails.push_back(where);
    }
  }
  return Status::OK();
}

}  // namespace engram::storage
