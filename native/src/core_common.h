// Node-free plumbing shared by the core (model, rollouts, tiny model, the C++ test executables) and
// the addon: error codes, the log bridge, process-wide flags. common.h adds the N-API parts.
//
// Errors cross into JS as plain Errors whose message starts with a bracketed code,
// "[ERR_MODEL_LOAD] failed to load model ...". src/errors.ts turns them into VisplayError
// with that `code` and the caller's stack (captured before the async hop, as sharp does).
#pragma once

#include <atomic>
#include <stdexcept>
#include <string>

namespace visplay {

// A failure with a stable code; thrown inside workers, turned into a rejected Promise.
struct CodedError : std::runtime_error {
    std::string code;
    CodedError(std::string code_, const std::string & message) : std::runtime_error(message), code(std::move(code_)) {}
};

inline std::string coded_message(const std::string & code, const std::string & message) {
    return "[" + code + "] " + message;
}

// ---- log bridge ----------------------------------------------------------------------------
// llama.cpp and mtmd log through one callback. Messages at or above the configured level go to
// stderr (silent by default); error lines are always captured per thread, so a worker
// that fails can put llama.cpp's own words ("failed to open ...") into its error message.
void install_log_bridge();
void set_log_level(int level);          // 0 silent, 1 error, 2 warn, 3 info, 4 debug
void clear_captured_log();
std::string captured_log();             // errors logged on this thread since clear

// Appends the captured log, if any, to a message: "msg (llama.cpp: ...)".
std::string with_log(const std::string & message);

// Set when the main thread's `process` emits 'exit' (process.exit() included). Node joins its
// thread pool before the process ends, so without it process.exit() would wait for every generate
// or training step in flight to run to its end (minutes on a real model); with it they stop at the
// next graph node (llama.cpp's and ggml's abort callbacks) or decode step.
extern std::atomic<bool> g_exiting;
inline bool exiting_abort_callback(void *) { return g_exiting.load(std::memory_order_relaxed); }

// Live native objects, for lifecycle tests.
extern std::atomic<int> g_live_models;
extern std::atomic<int> g_live_contexts;
extern std::atomic<int> g_live_policies;

}  // namespace visplay
