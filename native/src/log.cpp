// The log bridge (see core_common.h).
#include "core_common.h"

#include "llama.h"
#include "mtmd-helper.h"

#include <atomic>
#include <cstdio>

namespace visplay {

std::atomic<bool> g_exiting{false};
std::atomic<int> g_live_models{0};
std::atomic<int> g_live_contexts{0};

static std::atomic<int> g_log_level{0};
static thread_local std::string t_captured;
static constexpr size_t kMaxCaptured = 4096;

static int level_rank(ggml_log_level level) {
    switch (level) {
        case GGML_LOG_LEVEL_ERROR: return 1;
        case GGML_LOG_LEVEL_WARN:  return 2;
        case GGML_LOG_LEVEL_INFO:  return 3;
        case GGML_LOG_LEVEL_DEBUG: return 4;
        default:                   return 3;  // CONT and NONE continue the previous line
    }
}

static void log_callback(ggml_log_level level, const char * text, void *) {
    if (text == nullptr) return;
    const int rank = level_rank(level);
    if (rank == 1 && t_captured.size() < kMaxCaptured) {
        t_captured += text;
    }
    if (rank <= g_log_level.load(std::memory_order_relaxed)) {
        fputs(text, stderr);
    }
}

void install_log_bridge() {
    llama_log_set(log_callback, nullptr);
    mtmd_helper_log_set(log_callback, nullptr);
}

void set_log_level(int level) { g_log_level.store(level); }
void clear_captured_log() { t_captured.clear(); }
std::string captured_log() { return t_captured; }

std::string with_log(const std::string & message) {
    std::string log = t_captured;
    // Keep it to one readable line: the last few lines llama.cpp said.
    while (!log.empty() && (log.back() == '\n' || log.back() == ' ')) log.pop_back();
    if (log.empty()) return message;
    for (auto & c : log) if (c == '\n') c = ';';
    if (log.size() > 600) log = "..." + log.substr(log.size() - 600);
    return message + " (llama.cpp: " + log + ")";
}

}  // namespace visplay
