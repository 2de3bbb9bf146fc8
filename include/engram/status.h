// Status and StatusOr<T>: the error convention of every engram-ps module.
//
// A Status is either OK (costs one null pointer) or carries a canonical code and a message.
// Functions on the data path return [[nodiscard]] Status / StatusOr<T>; no exceptions cross a
// module boundary. Thread-safety: a Status is a value; distinct objects may be used from
// distinct threads freely.
#ifndef ENGRAM_STATUS_H_
#define ENGRAM_STATUS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace engram {

enum class Code : uint8_t {
  kOk = 0,
  kInvalidArgument = 1,    // The caller's input is wrong; retrying the same input fails again.
  kNotFound = 2,           // A named table, file or key does not exist.
  kAlreadyExists = 3,      // Creating something that exists.
  kOutOfRange = 4,         // A row id or offset outside the table.
  kUnavailable = 5,        // Transient: retry (peer down, queue full, starting up).
  kDeadlineExceeded = 6,   // A wait ran past its deadline.
  kResourceExhausted = 7,  // Memory, disk or a configured budget is used up.
  kAborted = 8,            // A conflict (e.g. a concurrent change) stopped the operation.
  kFailedPrecondition = 9, // The system is not in a state that allows the operation.
  kStaleShardMap = 10,     // The caller's shard map epoch is old; refresh and retry.
  kDataLoss = 11,          // Stored data is corrupt or missing.
  kInternal = 12,          // A broken invariant inside engram-ps (a bug).
  kIoError = 13,           // The OS or a storage library reported an I/O failure.
};

// Name of a code, e.g. "InvalidArgument". Never null.
const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK.
  Status(Code code, std::string_view msg)
      : rep_(code == Code::kOk ? nullptr : std::make_unique<Rep>(Rep{code, std::string(msg), 0})) {}
  Status(const Status& o) : rep_(o.rep_ ? std::make_unique<Rep>(*o.rep_) : nullptr) {}
  Status& operator=(const Status& o) {
    if (this != &o) rep_ = o.rep_ ? std::make_unique<Rep>(*o.rep_) : nullptr;
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string_view m) { return {Code::kInvalidArgument, m}; }
  static Status NotFound(std::string_view m) { return {Code::kNotFound, m}; }
  static Status AlreadyExists(std::string_view m) { return {Code::kAlreadyExists, m}; }
  static Status OutOfRange(std::string_view m) { return {Code::kOutOfRange, m}; }
  static Status Unavailable(std::string_view m) { return {Code::kUnavailable, m}; }
  static Status DeadlineExceeded(std::string_view m) { return {Code::kDeadlineExceeded, m}; }
  static Status ResourceExhausted(std::string_view m) { return {Code::kResourceExhausted, m}; }
  static Status Aborted(std::string_view m) { return {Code::kAborted, m}; }
  static Status FailedPrecondition(std::string_view m) { return {Code::kFailedPrecondition, m}; }
  static Status DataLoss(std::string_view m) { return {Code::kDataLoss, m}; }
  static Status Internal(std::string_view m) { return {Code::kInternal, m}; }
  static Status IoError(std::string_view m) { return {Code::kIoError, m}; }
  // The server's shard map is at `current_epoch`; the caller must refresh past it.
  static Status StaleShardMap(uint64_t current_epoch, std::string_view m) {
    Status s(Code::kStaleShardMap, m);
    s.rep_->epoch = current_epoch;
    return s;
  }

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  // The message without the code; empty when OK.
  const std::string& message() const {
    static const std::string kEmpty;
    return rep_ ? rep_->msg : kEmpty;
  }
  // For kStaleShardMap: the epoch the refusing side holds; 0 otherwise.
  uint64_t epoch() const { return rep_ ? rep_->epoch : 0; }

  bool IsInvalidArgument() const { return code() == Code::kInvalidArgument; }
  bool IsNotFound() const { return code() == Code::kNotFound; }
  bool IsOutOfRange() const { return code() == Code::kOutOfRange; }
  bool IsUnavailable() const { return code() == Code::kUnavailable; }
  bool IsStaleShardMap() const { return code() == Code::kStaleShardMap; }

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const {
    if (ok()) return "OK";
    return std::string(CodeName(rep_->code)) + ": " + rep_->msg;
  }

  // Returns a copy with `context` prepended to the message ("context: message").
  Status WithContext(std::string_view context) const {
    if (ok()) return *this;
    Status s(*this);
    s.rep_->msg = std::string(context) + ": " + s.rep_->msg;
    return s;
  }

  // Marks a deliberately ignored status (e.g. best-effort cleanup).
  void IgnoreError() const {}

 private:
  struct Rep {
    Code code;
    std::string msg;
    uint64_t epoch;
  };
  std::unique_ptr<Rep> rep_;
};

inline const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kNotFound: return "NotFound";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kOutOfRange: return "OutOfRange";
    case Code::kUnavailable: return "Unavailable";
    case Code::kDeadlineExceeded: return "DeadlineExceeded";
    case Code::kResourceExhausted: return "ResourceExhausted";
    case Code::kAborted: return "Aborted";
    case Code::kFailedPrecondition: return "FailedPrecondition";
    case Code::kStaleShardMap: return "StaleShardMap";
    case Code::kDataLoss: return "DataLoss";
    case Code::kInternal: return "Internal";
    case Code::kIoError: return "IoError";
  }
  return "Unknown";
}

// Either a value of type T or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design.
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design.
    if (status_.ok()) status_ = Status::Internal("StatusOr constructed from an OK status");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  // REQUIRES: ok().
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace engram

// Returns the status of `expr` from the enclosing function when it is not OK.
#define ENGRAM_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::engram::Status _engram_st = (expr);            \
    if (!_engram_st.ok()) return _engram_st;         \
  } while (0)

#define ENGRAM_CONCAT_INNER_(a, b) a##b
#define ENGRAM_CONCAT_(a, b) ENGRAM_CONCAT_INNER_(a, b)
// Declares `lhs` from a StatusOr expression, returning its status when not OK.
#define ENGRAM_ASSIGN_OR_RETURN(lhs, expr)                                  \
  auto ENGRAM_CONCAT_(_engram_so_, __LINE__) = (expr);                      \
  if (!ENGRAM_CONCAT_(_engram_so_, __LINE__).ok())                          \
    return ENGRAM_CONCAT_(_engram_so_, __LINE__).status();                  \
  lhs = std::move(ENGRAM_CONCAT_(_engram_so_, __LINE__)).value()

#endif  // ENGRAM_STATUS_H_
